#!/usr/bin/env bash
# The whole test suite: installs test dependencies, checks formatting and clippy, builds the binaries,
# runs every test (unit, fuzz-style decoder tests and the end-to-end tests in tests/, which start their own appliance, agents
# and Azurite on 127.0.0.1 and stop them). The management plane's external tests are ordinary tests of
# the ferry-tests crate too: tests/tests/web_ui.rs (headless Chromium driven by playwright-core),
# api_schema.rs (schemathesis against the OpenAPI document) and api_security.rs; the tools they use come
# from install-test-deps.sh, and their screenshots and reports land in target/test-artifacts/.
# Also builds the appliance OVA and boot-tests it under QEMU (ova-build; tools from image-tools.sh).
# Ends with one summary line over all test binaries, then the image's result.
set -euo pipefail
cd "$(dirname "$0")/.."
# A from-scratch build gains nothing from incremental data and it costs tens of GB of target/ here.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
bash scripts/install-test-deps.sh
# The code bar before any test: formatted, and no clippy warning anywhere (where the toolchain has them;
# no toolchain component can be downloaded here).
if cargo fmt --version >/dev/null 2>&1; then cargo fmt --all -- --check; else echo "rustfmt not installed: format check skipped" >&2; fi
if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy --workspace --all-targets -- -D warnings
else
  echo "clippy not installed: lint check skipped" >&2
fi
cargo build --workspace --bins
# The appliance image: the OVA is built from the binaries just built (debug builds, stripped; the
# README's sizes are of release builds) before the tests, so tests/tests/ova_vcsim_import.rs can
# deploy it into vcsim, and boot-tested under QEMU after them, when the cores are free. mmdebstrap
# needs root, which CI has.
qemu=$(bash scripts/image-tools.sh | tail -n1)
bins=${CARGO_TARGET_DIR:-target}/debug
image_status=0
if ova=$(cargo run -q -p ova-build -- --out target/ova --appliance-bin "$bins/appliance" \
    --mobility-bin "$bins/mobility" | tee /dev/stderr | tail -n1) && [ -f "$ova" ]; then
  export FERRY_OVA=$ova
else
  echo "ova-build --out failed" >&2
  image_status=1
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --no-fail-fast -- --test-threads=2 "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
if [ "$image_status" = 0 ]; then
  cargo run -q -p ova-build -- --boot-test "$FERRY_OVA" --mobility-bin "$bins/mobility" \
    --qemu "$qemu" || image_status=1
fi
set -e
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "%d passed, %d failed, %d skipped\n", p, f, s }' "$log"
if [ "$image_status" = 0 ]; then echo "appliance image: built and boot-tested"; else echo "appliance image: FAILED"; fi
[ "$status" = 0 ] && exit "$image_status"
exit "$status"
