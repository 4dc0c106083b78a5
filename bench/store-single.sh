#!/usr/bin/env bash
# Store 1 benchmark: one kybern store member and one real etcd 3.4 member, side by side on
# loopback with fresh data dirs, measured by the same `kybern bench` client:
#   put    --conns 100 --clients 1000, 8-byte keys, 256-byte values, 100,000 puts
#   range  one key, linearizable and serializable, --conns 100 --clients 1000, 100,000 reads
#   watch-latency  etcd's defaults (1000 puts at 100/s, 10 streams x 10 watchers)
# and each server's peak RSS (VmHWM). Appends a dated table to BENCHMARKS.md at the repo root.
#
# Usage: bench/store-single.sh            (env: BENCH_DIR=work dir, KEEP=1 keeps it,
#                                          PUT_TOTAL / RANGE_TOTAL to scale the runs down,
#                                          NO_RECORD=1 prints the table without writing it)
set -euo pipefail
cd "$(dirname "$0")/.."

. bench/lib.sh
bench_setup

PUT_TOTAL=${PUT_TOTAL:-100000}
RANGE_TOTAL=${RANGE_TOTAL:-100000}
WORK=${BENCH_DIR:-$(mktemp -d /tmp/kybern-bench.XXXXXX)}
mkdir -p "$WORK"
echo "work dir: $WORK" >&2

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
alloc_ports 3; K_PORT=${PORTS[0]}; E_PORT=${PORTS[1]}; E_PEER=${PORTS[2]}
K_URL=http://127.0.0.1:$K_PORT
E_URL=http://127.0.0.1:$E_PORT

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "${KEEP:-0}" != 1 ] && [ -z "${BENCH_DIR:-}" ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

rm -rf "$WORK/kybern" "$WORK/etcd"
"$KYBERN" store --name bench --data-dir "$WORK/kybern" \
  --listen-client-urls "$K_URL" --advertise-client-urls "$K_URL" \
  >"$WORK/kybern.log" 2>&1 &
K_PID=$!; PIDS+=("$K_PID")
"$ETCD" --name bench --data-dir "$WORK/etcd" \
  --listen-client-urls "$E_URL" --advertise-client-urls "$E_URL" \
  --listen-peer-urls "http://127.0.0.1:$E_PEER" \
  --initial-advertise-peer-urls "http://127.0.0.1:$E_PEER" \
  --initial-cluster "bench=http://127.0.0.1:$E_PEER" --initial-cluster-state new \
  >"$WORK/etcd.log" 2>&1 &
E_PID=$!; PIDS+=("$E_PID")

wait_ready "$K_URL"
wait_ready "$E_URL"

# The key the range benchmarks read: one 8-byte key holding a 256-byte value.
VALUE=$(head -c 192 /dev/urandom | base64 -w0)
for u in "$K_URL" "$E_URL"; do
  "$ETCDCTL" --endpoints "$u" put rangekey "$VALUE" >/dev/null
done

G="--conns 100 --clients 1000"
PUT_ARGS="put --key-size 8 --val-size 256 --total $PUT_TOTAL --sequential-keys --key-space-size $PUT_TOTAL"
RANGE_L="range rangekey --consistency l --total $RANGE_TOTAL"
RANGE_S="range rangekey --consistency s --total $RANGE_TOTAL"
WATCH="watch-latency --put-total 1000 --put-rate 100 --streams 10 --watchers-per-stream 10"

run() { # name url args...
  local name=$1 url=$2; shift 2
  echo "== $name: kybern bench --endpoints $url $*" >&2
  # shellcheck disable=SC2068
  "$KYBERN" bench --endpoints "${url#http://}" --json $@ >"$WORK/$name.json"
}
# Each benchmark runs against kybern then etcd, so that background load drifts alike for both.
# shellcheck disable=SC2086
for b in put range-l range-s watch; do
  case $b in
    put) args="$G $PUT_ARGS" ;;
    range-l) args="$G $RANGE_L" ;;
    range-s) args="$G $RANGE_S" ;;
    watch) args="$WATCH" ;;
  esac
  run "kybern-$b" "$K_URL" $args
  run "etcd-$b" "$E_URL" $args
done

K_HWM=$(hwm_kib "$K_PID"); E_HWM=$(hwm_kib "$E_PID")

# Checks that the put run really wrote its keys, on both.
for u in "$K_URL" "$E_URL"; do
  n=$("$ETCDCTL" --endpoints "$u" get "" --prefix --keys-only --limit 1 -w json | jq .count)
  echo "$u holds $n keys" >&2
done

run_facts
KPR=$(rps kybern-put); EPR=$(rps etcd-put)
KP99=$(ms kybern-put 0 p99_ms); EP99=$(ms etcd-put 0 p99_ms)
K_MIB=$(kib_to_mib "$K_HWM"); E_MIB=$(kib_to_mib "$E_HWM")

TABLE=$(
  echo "## Store 1, single member: $DATE"
  echo
  echo "Machine: $CORES cores, $MEM GiB RAM, both servers and the client on the same host, loopback;"
  echo "load average before the run $LOAD_BEFORE, after $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "kybern commit $COMMIT$DIRTY (release build); etcd $ETCD_VER (Debian package)."
  echo "Both started with fresh data dirs and default flags (fsync on every commit)."
  echo
  echo "Commands (the same \`kybern bench\` binary against each server's client URL):"
  echo
  echo '```'
  echo "bench/store-single.sh"
  echo "kybern bench --endpoints EP --json $G $PUT_ARGS"
  echo "kybern bench --endpoints EP --json $G $RANGE_L"
  echo "kybern bench --endpoints EP --json $G $RANGE_S"
  echo "kybern bench --endpoints EP --json $WATCH"
  echo '```'
  echo
  echo "| metric | kybern | etcd 3.4 | kybern / etcd |"
  echo "|---|---:|---:|---:|"
  row "put requests/sec" "$KPR" "$EPR"
  for p in p50 p90 p99 p99_9; do
    row "put $p ms" "$(ms kybern-put 0 ${p}_ms)" "$(ms etcd-put 0 ${p}_ms)"
  done
  row "put slowest ms" "$(ms kybern-put 0 slowest_ms)" "$(ms etcd-put 0 slowest_ms)"
  for r in range-l range-s; do
    label="range linearizable"; [ "$r" = range-s ] && label="range serializable"
    row "$label requests/sec" "$(rps kybern-$r)" "$(rps etcd-$r)"
    for p in p50 p99 p99_9; do
      row "$label $p ms" "$(ms kybern-$r 0 ${p}_ms)" "$(ms etcd-$r 0 ${p}_ms)"
    done
  done
  for p in p50 p99; do
    row "watch-latency put $p ms (one put at a time)" "$(ms kybern-watch 0 ${p}_ms)" "$(ms etcd-watch 0 ${p}_ms)"
  done
  for p in p50 p90 p99 p99_9; do
    row "watch event latency $p ms" "$(ms kybern-watch 1 ${p}_ms)" "$(ms etcd-watch 1 ${p}_ms)"
  done
  row "peak RSS MiB (VmHWM, whole run)" "$K_MIB" "$E_MIB"
  echo
  echo "Watch event latency is the time from a put's acknowledgement to the event at each of the"
  echo "100 watchers; an event that arrives before the acknowledgement counts as 0 (as etcd's tool does)."
  echo
  echo "Errors: kybern $(jq -s '[.[].reports[].errors] | add' "$WORK"/kybern-*.json)," \
    "etcd $(jq -s '[.[].reports[].errors] | add' "$WORK"/etcd-*.json)."
  echo
  echo "Targets (issue 2): put throughput >= 1.5x etcd: $(verdict "$KPR >= 1.5 * $EPR")" \
    "($(ratio "$KPR" "$EPR")x); put p99 <= etcd: $(verdict "$KP99 <= $EP99");" \
    "peak RSS <= etcd: $(verdict "$K_HWM <= $E_HWM")."
)
record "$TABLE"
