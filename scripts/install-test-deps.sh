#!/usr/bin/env bash
# Installs what the test suite needs and is not part of a Rust toolchain:
# - Debian packages: e2fsprogs (mke2fs, debugfs, e2fsck), qemu-utils (qemu-img), Node.js/npm (Azurite,
#   installed by scripts/azurite.sh itself, and the browser tests), chromium (the browser tests drive
#   Debian's /usr/bin/chromium; no test tool downloads a browser of its own), python3-venv;
# - playwright-core (pinned in tests/browser/package.json and its lock file) into tests/browser/node_modules;
# - schemathesis (pinned below) into a virtualenv under the per-user cache folder:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/ferry-test/venv (FERRY_TEST_VENV overrides; the tests read the same);
# - for the vCenter tests: Debian's Go (golang-go) and govmomi's simulator library
#   (golang-github-vmware-govmomi-dev), from which scripts/vcsim.sh builds the test vCenter offline,
#   openssl (its TLS certificate), openssh-server (sshd as a stand-in guest for push installs), and
#   pyvmomi (pinned below, the reference client) into the same virtualenv as schemathesis.
# Idempotent and fast when everything is there: `apt-get update` runs at most once, and only when a
# Debian package is missing; npm and pip run only when their pinned version is not installed yet.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
PYVMOMI_VERSION=9.1.1.0
VENV=${FERRY_TEST_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry-test/venv}

log() { echo "install-test-deps: $*" >&2; }

need=()
command -v mke2fs >/dev/null 2>&1 || need+=(e2fsprogs)
command -v debugfs >/dev/null 2>&1 || need+=(e2fsprogs)
command -v qemu-img >/dev/null 2>&1 || need+=(qemu-utils)
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
command -v curl >/dev/null 2>&1 || need+=(curl)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v python3 >/dev/null 2>&1 || need+=(python3)
# Debian's python3 has no venv/ensurepip without python3-venv.
if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  need+=(python3-venv)
fi
# Go and govmomi are checked as Debian packages: scripts/vcsim.sh builds against Debian's Go and the
# library sources that package puts under /usr/share/gocode, not against any other Go on PATH.
deb_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
deb_installed golang-go || need+=(golang-go)
deb_installed golang-github-vmware-govmomi-dev || need+=(golang-github-vmware-govmomi-dev)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
if [ ${#need[@]} -gt 0 ]; then
  log "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  start=$SECONDS
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
  log "apt packages installed in $((SECONDS - start)) s"
fi

# playwright-core, exactly the version of tests/browser/package-lock.json. It never downloads a
# browser (only the `playwright` package does that on install); the scripts launch /usr/bin/chromium.
browser=tests/browser
want=$(node -e 'console.log(require(process.argv[1]).packages["node_modules/playwright-core"].version)' \
  "$PWD/$browser/package-lock.json")
have=$(node -e 'try { console.log(require(process.argv[1]).version) } catch { console.log("") }' \
  "$PWD/$browser/node_modules/playwright-core/package.json")
if [ "$want" != "$have" ]; then
  log "installing playwright-core@$want into $browser/node_modules (npm ci)"
  start=$SECONDS
  (cd "$browser" && npm ci --no-audit --no-fund --loglevel=error >&2)
  log "playwright-core installed in $((SECONDS - start)) s"
fi

# schemathesis in its own virtualenv; the marker records the pinned version it holds.
marker=$VENV/.ferry-schemathesis-version
if [ "$(cat "$marker" 2>/dev/null || true)" != "$SCHEMATHESIS_VERSION" ] || [ ! -x "$VENV/bin/schemathesis" ]; then
  mkdir -p "$(dirname "$VENV")"
  (
    # Parallel runs share the cache folder: one installs, the others wait and then find it done.
    if command -v flock >/dev/null 2>&1; then flock 9; fi
    if [ "$(cat "$marker" 2>/dev/null || true)" != "$SCHEMATHESIS_VERSION" ] || [ ! -x "$VENV/bin/schemathesis" ]; then
      log "installing schemathesis==$SCHEMATHESIS_VERSION into $VENV (pip)"
      start=$SECONDS
      rm -rf "$VENV"
      python3 -m venv "$VENV"
      "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "schemathesis==$SCHEMATHESIS_VERSION" >&2
      "$VENV/bin/schemathesis" --version >/dev/null
      echo "$SCHEMATHESIS_VERSION" >"$marker"
      log "schemathesis installed in $((SECONDS - start)) s"
    fi
  ) 9>"$(dirname "$VENV")/.venv-install.lock"
fi

# pyvmomi in the same virtualenv, after the block above (which recreates the virtualenv when the
# schemathesis pin changes, and so also drops this marker); its own marker records its pin.
pv_marker=$VENV/.ferry-pyvmomi-version
if [ "$(cat "$pv_marker" 2>/dev/null || true)" != "$PYVMOMI_VERSION" ] \
  || ! "$VENV/bin/python" -c 'import pyVmomi' >/dev/null 2>&1; then
  (
    if command -v flock >/dev/null 2>&1; then flock 9; fi
    if [ "$(cat "$pv_marker" 2>/dev/null || true)" != "$PYVMOMI_VERSION" ] \
      || ! "$VENV/bin/python" -c 'import pyVmomi' >/dev/null 2>&1; then
      log "installing pyvmomi==$PYVMOMI_VERSION into $VENV (pip)"
      start=$SECONDS
      "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "pyvmomi==$PYVMOMI_VERSION" >&2
      "$VENV/bin/python" -c 'import pyVmomi' >/dev/null
      echo "$PYVMOMI_VERSION" >"$pv_marker"
      log "pyvmomi installed in $((SECONDS - start)) s"
    fi
  ) 9>"$(dirname "$VENV")/.venv-install.lock"
fi
