#!/usr/bin/env python3
"""Summarises interleaved wrk rounds (WORK/NAME.ROUND.txt, as `rounds` in common.sh writes them):
the median req/s, p50 and p99 of each target, its errors, and each target's ratio to REF; then
Fulcrum's ratio to each other target (fulcrum/nginx, fulcrum/haproxy, fulcrum/direct).
With the rounds' NAME.ROUND.cpu files, a second table: the CPU time the serving process used per
request (for `direct`, the backend's), split into user space and kernel, its ratio to REF's
(requests per CPU-second), and how busy
the proxy's core and the load's core were. A load core near 100% means wrk and the backend, not
the proxy, set the pace: req/s ratios then understate the proxy's own difference.

    python3 benches/summary.py WORK REF NAME...
"""
import pathlib
import re
import statistics
import sys


def ms(text):
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def errors(text):
    count = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    count += int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    count += sum(map(int, m.groups())) if m else 0
    return count


def cpu(text, usage):
    """(CPU us per request, of it in user space and in the kernel, proxy core busy, load core
    busy) of one run."""
    requests = int(re.search(r"(\d+) requests in", text).group(1))
    hz, user, system, pb1, pt1, pb0, pt0, lb1, lt1, lb0, lt0 = map(int, usage.split())
    per_request = lambda ticks: ticks / hz * 1e6 / requests
    return (per_request(user + system), per_request(user), per_request(system),
            (pb1 - pb0) / (pt1 - pt0), (lb1 - lb0) / (lt1 - lt0))


def cpu_table(work, ref, names):
    rows = {}
    for name in names:
        runs = [cpu(run.read_text(), run.with_suffix(".cpu").read_text())
                for run in sorted(work.glob(f"{name}.*.txt")) if run.with_suffix(".cpu").exists()]
        # No CPU figure without the serving processes (`ss -p` needs root to name them).
        if not runs or any(run[0] == 0 for run in runs):
            return
        rows[name] = [statistics.median(column) for column in zip(*runs)]
    print(f"\n| target | CPU us per request | user | kernel | requests per CPU-second vs {ref} | proxy core busy | load core busy |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, (us, user, kernel, proxy_busy, load_busy) in rows.items():
        print(f"| {name} | {us:.1f} | {user:.1f} | {kernel:.1f} | {rows[ref][0] / us:.2f}x "
              f"| {proxy_busy:.0%} | {load_busy:.0%} |")


def main():
    work, ref, names = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    rows = {}
    for name in names:
        runs = [run.read_text() for run in sorted(work.glob(f"{name}.*.txt"))]
        rows[name] = (
            statistics.median(float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1)) for t in runs),
            statistics.median(ms(re.search(r"\s50%\s+(\S+)", t).group(1)) for t in runs),
            statistics.median(ms(re.search(r"\s99%\s+(\S+)", t).group(1)) for t in runs),
            sum(errors(t) for t in runs),
        )
    print(f"\n| target | req/s (median) | p50 ms | p99 ms | errors | vs {ref} |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (rps, p50, p99, errs) in rows.items():
        print(f"| {name} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {errs} | {rps / rows[ref][0]:.2f}x |")
    if "fulcrum" in rows:
        ratios = [f"fulcrum/{name} {rows['fulcrum'][0] / rows[name][0]:.2f}x"
                  for name in names if name not in ("fulcrum", "baseline")]
        print("\nreq/s ratios (medians): " + ", ".join(ratios))
    cpu_table(work, ref, names)


if __name__ == "__main__":
    main()
