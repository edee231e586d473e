# Sourced by scripts/vcsim.sh and scripts/ovaimport.sh: builds a Go program of the project's offline in
# GOPATH mode with Debian's Go against the govmomi sources Debian's golang-github-vmware-govmomi-dev installs
# (no module download; CGO_ENABLED=0, so no C compiler). The binary is cached under a key of its Go files,
# the package version and the Go version, so it is rebuilt only when one of them changes; parallel runs
# wait for one build (flock). GOCACHE is left alone, so rebuilds after an edit take seconds.
#
#   go_build_cached NAME SRC_DIR CACHE_DIR [SELFTEST_ARG]   # prints the binary's path
#
# With SELFTEST_ARG the binary must also pass `BIN SELFTEST_ARG` to count as built. The caller defines
# log(). Env: FORCE=1 (rebuild), GO (go command, default /usr/bin/go).

GOVMOMI_PKG=golang-github-vmware-govmomi-dev
GOCODE=/usr/share/gocode

go_build_cached() {
  local name=$1 src=$2 home=$3 selftest=${4:-}
  local go=${GO:-/usr/bin/go}
  [[ -x "$go" ]] || { log "Debian's Go ($go) is missing: run scripts/install-test-deps.sh"; exit 1; }
  [[ -d "$GOCODE/src/github.com/vmware/govmomi/simulator" ]] \
    || { log "$GOVMOMI_PKG is missing: run scripts/install-test-deps.sh"; exit 1; }
  local pkgver gover key
  pkgver=$(dpkg-query -W -f='${Version}' "$GOVMOMI_PKG" 2>/dev/null || echo unknown)
  gover=$("$go" version)
  key=$( { cat "$src"/*.go | sha256sum; echo "$pkgver"; echo "$gover"; } | sha256sum | cut -c1-16)
  local out=$home/$key/$name
  if [[ -z "${FORCE:-}" ]] && _go_built "$out" "$selftest"; then echo "$out"; return; fi
  mkdir -p "$home"
  (
    if command -v flock >/dev/null; then flock 9; fi
    if [[ -n "${FORCE:-}" ]] || ! _go_built "$out" "$selftest"; then
      local work
      work=$(mktemp -d -t "ferry-$name-build.XXXXXX")
      trap 'rm -rf "$work"' EXIT
      mkdir -p "$work/src/ferry-$name"
      cp "$src"/*.go "$work/src/ferry-$name/"
      log "building $name against $GOVMOMI_PKG $pkgver with $gover (GOPATH mode, offline)"
      local start=$SECONDS
      (cd "$work/src/ferry-$name" && GO111MODULE=off GOPATH="$work:$GOCODE" GOPROXY=off GOFLAGS= \
        CGO_ENABLED=0 "$go" build -o "$work/$name" .) >&2
      if [[ -n "$selftest" ]]; then "$work/$name" "$selftest" >/dev/null; fi
      mkdir -p "$(dirname "$out")"
      install -m 0755 "$work/$name" "$out.tmp"
      mv -f "$out.tmp" "$out"
      # Builds of older sources are of no further use.
      find "$home" -mindepth 1 -maxdepth 1 -type d ! -name "$key" -exec rm -rf {} +
      log "built $out in $((SECONDS - start)) s"
    fi
  ) 9>"$home/.build.lock"
  [[ -x "$out" ]] || { log "build failed: $out missing"; exit 1; }
  echo "$out"
}

_go_built() {
  [[ -x "$1" ]] || return 1
  [[ -z "$2" ]] || "$1" "$2" >/dev/null 2>&1
}
