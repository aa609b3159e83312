#!/usr/bin/env bash
# Overload: what a proxy does for a backend that is offered more than it can serve. The backend
# (examples/capacity_backend.rs) processes CONCURRENCY requests at once, SERVICE_MS each (8 and
# 10 ms: 800 req/s), and queues the rest inside itself, as a saturated server does. An open-loop
# load (examples/openloop.rs: a fixed rate whatever the latency, each request's latency counted
# from its intended send time; x-priority 10% critical, 20% high, 40% normal, 30% low) is offered
# at LOADS times that capacity (0.5, 1, 2, 3), for DURATION each, through:
#   fulcrum-overload  Fulcrum with [pool.bench.overload]: max_in_flight = CONCURRENCY, queue =
#                     QUEUE, queue_timeout = "1s"; x-priority trusted from 127.0.0.1
#                     (peers/fulcrum-overload.toml). Run only when this build accepts that config.
#   fulcrum           Fulcrum as load.sh runs it: no overload protection (peers/fulcrum.toml)
#   haproxy           `maxconn CONCURRENCY maxqueue QUEUE` on the server, `timeout queue 1s`, and
#                     x-priority as set-priority-class (peers/haproxy-overload.cfg)
#   nginx             `max_conns=CONCURRENCY` on the server; open-source nginx has no queue and no
#                     priorities (peers/nginx-overload.conf)
# then a markdown table: per load and target, per priority the share answered 2xx, their p50 and
# p99 and the count shed (503); the goodput (2xx/s) and the p99 of shed answers.
#
#   benches/overload.sh
#   DURATION=5s LOADS=1,3 benches/overload.sh
#   CARGO_TARGET_DIR=/tmp/t benches/overload.sh     # builds and runs from that target directory
#   OUT=/tmp/overload benches/overload.sh           # also keeps each run's JSON and table there
#
# Each run lasts at most DURATION + TIMEOUT (the generator's per-request timeout, 5 s), then the
# backend works off what it still holds before the next. Each proxy runs on PROXY_CPU (one
# worker), backend and generator share LOAD_CPU (with taskset, when installed). nginx and HAProxy
# are measured when installed (apt-get install -y nginx haproxy). Everything binds and targets
# 127.0.0.1 only, and every process started is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
TIMEOUT=${TIMEOUT:-5s}
LOADS=${LOADS:-0.5,1,2,3}
CONCURRENCY=${CONCURRENCY:-8}
SERVICE_MS=${SERVICE_MS:-10}
# About 80 ms of the backend's capacity: well within the 1 s queue timeout, so that what cannot
# be served is refused at once rather than after waiting the whole timeout (README: sizing the
# queue).
QUEUE=${QUEUE:-64}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BACKEND_PORT=${BACKEND_PORT:-18300}
FULCRUM_OVERLOAD_PORT=18301 FULCRUM_PORT=18302 HAPROXY_PORT=18303 NGINX_PORT=18304

# shellcheck source=benches/common.sh
source benches/common.sh
cargo build --release --quiet --example capacity_backend --example openloop
release=${CARGO_TARGET_DIR:-target}/release
# nginx's workers run as another user (www-data): they may pass through the work directory.
chmod 711 "$work"

pin_proxy=() pin_load=()
if command -v taskset >/dev/null; then
  pin_proxy=(taskset -c "$PROXY_CPU") pin_load=(taskset -c "$LOAD_CPU")
else
  echo "taskset is not installed: processes are not pinned to cores"
fi

"${pin_load[@]}" "$release/examples/capacity_backend" --listen "127.0.0.1:$BACKEND_PORT" \
  --concurrency "$CONCURRENCY" --service-ms "$SERVICE_MS" & pids+=($!)
capacity=$((CONCURRENCY * 1000 / SERVICE_MS))

targets=()
proxy() { # name port template: renders a peer's config from benches/peers/ and starts it on the
  # proxy core
  local name=$1 port=$2 config=$work/$1.${3##*.}
  render "benches/peers/$3" "$port" "$config"
  sed -i -e "s|@CONCURRENCY@|$CONCURRENCY|g" -e "s|@QUEUE@|$QUEUE|g" "$config"
  case $name in
    fulcrum*)
      # Until this build has overload protection, it refuses the [overload] table.
      if ! "$release/fulcrum" --config "$config" --check > "$work/$name.check" 2>&1; then
        echo "$name: skipped, this build refuses its config: $(grep -m1 . "$work/$name.check")"
        return 0
      fi
      RUST_LOG=warn "${pin_proxy[@]}" "$release/fulcrum" --config "$config" & ;;
    haproxy) "${pin_proxy[@]}" haproxy -f "$config" -db & ;;
    nginx) "${pin_proxy[@]}" nginx -p "$work" -c "$config" & ;;
  esac
  pids+=($!)
  targets+=("$name:$port")
}
proxy fulcrum-overload "$FULCRUM_OVERLOAD_PORT" fulcrum-overload.toml
proxy fulcrum "$FULCRUM_PORT" fulcrum.toml
if command -v haproxy >/dev/null; then
  proxy haproxy "$HAPROXY_PORT" haproxy-overload.cfg
else
  echo "haproxy is not installed: skipped (apt-get install -y haproxy)"
fi
if command -v nginx >/dev/null; then
  proxy nginx "$NGINX_PORT" nginx-overload.conf
else
  echo "nginx is not installed: skipped (apt-get install -y nginx)"
fi
wait_port "$BACKEND_PORT"
for target in "${targets[@]}"; do wait_port "${target#*:}"; done

drain() { # waits until the backend has worked off every request it holds: its queue is FIFO, so
  # a request straight to it is answered after all of them. Proxies may still hand it requests
  # queued for clients that left (HAProxy, for up to its `timeout queue`): those go first.
  sleep 1
  curl -sf -o /dev/null -m 120 "http://127.0.0.1:$BACKEND_PORT/" \
    || echo "the backend did not answer within 120 s" >&2
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "backend: $CONCURRENCY at once, $SERVICE_MS ms each ($capacity req/s); proxies on cpu $PROXY_CPU," \
  "backend and load on cpu $LOAD_CPU; $DURATION per load and target, timeout $TIMEOUT"
# One line per run for overload_summary.py: load, rate, target, the generator's JSON.
: > "$work/runs"
IFS=, read -r -a loads <<< "$LOADS"
for load in "${loads[@]}"; do
  rate=$(awk -v c="$capacity" -v l="$load" 'BEGIN { printf "%d", c * l }')
  echo
  echo "== ${load}x capacity: $rate req/s"
  for target in "${targets[@]}"; do
    name=${target%%:*} port=${target#*:} out=$work/$load-${target%%:*}
    "${pin_load[@]}" "$release/examples/openloop" --target "127.0.0.1:$port" --rate "$rate" \
      --duration "$DURATION" --timeout "$TIMEOUT" > "$out.json" 2> "$out.txt" \
      || { echo "$name: the load generator failed:" >&2; cat "$out.txt" >&2; exit 1; }
    echo "$name: $(grep -m1 '^goodput' "$out.txt")"
    printf '%s\t%s\t%s\t%s\n' "$load" "$rate" "$name" "$out.json" >> "$work/runs"
    drain
  done
done

echo
python3 benches/overload_summary.py "$work/runs"
if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  cp "$work"/*.json "$work"/*.txt "$OUT/"
  sed "s|$work/|$OUT/|" "$work/runs" > "$OUT/runs"
  echo
  echo "runs kept in $OUT (python3 benches/overload_summary.py $OUT/runs)"
fi
