#!/usr/bin/env bash
# ovaimport.sh — builds tests/vcsim/ovaimport, a `govc import.ova` stand-in (govc is not in Debian's
# govmomi package) that deploys an OVA into vcsim through OvfManager, ImportVApp and the NFC lease.
#
#   scripts/ovaimport.sh build          # prints the binary's path on stdout
#   scripts/ovaimport.sh run [flags]    # builds if needed, then runs it with these flags
#
# Built like scripts/vcsim.sh builds the launcher: offline, GOPATH mode, Debian's Go against the
# govmomi sources of golang-github-vmware-govmomi-dev (scripts/install-test-deps.sh installs both),
# cached per user under a key of its Go files, the package version and the Go version.
# Env: OVAIMPORT_HOME (cache folder), FORCE=1 (rebuild), GO (go command, default /usr/bin/go).
# Progress goes to stderr; stdout carries only the path (build) or the tool's output (run).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC_DIR=$ROOT/tests/vcsim/ovaimport
GOVMOMI_PKG=golang-github-vmware-govmomi-dev
GOCODE=/usr/share/gocode
HOME_DIR=${OVAIMPORT_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry-ovaimport}

log() { echo "ovaimport.sh: $*" >&2; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2; }

build() {
  local go=${GO:-/usr/bin/go}
  [[ -x "$go" ]] || { log "Debian's Go ($go) is missing: run scripts/install-test-deps.sh"; exit 1; }
  [[ -d "$GOCODE/src/github.com/vmware/govmomi/ovf" ]] \
    || { log "$GOVMOMI_PKG is missing: run scripts/install-test-deps.sh"; exit 1; }
  local pkgver gover key
  pkgver=$(dpkg-query -W -f='${Version}' "$GOVMOMI_PKG" 2>/dev/null || echo unknown)
  gover=$("$go" version)
  key=$( { cat "$SRC_DIR"/*.go | sha256sum; echo "$pkgver"; echo "$gover"; } | sha256sum | cut -c1-16)
  local out=$HOME_DIR/$key/ovaimport
  if [[ -z "${FORCE:-}" && -x "$out" ]]; then echo "$out"; return; fi
  mkdir -p "$HOME_DIR"
  (
    # Parallel test runs share the cache folder: one builds, the others wait and find it built.
    if command -v flock >/dev/null; then flock 9; fi
    if [[ -n "${FORCE:-}" || ! -x "$out" ]]; then
      local work
      work=$(mktemp -d -t ferry-ovaimport-build.XXXXXX)
      trap 'rm -rf "$work"' EXIT
      mkdir -p "$work/src/ferry-ovaimport"
      cp "$SRC_DIR"/*.go "$work/src/ferry-ovaimport/"
      log "building ovaimport against $GOVMOMI_PKG $pkgver with $gover (GOPATH mode, offline)"
      local start=$SECONDS
      (cd "$work/src/ferry-ovaimport" && GO111MODULE=off GOPATH="$work:$GOCODE" GOPROXY=off GOFLAGS= \
        CGO_ENABLED=0 "$go" build -o "$work/ovaimport" .) >&2
      mkdir -p "$(dirname "$out")"
      install -m 0755 "$work/ovaimport" "$out.tmp"
      mv -f "$out.tmp" "$out"
      # Builds of older sources are of no further use.
      find "$HOME_DIR" -mindepth 1 -maxdepth 1 -type d ! -name "$key" -exec rm -rf {} +
      log "built $out in $((SECONDS - start)) s"
    fi
  ) 9>"$HOME_DIR/.build.lock"
  [[ -x "$out" ]] || { log "build failed: $out missing"; exit 1; }
  echo "$out"
}

case "${1:-}" in
  build) shift; [[ $# == 0 ]] || usage; build ;;
  run) shift; bin=$(build); exec "$bin" "$@" ;;
  *) usage ;;
esac
