#!/usr/bin/env bash
# Makes etcd-3.4-snapshot.db, the fixture of the bbolt reader and etcd import tests: a real etcd
# 3.4 (Debian etcd-server) on loopback, a deterministic history, then `etcdctl snapshot save`.
# Run from this directory; needs etcd and etcdctl 3.4 on PATH. The revisions written are fixed
# (the tests know them):
#   rev 2..121   k/000 .. k/119, each a 100-byte value           (several leaf pages: a branch)
#   rev 122      big = 10,000 bytes                               (overflow pages)
#   rev 123..127 hist = h1 .. h5
#   rev 128      del k/119
#   compact 125                                                  (hist h1, h2 gone; h3 at 125 kept)
#   rev 129      leased = l1, attached to lease 0x1234 (TTL 3600)
#   rev 130      hist = h6
set -euo pipefail
out=${1:-etcd-3.4-snapshot.db}
dir=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
c=http://127.0.0.1:$(port); p=http://127.0.0.1:$(port)
etcd --name fixture --data-dir "$dir/data" --listen-client-urls "$c" --advertise-client-urls "$c" \
  --listen-peer-urls "$p" --initial-advertise-peer-urls "$p" --initial-cluster "fixture=$p" \
  >"$dir/log" 2>&1 &
pid=$!
ctl() { ETCDCTL_API=3 etcdctl --endpoints "$c" "$@"; }
for _ in $(seq 100); do ctl endpoint health >/dev/null 2>&1 && break; sleep 0.1; done
pad=$(printf 'x%.0s' $(seq 100))
for i in $(seq 0 119); do ctl put "$(printf 'k/%03d' "$i")" "${pad:0:100}" >/dev/null; done
ctl put big "$(printf 'b%.0s' $(seq 10000))" >/dev/null
for i in 1 2 3 4 5; do ctl put hist "h$i" >/dev/null; done
ctl del k/119 >/dev/null
ctl compact 125 >/dev/null
# a fixed lease id through the gRPC gateway (etcdctl picks random ids)
curl -sf "$c/v3/lease/grant" -d '{"TTL": 3600, "ID": 4660}' >/dev/null
ctl put --lease=1234 leased l1 >/dev/null
ctl put hist h6 >/dev/null
ctl snapshot save "$dir/snap.db" >/dev/null 2>&1
cp "$dir/snap.db" "$out"
echo "wrote $out ($(stat -c %s "$out") bytes)"
