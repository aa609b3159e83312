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
#   PROTOCOL=h2 benches/instructions.sh    # GETs over HTTP/2 on the TLS listener: h2load
#     -c32 -m8, H2_REQUESTS of them (40000) counted after half as many to warm up; needs
#     nghttp2-client and openssl
#   PEERS=1 benches/instructions.sh        # also nginx and HAProxy, counted the same way, as
#     load.sh runs them (benches/peers/; nginx with `master_process off`, so that its one
#     worker is the process counted); needs haproxy
#
# Prints, per server, the requests wrk made and instructions per request, and leaves the
# callgrind profile in the work directory's copy under /tmp (kept: see the last line) for
# callgrind_annotate. Needs wrk, nginx and valgrind (apt-get install -y wrk nginx valgrind).
# Everything binds and targets 127.0.0.1 only; each wrk run is bounded by DURATION.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-16}
LOAD_CPU=${LOAD_CPU:-1}
# A wrk script for the request made (default: wrk's GET of /).
REQUEST=${REQUEST:-}
script=()
[ -n "$REQUEST" ] && script=(-s "$REQUEST")
BACKEND_PORT=${BACKEND_PORT:-18000}
PROTOCOL=${PROTOCOL:-http1}
H2_REQUESTS=${H2_REQUESTS:-40000}
command -v valgrind >/dev/null || { echo "valgrind is not installed: apt-get install -y valgrind" >&2; exit 1; }

# shellcheck source=benches/common.sh
source benches/common.sh
kept=$(mktemp -d /tmp/fulcrum-callgrind.XXXXXX)

start_backend "$BACKEND_PORT" "$LOAD_CPU"
if [ "$PROTOCOL" = h2 ]; then make_certificate; fi

drive() { # port output [warm]: the load, written to output; "warm" for the warm-up before counting
  local port=$1 output=$2 warm=${3:-}
  if [ "$PROTOCOL" = h2 ]; then
    local count=$H2_REQUESTS
    [ -n "$warm" ] && count=$((H2_REQUESTS / 2))
    taskset -c "$LOAD_CPU" h2load -t1 -c32 -m8 -n "$count" "https://127.0.0.1:$port/" > "$output" 2>&1
  elif [ -n "$warm" ]; then
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d1s "${script[@]}" "http://127.0.0.1:$port/" > "$output"
  else
    taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" "${script[@]}" \
      "http://127.0.0.1:$port/" > "$output"
  fi
}

fulcrum() { # name binary port: instructions per request of one build of Fulcrum
  local name=$1 binary=$2 port=$3
  if [ "$PROTOCOL" = h2 ]; then
    render benches/peers/fulcrum-tls.toml "$port" "$work/$name.toml"
    sed -i "s|@PLAIN@|$((port + 10))|" "$work/$name.toml"
  else
    render benches/peers/fulcrum.toml "$port" "$work/$name.toml"
  fi
  RUST_LOG=warn measure "$name" "$port" "$binary" --config "$work/$name.toml"
}

peers() { # instructions per request of nginx and HAProxy, with load.sh's configurations
  require_nginx
  command -v haproxy >/dev/null || { echo "haproxy is not installed: apt-get install -y haproxy" >&2; exit 1; }
  local tls=''
  if [ "$PROTOCOL" = h2 ]; then tls=-tls; fi
  render "benches/peers/nginx$tls.conf" 18002 "$work/nginx.conf"
  sed -i '1i master_process off;' "$work/nginx.conf"
  measure nginx 18002 nginx -p "$work" -c "$work/nginx.conf"
  render "benches/peers/haproxy$tls.cfg" 18003 "$work/haproxy.cfg"
  measure haproxy 18003 haproxy -f "$work/haproxy.cfg" -db
}

measure() { # name port command...: instructions per request of the server the command starts
  local name=$1 port=$2
  shift 2
  valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$work/$name.callgrind" "$@" 2>/dev/null &
  local pid=$!
  pids+=("$pid")
  wait_port "$port"
  drive "$port" /dev/null warm
  callgrind_control -i on "$pid" >/dev/null 2>&1
  drive "$port" "$work/$name.load"
  callgrind_control -d "$pid" >/dev/null 2>&1
  local requests instructions profile
  if [ "$PROTOCOL" = h2 ]; then
    requests=$(awk '/^requests:/ {print $8}' "$work/$name.load")
  else
    requests=$(awk '/requests in/ {print $1}' "$work/$name.load")
  fi
  profile=$(ls -S "$work/$name.callgrind".* | head -1)
  instructions=$(callgrind_annotate "$profile" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  cp "$profile" "$kept/$name.callgrind"
  kill "$pid" 2>/dev/null || true
  echo "$name: $requests requests, $((instructions / requests)) instructions per request"
}

fulcrum fulcrum "${FULCRUM_BIN:-target/release/fulcrum}" 18001
if [ -n "${BASELINE:-}" ]; then
  build_baseline "$BASELINE"
  fulcrum baseline "$(baseline_bin)" 18004
fi
if [ -n "${PEERS:-}" ]; then peers; fi
echo "profiles: $kept (callgrind_annotate $kept/fulcrum.callgrind)"
