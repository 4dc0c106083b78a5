# Helpers shared by the bench/store-*.sh scripts (sourced, not run). The caller has `set -euo
# pipefail`, is at the repo root, and sets WORK (its work dir) before calling start/wait helpers.

ETCD=/usr/bin/etcd
ETCDCTL=/usr/bin/etcdctl
export ETCDCTL_API=3

# Installs what the scripts need (protoc, etcd, jq) and builds release kybern; sets KYBERN.
bench_setup() {
  scripts/deps.sh
  if ! command -v jq >/dev/null; then
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get install -y -qq jq >/dev/null
  fi
  echo "building kybern (release)..." >&2
  cargo build --release -p cli >&2
  KYBERN="${CARGO_TARGET_DIR:-$PWD/target}/release/kybern"
}

# alloc_ports N: sets PORTS to N distinct loopback ports that nothing listens on now.
alloc_ports() {
  PORTS=()
  local p q dup
  while [ ${#PORTS[@]} -lt "$1" ]; do
    p=$((20000 + RANDOM % 20000)); dup=0
    for q in "${PORTS[@]}"; do [ "$q" = "$p" ] && dup=1; done
    [ $dup = 1 ] && continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then PORTS+=("$p"); fi
  done
}

# wait_ready URL [TRIES]: until `etcdctl endpoint health` (a linearizable get) passes, 0.2 s apart.
wait_ready() {
  local i
  for ((i = 0; i < ${2:-150}; i++)); do
    if "$ETCDCTL" --endpoints "$1" endpoint health >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "$1 did not become healthy; logs in $WORK" >&2
  return 1
}

hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
kib_to_mib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }

# Reading the `kybern bench --json` reports in $WORK/NAME.json.
j() { jq -r "$2" "$WORK/$1.json"; }
ms() { printf '%.2f' "$(j "$1" ".reports[$2].latency.$3")"; }
rps() { printf '%.0f' "$(j "$1" ".reports[0].requests_per_sec")"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2f", a / b }'; }
row() { # label kybern etcd
  printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$(ratio "$2" "$3")"
}
verdict() { if awk "BEGIN { exit !($1) }"; then echo met; else echo "NOT met"; fi; }

# Facts for a section's header.
run_facts() {
  DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
  COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  DIRTY=$(git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo "+dirty" || true)
  CORES=$(nproc)
  MEM=$(awk '/^MemTotal:/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)
  ETCD_VER=$("$ETCD" --version | awk '/etcd Version/ {print $3}')
}

# record TEXT: appends TEXT as a section of BENCHMARKS.md, unless NO_RECORD=1.
record() {
  echo "$1"
  if [ "${NO_RECORD:-0}" != 1 ]; then
    if [ ! -f BENCHMARKS.md ]; then
      printf '# kybern benchmarks\n\nEach section is one run of the script named in it, newest last.\n' \
        >BENCHMARKS.md
    fi
    printf '\n%s\n' "$1" >>BENCHMARKS.md
    echo "appended to $PWD/BENCHMARKS.md" >&2
  fi
}
