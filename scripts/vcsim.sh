#!/usr/bin/env bash
# vcsim.sh — Ferry's test vCenter: VMware's vSphere simulator (govmomi's `simulator` package from
# Debian's golang-github-vmware-govmomi-dev) behind our launcher, tests/vcsim/launch.go.
#
#   scripts/vcsim.sh build                          # prints the binary's path on stdout
#   eval "$(scripts/vcsim.sh start [--dir D] [vcsim flags...])"
#   scripts/vcsim.sh stop [D]                       # default: $VCSIM_DIR
#
# build: compiles launch.go offline in GOPATH mode with Debian's Go against the library sources
#   the Debian package installs (scripts/install-test-deps.sh installs both). The binary is kept
#   in a per-user cache folder under a key of launch.go, the govmomi package version and the Go
#   version, so it is rebuilt only when one of them changes. Parallel runs wait for one build.
# start: builds if needed, makes a fresh self-signed RSA-2048 certificate with openssl (the
#   library's built-in one is RSA-1024, which rustls refuses), starts vcsim on 127.0.0.1 with
#   port 0 (vcsim takes a free port itself, so parallel runs never collide), waits until a SOAP
#   RetrieveServiceContent answers over TLS verified against that certificate, writes D/vcsim.env
#   and prints:
#     export VCSIM_URL='https://127.0.0.1:PORT/sdk' VCSIM_PORT VCSIM_PID VCSIM_DIR
#     VCSIM_THUMBPRINT (SHA-1, colon hex as vSphere shows it) VCSIM_THUMBPRINT_SHA256 VCSIM_CERT
#   D defaults to a new temporary folder, which `stop` removes again. Flags go to the launcher
#   after the defaults and override them: -dc -cluster -host -standalone-host -vm -ds -pool
#   -folder (VMs = dc * (cluster + standalone-host) * vm), -username U -password P (without them
#   any non-empty user and password log in), -trace [-trace-file F], -esx, -tls=false.
#   Default inventory: 1 datacenter, 1 cluster of 2 hosts, 1 datastore, 2 powered-on VMs.
# stop: SIGTERM to the pid in D/vcsim.pid, and only while that process still is the vcsim of D
#   (SIGKILL after 10 s); vcsim then removes its datastore folders. D goes too if start made it.
# Env: VCSIM_BIN (use this binary, no build), VCSIM_HOME (build cache folder), FORCE=1 (rebuild),
#      VCSIM_TIMEOUT (seconds to wait for the SOAP answer, default 60), GO (go command, default
#      Debian's /usr/bin/go), VCSIM_TLS_CERT/VCSIM_TLS_KEY (serve this PEM pair instead),
#      VCSIM_DATASTORES (folder for the datastore folders; default: a new folder in /dev/shm).
# Progress goes to stderr; stdout carries only the path (build) or the export lines (start).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC_DIR=$ROOT/tests/vcsim
# shellcheck source=scripts/lib/go-build.sh
. "$ROOT/scripts/lib/go-build.sh"
HOME_DIR=${VCSIM_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry-vcsim}
TIMEOUT=${VCSIM_TIMEOUT:-60}

log() { echo "vcsim.sh: $*" >&2; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2; }

build() {
  if [[ -n "${VCSIM_BIN:-}" ]]; then
    [[ -x "$VCSIM_BIN" ]] || { log "VCSIM_BIN=$VCSIM_BIN is not executable"; exit 1; }
    echo "$VCSIM_BIN"; return
  fi
  # Every Go file of the launcher (launch.go and the simulator objects it adds) is part of the key.
  go_build_cached vcsim "$SRC_DIR" "$HOME_DIR" selftest
}

# The value of KEY=value in a file of such lines.
env_get() { sed -n "s/^$1=//p" "$2" | head -n1; }

start() {
  local dir=""
  if [[ "${1:-}" == --dir ]]; then dir=${2:?--dir needs a folder}; shift 2; fi
  local a
  for a in "$@"; do
    case "$a" in
      -pidfile*|--pidfile*|-envfile*|--envfile*|-datastore-dir*|--datastore-dir*)
        log "$a: set by this script; not a flag for start"; exit 2 ;;
    esac
  done
  command -v curl >/dev/null || { log "curl not found"; exit 1; }
  command -v openssl >/dev/null || { log "openssl not found"; exit 1; }
  local bin
  bin=$(build)

  local created=0
  if [[ -z "$dir" ]]; then dir=$(mktemp -d -t ferry-vcsim.XXXXXX); created=1; fi
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [[ $created == 1 ]] && touch "$dir/.created-by-vcsim-sh"
  local pidfile=$dir/vcsim.pid launcher_env=$dir/launcher.env logfile=$dir/vcsim.log
  rm -f "$launcher_env"
  if [[ -f "$pidfile" ]] && is_ours "$(cat "$pidfile")" "$dir"; then
    log "a vcsim already runs for $dir (pid $(cat "$pidfile"))"; exit 1
  fi

  local cert=${VCSIM_TLS_CERT:-} key=${VCSIM_TLS_KEY:-}
  if [[ -z "$cert" ]]; then
    cert=$dir/vcsim.crt key=$dir/vcsim.key
    # SANs for both loopback forms, so clients that verify the name accept it.
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=vcsim" \
      -addext "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost" \
      -keyout "$key" -out "$cert" >/dev/null 2>&1 || { log "openssl could not make a certificate"; exit 1; }
  fi

  # vcsim writes a dozen files per VM while it builds the inventory. On a busy ext4 disk that
  # took 5-10 s for 1,000 VMs (almost all of it in openat/mkdir), on tmpfs under 1 s: so the
  # datastores live in memory when /dev/shm is there (VCSIM_DATASTORES overrides), linked from
  # D/datastores so that `stop` finds them. The model VMs' files are tiny.
  local ds_base=${VCSIM_DATASTORES:-}
  if [[ -z "$ds_base" && -d /dev/shm && -w /dev/shm ]]; then
    ds_base=$(mktemp -d -p /dev/shm ferry-vcsim-ds.XXXXXX)
  fi
  local ds=$dir/datastores
  if [[ -n "$ds_base" ]]; then
    mkdir -p "$ds_base"
    rm -rf "$ds"
    ln -s "$ds_base" "$ds"
    ds=$ds_base
  fi

  # The script's own flags first: Go's flag parsing stops at the first stray argument, and what
  # follows it would be lost. The caller's flags come last and override the defaults.
  local args=(-datastore-dir "$ds" -pidfile "$pidfile" -envfile "$launcher_env"
              -l 127.0.0.1:0 -dc 1 -cluster 1 -host 2 -standalone-host 0 -ds 1 -vm 2
              -tlscert "$cert" -tlskey "$key")
  args+=("$@")

  : >"$logfile"
  # setsid: its own session, so it outlives this shell; $! is the launcher itself.
  (cd "$dir" && exec setsid "$bin" "${args[@]}" >"$dir/vcsim.out" 2>"$logfile" </dev/null) &
  local pid=$!
  # Any failure from here on must not leave the simulator running or its folder behind.
  STARTED_PID=$pid STARTED_DIR=$dir STARTED_CREATED=$created
  trap 'kill "$STARTED_PID" 2>/dev/null || true; remove_datastores "$STARTED_DIR"
        [[ $STARTED_CREATED == 1 ]] && rm -rf "$STARTED_DIR"' EXIT

  local deadline=$((SECONDS + TIMEOUT))
  until [[ -s "$launcher_env" ]]; do
    if ! alive "$pid"; then log "vcsim exited during startup; its log:"; cat "$logfile" >&2; exit 1; fi
    if (( SECONDS >= deadline )); then log "vcsim did not serve within ${TIMEOUT}s"; cat "$logfile" >&2; exit 1; fi
    sleep 0.05
  done
  local url port thumb thumb256
  url=$(env_get VCSIM_URL "$launcher_env")
  port=$(env_get VCSIM_PORT "$launcher_env")
  thumb=$(env_get VCSIM_THUMBPRINT "$launcher_env")
  thumb256=$(env_get VCSIM_THUMBPRINT_SHA256 "$launcher_env")
  local tls_opt=(--cacert "$cert")
  if [[ $url == http:* ]]; then tls_opt=(); cert=; fi

  # One real SOAP call, over TLS verified against the certificate: proves the whole path works.
  local body='<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:vim25="urn:vim25"><soapenv:Body><vim25:RetrieveServiceContent><vim25:_this type="ServiceInstance">ServiceInstance</vim25:_this></vim25:RetrieveServiceContent></soapenv:Body></soapenv:Envelope>'
  until curl -s --max-time 5 "${tls_opt[@]}" -H 'Content-Type: text/xml; charset=utf-8' \
      -H 'SOAPAction: "urn:vim25/6.5"' --data-binary "$body" "$url" 2>/dev/null \
      | grep -q RetrieveServiceContentResponse; do
    if ! alive "$pid"; then log "vcsim died; its log:"; cat "$logfile" >&2; exit 1; fi
    if (( SECONDS >= deadline )); then log "no SOAP answer from $url within ${TIMEOUT}s"; exit 1; fi
    sleep 0.1
  done
  trap - EXIT

  cat >"$dir/vcsim.env" <<ENV
export VCSIM_URL='$url'
export VCSIM_PORT='$port'
export VCSIM_PID='$pid'
export VCSIM_DIR='$dir'
export VCSIM_THUMBPRINT='$thumb'
export VCSIM_THUMBPRINT_SHA256='$thumb256'
export VCSIM_CERT='$cert'
ENV
  log "serving $url (pid $pid, state in $dir): $(grep -m1 'inventory:' "$logfile" | sed 's/^vcsim: //')"
  cat "$dir/vcsim.env"
}

# True while PID exists and is not a zombie (the launcher is not our child once this shell is
# gone, and a reaper may be slow).
alive() {
  local state
  state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null || true)
  [[ -n "$state" && "$state" != Z ]]
}

# True when PID is alive and is the vcsim started for DIR (its command line names DIR's pidfile),
# so a reused PID is never signalled.
is_ours() {
  alive "$1" || return 1
  tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | grep -qxF "$2/vcsim.pid"
}

# Removes the datastores of DIR when they live outside it (a link into /dev/shm made by start):
# vcsim deletes them itself on a clean exit, but not when it was killed.
remove_datastores() {
  local link=$1/datastores target
  [[ -L "$link" ]] || return 0
  target=$(readlink "$link")
  case "$target" in
    /dev/shm/ferry-vcsim-ds.*) rm -rf "$target" ;;
  esac
  rm -f "$link"
}

stop() {
  local dir=${1:-${VCSIM_DIR:-}}
  [[ -n "$dir" ]] || { log "stop: give the state folder (or set VCSIM_DIR)"; exit 2; }
  [[ -d "$dir" ]] || { log "stop: no folder $dir"; exit 1; }
  dir=$(cd "$dir" && pwd)
  local pid=""
  [[ -f "$dir/vcsim.pid" ]] && pid=$(cat "$dir/vcsim.pid")
  if [[ -n "$pid" ]] && is_ours "$pid" "$dir"; then
    kill -TERM "$pid"
    for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then log "pid $pid ignored SIGTERM for 10 s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
    log "stopped pid $pid"
  else
    log "no vcsim running for $dir"
  fi
  remove_datastores "$dir"
  if [[ -f "$dir/.created-by-vcsim-sh" ]]; then rm -rf "$dir"; fi
}

case "${1:-}" in
  build) shift; [[ $# == 0 ]] || usage; build ;;
  start) shift; start "$@" ;;
  stop) shift; [[ $# -le 1 ]] || usage; stop "$@" ;;
  *) usage ;;
esac
