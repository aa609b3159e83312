#!/usr/bin/env bash
# User-space instructions per request: Fulcrum under valgrind's callgrind, counting only while
# wrk drives it (after a warm-up). Instruction counts barely move with the machine's noise, so
# this compares two builds where wall-clock rounds cannot (a few percent apart).
#
#   benches/instructions.sh                                   # this tree's release build
#   BASELINE=67eaf5a benches/instructions.sh                  # and a build of that revision
#   BASELINE=67eaf5a BASELINE_BIN=/tmp/fulcrum-67eaf5a benches/instructions.sh
#   REQUEST=benches/post.lua benches/instructions.sh          # a small POST
#   FULCRUM_BIN=/tmp/prof/release/fulcrum benches/instructions.sh  # another build (say, with
#     CARGO_PROFILE_RELEASE_DEBUG=line-tables-only, for callgrind_annotate by line)
#
# Prints, per build, the requests wrk made and instructions per request, and leaves the
# callgrind profile in the work directory's copy under /tmp (kept: see the last line) for
# callgrind_annotate. Needs wrk, nginx and valgrind (apt-get install -y wrk nginx valgrind).
# Everything binds and targets 127.0.0.1 only; each wrk run is bounded by DURATION.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-16}
LOAD_CPU=${LOAD_CPU:-1}
# A wrk script for the request made (default: wrk's GET of /, the plain exchange's path).
REQUEST=${REQUEST:-}
script=()
[ -n "$REQUEST" ] && script=(-s "$REQUEST")
BACKEND_PORT=${BACKEND_PORT:-18000}
command -v valgrind >/dev/null || { echo "valgrind is not installed: apt-get install -y valgrind" >&2; exit 1; }

# shellcheck source=benches/common.sh
source benches/common.sh
kept=$(mktemp -d /tmp/fulcrum-callgrind.XXXXXX)

start_backend "$BACKEND_PORT" "$LOAD_CPU"

measure() { # name binary port: instructions per request of one build
  local name=$1 binary=$2 port=$3
  render benches/peers/fulcrum.toml "$port" "$work/$name.toml"
  RUST_LOG=warn valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$work/$name.callgrind" "$binary" --config "$work/$name.toml" 2>/dev/null &
  local pid=$!
  pids+=("$pid")
  wait_port "$port"
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d1s "${script[@]}" "http://127.0.0.1:$port/" >/dev/null
  callgrind_control -i on "$pid" >/dev/null 2>&1
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" "${script[@]}" \
    "http://127.0.0.1:$port/" > "$work/$name.wrk"
  callgrind_control -d "$pid" >/dev/null 2>&1
  local requests instructions profile
  requests=$(awk '/requests in/ {print $1}' "$work/$name.wrk")
  profile=$(ls -S "$work/$name.callgrind".* | head -1)
  instructions=$(callgrind_annotate "$profile" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  cp "$profile" "$kept/$name.callgrind"
  kill "$pid" 2>/dev/null || true
  echo "$name: $requests requests, $((instructions / requests)) instructions per request"
}

measure fulcrum "${FULCRUM_BIN:-target/release/fulcrum}" 18001
if [ -n "${BASELINE:-}" ]; then
  build_baseline "$BASELINE"
  measure baseline "$(baseline_bin)" 18004
fi
echo "profiles: $kept (callgrind_annotate $kept/fulcrum.callgrind)"
