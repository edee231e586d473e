#!/usr/bin/env bash
# azurite.sh — run Azurite's Blob service (Azure Storage emulator) for Ferry's tests.
#
#   eval "$(scripts/azurite.sh start [--dir D] [--mem])"   # prints export lines on stdout
#   scripts/azurite.sh stop [PIDFILE|D]                    # default: $AZURITE_PIDFILE
#
# start: installs azurite@$AZURITE_VERSION (default 3.35.0) with npm into a per-user cache
#   folder if it is missing, starts only `azurite-blob` on 127.0.0.1 with port 0 (the OS
#   picks a free port, so parallel runs never collide), reads the port from its log, waits
#   until it answers HTTP, writes D/azurite.pid and prints:
#     export AZURITE_BLOB_URL='http://127.0.0.1:PORT/devstoreaccount1'   (account URL)
#     export AZURITE_ACCOUNT=... AZURITE_KEY=... (the well-known emulator account)
#     export AZURITE_PID=... AZURITE_PIDFILE=... AZURITE_DIR=...
#   D defaults to a new temporary folder, which `stop` removes again. --mem keeps blobs in
#   memory instead of D/data.
# stop: signals only the PID in the pidfile, and only while it still is an azurite process
#   (SIGTERM, SIGKILL after 10 s).
# Env: AZURITE_VERSION, AZURITE_HOME (install folder), AZURITE_BIN (an existing azurite-blob),
#      AZURITE_TIMEOUT (seconds to wait for it to answer, default 60).
# Needs node and npm. Progress goes to stderr; stdout carries only the export lines.
set -euo pipefail

VERSION=${AZURITE_VERSION:-3.35.0}
INSTALL_DIR=${AZURITE_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry-azurite-npm-$VERSION}
TIMEOUT=${AZURITE_TIMEOUT:-60}
ACCOUNT=devstoreaccount1
KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='

log() { echo "azurite.sh: $*" >&2; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2; }

install_if_missing() {
  local bin=${AZURITE_BIN:-$INSTALL_DIR/node_modules/.bin/azurite-blob}
  if [[ -x "$bin" ]]; then echo "$bin"; return; fi
  [[ -n "${AZURITE_BIN:-}" ]] && { log "AZURITE_BIN=$AZURITE_BIN is not executable"; exit 1; }
  command -v npm >/dev/null || { log "npm not found on PATH"; exit 1; }
  mkdir -p "$INSTALL_DIR"
  log "installing azurite@$VERSION into $INSTALL_DIR (npm, ~20-60 s)"
  (
    # Parallel test runs share the cache folder: one installs, the others wait.
    if command -v flock >/dev/null; then flock 9; fi
    [[ -x "$bin" ]] || npm install --prefix "$INSTALL_DIR" "azurite@$VERSION" \
        --no-audit --no-fund --loglevel=error >&2
  ) 9>"$INSTALL_DIR/.install.lock"
  [[ -x "$bin" ]] || { log "npm install failed: $bin missing"; exit 1; }
  echo "$bin"
}

start() {
  local dir="" mem=0
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --dir) dir=${2:?--dir needs a folder}; shift ;;
      --mem) mem=1 ;;
      *) log "unknown argument: $1"; usage ;;
    esac
    shift
  done
  command -v node >/dev/null || { log "node not found on PATH"; exit 1; }
  local bin
  bin=$(install_if_missing)

  local created=0
  if [[ -z "$dir" ]]; then dir=$(mktemp -d -t ferry-azurite.XXXXXX); created=1; fi
  mkdir -p "$dir/data"
  dir=$(cd "$dir" && pwd)
  [[ $created == 1 ]] && touch "$dir/.created-by-azurite-sh"
  local pidfile=$dir/azurite.pid logfile=$dir/azurite.log

  local args=(--blobHost 127.0.0.1 --blobPort 0 --skipApiVersionCheck --loose --disableTelemetry)
  # --inMemoryPersistence refuses to start together with --location.
  if [[ $mem == 1 ]]; then args+=(--inMemoryPersistence); else args+=(--location "$dir/data"); fi

  # Created before the start: the wait loop may read it before the child opens it.
  : >"$logfile"
  # setsid: its own session, so it outlives this shell; $! is the node process itself.
  (cd "$dir" && exec setsid "$bin" "${args[@]}" >"$logfile" 2>&1 </dev/null) &
  local pid=$!
  echo "$pid" >"$pidfile"
  # Any failure from here on must not leave the server running.
  STARTED_PID=$pid STARTED_PIDFILE=$pidfile
  trap 'kill "$STARTED_PID" 2>/dev/null || true; rm -f "$STARTED_PIDFILE"' EXIT

  local url="" deadline=$((SECONDS + TIMEOUT))
  while (( SECONDS < deadline )); do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "azurite exited during startup; its log:"; cat "$logfile" >&2; exit 1
    fi
    url=$(sed -n 's#.*successfully listens on \(http://127\.0\.0\.1:[0-9][0-9]*\).*#\1#p' "$logfile" 2>/dev/null | head -1 || true)
    # Any HTTP answer (403 without credentials) means it is serving.
    if [[ -n "$url" ]] && node -e '
        require("http").get(process.argv[1] + "/devstoreaccount1?comp=list", () => process.exit(0))
          .on("error", () => process.exit(1));' "$url" 2>/dev/null; then
      break
    fi
    url=""; sleep 0.1
  done
  if [[ -z "$url" ]]; then
    log "no answer within ${TIMEOUT}s; its log:"; cat "$logfile" >&2
    exit 1
  fi
  trap - EXIT
  log "blob service on $url (pid $pid, state in $dir)"
  cat <<ENV
export AZURITE_BLOB_URL='$url/$ACCOUNT'
export AZURITE_ACCOUNT='$ACCOUNT'
export AZURITE_KEY='$KEY'
export AZURITE_PID='$pid'
export AZURITE_PIDFILE='$pidfile'
export AZURITE_DIR='$dir'
ENV
}

stop() {
  local target=${1:-${AZURITE_PIDFILE:-}}
  [[ -n "$target" ]] || { log "stop: give a pidfile or state folder (or set AZURITE_PIDFILE)"; exit 2; }
  local pidfile=$target
  [[ -d "$target" ]] && pidfile=$target/azurite.pid
  [[ -f "$pidfile" ]] || { log "stop: no pidfile at $pidfile"; exit 1; }
  local pid dir
  pid=$(cat "$pidfile")
  dir=$(cd "$(dirname "$pidfile")" && pwd)
  # Only that PID, and only while it still runs azurite (PIDs get reused).
  if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q azurite; then
    kill -TERM "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$pidfile"
  if [[ -f "$dir/.created-by-azurite-sh" ]]; then rm -rf "$dir"; fi
  log "stopped pid $pid"
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  *) usage ;;
esac
