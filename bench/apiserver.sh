#!/usr/bin/env bash
# API 1 benchmark: one `kybern apiserver` on its embedded store (fresh --data-dir, a self-signed
# serving certificate in --cert-dir, a static token file), on loopback, driven by
#   kybern bench apiserver --clients 100 --pods 10000 --watchers 1000
# (create pods from 100 clients, LIST whole and in pages of 500, 1,000 watchers each seeing 300
# more writes, 10,000 single-pod GETs), and the server's peak RSS (VmHWM; the embedded store runs
# in the same process). Appends a dated table to BENCHMARKS.md at the repo root, with the targets
# of issue 3 (API 1) met or not.
#
# Usage: bench/apiserver.sh      (env: PODS, CLIENTS, CONNS, WATCHERS, WATCH_WRITES, GETS, LISTS to
#                                 scale the run; BENCH_DIR=work dir, KEEP=1 keeps it,
#                                 NO_RECORD=1 prints the table without writing it)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

PODS=${PODS:-10000}
CLIENTS=${CLIENTS:-100}
CONNS=${CONNS:-1}
WATCHERS=${WATCHERS:-1000}
WATCH_WRITES=${WATCH_WRITES:-300}
GETS=${GETS:-10000}
LISTS=${LISTS:-5}

if ! command -v jq >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get install -y -qq jq >/dev/null
fi
echo "building kybern (release)..." >&2
cargo build --release -p cli >&2
KYBERN="${CARGO_TARGET_DIR:-$ROOT/target}/release/kybern"

WORK=${BENCH_DIR:-$(mktemp -d /tmp/kybern-apibench.XXXXXX)}
mkdir -p "$WORK"
echo "work dir: $WORK" >&2

free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
}
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
PORT=$(free_port)
URL=https://127.0.0.1:$PORT
TOKEN=$(head -c 24 /dev/urandom | base64 -w0 | tr '+/' '-_')
printf '%s,kybern-bench,kybern-bench,"system:masters"\n' "$TOKEN" >"$WORK/tokens.csv"

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "${KEEP:-0}" != 1 ] && [ -z "${BENCH_DIR:-}" ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

rm -rf "$WORK/data" "$WORK/pki"
"$KYBERN" apiserver --data-dir "$WORK/data" --cert-dir "$WORK/pki" \
  --token-auth-file "$WORK/tokens.csv" --anonymous-auth=false \
  --bind-address 127.0.0.1 --secure-port "$PORT" >"$WORK/apiserver.log" 2>&1 &
A_PID=$!; PIDS+=("$A_PID")

for i in $(seq 1 300); do
  if curl -skf -H "Authorization: Bearer $TOKEN" "$URL/readyz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$A_PID" 2>/dev/null || [ "$i" = 300 ]; then
    echo "the apiserver did not become ready; log in $WORK/apiserver.log" >&2
    tail -20 "$WORK/apiserver.log" >&2
    exit 1
  fi
  sleep 0.2
done
RSS_IDLE_KIB=$(awk '/^VmRSS:/ {print $2}' "/proc/$A_PID/status")

ARGS="--clients $CLIENTS --conns $CONNS --pods $PODS --watchers $WATCHERS --watch-writes $WATCH_WRITES --gets $GETS --lists $LISTS"
echo "== kybern bench apiserver --server $URL --token *** --insecure-skip-tls-verify $ARGS" >&2
T0=$(date +%s)
RC=0
# shellcheck disable=SC2086
"$KYBERN" bench apiserver --server "$URL" --token "$TOKEN" --insecure-skip-tls-verify \
  --json $ARGS >"$WORK/result.json" 2>"$WORK/bench.log" || RC=$?
T1=$(date +%s)
cat "$WORK/bench.log" >&2
if ! jq -e .reports "$WORK/result.json" >/dev/null 2>&1; then
  echo "the benchmark produced no report (exit $RC); logs in $WORK" >&2
  KEEP=1
  exit 1
fi
HWM_KIB=$(awk '/^VmHWM:/ {print $2}' "/proc/$A_PID/status")
RSS_KIB=$(awk '/^VmRSS:/ {print $2}' "/proc/$A_PID/status")

j() { jq -r "$1" "$WORK/result.json"; }
rep() { jq -c --arg n "$1" '.reports[] | select(.name == $n)' "$WORK/result.json"; }
ms() { # report percentile-field
  local v; v=$(rep "$1" | jq -r ".latency.$2 // empty")
  if [ -z "$v" ]; then echo "-"; else printf '%.2f' "$v"; fi
}
num() { rep "$1" | jq -r ".$2"; }
rps() { printf '%.0f' "$(num "$1" requests_per_sec)"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
verdict() { if awk "BEGIN { exit !($1) }"; then echo met; else echo "NOT met"; fi; }
le() { # value limit: "met" when value is a number <= limit
  if [ "$1" = "-" ]; then echo "not measured"; else verdict "$1 <= $2"; fi
}

DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo "+dirty" || true)
CORES=$(nproc)
MEM=$(awk '/^MemTotal:/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)
CREATED=$(j .counts.created)
C99=$(ms create p99_ms); W99=$(ms watch-write p99_ms); G99=$(ms get p99_ms); L99=$(ms list p99_ms)
HWM_BYTES=$((HWM_KIB * 1024))
FULL="no"
if [ "$PODS" = 10000 ] && [ "$CLIENTS" = 100 ] && [ "$WATCHERS" = 1000 ]; then FULL="yes"; fi

TABLE=$(
  echo "## API 1, one apiserver on its embedded store: $DATE"
  echo
  echo "Machine: $CORES cores, $MEM GiB RAM; the apiserver (with its embedded store in the same"
  echo "process, fsync on every commit) and the load generator on the same host, over loopback HTTPS"
  echo "(HTTP/2, bearer token). Load average before the run $LOAD_BEFORE, after $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "kybern commit $COMMIT$DIRTY (release build). The benchmark took $((T1 - T0)) s; exit code $RC."
  if [ "$FULL" = no ]; then
    echo
    echo "**Reduced size** (not the issue's full 10,000 pods / 100 clients / 1,000 watchers)."
  fi
  echo
  echo "Command:"
  echo
  echo '```'
  echo "bench/apiserver.sh   # PODS=$PODS CLIENTS=$CLIENTS CONNS=$CONNS WATCHERS=$WATCHERS WATCH_WRITES=$WATCH_WRITES GETS=$GETS LISTS=$LISTS"
  echo "kybern apiserver --data-dir D --cert-dir D/pki --token-auth-file T --anonymous-auth=false --secure-port P"
  echo "kybern bench apiserver --server https://127.0.0.1:P --token TOKEN --insecure-skip-tls-verify --json $ARGS"
  echo '```'
  echo
  echo "| measurement | requests | errors | req/s | p50 ms | p90 ms | p99 ms | slowest ms |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  for r in create list list-paged list-page watch-open watch-write watch-event get; do
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$r" "$(num $r requests)" "$(num $r errors)" \
      "$(rps $r)" "$(ms $r p50_ms)" "$(ms $r p90_ms)" "$(ms $r p99_ms)" "$(ms $r slowest_ms)"
  done
  echo
  echo "- create: $CREATED of $PODS pods created, $CLIENTS clients (one request at a time each) on $CONNS HTTP/2 connection(s)."
  echo "- list: $LISTS LISTs of the namespace in one response ($(j .counts.list_items) items each);" \
    "list-paged: $LISTS traversals with limit=500 ($(j .counts.paged_list_pages) pages," \
    "$(j .counts.paged_list_items) items), list-page: each page request."
  echo "- watch: $(j .counts.watchers_started) of $WATCHERS watches opened (watch-open: time to the response headers)" \
    "on $(j .watch_conns) HTTP/2 connections from the LIST's resourceVersion; then $(j .counts.watch_writes)" \
    "writes (half creates, half merge patches) at 100/s from $(( CLIENTS < 10 ? CLIENTS : 10 )) clients (watch-write)."
  echo "  watch-event: time from each write's response to its event at each watcher (0 when the event" \
    "came first); $(j .counts.watch_events_received) of $(j .counts.watch_events_expected) events delivered," \
    "$(j .counts.watchers_complete) watchers saw every event, $(j .counts.watch_events_other) other events."
  echo "- get: $GETS GETs of single pods picked at random, $CLIENTS clients."
  echo "- apiserver RSS: $(mib "$RSS_IDLE_KIB") MiB when ready, $(mib "$RSS_KIB") MiB at the end," \
    "**peak $(mib "$HWM_KIB") MiB** (VmHWM over the whole run, $CREATED+ pods stored, LISTs and watch fan-out included)."
  echo
  echo "Targets (issue 3, upstream SLOs with 5x headroom):"
  echo "mutating p99 <= 200 ms: create $(le "$C99" 200) ($C99 ms), watch-phase writes $(le "$W99" 200) ($W99 ms);"
  echo "single-object GET p99 <= 200 ms: $(le "$G99" 200) ($G99 ms);"
  echo "namespace LIST p99 <= 1 s (upstream 5 s / 5): $(le "$L99" 1000) ($L99 ms);"
  if [ "$FULL" = yes ] && [ "$CREATED" -ge 10000 ]; then
    echo "peak RSS < 150 MB at 10,000 pods: $(verdict "$HWM_BYTES < 150000000") ($(awk -v b="$HWM_BYTES" 'BEGIN { printf "%.0f", b / 1e6 }') MB)."
  else
    echo "peak RSS < 150 MB at 10,000 pods: not measured at full size ($(awk -v b="$HWM_BYTES" 'BEGIN { printf "%.0f", b / 1e6 }') MB at $CREATED pods)."
  fi
  errs=$(jq -c '[.reports[] | select(.errors > 0) | {(.name): .error_distribution}] | add // {}' "$WORK/result.json")
  if [ "$errs" != "{}" ]; then
    echo
    echo "Errors: \`$errs\`"
  fi
)
echo "$TABLE"
if [ "${NO_RECORD:-0}" != 1 ]; then
  if [ ! -f BENCHMARKS.md ]; then
    printf '# kybern benchmarks\n\nEach section is one run of the script named in it, newest last.\n' \
      >BENCHMARKS.md
  fi
  printf '\n%s\n' "$TABLE" >>BENCHMARKS.md
  echo "appended to $ROOT/BENCHMARKS.md" >&2
fi
