# Shared by the benchmark scripts (sourced, not run): checks the tools, builds the release
# binary, and gives a work directory plus a `pids` array that are cleaned up on exit.
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install -y wrk" >&2; exit 1; }
command -v nginx >/dev/null || { echo "nginx is not installed: apt-get install -y nginx" >&2; exit 1; }

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

wait_port() { # port: wait until something listens on it
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$1" >&2; exit 1
}

rounds() { # scheme target... : ROUNDS interleaved wrk runs of DURATION per target (name:port),
  # each after a 1 s warm-up that fills keep-alive pools, into $work/NAME.ROUND.txt
  local scheme=$1; shift
  for round in $(seq "$ROUNDS"); do
    for target in "$@"; do
      local name=${target%%:*} port=${target#*:}
      taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d1s "$scheme://127.0.0.1:$port/" >/dev/null
      taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency \
        "$scheme://127.0.0.1:$port/" > "$work/$name.$round.txt"
      echo "round $round $name: $(grep Requests/sec "$work/$name.$round.txt" | awk '{print $2}') req/s"
    done
  done
}
