#!/usr/bin/env bash
# End-to-end load benchmark: Fulcrum against nginx and HAProxy (each proxy with one worker pinned
# to one core) on the workloads below, in interleaved rounds per workload; then, per workload, the
# medians, the CPU each proxy spent per request and Fulcrum's ratio to the best peer, a summary
# table, and the memory an idle client connection costs each proxy, plain and over TLS.
#
#   benches/load.sh                     # every workload, 3 rounds of 10 s per target
#   WORKLOADS=get,h2 ROUNDS=5 DURATION=20s benches/load.sh
#   BASELINE=b3896b8 benches/load.sh    # also a build of that git revision, as "baseline"
#   BASELINE=b3896b8 BASELINE_BIN=/tmp/fulcrum-b3896b8 benches/load.sh   # that build, already made
#
# Workloads (WORKLOADS, comma-separated, in this order by default):
#   get    keep-alive GET of /, the backend answers 13 bytes            wrk -t1 -cCONNECTIONS
#   post   keep-alive POST with a 1 KiB body (benches/post-1k.lua), 13 bytes back      wrk
#   64k    keep-alive GET of /64k, a 64 KiB body                                       wrk
#   close  GET of / with `Connection: close`: a new client connection per request     wrk
#   https  keep-alive GET of / over TLS to the proxy (plain HTTP to the backend)       wrk
#   h2     HTTP/2 over TLS (ALPN h2), GET of /        h2load -t1 -cH2_CLIENTS(32) -mH2_STREAMS(8)
# `direct` (straight at the backend) is measured in the plain workloads; `nginx-headers` (nginx
# doing the header work Fulcrum does, peers/nginx-headers.conf) and `fulcrum-rules` (Fulcrum with
# 20 header rules on its route, peers/fulcrum-rules.toml: their cost) in `get`.
#
# Then the RSS an idle client connection costs: IDLE (10000) plain keep-alive connections and
# TLS_IDLE (2000) TLS ones, each after one request (0 skips; each measured when a workload of its
# kind ran).
#
# Needs wrk, and openssl and h2load for the TLS workloads; nginx and haproxy are measured when
# installed (apt-get install -y wrk nginx haproxy nghttp2-client). Everything binds and targets
# 127.0.0.1 only. Each run is bounded by DURATION.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
H2_CLIENTS=${H2_CLIENTS:-32}
H2_STREAMS=${H2_STREAMS:-8}
WORKLOADS=${WORKLOADS:-get,post,64k,close,https,h2}
PROXY_CPU=${PROXY_CPU:-0}          # the one core every proxy runs on
LOAD_CPU=${LOAD_CPU:-1}            # the load generator and the backend share the other(s)
BACKEND_PORT=${BACKEND_PORT:-18000}
# Plain listeners on 180x, TLS ones on 181x (a Fulcrum TLS config's unused plain listener: 182x).
FULCRUM_PORT=18001 NGINX_PORT=18002 HAPROXY_PORT=18003 BASELINE_PORT=18004 NGINX_HEADERS_PORT=18005
RULES_PORT=18006
TLS_OFFSET=10

declare -A label=(
  [get]="GET 13 B" [post]="POST 1 KiB" [64k]="64 KiB response"
  [close]="new connection per request" [https]="HTTPS keep-alive" [h2]="HTTP/2 over TLS")
IFS=, read -r -a workloads <<< "$WORKLOADS"
want_plain='' want_tls=''
for workload in "${workloads[@]}"; do
  case $workload in
    get | post | 64k | close) want_plain=1 ;;
    https | h2) want_tls=1 ;;
    *) echo "unknown workload '$workload' in WORKLOADS: choose from get,post,64k,close,https,h2" >&2; exit 1 ;;
  esac
done
if [[ ",$WORKLOADS," == *,h2,* ]] && ! command -v h2load >/dev/null; then
  echo "h2load is not installed: apt-get install -y nghttp2-client (or leave h2 out of WORKLOADS)" >&2
  exit 1
fi

# shellcheck source=benches/common.sh
source benches/common.sh

start_backend "$BACKEND_PORT" "$LOAD_CPU"
[ -n "$want_tls" ] && make_certificate
[ -n "${BASELINE:-}" ] && build_baseline "$BASELINE"

# Proxies, started for the kinds of workload chosen: `plain` and `tls` list their targets
# (name:port); `started` keeps each one's pid by name and kind (nginx: its master).
plain=() tls=()
declare -A started=()
proxy() { # name kind (plain or tls) port template: renders a peer's config from benches/peers/
  # and starts it on the proxy core
  local name=$1 kind=$2 port=$3 template=benches/peers/$4
  local config=$work/$name-$kind.${4##*.}
  render "$template" "$port" "$config"
  sed -i "s|@PLAIN@|$((port + TLS_OFFSET))|" "$config"
  case $name in
    fulcrum*) RUST_LOG=warn taskset -c "$PROXY_CPU" target/release/fulcrum --config "$config" & ;;
    baseline) RUST_LOG=warn taskset -c "$PROXY_CPU" "$(baseline_bin)" --config "$config" & ;;
    nginx*) taskset -c "$PROXY_CPU" nginx -p "$work" -c "$config" & ;;
    haproxy) taskset -c "$PROXY_CPU" haproxy -f "$config" -db & ;;
  esac
  pids+=($!)
  started[$name-$kind]=$!
  if [ "$kind" = plain ]; then plain+=("$name:$port"); else tls+=("$name:$port"); fi
}
if [ -n "$want_plain" ]; then
  plain+=("direct:$BACKEND_PORT")
  proxy fulcrum plain "$FULCRUM_PORT" fulcrum.toml
  proxy fulcrum-rules plain "$RULES_PORT" fulcrum-rules.toml
  [ -n "${BASELINE:-}" ] && proxy baseline plain "$BASELINE_PORT" fulcrum.toml
  if command -v nginx >/dev/null; then
    proxy nginx plain "$NGINX_PORT" nginx.conf
    proxy nginx-headers plain "$NGINX_HEADERS_PORT" nginx-headers.conf
  fi
  command -v haproxy >/dev/null && proxy haproxy plain "$HAPROXY_PORT" haproxy.cfg
fi
if [ -n "$want_tls" ]; then
  proxy fulcrum tls $((FULCRUM_PORT + TLS_OFFSET)) fulcrum-tls.toml
  [ -n "${BASELINE:-}" ] && proxy baseline tls $((BASELINE_PORT + TLS_OFFSET)) fulcrum-tls.toml
  command -v nginx >/dev/null && proxy nginx tls $((NGINX_PORT + TLS_OFFSET)) nginx-tls.conf
  command -v haproxy >/dev/null && proxy haproxy tls $((HAPROXY_PORT + TLS_OFFSET)) haproxy-tls.cfg
fi
for target in "${plain[@]}" "${tls[@]}"; do wait_port "${target#*:}"; done

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "proxies on cpu $PROXY_CPU, load and backend on cpu $LOAD_CPU; $ROUNDS interleaved rounds of $DURATION per target and workload"
# One line per workload for summary.py: key, label, the load, its targets' names.
: > "$work/workloads"
for workload in "${workloads[@]}"; do
  scheme=http path=/ targets=("${plain[@]}")
  case $workload in
    get) load=(wrk_load) ;;
    post) load=(wrk_load -s benches/post-1k.lua) ;;
    64k) load=(wrk_load) path=/64k ;;
    close) load=(wrk_load -H "Connection: close") ;;
    https) load=(wrk_load) scheme=https targets=("${tls[@]}") ;;
    h2) load=(h2_load -c"$H2_CLIENTS" -m"$H2_STREAMS") scheme=https targets=("${tls[@]}") ;;
  esac
  if [ "$workload" != get ]; then # nginx-headers and fulcrum-rules answer header-work questions:
    kept=()                       # once is enough
    for target in "${targets[@]}"; do
      [[ $target == nginx-headers:* || $target == fulcrum-rules:* ]] || kept+=("$target")
    done
    targets=("${kept[@]}")
  fi
  case ${load[0]} in
    wrk_load) tool="wrk -t1 -c$CONNECTIONS${load[1]:+ ${load[*]:1}}" ;;
    h2_load) tool="h2load -t1 ${load[*]:1}" ;;
  esac
  echo
  echo "== $workload (${label[$workload]}): $tool $scheme://127.0.0.1:PORT$path"
  rounds "$work/$workload" "$scheme" "$path" "${targets[@]}"
  printf '%s\t%s\t%s\t%s\n' "$workload" "${label[$workload]}" "$tool $path" "${targets[*]%%:*}" >> "$work/workloads"
done

# Memory per idle client connection: RSS of each proxy before and with COUNT idle client
# connections open (each has made one request, then sits idle), on its plain listener and on its
# TLS one. HAProxy reserves two descriptors per maxconn, more than this machine's 20000 (ulimit
# -Hn) for 10000; its config lets it start anyway (`no strict-limits`): an idle client takes one.
IDLE=${IDLE:-10000}
TLS_IDLE=${TLS_IDLE:-2000}
limit=$(ulimit -Hn)
for count in IDLE TLS_IDLE; do
  if [ "$limit" != unlimited ] && [ "${!count}" -gt $((limit - 100)) ]; then
    printf -v "$count" %d $((limit - 100))
    echo "$count: ${!count}, as many as this machine's descriptor limit ($limit) allows"
  fi
done
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
serving_pid() { # name-kind: the process that holds its client connections (nginx: its worker)
  case $1 in
    nginx*) pgrep -P "${started[$1]}" | head -1 ;;
    *) echo "${started[$1]}" ;;
  esac
}
hold_idle() { # kind count target...: one line per proxy into $work/idle
  local kind=$1 count=$2; shift 2
  [ "$count" -gt 0 ] || return 0
  local flag=(); [ "$kind" = tls ] && flag=(--tls)
  for target in "$@"; do
    local name=${target%%:*} port=${target#*:}
    # nginx-headers is nginx's binary and memory; only its per-request work differs.
    [ "$name" = direct ] || [ "$name" = nginx-headers ] || [ "$name" = fulcrum-rules ] && continue
    local pid before after ready=""
    pid=$(serving_pid "$name-$kind")
    before=$(rss_kib "$pid")
    coproc HOLD { python3 benches/idle_connections.py "${flag[@]}" "$port" "$count"; }
    read -r ready <&"${HOLD[0]}" || true
    after=$(rss_kib "$pid")
    # A hold that failed (its reason is on stderr) costs this row only, not the rounds above.
    [[ $ready == "ready $count" ]] || after=failed
    echo "$kind $count $name $before $after" >> "$work/idle"
    # bash unsets HOLD once the coprocess has exited: nothing is left to close then.
    local input=${HOLD[1]:-}
    [ -n "$input" ] && exec {input}>&-
    wait "${HOLD_PID:-}" 2>/dev/null || true
  done
}
: > "$work/idle"
hold_idle plain "$IDLE" "${plain[@]}"
hold_idle tls "$TLS_IDLE" "${tls[@]}"

python3 benches/summary.py --load "$work"
