#!/usr/bin/env bash
# Installs what the test suite needs and is not part of a Rust toolchain: e2fsprogs (mke2fs, debugfs,
# e2fsck), qemu-utils (qemu-img) and Node.js/npm for Azurite (installed by scripts/azurite.sh itself).
# Runs `apt-get update` at most once, and only when something is missing.
set -euo pipefail
need=()
command -v mke2fs >/dev/null 2>&1 || need+=(e2fsprogs)
command -v debugfs >/dev/null 2>&1 || need+=(e2fsprogs)
command -v qemu-img >/dev/null 2>&1 || need+=(qemu-utils)
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

# Azurite (npm) is installed on first use by scripts/azurite.sh, which the Azurite tests call.
