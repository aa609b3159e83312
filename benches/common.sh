# shellcheck shell=bash
# Shared by the benchmark scripts (sourced, not run): checks the tools, builds the release
# binary, and gives a work directory plus a `pids` array that are cleaned up on exit.
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install -y wrk" >&2; exit 1; }
require_nginx() { # for the scripts that need nginx itself (as a peer, or several backends)
  command -v nginx >/dev/null || { echo "nginx is not installed: apt-get install -y nginx" >&2; exit 1; }
}

cargo build --release --quiet --bin fulcrum
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -d "$work/baseline" ]; then git worktree remove --force "$work/baseline" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

build_baseline() { # git revision: builds its release binary into $work/baseline-target, unless
  # BASELINE_BIN names a binary already built (of that revision, say)
  [ -n "${BASELINE_BIN:-}" ] && return 0
  git worktree add -f "$work/baseline" "$1" -q
  (cd "$work/baseline" && CARGO_TARGET_DIR="$work/baseline-target" cargo build --release --quiet --bin fulcrum)
}
baseline_bin() { echo "${BASELINE_BIN:-$work/baseline-target/release/fulcrum}"; }

render() { # template port -> file, with @DIR@, @PORT@ and @BACKEND@ filled in
  sed -e "s|@DIR@|$work|g" -e "s|@PORT@|$2|g" -e "s|@BACKEND@|$BACKEND_PORT|g" "$1" > "$3"
}

start_backend() { # port cpu: the fast backend, fixed responses (13 bytes on /, 64 KiB on /64k):
  # nginx when installed, else the minimal hyper server in examples/bench_backend.rs
  # nginx's workers run as another user (www-data): they may pass through the work directory.
  chmod 711 "$work"
  mkdir -p "$work/www"
  head -c 65536 /dev/zero | tr '\0' x > "$work/www/64k"
  if command -v nginx >/dev/null; then
    render benches/peers/backend-nginx.conf "$1" "$work/backend.conf"
    taskset -c "$2" nginx -p "$work" -c "$work/backend.conf" & pids+=($!)
    echo "backend: nginx $(nginx -v 2>&1 | cut -d/ -f2), fixed responses"
  else
    cargo build --release --quiet --example bench_backend
    taskset -c "$2" target/release/examples/bench_backend "127.0.0.1:$1" & pids+=($!)
    echo "backend: examples/bench_backend.rs (hyper; nginx is not installed), fixed responses"
  fi
  wait_port "$1"
}

wait_port() { # port: wait until something listens on it
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$1" >&2; exit 1
}

port_pids() { # port: the processes holding its listening socket (nginx: master and worker)
  ss -Hltnp "sport = :$1" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u
}

cpu_ticks() { # pid...: "user system" clock ticks they have used so far, summed
  local user=0 system=0 pid
  for pid in "$@"; do
    user=$((user + $(awk '{print $14}' "/proc/$pid/stat")))
    system=$((system + $(awk '{print $15}' "/proc/$pid/stat")))
  done
  echo "$user $system"
}

core_ticks() { # cpu: "busy total" clock ticks of that core so far (busy: all but idle and iowait)
  awk -v core="cpu$1" '$1 == core {t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t}' /proc/stat
}

make_certificate() { # a self-signed ECDSA P-256 certificate for the TLS peers: $work/cert.pem and
  # key.pem, and both in one file (cert-key.pem) for HAProxy
  command -v openssl >/dev/null || { echo "openssl is not installed" >&2; exit 1; }
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=bench.test -addext subjectAltName=DNS:bench.test \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
  cat "$work/cert.pem" "$work/key.pem" > "$work/cert-key.pem"
}

# One load run against a URL: `wrk_load` or `h2_load`, called as LOAD DURATION URL OUTPUT ARG...,
# both on the load core. `rounds` runs the one in `load` (a command and its extra arguments; the
# workloads of load.sh set it), by default wrk's keep-alive GET.
load=(wrk_load)
wrk_load() { # duration url output wrk-arg...: wrk -t1 -cCONNECTIONS, its report with --latency
  local duration=$1 url=$2 output=$3; shift 3
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"$duration" --latency "$@" "$url" > "$output"
}
h2_load() { # duration url output h2load-arg...: one h2load run (HTTP/2; ALPN h2 over TLS). h2load
  # reports no percentiles: they are taken from its per-request log and appended to its report in
  # wrk's form ("    50%  123us"), so the summaries read both alike
  local duration=$1 url=$2 output=$3; shift 3
  taskset -c "$LOAD_CPU" h2load -t1 -D "$duration" --log-file="$output.log" "$@" "$url" > "$output"
  # h2load falls back to HTTP/1.1 when the server offers no h2: such a run is not this workload
  # (summary.py leaves it out).
  grep -q '^Application protocol: h2$' "$output" || echo "h2load: $url did not negotiate h2" >&2
  # The log's third column: microseconds from a request's start to the end of its response.
  cut -f3 "$output.log" | sort -n | awk '
    { v[NR] = $1 }
    function at(p,  i) { i = int(NR * p); if (i < NR * p) i++; return v[i < 1 ? 1 : i] }
    END { if (NR) printf "Latency Distribution (h2load log)\n     50%%  %dus\n     99%%  %dus\n", at(0.5), at(0.99) }
  ' >> "$output"
  rm -f "$output.log"
}
requests_per_second() { # report: the req/s a wrk or h2load report gives
  awk '/^Requests\/sec:/ {print $2} /^finished in/ {print $4}' "$1"
}

rounds() { # dir scheme path target...: ROUNDS interleaved runs of `load` for DURATION against
  # each target (name:port) at scheme://127.0.0.1:port/path, each after a 1 s warm-up of the same
  # load (which fills keep-alive pools), into DIR/NAME.ROUND.txt; beside it, NAME.ROUND.cpu: the
  # clock ticks the target's processes used during the run (user, system) and how busy the
  # proxy's and the load's cores were (when the load's core is saturated, the load is the bottleneck)
  local dir=$1 scheme=$2 path=$3; shift 3
  mkdir -p "$dir"
  for round in $(seq "$ROUNDS"); do
    for target in "$@"; do
      local name=${target%%:*} port=${target#*:}
      local url="$scheme://127.0.0.1:$port$path"
      "${load[0]}" 1s "$url" "$dir/$name.warmup" "${load[@]:1}"
      local serving user system now_user now_system proxy_core load_core
      serving=$(port_pids "$port")
      # shellcheck disable=SC2086 # one pid per word
      read -r user system < <(cpu_ticks $serving)
      proxy_core=$(core_ticks "$PROXY_CPU") load_core=$(core_ticks "$LOAD_CPU")
      # shellcheck disable=SC2153 # DURATION: the sourcing script's
      "${load[0]}" "$DURATION" "$url" "$dir/$name.$round.txt" "${load[@]:1}"
      # shellcheck disable=SC2086
      read -r now_user now_system < <(cpu_ticks $serving)
      echo "$(getconf CLK_TCK) $((now_user - user)) $((now_system - system))" \
        "$(core_ticks "$PROXY_CPU") $proxy_core $(core_ticks "$LOAD_CPU") $load_core" > "$dir/$name.$round.cpu"
      echo "round $round $name: $(requests_per_second "$dir/$name.$round.txt") req/s"
    done
  done
}
