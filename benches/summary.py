#!/usr/bin/env python3
"""Summarises interleaved load rounds (DIR/NAME.ROUND.txt, wrk's or h2load's report, as `rounds`
in common.sh writes them): the median req/s, p50 and p99 of each target, its errors, and each
target's ratio to REF; then Fulcrum's ratio to each other target (fulcrum/nginx, fulcrum/haproxy,
fulcrum/direct) and to the best of nginx and HAProxy.
With the rounds' NAME.ROUND.cpu files, a second table: the CPU time the serving process used per
request (for `direct`, the backend's), split into user space and kernel, its ratio to REF's
(requests per CPU-second), how busy the proxy's core and the load's core were, and the load
core's busy time per request. A load core near 100% means the load generator and the backend,
not the proxy, set the pace: req/s ratios then understate the proxy's own difference, and follow
what each request through that proxy costs the load core (the bytes it sends the backend and wrk
to parse, the wake-ups it causes there).

    python3 benches/summary.py DIR REF NAME...
    python3 benches/summary.py --load WORK

The second form is benches/load.sh's report: those tables for each workload (WORK/workloads: one
line per workload, tab-separated: key, label, load, target names; its rounds in WORK/KEY/), a
summary of the workloads, and the memory per idle connection (WORK/idle: one line per proxy,
"KIND COUNT NAME RSS-BEFORE RSS-AFTER" in KiB).
"""
import pathlib
import re
import statistics
import sys

PEERS = ("nginx", "haproxy")


def ms(text):
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def errors(text):
    """wrk's non-2xx/3xx responses and socket errors; h2load's failed requests (which count its
    non-2xx/3xx responses, resets and timeouts)."""
    if m := re.search(r"requests: \d+ total, \d+ started, \d+ done, \d+ succeeded, (\d+) failed", text):
        return int(m.group(1))
    count = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    count += int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    count += sum(map(int, m.groups())) if m else 0
    return count


def requests(text):
    """Responses completed in the run: wrk's "N requests in", h2load's "N done"."""
    m = re.search(r"(\d+) requests in", text) or re.search(r"requests: \d+ total, \d+ started, (\d+) done", text)
    return int(m.group(1))


def outcome(text):
    """(req/s, p50 ms, p99 ms, errors) of one run, or None for a run that left no report (or an
    h2load run that did not negotiate h2)."""
    if "finished in" in text and not re.search(r"(?m)^Application protocol: h2$", text):
        return None
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text) or re.search(r"finished in \S+, ([\d.]+) req/s", text)
    p50 = re.search(r"(?m)^\s+50%\s+(\S+)", text)
    p99 = re.search(r"(?m)^\s+99%\s+(\S+)", text)
    if not (rps and p50 and p99):
        return None
    return float(rps.group(1)), ms(p50.group(1)), ms(p99.group(1)), errors(text)


def cpu(text, usage):
    """(CPU us per request, of it in user space and in the kernel, proxy core busy, load core
    busy, the load core's busy us per request) of one run."""
    hz, user, system, pb1, pt1, pb0, pt0, lb1, lt1, lb0, lt0 = map(int, usage.split())
    per_request = lambda ticks: ticks / hz * 1e6 / max(requests(text), 1)
    return (per_request(user + system), per_request(user), per_request(system),
            (pb1 - pb0) / (pt1 - pt0), (lb1 - lb0) / (lt1 - lt0), per_request(lb1 - lb0))


def cpu_table(work, ref, names):
    rows = {}
    for name in names:
        runs = [cpu(run.read_text(), run.with_suffix(".cpu").read_text())
                for run in sorted(work.glob(f"{name}.*.txt"))
                if run.with_suffix(".cpu").exists() and outcome(run.read_text())]
        # No CPU figure without the serving processes (`ss -p` needs root to name them).
        if not runs or any(run[0] == 0 for run in runs):
            return
        rows[name] = [statistics.median(column) for column in zip(*runs)]
    print(f"\n| target | CPU us per request | user | kernel | requests per CPU-second vs {ref} "
          "| proxy core busy | load core busy | load core us per request |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, (us, user, kernel, proxy_busy, load_busy, load_us) in rows.items():
        print(f"| {name} | {us:.1f} | {user:.1f} | {kernel:.1f} | {rows[ref][0] / us:.2f}x "
              f"| {proxy_busy:.0%} | {load_busy:.0%} | {load_us:.1f} |")


def best_peer(rows):
    """(name, req/s) of the faster of nginx and HAProxy, or None when neither ran."""
    peers = [(name, rows[name][0]) for name in PEERS if name in rows]
    return max(peers, key=lambda peer: peer[1]) if peers else None


def rounds_tables(work, ref, names):
    """Prints the req/s and CPU tables of one set of rounds; returns the medians by target
    (req/s, p50, p99, errors), leaving out targets none of whose runs left a report."""
    rows = {}
    for name in names:
        runs = [outcome(run.read_text()) for run in sorted(work.glob(f"{name}.*.txt"))]
        failed = sum(run is None for run in runs)
        runs = [run for run in runs if run]
        if not runs:
            print(f"\n{name}: no run left a usable report (the load tool said why, above)")
            continue
        if failed:
            print(f"\n{name}: {failed} of {failed + len(runs)} runs left no usable report; medians of the rest")
        rows[name] = (*(statistics.median(column) for column in list(zip(*runs))[:3]),
                      sum(run[3] for run in runs))
    if ref not in rows:
        ref = next(iter(rows), None)
    if ref is None:
        return rows
    print(f"\n| target | req/s (median) | p50 ms | p99 ms | errors | vs {ref} |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (rps, p50, p99, errs) in rows.items():
        print(f"| {name} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {errs} | {rps / rows[ref][0]:.2f}x |")
    if "fulcrum" in rows:
        ratios = [f"fulcrum/{name} {rows['fulcrum'][0] / rows[name][0]:.2f}x"
                  for name in rows if name not in ("fulcrum", "baseline")]
        if best := best_peer(rows):
            ratios.append(f"fulcrum / best peer ({best[0]}) {rows['fulcrum'][0] / best[1]:.2f}x")
        print("\nreq/s ratios (medians): " + ", ".join(ratios))
    cpu_table(work, ref, list(rows))
    return rows


def reference(names):
    """What the ratios are taken against: nginx when it ran, else HAProxy, else Fulcrum."""
    return next((peer for peer in PEERS if peer in names), "fulcrum")


def load_report(work):
    summary = []
    for line in (work / "workloads").read_text().splitlines():
        key, label, load, names = line.split("\t")
        names = names.split()
        print(f"\n### {label} (`{key}`: {load})")
        summary.append((label, rounds_tables(work / key, reference(names), names)))
    print("\n### Summary (median req/s)\n")
    print("| workload | fulcrum req/s | nginx | haproxy | fulcrum / best peer |")
    print("|---|---:|---:|---:|---:|")
    for label, rows in summary:
        rps = lambda name: f"{rows[name][0]:,.0f}" if name in rows else "-"
        best = best_peer(rows)
        ratio = f"{rows['fulcrum'][0] / best[1]:.2f}x" if best and "fulcrum" in rows else "-"
        print(f"| {label} | {rps('fulcrum')} | {rps('nginx')} | {rps('haproxy')} | {ratio} |")
    idle_tables(work / "idle")


def idle_tables(path):
    lines = [line.split() for line in path.read_text().splitlines()] if path.exists() else []
    for kind, what in (("plain", "idle connections"), ("tls", "idle TLS connections")):
        rows = [line for line in lines if line[0] == kind]
        if not rows:
            continue
        count = int(rows[0][1])
        print(f"\n| proxy | RSS before (KiB) | RSS with {count:,} {what} (KiB) | per connection |")
        print("|---|---:|---:|---:|")
        for _, _, name, before, after in rows:
            if after == "failed":
                print(f"| {name} | {before} | could not hold {count:,} connections | - |")
                continue
            per = (int(after) - int(before)) * 1024 / count
            print(f"| {name} | {before} | {after} | {per:,.0f} B |")


def main():
    if sys.argv[1] == "--load":
        load_report(pathlib.Path(sys.argv[2]))
        return
    work, ref, names = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    rounds_tables(work, ref, names)


if __name__ == "__main__":
    main()
