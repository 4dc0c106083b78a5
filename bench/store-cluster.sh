#!/usr/bin/env bash
# Store 2 benchmark: a 3-member kybern store cluster and a 3-member real etcd 3.4 cluster on
# loopback (fresh data dirs, etcd's default --heartbeat-interval 100 / --election-timeout 1000),
# measured by the same `kybern bench` client against all three client URLs of each:
#   put    --conns 100 --clients 1000, 8-byte keys, 256-byte values, BENCH_TOTAL puts
#   range  one key, linearizable, --conns 100 --clients 1000, BENCH_TOTAL reads
#   failover  FAILOVER_ROUNDS times per system: kill -9 the leader (from `etcdctl endpoint status
#          --cluster`), time from the kill to the first acknowledged write through a survivor
#          (bench/failover-probe.py: a Put every 10 ms on already open connections, alternating
#          survivors), restart the killed member with the same flags and data dir, wait until
#          it is healthy; median and max
#   peak RSS (VmHWM) of each member, sampled before each kill and at the end (max per member).
# Appends a dated table to BENCHMARKS.md at the repo root.
#
# Usage: bench/store-cluster.sh   (env: BENCH_TOTAL=100000 puts and reads, FAILOVER_ROUNDS=10,
#                                  BENCH_DIR=work dir, KEEP=1 keeps it, NO_RECORD=1 prints only)
set -euo pipefail
cd "$(dirname "$0")/.."

. bench/lib.sh
bench_setup
python3 -c 'import grpc' 2>/dev/null || python3 -m pip install -q grpcio 2>/dev/null \
  || python3 -m pip install -q --break-system-packages grpcio

TOTAL=${BENCH_TOTAL:-100000}
ROUNDS=${FAILOVER_ROUNDS:-10}
HEARTBEAT=100
ELECTION=1000
WORK=${BENCH_DIR:-$(mktemp -d /tmp/kybern-bench.XXXXXX)}
mkdir -p "$WORK"
echo "work dir: $WORK" >&2
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

SYSTEMS=(kybern etcd)
declare -A CURL PURL PID HWM INITIAL EPS
alloc_ports 12
n=0
for s in "${SYSTEMS[@]}"; do
  INITIAL[$s]=""; EPS[$s]=""
  for i in 0 1 2; do
    CURL[$s$i]=http://127.0.0.1:${PORTS[n]}; PURL[$s$i]=http://127.0.0.1:${PORTS[n + 1]}
    n=$((n + 2)); HWM[$s$i]=0
    INITIAL[$s]+="${INITIAL[$s]:+,}$s$i=${PURL[$s$i]}"
    EPS[$s]+="${EPS[$s]:+,}${CURL[$s$i]#http://}"
  done
done

cleanup() {
  for p in "${PID[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PID[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "${KEEP:-0}" != 1 ] && [ -z "${BENCH_DIR:-}" ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

start_member() { # system index (same flags on a restart; the data dir then holds the member)
  local s=$1 i=$2 cmd=("$ETCD")
  [ "$s" = kybern ] && cmd=("$KYBERN" store)
  "${cmd[@]}" --name "$s$i" --data-dir "$WORK/$s$i" \
    --listen-client-urls "${CURL[$s$i]}" --advertise-client-urls "${CURL[$s$i]}" \
    --listen-peer-urls "${PURL[$s$i]}" --initial-advertise-peer-urls "${PURL[$s$i]}" \
    --initial-cluster "${INITIAL[$s]}" --initial-cluster-state new \
    --initial-cluster-token "bench-$s" \
    --heartbeat-interval $HEARTBEAT --election-timeout $ELECTION \
    >>"$WORK/$s$i.log" 2>&1 &
  PID[$s$i]=$!
}
sample_hwm() { # member key
  local k
  k=$(hwm_kib "${PID[$1]}" 2>/dev/null || echo 0)
  [ "${k:-0}" -gt "${HWM[$1]}" ] && HWM[$1]=$k
  return 0
}
show_logs() { # member key
  echo "--- last lines of $WORK/$1.log:" >&2
  tail -n 30 "$WORK/$1.log" >&2
}

for s in "${SYSTEMS[@]}"; do
  rm -rf "$WORK/${s}0" "$WORK/${s}1" "$WORK/${s}2"
  for i in 0 1 2; do start_member "$s" "$i"; done
done
for s in "${SYSTEMS[@]}"; do
  for i in 0 1 2; do wait_ready "${CURL[$s$i]}" || { show_logs "$s$i"; exit 1; }; done
done

# The key the range benchmark reads: one 8-byte key holding a 256-byte value.
VALUE=$(head -c 192 /dev/urandom | base64 -w0)
for s in "${SYSTEMS[@]}"; do "$ETCDCTL" --endpoints "${EPS[$s]}" put rangekey "$VALUE" >/dev/null; done

G="--conns 100 --clients 1000"
PUT_ARGS="put --key-size 8 --val-size 256 --total $TOTAL --sequential-keys --key-space-size $TOTAL"
RANGE_L="range rangekey --consistency l --total $TOTAL"

run() { # name endpoints args...
  local name=$1 eps=$2; shift 2
  echo "== $name: kybern bench --endpoints $eps $*" >&2
  # shellcheck disable=SC2068
  # Exit code 1 with a report means some requests failed: they are counted under Errors.
  "$KYBERN" bench --endpoints "$eps" --json $@ >"$WORK/$name.json" ||
    jq -e .reports "$WORK/$name.json" >/dev/null
}
# Each benchmark runs against kybern then etcd, so that background load drifts alike for both.
# shellcheck disable=SC2086
for b in put range-l; do
  case $b in
    put) args="$G $PUT_ARGS" ;;
    range-l) args="$G $RANGE_L" ;;
  esac
  for s in "${SYSTEMS[@]}"; do run "$s-$b" "${EPS[$s]}" $args; done
done
for s in "${SYSTEMS[@]}"; do
  for i in 0 1 2; do sample_hwm "$s$i"; done
  n=$("$ETCDCTL" --endpoints "${EPS[$s]}" get "" --prefix --keys-only --limit 1 -w json | jq .count)
  echo "$s holds $n keys" >&2
done

# The member that leads, as every member reports it: prints its index (0..2), or fails.
leader_of() { # system
  local s=$1 status ids i
  status=$("$ETCDCTL" --endpoints "${EPS[$s]}" --command-timeout 2s endpoint status --cluster -w json \
    2>/dev/null) || return 1
  # Member ids are uint64; jq 1.6 reads numbers as doubles, so quote them first.
  ids=$(sed -E 's/"(member_id|leader)":([0-9]+)/"\1":"\2"/g' <<<"$status" |
    jq -r '[.[] | select(.Status.leader == .Status.header.member_id) | .Endpoint] as $l
           | if ([.[].Status.leader] | unique | length) == 1 and ($l | length) == 1
             and (. | length) == 3 then $l[0] else empty end')
  [ -n "$ids" ] || return 1
  for i in 0 1 2; do [ "${CURL[$s$i]}" = "$ids" ] && { echo "$i"; return 0; }; done
  return 1
}

failover() { # system round: kills the leader, times the first write, restarts the member
  local s=$1 r=$2 l i t surv=() out
  for t in $(seq 1 100); do l=$(leader_of "$s") && break; sleep 0.2; done
  [ -n "${l:-}" ] || { echo "$s: no agreed leader before round $r" >&2; return 1; }
  for i in 0 1 2; do
    sample_hwm "$s$i"
    [ "$i" != "$l" ] && surv+=("${CURL[$s$i]#http://}")
  done
  out=$(python3 bench/failover-probe.py "${PID[$s$l]}" 10 1000 "${surv[@]}") ||
    { echo "$s round $r: $out" >&2; return 1; }
  wait "${PID[$s$l]}" 2>/dev/null || true
  echo "$s round $r: killed $s$l (pid ${PID[$s$l]}): $out" >&2
  echo "$out" >>"$WORK/$s-failover.jsonl"
  echo "=== restart after round $r" >>"$WORK/$s$l.log"
  start_member "$s" "$l"
  if ! wait_ready "${CURL[$s$l]}" 300; then
    echo "$s round $r: $s$l did not come back within 60 s" >&2
    show_logs "$s$l"
    return 1
  fi
}
for r in $(seq 1 "$ROUNDS"); do
  for s in "${SYSTEMS[@]}"; do failover "$s" "$r"; done
done
for s in "${SYSTEMS[@]}"; do for i in 0 1 2; do sample_hwm "$s$i"; done; done

fo() { # system stat: median or max of the failover times (ms)
  jq -s -r --arg st "$2" '[.[].ms] | sort | if $st == "max" then .[-1]
    elif length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end' \
    "$WORK/$1-failover.jsonl"
}
hwm_max() { local m=0 i; for i in 0 1 2; do [ "${HWM[$1$i]}" -gt $m ] && m=${HWM[$1$i]}; done; echo $m; }
hwm_list() { echo "$(kib_to_mib "${HWM[${1}0]}") / $(kib_to_mib "${HWM[${1}1]}") / $(kib_to_mib "${HWM[${1}2]}")"; }

run_facts
KPR=$(rps kybern-put); EPR=$(rps etcd-put)
KFM=$(printf '%.1f' "$(fo kybern median)"); EFM=$(printf '%.1f' "$(fo etcd median)")
K_HWM=$(hwm_max kybern); E_HWM=$(hwm_max etcd)
SIZE_NOTE=""
[ "$TOTAL" != 100000 ] && SIZE_NOTE=" (scaled down from 100,000 with BENCH_TOTAL=$TOTAL)"

TABLE=$(
  echo "## Store 2, three members: $DATE"
  echo
  echo "Machine: $CORES cores, $MEM GiB RAM; all six members (3 kybern, 3 etcd, both clusters up"
  echo "throughout) and the client on the same host, loopback; load average before the run"
  echo "$LOAD_BEFORE, after $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "kybern commit $COMMIT$DIRTY (release build); etcd $ETCD_VER (Debian package)."
  echo "Fresh data dirs, --heartbeat-interval $HEARTBEAT --election-timeout $ELECTION (etcd's defaults) and"
  echo "otherwise default flags (fsync on every commit). $TOTAL puts and $TOTAL reads per system$SIZE_NOTE."
  echo
  echo "Commands (the same \`kybern bench\` binary against the three client URLs of each cluster):"
  echo
  echo '```'
  echo "${BENCH_TOTAL:+BENCH_TOTAL=$BENCH_TOTAL }${FAILOVER_ROUNDS:+FAILOVER_ROUNDS=$FAILOVER_ROUNDS }bench/store-cluster.sh"
  echo "kybern bench --endpoints EP1,EP2,EP3 --json $G $PUT_ARGS"
  echo "kybern bench --endpoints EP1,EP2,EP3 --json $G $RANGE_L"
  echo "python3 bench/failover-probe.py LEADER_PID 10 1000 SURVIVOR1 SURVIVOR2   # x$ROUNDS per system"
  echo '```'
  echo
  echo "| metric | kybern | etcd 3.4 | kybern / etcd |"
  echo "|---|---:|---:|---:|"
  row "put requests/sec" "$KPR" "$EPR"
  for p in p50 p90 p99 p99_9; do
    row "put $p ms" "$(ms kybern-put 0 ${p}_ms)" "$(ms etcd-put 0 ${p}_ms)"
  done
  row "put slowest ms" "$(ms kybern-put 0 slowest_ms)" "$(ms etcd-put 0 slowest_ms)"
  row "range linearizable requests/sec" "$(rps kybern-range-l)" "$(rps etcd-range-l)"
  for p in p50 p99 p99_9; do
    row "range linearizable $p ms" "$(ms kybern-range-l 0 ${p}_ms)" "$(ms etcd-range-l 0 ${p}_ms)"
  done
  row "failover median ms ($ROUNDS leader kills)" "$KFM" "$EFM"
  row "failover max ms" "$(fo kybern max)" "$(fo etcd max)"
  row "peak RSS MiB, largest member (VmHWM)" "$(kib_to_mib "$K_HWM")" "$(kib_to_mib "$E_HWM")"
  printf '| peak RSS MiB, members 0 / 1 / 2 | %s | %s | |\n' "$(hwm_list kybern)" "$(hwm_list etcd)"
  echo
  echo "Failover times (ms, kill -9 of the leader to the first acknowledged Put through a survivor,"
  echo "Puts started every 10 ms with a 1 s deadline on connections opened before the kill):"
  for s in "${SYSTEMS[@]}"; do
    echo "$s: $(jq -s -r '[.[].ms | tostring] | join(", ")' "$WORK/$s-failover.jsonl")."
  done
  echo "Peak RSS of a member is the largest VmHWM over its lives (sampled before each kill and at"
  echo "the end); the leader during the put run is the largest."
  echo
  echo "Errors: kybern $(jq -s '[.[].reports[].errors] | add' "$WORK"/kybern-*.json)," \
    "etcd $(jq -s '[.[].reports[].errors] | add' "$WORK"/etcd-*.json)."
  echo
  echo "Targets (issue 4): put throughput >= 1.5x etcd: $(verdict "$KPR >= 1.5 * $EPR")" \
    "($(ratio "$KPR" "$EPR")x); failover no slower than etcd (median): $(verdict "$KFM <= $EFM")" \
    "($KFM vs $EFM ms); peak RSS per member no higher: $(verdict "$K_HWM <= $E_HWM")."
)
record "$TABLE"
