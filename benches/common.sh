# Shared by the benchmark scripts (sourced, not run): checks the tools, builds the release
# binary, and gives a work directory plus a `pids` array that are cleaned up on exit.
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install -y wrk" >&2; exit 1; }
command -v nginx >/dev/null || { echo "nginx is not installed: apt-get install -y nginx" >&2; exit 1; }

cargo build --release --quiet --bin fulcrum
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
