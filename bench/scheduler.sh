#!/usr/bin/env bash
# Control 1 benchmark: scheduler throughput and pod startup on hollow nodes. For each node count in
# NODES (default "1000 5000"): a fresh `kybern apiserver` on its embedded store, `kybern
# hollow-nodes --count N`, `kybern scheduler`, then
#   kybern bench scheduler --pods 10000 --create-clients 100
# (create pods from 100 clients; scheduled pods/s, create->scheduled and create->Running latency,
# and the peak RSS of the scheduler, the apiserver and the hollow nodes). Appends a dated table to
# BENCHMARKS.md at the repo root (section "Control 1") with the issue 5 targets met or not.
#
# Usage: bench/scheduler.sh    (env: NODES="1000 5000", PODS=10000, CLIENTS=100; BENCH_DIR=work dir,
#                               RATE=pods/s to pace the creates (0: burst),
#                               KEEP=1 keeps it, NO_RECORD=1 prints the table without writing it)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

NODES=${NODES:-"1000 5000"}
PODS=${PODS:-10000}
CLIENTS=${CLIENTS:-100}
# Pods created per second in all (0: as fast as the clients go, i.e. a burst).
RATE=${RATE:-0}

if ! command -v jq >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get install -y -qq jq >/dev/null
fi
echo "building kybern (release)..." >&2
cargo build --release -p cli >&2
KYBERN="${CARGO_TARGET_DIR:-$ROOT/target}/release/kybern"

WORK=${BENCH_DIR:-$(mktemp -d /tmp/kybern-schedbench.XXXXXX)}
mkdir -p "$WORK"
echo "work dir: $WORK" >&2

free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
}

PIDS=()
stop_all() {
  # Clients first (newest first), the apiserver last.
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill "${PIDS[$i]}" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
cleanup() {
  stop_all
  if [ "${KEEP:-0}" != 1 ] && [ -z "${BENCH_DIR:-}" ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
ROWS=()
RESULTS=()
NOTES=()
for N in $NODES; do
  RUN="$WORK/n$N"
  rm -rf "$RUN"; mkdir -p "$RUN"
  PORT=$(free_port)
  URL=https://127.0.0.1:$PORT
  TOKEN=$(head -c 24 /dev/urandom | base64 -w0 | tr '+/' '-_')
  printf '%s,kybern-bench,kybern-bench,"system:masters"\n' "$TOKEN" >"$RUN/tokens.csv"
  cat >"$RUN/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: bench
  cluster: {server: "$URL", insecure-skip-tls-verify: true}
users:
- name: bench
  user: {token: "$TOKEN"}
contexts:
- name: bench
  context: {cluster: bench, user: bench}
current-context: bench
EOF
  "$KYBERN" apiserver --data-dir "$RUN/data" --cert-dir "$RUN/pki" \
    --token-auth-file "$RUN/tokens.csv" --anonymous-auth=false \
    --bind-address 127.0.0.1 --secure-port "$PORT" >"$RUN/apiserver.log" 2>&1 &
  A_PID=$!; PIDS+=("$A_PID")
  for i in $(seq 1 300); do
    if curl -skf -H "Authorization: Bearer $TOKEN" "$URL/readyz" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$A_PID" 2>/dev/null || [ "$i" = 300 ]; then
      echo "the apiserver did not become ready; log in $RUN/apiserver.log" >&2; KEEP=1; exit 1
    fi
    sleep 0.2
  done
  echo "== $N hollow nodes" >&2
  T0=$(date +%s.%N)
  "$KYBERN" hollow-nodes --kubeconfig "$RUN/kubeconfig" --count "$N" --zones 3 \
    >"$RUN/hollow.log" 2>&1 &
  H_PID=$!; PIDS+=("$H_PID")
  for i in $(seq 1 1200); do
    if grep -q "hollow nodes registered" "$RUN/hollow.log"; then break; fi
    if ! kill -0 "$H_PID" 2>/dev/null || [ "$i" = 1200 ]; then
      echo "hollow nodes did not register; log in $RUN/hollow.log" >&2; tail -5 "$RUN/hollow.log" >&2; KEEP=1; exit 1
    fi
    sleep 0.5
  done
  REG_SECS=$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  SPORT=$(free_port)
  "$KYBERN" scheduler --kubeconfig "$RUN/kubeconfig" --bind-address 127.0.0.1 \
    --secure-port "$SPORT" >"$RUN/scheduler.log" 2>&1 &
  S_PID=$!; PIDS+=("$S_PID")
  for i in $(seq 1 600); do
    if curl -sf "http://127.0.0.1:$SPORT/readyz" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$S_PID" 2>/dev/null || [ "$i" = 600 ]; then
      echo "the scheduler did not become ready; log in $RUN/scheduler.log" >&2; KEEP=1; exit 1
    fi
    sleep 0.2
  done
  echo "== kybern bench scheduler --pods $PODS --create-clients $CLIENTS ($N nodes)" >&2
  RC=0
  "$KYBERN" bench scheduler --kubeconfig "$RUN/kubeconfig" --pods "$PODS" \
    --create-clients "$CLIENTS" --create-rate "$RATE" --json --pid "scheduler=$S_PID" --pid "apiserver=$A_PID" \
    --pid "hollow-nodes=$H_PID" >"$RUN/result.json" 2>"$RUN/bench.log" || RC=$?
  tail -3 "$RUN/bench.log" >&2
  if ! jq -e .reports "$RUN/result.json" >/dev/null 2>&1; then
    echo "no report for $N nodes (exit $RC): $(tail -1 "$RUN/bench.log")" >&2
    ROWS+=("| $N | $PODS | failed: $(tail -1 "$RUN/bench.log" | tr '|' '/') | | | | | | |")
    stop_all
    continue
  fi
  j() { jq -r "$1" "$RUN/result.json"; }
  p() { jq -r --arg n "$1" ".reports[] | select(.name == \$n) | .latency.$2 // \"-\"" "$RUN/result.json" | xargs printf '%.0f'; }
  hwm() { jq -r --arg n "$1" '.rss[] | select(.name == $n) | .hwm_kib' "$RUN/result.json" | awk '{ printf "%.0f", $1 / 1024 }'; }
  PPS=$(j .scheduled_pods_per_sec | xargs printf '%.0f')
  ROWS+=("| $N | $(j .running)/$PODS | $PPS | $(p create-to-scheduled p50_ms) / $(p create-to-scheduled p99_ms) | $(p pod-startup p50_ms) / $(p pod-startup p99_ms) | $(j .create_secs | xargs printf '%.1f') | $(hwm scheduler) | $(hwm apiserver) | $(hwm hollow-nodes) |")
  NOTES+=("- $N nodes: registering them took $REG_SECS s; all pods scheduled $(j .schedule_secs | xargs printf '%.1f') s after the first create, all Running after $(j .running_secs | xargs printf '%.1f') s; scheduler CPU time $(awk '{ printf "%.1f", ($14 + $15) / 100 }' "/proc/$S_PID/stat") s, apiserver $(awk '{ printf "%.1f", ($14 + $15) / 100 }' "/proc/$A_PID/stat") s, hollow nodes $(awk '{ printf "%.1f", ($14 + $15) / 100 }' "/proc/$H_PID/stat") s.")
  RESULTS+=("$PPS $(p pod-startup p99_ms)")
  stop_all
done

DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo "+dirty" || true)
TABLE=$(
  echo "## Control 1, scheduler on hollow nodes: $DATE"
  echo
  echo "Machine: $(nproc) cores, $(awk '/^MemTotal:/ {printf "%.0f", $2 / 1048576}' /proc/meminfo) GiB RAM; the apiserver (embedded store, fsync"
  echo "on every commit), \`kybern hollow-nodes\` (3 zones, 4 CPU / 16 GiB / 110 pods per node, leases renewed"
  echo "every 10 s), \`kybern scheduler\` and the load generator all on this host over loopback HTTPS."
  echo "Load average before $LOAD_BEFORE, after $(cut -d' ' -f1-3 /proc/loadavg). kybern commit $COMMIT$DIRTY (release build)."
  echo
  echo "Command:"
  echo
  echo '```'
  echo "bench/scheduler.sh   # NODES=\"$NODES\" PODS=$PODS CLIENTS=$CLIENTS RATE=$RATE"
  echo "kybern hollow-nodes --kubeconfig K --count N --zones 3"
  echo "kybern scheduler --kubeconfig K"
  echo "kybern bench scheduler --kubeconfig K --pods $PODS --create-clients $CLIENTS --create-rate $RATE --pid scheduler=PID ..."
  echo '```'
  echo
  echo "| nodes | pods Running | scheduled pods/s | create->bound p50 / p99 ms | startup (create->Running) p50 / p99 ms | create phase s | scheduler peak RSS MiB | apiserver peak RSS MiB | hollow-nodes peak RSS MiB |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for r in "${ROWS[@]}"; do echo "$r"; done
  echo
  for n in "${NOTES[@]}"; do echo "$n"; done
  echo
  echo -n "Targets (issue 5): >= 1,000 pods/s and startup p99 < 1 s:"
  for r in "${RESULTS[@]:-}"; do
    set -- $r
    [ -n "${1:-}" ] || continue
    if awk "BEGIN { exit !($1 >= 1000) }"; then a=met; else a="NOT met"; fi
    if awk "BEGIN { exit !($2 < 1000) }"; then b=met; else b="NOT met"; fi
    echo -n " throughput $a ($1/s), startup $b ($2 ms);"
  done
  echo
)
echo "$TABLE"
if [ "${NO_RECORD:-0}" != 1 ]; then
  printf '\n%s\n' "$TABLE" >>BENCHMARKS.md
  echo "appended to $ROOT/BENCHMARKS.md" >&2
fi
