#!/usr/bin/env bash
# The whole test suite: installs test dependencies, builds the binaries, runs every test (unit,
# fuzz-style decoder tests and the end-to-end tests in tests/, which start their own appliance, agents
# and Azurite on 127.0.0.1 and stop them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
cargo build --workspace --bins
cargo test --workspace -- --test-threads=2 "$@"
