#!/usr/bin/env bash
# ovaimport.sh — builds tests/vcsim/ovaimport, a `govc import.ova` stand-in (govc is not in Debian's
# govmomi package) that deploys an OVA into vcsim through OvfManager, ImportVApp and the NFC lease.
#
#   scripts/ovaimport.sh build          # prints the binary's path on stdout
#   scripts/ovaimport.sh run [flags]    # builds if needed, then runs it with these flags
#
# Built like scripts/vcsim.sh builds the launcher (scripts/lib/go-build.sh): offline, GOPATH mode,
# Debian's Go against Debian's govmomi sources, cached per user under a key of its Go files, the
# package version and the Go version.
# Env: OVAIMPORT_HOME (cache folder), FORCE=1 (rebuild), GO (go command, default /usr/bin/go).
# Progress goes to stderr; stdout carries only the path (build) or the tool's output (run).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC_DIR=$ROOT/tests/vcsim/ovaimport
# shellcheck source=scripts/lib/go-build.sh
. "$ROOT/scripts/lib/go-build.sh"
HOME_DIR=${OVAIMPORT_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry-ovaimport}

log() { echo "ovaimport.sh: $*" >&2; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2; }

build() { go_build_cached ovaimport "$SRC_DIR" "$HOME_DIR"; }

case "${1:-}" in
  build) shift; [[ $# == 0 ]] || usage; build ;;
  run) shift; bin=$(build); exec "$bin" "$@" ;;
  *) usage ;;
esac
