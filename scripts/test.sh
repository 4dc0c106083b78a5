#!/usr/bin/env bash
# The whole test suite: installs what it needs, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --workspace --all-targets
cargo test --workspace --no-fail-fast -- --test-threads 2
