#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for N seconds each (argument, else FUZZ_SECONDS, else 60) and fails
# when any target crashes, panics, runs out of memory or hangs on an input. Installs cargo-fuzz from crates.io
# when it is missing. Works on the stable toolchain: RUSTC_BOOTSTRAP lets cargo fuzz pass its -Z flags.
# The working corpus grows in fuzz/corpus/<target>/ (not committed); fuzz/seeds/<target>/ and the vSphere
# response samples are read-only seeds. A crashing input lands in fuzz/artifacts/<target>/; see fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-${FUZZ_SECONDS:-60}}"
case "$seconds" in
  '' | *[!0-9]*) echo "usage: scripts/fuzz.sh [seconds per target]" >&2; exit 2 ;;
esac
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
# Its own target dir: the fuzz build (sanitizer flags) would otherwise evict the workspace's artifacts.
target_dir="${FUZZ_TARGET_DIR:-fuzz/target}"
start=$(date +%s)
cargo fuzz build --target-dir "$target_dir"
echo "fuzz: built every target in $(($(date +%s) - start)) s"
failed=()
for target in $(cargo fuzz list); do
  corpus="fuzz/corpus/$target"
  mkdir -p "$corpus"
  seeds=()
  [ -d "fuzz/seeds/$target" ] && seeds+=("fuzz/seeds/$target")
  [ "$target" = soap_response ] && seeds+=(vsphere/tests/samples)
  echo "fuzz: $target for $seconds s"
  # The first corpus folder is the one libFuzzer writes to; the seed folders are only read.
  if ! cargo fuzz run --target-dir "$target_dir" "$target" "$corpus" "${seeds[@]}" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1; then
    failed+=("$target")
  fi
done
echo "fuzz: done in $(($(date +%s) - start)) s"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]} (inputs in fuzz/artifacts/; reproduce with" \
    "RUSTC_BOOTSTRAP=1 cargo fuzz run --target-dir $target_dir <target> <artifact>)" >&2
  exit 1
fi
