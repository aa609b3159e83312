# Shared by the benchmark scripts (sourced, not run): checks the tools, builds the release
# binary, and gives a work directory plus a `pids` array that are cleaned up on exit.
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install -y wrk" >&2; exit 1; }
command -v nginx >/dev/null || { echo "nginx is not installed: apt-get install -y nginx" >&2; exit 1; }

cargo build --release --quiet --bin fulcrum
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

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
