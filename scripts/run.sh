#!/usr/bin/env bash
# Builds kybern and runs the store member on 127.0.0.1:2379 with its data in ./kybern.etcd.
# Extra arguments go to `kybern store` (etcd's flags), e.g. --quota-backend-bytes 1073741824.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --release -p cli
exec target/release/kybern store --name default --data-dir "${KYBERN_DATA_DIR:-kybern.etcd}" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 "$@"
