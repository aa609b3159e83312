#!/usr/bin/env bash
# End-to-end load benchmark: wrk straight at a backend, at Fulcrum, at nginx (as a bare keep-alive
# proxy, and again doing the header work Fulcrum does: peers/nginx-headers.conf) and at HAProxy (each
# proxy with one worker pinned to one core), in interleaved rounds, then medians and ratios.
#
#   benches/load.sh                     # 3 rounds of 10 s per target
#   ROUNDS=5 DURATION=20s benches/load.sh
#   BASELINE=b3896b8 benches/load.sh    # also a build of that git revision, as "baseline"
#   BASELINE=b3896b8 BASELINE_BIN=/tmp/fulcrum-b3896b8 benches/load.sh   # that build, already made
#
# Needs wrk; nginx and haproxy are measured when installed (apt-get install -y wrk nginx haproxy).
# Everything binds and targets 127.0.0.1 only. Each wrk run is bounded by DURATION.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
PROXY_CPU=${PROXY_CPU:-0}          # the one core every proxy runs on
LOAD_CPU=${LOAD_CPU:-1}            # wrk and the backend share the other(s)
BACKEND_PORT=${BACKEND_PORT:-18000}
FULCRUM_PORT=18001 NGINX_PORT=18002 HAPROXY_PORT=18003 BASELINE_PORT=18004 NGINX_HEADERS_PORT=18005

# shellcheck source=benches/common.sh
source benches/common.sh

start_backend "$BACKEND_PORT" "$LOAD_CPU"

targets=(direct:$BACKEND_PORT)
render benches/peers/fulcrum.toml "$FULCRUM_PORT" "$work/fulcrum.toml"
RUST_LOG=warn taskset -c "$PROXY_CPU" target/release/fulcrum --config "$work/fulcrum.toml" & pids+=($!)
targets+=(fulcrum:$FULCRUM_PORT)
if [ -n "${BASELINE:-}" ]; then
  build_baseline "$BASELINE"
  render benches/peers/fulcrum.toml "$BASELINE_PORT" "$work/baseline.toml"
  RUST_LOG=warn taskset -c "$PROXY_CPU" "$(baseline_bin)" --config "$work/baseline.toml" & pids+=($!)
  targets+=(baseline:$BASELINE_PORT)
fi
if command -v nginx >/dev/null; then
  render benches/peers/nginx.conf "$NGINX_PORT" "$work/nginx.conf"
  taskset -c "$PROXY_CPU" nginx -p "$work" -c "$work/nginx.conf" & pids+=($!)
  targets+=(nginx:$NGINX_PORT)
  render benches/peers/nginx-headers.conf "$NGINX_HEADERS_PORT" "$work/nginx-headers.conf"
  taskset -c "$PROXY_CPU" nginx -p "$work" -c "$work/nginx-headers.conf" & pids+=($!)
  targets+=(nginx-headers:$NGINX_HEADERS_PORT)
fi
if command -v haproxy >/dev/null; then
  render benches/peers/haproxy.cfg "$HAPROXY_PORT" "$work/haproxy.cfg"
  taskset -c "$PROXY_CPU" haproxy -f "$work/haproxy.cfg" -db & pids+=($!)
  targets+=(haproxy:$HAPROXY_PORT)
fi
for target in "${targets[@]}"; do wait_port "${target#*:}"; done

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "load: wrk -t1 -c$CONNECTIONS -d$DURATION, $ROUNDS interleaved rounds; proxies on cpu $PROXY_CPU, wrk+backend on cpu $LOAD_CPU"
rounds http "${targets[@]}"

# Memory per idle client connection: RSS of each proxy before and with IDLE keep-alive client
# connections open (each has made one request, then sits idle).
# HAProxy reserves two descriptors per maxconn, more than this machine's 20000 (ulimit -Hn) for
# 10000; its config lets it start anyway (`no strict-limits`): an idle client takes one.
IDLE=${IDLE:-10000}
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt $((IDLE + 100)) ]; then
  IDLE=$(($(ulimit -Hn) - 100))
  echo "idle connections: $IDLE, as many as this machine's descriptor limit ($(ulimit -Hn)) allows"
fi
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
proxy_pid() { # name -> the process serving connections (nginx: its worker)
  case $1 in
    fulcrum) pgrep -f "target/release/fulcrum --config $work/fulcrum.toml" | head -1 ;;
    baseline) pgrep -f -- "--config $work/baseline.toml" | head -1 ;;
    nginx) pgrep -P "$(cat "$work/nginx.pid")" | head -1 ;;
    haproxy) pgrep -f "haproxy -f $work/haproxy.cfg" | head -1 ;;
  esac
}
echo "idle connections: $IDLE per proxy" > "$work/idle.txt"
for target in "${targets[@]}"; do
  name=${target%%:*} port=${target#*:}
  # nginx-headers is nginx's binary and memory; only its per-request work differs.
  [ "$name" = direct ] || [ "$name" = nginx-headers ] && continue
  pid=$(proxy_pid "$name")
  before=$(rss_kib "$pid")
  coproc HOLD { python3 benches/idle_connections.py "$port" "$IDLE"; }
  ready=
  read -r ready <&"${HOLD[0]}" || true
  after=$(rss_kib "$pid")
  # A hold that failed (its reason is on stderr) costs this row only, not the rounds above.
  [[ $ready == "ready $IDLE" ]] || after=failed
  echo "$name $before $after" >> "$work/idle.txt"
  # bash unsets HOLD once the coprocess has exited: nothing is left to close then.
  [ -n "${HOLD[1]:-}" ] && exec {HOLD[1]}>&-
  wait "${HOLD_PID:-}" 2>/dev/null || true
done

names=("${targets[@]%%:*}")
ref=fulcrum
for peer in haproxy nginx; do [[ " ${names[*]} " == *" $peer "* ]] && ref=$peer; done
python3 benches/summary.py "$work" "$ref" "${names[@]}"
python3 - "$work" <<'PY'
import sys, pathlib
work = pathlib.Path(sys.argv[1])
idle = (work / "idle.txt").read_text().splitlines()
count = int(idle[0].split()[2])
print(f"\n| proxy | RSS before (KiB) | RSS with {count} idle connections (KiB) | per connection |")
print("|---|---:|---:|---:|")
for line in idle[1:]:
    name, before, after = line.split()
    if after == "failed":
        print(f"| {name} | {before} | could not hold {count} connections | - |")
        continue
    per = (int(after) - int(before)) * 1024 / count
    print(f"| {name} | {before} | {after} | {per:,.0f} B |")
PY
