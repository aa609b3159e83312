#!/usr/bin/env bash
# TLS termination: wrk over HTTPS (keep-alive: one handshake per connection) at Fulcrum and at
# nginx, each with one worker pinned to the same core, the same ECDSA P-256 certificate and a
# plain-HTTP backend, in interleaved rounds; prints medians and the ratio.
#
#   benches/tls.sh                       # 3 rounds of 10 s
#
# Needs wrk, nginx and openssl. Everything binds and targets 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BACKEND_PORT=${BACKEND_PORT:-18400}
FULCRUM_PORT=18401 NGINX_PORT=18402

# shellcheck source=benches/common.sh
source benches/common.sh
require_nginx
make_certificate

render benches/peers/backend-nginx.conf "$BACKEND_PORT" "$work/backend.conf"
taskset -c "$LOAD_CPU" nginx -p "$work" -c "$work/backend.conf" & pids+=($!)
wait_port "$BACKEND_PORT"
render benches/peers/fulcrum-tls.toml "$FULCRUM_PORT" "$work/fulcrum-tls.toml"
sed -i "s|@PLAIN@|$((FULCRUM_PORT + 10))|" "$work/fulcrum-tls.toml"
RUST_LOG=warn taskset -c "$PROXY_CPU" target/release/fulcrum --config "$work/fulcrum-tls.toml" & pids+=($!)
render benches/peers/nginx-tls.conf "$NGINX_PORT" "$work/nginx-tls.conf"
taskset -c "$PROXY_CPU" nginx -p "$work" -c "$work/nginx-tls.conf" & pids+=($!)
targets=("fulcrum:$FULCRUM_PORT" "nginx:$NGINX_PORT")
for target in "${targets[@]}"; do wait_port "${target#*:}"; done

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "load: wrk -t1 -c$CONNECTIONS -d$DURATION over HTTPS, $ROUNDS interleaved rounds; proxies on cpu $PROXY_CPU"
rounds "$work" https / "${targets[@]}"

python3 benches/summary.py "$work" nginx "${targets[@]%%:*}"
