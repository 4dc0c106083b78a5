# Helpers shared by the etcdctl scenarios (sourced, not run).
#
# Each step prints a block that the differential test compares between real etcd and kybern:
#   ### <the command>
#   <stdout>
#   --- stderr          (only when stderr is not empty)
#   <stderr>
#   --- exit <code>
set -u
if [ $# -lt 1 ]; then
  echo "usage: $0 ENDPOINT_URL [WORKDIR]   (e.g. http://127.0.0.1:2379; use a fresh store)" >&2
  exit 2
fi
# URL is the client URL as given; etcdctl gets the bare host:port (as in the README) through
# ETCDCTL_ENDPOINTS, and steps that want the URL form pass --endpoints="$URL".
URL="$1"
export ETCDCTL_API=3 ETCDCTL_ENDPOINTS="${URL#*://}" ETCDCTL_COMMAND_TIMEOUT=5s ETCDCTL_DIAL_TIMEOUT=3s
WORK="${2:-$(mktemp -d)}"
mkdir -p "$WORK" && cd "$WORK" || exit 2
OUT="$WORK/.step.out" ERR="$WORK/.step.err"

# step CMD...: run any command as a step.
step() {
  echo "### $(printf '%q ' "$@")"
  "$@" >"$OUT" 2>"$ERR"
  local code=$?
  cat "$OUT"
  if [ -s "$ERR" ]; then echo "--- stderr"; cat "$ERR"; fi
  echo "--- exit $code"
}
# e ARGS...: an etcdctl step.
e() { step etcdctl "$@"; }
# eurl ARGS...: an etcdctl step with --endpoints=<the client URL> instead of host:port.
eurl() { step env -u ETCDCTL_ENDPOINTS etcdctl --endpoints="$URL" "$@"; }
# ein INPUT ARGS...: an etcdctl step reading INPUT (printf format) on stdin.
ein() {
  local input=$1
  shift
  echo "### etcdctl $(printf '%q ' "$@")<<< $(printf '%q' "$(printf "$input")")"
  printf "$input" | etcdctl "$@" >"$OUT" 2>"$ERR"
  local code=$?
  cat "$OUT"
  if [ -s "$ERR" ]; then echo "--- stderr"; cat "$ERR"; fi
  echo "--- exit $code"
}
# watch_for SECONDS ARGS...: `etcdctl watch ARGS` stopped after SECONDS (exit 124 then).
watch_for() {
  local secs=$1
  shift
  step timeout "$secs" etcdctl watch "$@"
}
# lease_id: the id of a fresh lease of TTL $1 (not a step: prints only the id).
lease_id() { etcdctl lease grant "$1" | awk '/granted/ {print $2}'; }
# Silent put (no step) for data set-up.
quiet_put() { etcdctl put "$@" >/dev/null; }
