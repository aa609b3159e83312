#!/usr/bin/env bash
# Reloads under load: wrk drives GETs through Fulcrum while the config is rewritten and reloaded
# (SIGHUP) RELOADS times, alternating backend sets and strategies. Prints wrk's result; a clean
# run has no "Non-2xx" line and no "Socket errors" line.
#
#   benches/reload.sh                  # 20 reloads during a 12 s run
#
# Needs wrk and nginx (apt-get install -y wrk nginx). Everything stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

RELOADS=${RELOADS:-20}
DURATION=${DURATION:-12}
PORT=18101
BACKENDS=(18111 18112 18113)

# shellcheck source=benches/common.sh
source benches/common.sh
require_nginx

listen=""
for port in "${BACKENDS[@]}"; do listen+="        listen 127.0.0.1:$port;"$'\n'; done
cat > "$work/backends.conf" <<NGINX
worker_processes 1;
daemon off;
pid $work/backends.pid;
error_log $work/backends-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    server {
$listen        location / { return 200 "ok\n"; }
    }
}
NGINX
nginx -p "$work" -c "$work/backends.conf" & pids+=($!)

config() { # strategy backend-ports...
  local strategy=$1; shift
  local entries=()
  for port in "$@"; do entries+=("{ address = \"127.0.0.1:$port\" }"); done
  printf '[server]\nlisten = "127.0.0.1:%s"\n[log]\naccess = "off"\n[pool.web]\nstrategy = "%s"\nbackends = [%s]\n' \
    "$PORT" "$strategy" "$(IFS=,; echo "${entries[*]}")"
}
config round_robin 18111 18112 > "$work/proxy.toml"
RUST_LOG=info target/release/fulcrum --config "$work/proxy.toml" 2> "$work/fulcrum.log" & proxy=$!; pids+=($proxy)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done

wrk -t2 -c64 -d"${DURATION}s" "http://127.0.0.1:$PORT/" > "$work/wrk.txt" & wrk=$!
variants=("least_connections 18112 18113" "weighted 18111 18112 18113" "random 18113" "round_robin 18111 18113")
sleep 1
for i in $(seq "$RELOADS"); do
  # shellcheck disable=SC2086
  config ${variants[$((i % ${#variants[@]}))]} > "$work/proxy.toml.new"
  mv "$work/proxy.toml.new" "$work/proxy.toml"
  kill -HUP "$proxy"
  sleep "$(echo "($DURATION - 2) / $RELOADS" | bc -l)"
done
wait "$wrk"
cat "$work/wrk.txt"
echo "reloads requested: $RELOADS (SIGHUP; the file watch may add its own), accepted: $(grep -c "config reloaded" "$work/fulcrum.log")"
if grep -qE "Non-2xx|Socket errors" "$work/wrk.txt"; then echo "FAILED: errors during reloads"; exit 1; fi
echo "clean: zero non-2xx responses, zero socket errors"
