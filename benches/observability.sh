#!/usr/bin/env bash
# What observability costs: wrk against Fulcrum as benches/load.sh runs it (metrics on, access
# log off), with the access log on (JSON to a file), and, when BASELINE is set, against a build
# of that git revision (e.g. one from before metrics existed), in interleaved rounds, each proxy
# on the same single core. Prints median req/s, p99 and the ratios to the first variant.
#
#   benches/observability.sh
#   BASELINE=ffa2cd4 ROUNDS=5 benches/observability.sh
#
# Needs wrk and nginx (the backend). Everything binds and targets 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BACKEND_PORT=${BACKEND_PORT:-18200}

# shellcheck source=benches/common.sh
source benches/common.sh

start_backend "$BACKEND_PORT" "$LOAD_CPU"

start() { # name port binary [extra config]
  render benches/peers/fulcrum.toml "$2" "$work/$1.toml"
  if [ -n "${4:-}" ]; then sed -i "s|^access = \"off\"|$4|" "$work/$1.toml"; fi
  RUST_LOG=warn taskset -c "$PROXY_CPU" "$3" --config "$work/$1.toml" & pids+=($!)
  targets+=("$1:$2")
}
targets=()
start metrics 18201 target/release/fulcrum
start access_log 18202 target/release/fulcrum "access = \"json\"\naccess_path = \"$work/access.log\""
if [ -n "${BASELINE:-}" ]; then
  build_baseline "$BASELINE"
  # A revision from before [log] existed knows no such table.
  render benches/peers/fulcrum.toml 18203 "$work/baseline.toml"
  sed -i '/^\[log\]$/d; /^access = /d' "$work/baseline.toml"
  RUST_LOG=warn taskset -c "$PROXY_CPU" "$(baseline_bin)" --config "$work/baseline.toml" & pids+=($!)
  targets+=("baseline:18203")
fi
for target in "${targets[@]}"; do wait_port "${target#*:}"; done

echo "load: wrk -t1 -c$CONNECTIONS -d$DURATION, $ROUNDS interleaved rounds; proxies on cpu $PROXY_CPU"
rounds "$work" http / "${targets[@]}"
echo "access log lines written: $(wc -l < "$work/access.log")"

ref=metrics; [ -n "${BASELINE:-}" ] && ref=baseline
python3 benches/summary.py "$work" "$ref" "${targets[@]%%:*}"
