#!/usr/bin/env python3
"""Tabulates benches/overload.sh's runs as markdown: a row per load and target; per priority the
share of its requests answered 2xx, their p50 and p99 latency (ms, from each request's intended
send time, so queueing counts), how many were shed (503) and their p50; then the goodput (2xx per
second), the p99 latency of shed answers over all priorities, how many were refused on arrival
(Fulcrum's "queue full": the cost of a shed, without time spent queued before an eviction or a
timeout) and their p99, and the requests that got neither (other statuses, timeouts, failures).

    python3 benches/overload_summary.py RUNS

RUNS lists the runs, one a line, tab-separated: load (times the backend's capacity), rate, target
name, and the JSON object examples/openloop.rs printed for it.
"""
import json
import sys


def ms(value):
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def cell(tally):
    """One priority: "2xx% p50/p99", then "N shed (p50 X)" when some were, e.g. "98% 11/40, 12
    shed (p50 1001)": a shed p50 far below the queue timeout means most were refused at once."""
    if not tally["sent"]:
        return "-"
    text = f"{100 * tally['ok_share']:.0f}% {ms(tally['ok_p50_ms'])}/{ms(tally['ok_p99_ms'])}"
    if tally["shed"]:
        text += f", {tally['shed']} shed (p50 {ms(tally['shed_p50_ms'])})"
    return text


def errors(report):
    """Requests answered neither 2xx nor 503, with what they were."""
    other = sum(t["other"] for t in report["priorities"])
    timeout = sum(t["timeout"] for t in report["priorities"])
    failed = sum(t["failed"] for t in report["priorities"])
    parts = [f"{count} {what}" for count, what in ((timeout, "timeout"), (failed, "failed")) if count]
    parts += [f"{count}×{status}" for status, count in report["other_statuses"].items()]
    total = other + timeout + failed
    return f"{total} ({', '.join(parts)})" if total else "0"


def main(runs_path):
    rows = []
    with open(runs_path) as runs:
        for line in runs:
            load, rate, name, path = line.rstrip("\n").split("\t")
            with open(path) as output:
                rows.append((load, rate, name, json.loads(output.read().splitlines()[-1])))
    if not rows:
        sys.exit("no runs to summarise")
    priorities = [t["priority"] for t in rows[0][3]["priorities"]]
    print("Each priority: share of its requests answered 2xx, their p50/p99 in ms (from the")
    print("intended send time); requests shed (503) and their p50. Goodput: 2xx per second.")
    print()
    header = ["load", "target", *priorities, "goodput", "shed p99 ms", "refused at once: p99 ms",
              "other, timeouts, failures"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for load, rate, name, report in rows:
        cells = [f"{load}x ({rate}/s)", name]
        cells += [cell(t) for t in report["priorities"]]
        at_once = report.get("shed_at_once", 0)
        at_once = f"{at_once} ({ms(report.get('shed_at_once_p99_ms'))})" if at_once else "-"
        cells += [f"{report['goodput']:.0f}", ms(report["shed_p99_ms"]), at_once, errors(report)]
        print("| " + " | ".join(cells) + " |")
    lagging = [(load, name, r["max_send_lag_ms"]) for load, _, name, r in rows if r["max_send_lag_ms"] > 20]
    for load, name, lag in lagging:
        print(f"\n{load}x {name}: the generator sent a request {lag:.0f} ms late: it, not only the target, set the pace")
    unmarked = [(load, name) for load, _, name, r in rows
                if any(t["shed"] > t["shed_retry_after"] for t in r["priorities"])]
    if unmarked:
        print("\nShed answers without Retry-After: " + ", ".join(f"{name} at {load}x" for load, name in unmarked))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
