//! What the installer writes and runs on the guest: the checks on every value that ends up in a shell
//! command or a file there, the install layout, and the generated files (environment file, control
//! script, systemd unit) and scripts. Values are validated to a conservative character set *and*
//! single-quoted, so nothing from a request can change what a command does.

use super::{InstallSpec, PushError, ServiceMode};

/// The systemd unit and the init script (outside the prefix).
pub const UNIT_NAME: &str = "ferry-mobility.service";
pub const UNIT_PATH: &str = "/etc/systemd/system/ferry-mobility.service";
pub const INIT_PATH: &str = "/etc/init.d/ferry-mobility";
/// Written into every generated file; uninstall removes only files that carry it.
pub const MARK: &str = "Ferry mobility agent (installed by the Ferry appliance)";

/// Longest prefix, disk path or token accepted.
const MAX_PATH: usize = 200;
const MAX_TOKEN: usize = 256;

/// `s` as one single-quoted shell word.
pub fn sq(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn invalid(msg: String) -> PushError {
    PushError::Invalid(msg)
}

fn plain_path(what: &str, p: &str) -> Result<(), PushError> {
    if !p.starts_with('/') || p.len() > MAX_PATH {
        return Err(invalid(format!(
            "{what} {p:?} must be an absolute path of at most {MAX_PATH} bytes"
        )));
    }
    for part in p[1..].split('/') {
        let ok_chars = part.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+' | b':' | b'@')
        });
        if part.is_empty() || part == "." || part == ".." || !ok_chars {
            return Err(invalid(format!(
                "{what} {p:?}: every component must be a plain name (letters, digits, . _ - + : @)"
            )));
        }
    }
    Ok(())
}

/// An install prefix: absolute, plain components, at least two of them, the last naming Ferry
/// (`/opt/ferry-mobility`), so an uninstall can never be pointed at a system folder.
pub fn check_prefix(prefix: &str) -> Result<(), PushError> {
    plain_path("prefix", prefix)?;
    let parts: Vec<&str> = prefix[1..].split('/').collect();
    let last = parts.last().copied().unwrap_or_default();
    if parts.len() < 2 || !last.starts_with("ferry") {
        return Err(invalid(format!(
            "prefix {prefix:?} must be a folder of its own whose name starts with \"ferry\", such as /opt/ferry-mobility"
        )));
    }
    Ok(())
}

/// A disk to protect: an absolute path of plain components (`/dev/sdb`, `/dev/disk/by-id/...`).
pub fn check_disk(disk: &str) -> Result<(), PushError> {
    plain_path("disk", disk)
}

/// HOST:PORT of the appliance as the guest reaches it (a name, IPv4 or `[IPv6]`).
pub fn check_appliance_addr(addr: &str) -> Result<(), PushError> {
    let bad = || {
        invalid(format!(
            "appliance address {addr:?} must be HOST:PORT (a host name, IPv4 address or [IPv6] address)"
        ))
    };
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.len() <= 253
            && !host.starts_with('-')
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    };
    if port_ok && host_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

/// A SHA-256 fingerprint: 64 hex digits, colons allowed.
pub fn check_ca_fingerprint(fp: &str) -> Result<(), PushError> {
    let hex: String = fp.chars().filter(|&c| c != ':').collect();
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(invalid(
            "CA fingerprint must be a SHA-256 digest: 64 hex digits, colons allowed".into(),
        ))
    }
}

/// An enrollment token or id: printable ASCII without spaces.
pub fn check_token(what: &str, token: &str) -> Result<(), PushError> {
    if token.is_empty() || token.len() > MAX_TOKEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(format!(
            "{what} must be 1 to {MAX_TOKEN} printable characters without spaces"
        )));
    }
    Ok(())
}

/// Every value of a spec that reaches the guest.
pub fn check_spec(spec: &InstallSpec) -> Result<(), PushError> {
    check_prefix(&spec.prefix)?;
    check_appliance_addr(&spec.appliance_addr)?;
    check_ca_fingerprint(&spec.ca_fingerprint)?;
    if spec.disks.is_empty() {
        return Err(invalid("name at least one disk to protect".into()));
    }
    for d in &spec.disks {
        check_disk(d)?;
    }
    if let Some(e) = &spec.enrollment {
        check_token("enrollment id", &e.id)?;
        check_token("enrollment token", &e.token)?;
    }
    if spec.interval_secs == Some(0) {
        return Err(invalid("interval must be at least 1 second".into()));
    }
    Ok(())
}

/// Paths of an install under its prefix (checked by [`check_prefix`]).
#[derive(Clone, Debug)]
pub struct Layout {
    pub prefix: String,
}

impl Layout {
    pub fn new(prefix: &str) -> Layout {
        Layout {
            prefix: prefix.to_string(),
        }
    }
    fn at(&self, rel: &str) -> String {
        format!("{}/{rel}", self.prefix)
    }
    pub fn bin(&self) -> String {
        self.at("bin/ferry-mobility")
    }
    pub fn ctl(&self) -> String {
        self.at("bin/ferry-mobility-ctl")
    }
    pub fn env(&self) -> String {
        self.at("etc/ferry-mobility.env")
    }
    pub fn token(&self) -> String {
        self.at("etc/enrollment-token")
    }
    pub fn state(&self) -> String {
        self.at("state")
    }
    pub fn registration(&self) -> String {
        self.at("state/registration.json")
    }
    pub fn marker(&self) -> String {
        self.at("state/enrolled-by")
    }
    pub fn pidfile(&self) -> String {
        self.at("run/ferry-mobility.pid")
    }
    pub fn log(&self) -> String {
        self.at("log/ferry-mobility.log")
    }
}

/// The command that runs the agent, quoted for sh and for systemd's ExecStart alike.
pub fn run_command(layout: &Layout, spec: &InstallSpec) -> String {
    let mut cmd = format!(
        "{} run --state-dir {}",
        sq(&layout.bin()),
        sq(&layout.state())
    );
    for d in &spec.disks {
        cmd.push_str(&format!(" --disk {}", sq(d)));
    }
    if let Some(secs) = spec.interval_secs {
        cmd.push_str(&format!(" --interval {secs}"));
    }
    cmd
}

/// `<prefix>/etc/ferry-mobility.env`: what the install was told, for a person and for upgrades.
pub fn env_file(spec: &InstallSpec, mode: ServiceMode) -> String {
    format!(
        "# {MARK}\nFERRY_APPLIANCE={}\nFERRY_CA_FINGERPRINT={}\nFERRY_DISKS={}\nFERRY_SERVICE_MODE={}\n",
        sq(&spec.appliance_addr),
        sq(&spec.ca_fingerprint),
        sq(&spec.disks.join(" ")),
        mode.name()
    )
}

/// The register command, reading the token from its file.
pub fn register_command(layout: &Layout, spec: &InstallSpec) -> String {
    format!(
        "{} register --appliance {} --passphrase-file {} --ca-fingerprint {} --state-dir {}",
        sq(&layout.bin()),
        sq(&spec.appliance_addr),
        sq(&layout.token()),
        sq(&spec.ca_fingerprint),
        sq(&layout.state())
    )
}

/// Start/stop/status with a pidfile: the detached mode's control and, copied to /etc/init.d, the init
/// script. A pid counts as the agent only while `/proc/<pid>/cmdline` names it (a reused pid or a
/// zombie does not).
pub fn ctl_script(layout: &Layout, run: &str) -> String {
    format!(
        r#"#!/bin/sh
### BEGIN INIT INFO
# Provides:          ferry-mobility
# Required-Start:    $network $remote_fs
# Required-Stop:     $network $remote_fs
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: {MARK}
### END INIT INFO
PIDFILE={pidfile}
LOG={log}
running() {{
  [ -f "$PIDFILE" ] || return 1
  pid=$(cat "$PIDFILE" 2>/dev/null)
  case "$pid" in ''|*[!0-9]*) return 1 ;; esac
  kill -0 "$pid" 2>/dev/null && grep -qa ferry-mobility "/proc/$pid/cmdline" 2>/dev/null
}}
case "$1" in
  start)
    if running; then echo "ferry-mobility is running (pid $pid)"; exit 0; fi
    mkdir -p "$(dirname "$PIDFILE")" "$(dirname "$LOG")"
    nohup {run} </dev/null >>"$LOG" 2>&1 &
    echo $! > "$PIDFILE"
    sleep 1
    if running; then echo "ferry-mobility started (pid $pid)"; exit 0; fi
    echo "ferry-mobility exited at once; the end of $LOG:" >&2
    tail -n 5 "$LOG" >&2
    exit 1
    ;;
  stop)
    if running; then
      kill "$pid"
      i=0
      while running; do
        i=$((i + 1))
        if [ "$i" -ge 30 ]; then kill -9 "$pid" 2>/dev/null; fi
        if [ "$i" -ge 40 ]; then echo "ferry-mobility (pid $pid) does not stop" >&2; exit 1; fi
        sleep 1
      done
      echo "ferry-mobility stopped (pid $pid)"
    fi
    rm -f "$PIDFILE"
    ;;
  restart|force-reload)
    "$0" stop && "$0" start
    ;;
  status)
    if running; then echo "ferry-mobility is running (pid $pid)"; exit 0; fi
    echo "ferry-mobility is not running"
    exit 3
    ;;
  *)
    echo "usage: $0 start|stop|restart|status" >&2
    exit 2
    ;;
esac
"#,
        pidfile = sq(&layout.pidfile()),
        log = sq(&layout.log()),
    )
}

/// The systemd unit: restarted on failure, started at boot.
pub fn systemd_unit(run: &str) -> String {
    format!(
        "# {MARK}\n[Unit]\nDescription=Ferry mobility agent\nWants=network-online.target\n\
         After=network-online.target\n\n[Service]\nType=simple\nExecStart={run}\nRestart=on-failure\n\
         RestartSec=10\n\n[Install]\nWantedBy=multi-user.target\n"
    )
}

/// Prints `mode=<systemd|init_script|detached>`, `pid1=<name>` and `boot=<tool|none>`.
pub const DETECT_SERVICE: &str = r#"p1=$(cat /proc/1/comm 2>/dev/null || echo unknown)
echo "pid1=$p1"
if [ -d /run/systemd/system ]; then echo mode=systemd
elif [ -d /etc/init.d ] && { [ "$p1" = init ] || [ "$p1" = openrc-init ]; }; then echo mode=init_script
else echo mode=detached; fi
for t in update-rc.d chkconfig rc-update; do
  if command -v "$t" >/dev/null 2>&1; then echo "boot=$t"; exit 0; fi
done
echo boot=none"#;

/// Enables the init script at boot with the tool [`DETECT_SERVICE`] found.
pub fn enable_init_script(tool: &str) -> Option<&'static str> {
    match tool {
        "update-rc.d" => Some("update-rc.d ferry-mobility defaults"),
        "chkconfig" => Some("chkconfig --add ferry-mobility"),
        "rc-update" => Some("rc-update add ferry-mobility default"),
        _ => None,
    }
}

/// Replaces `path` with stdin, atomically, with `mode` (octal digits).
pub fn write_file(path: &str, mode: &str) -> String {
    let tmp = sq(&format!("{path}.ferry-tmp"));
    format!(
        "umask 077 && mkdir -p \"$(dirname {p})\" && cat > {tmp} && chmod {mode} {tmp} && mv -f {tmp} {p}",
        p = sq(path)
    )
}

/// Prints `df -Pk` of the nearest existing folder at or above `path`, then `dir=<it>`.
pub fn df_script(path: &str) -> String {
    format!(
        "p={}; while [ ! -d \"$p\" ]; do p=$(dirname \"$p\"); done; df -Pk \"$p\" && echo \"dir=$p\"",
        sq(path)
    )
}

/// Stops and removes every way the agent may have been started, then the files. Prints
/// `removed=<what>` for each and `agent=<id>` when it was registered. Files outside the prefix go
/// only when they carry [`MARK`].
pub fn uninstall_script(layout: &Layout) -> String {
    format!(
        r#"P={prefix}
if [ -f {state}/registration.json ]; then
  sed -n 's/.*"agent_id" *: *"\([A-Za-z0-9-]*\)".*/agent=\1/p' {state}/registration.json
fi
if [ -f {unit} ] && grep -q 'Ferry mobility agent' {unit}; then
  systemctl disable --now {unit_name} >/dev/null 2>&1
  rm -f {unit}
  systemctl daemon-reload >/dev/null 2>&1
  echo removed=systemd
fi
if [ -f {init} ] && grep -q 'Ferry mobility agent' {init}; then
  {init} stop || exit 1
  (update-rc.d -f ferry-mobility remove || chkconfig --del ferry-mobility || rc-update del ferry-mobility default) >/dev/null 2>&1
  rm -f {init}
  echo removed=init_script
fi
if [ -x {ctl} ]; then
  {ctl} stop || exit 1
  echo removed=detached
fi
rm -rf "$P/state" "$P/log" "$P/run"
rm -f "$P/bin/ferry-mobility" "$P/bin/ferry-mobility-ctl" "$P/bin/.ferry-mobility.upload" "$P/bin/.ferry-mobility.new" "$P/etc/ferry-mobility.env" "$P/etc/enrollment-token"
rmdir "$P/bin" "$P/etc" "$P" 2>/dev/null
if [ -e "$P/bin/ferry-mobility" ]; then echo "could not remove $P/bin/ferry-mobility" >&2; exit 1; fi
echo removed=files
"#,
        prefix = sq(&layout.prefix),
        state = sq(&layout.state()),
        unit = sq(UNIT_PATH),
        unit_name = UNIT_NAME,
        init = sq(INIT_PATH),
        ctl = sq(&layout.ctl()),
    )
}

#[cfg(test)]
#[path = "script_tests.rs"]
mod tests;
