//! Push install of the mobility agent into a Linux guest over SSH: install, upgrade and uninstall, each
//! a sequence of idempotent steps (so a failed or interrupted run is simply run again).
//!
//! What an install leaves on the guest, under `<prefix>` (default `/opt/ferry-mobility`):
//!
//! ```text
//! <prefix>/bin/ferry-mobility        the agent binary for the guest's architecture (0755)
//! <prefix>/bin/ferry-mobility-ctl    start | stop | restart | status with a pidfile (detached and init modes)
//! <prefix>/etc/ferry-mobility.env    appliance address, CA fingerprint, disks, service mode (0600)
//! <prefix>/etc/enrollment-token      the one-time token, only until `register` succeeded (0600)
//! <prefix>/state/                    the agent's state folder (registration, credentials, trackers)
//! <prefix>/state/enrolled-by         id of the enrollment the registration used (makes re-runs skip it)
//! <prefix>/run/ferry-mobility.pid, <prefix>/log/ferry-mobility.log   detached and init modes
//! /etc/systemd/system/ferry-mobility.service   when systemd runs
//! /etc/init.d/ferry-mobility                    when a SysV-style init runs instead
//! ```
//!
//! How the agent is kept running depends on the guest: a systemd unit when systemd is PID 1
//! (`/run/systemd/system` exists), an init script when PID 1 is a SysV-style init with `/etc/init.d`,
//! and otherwise (containers, sandboxes: nothing would start a service) a detached process with a
//! pidfile. The job log says which.
//!
//! Commands that change the system run as root: directly when the SSH user is root, else through
//! `sudo -n` (never prompting; a sudo that wants a password is [`PushError::SudoNeedsPassword`]).
//! The binary goes over SFTP, or through `cat` on an exec channel when the server offers no SFTP.
//!
//! A guest the appliance cannot reach over the network is reached through its vCenter instead
//! ([`GuestTarget::Tools`], `tools.rs`): vSphere guest operations (VMware Tools) run the same
//! commands and copy the same files; only the way there differs (`conn.rs`).

mod conn;
mod guest;
mod job;
pub mod probe;
pub mod script;
pub mod ssh;
pub mod tools;

pub use job::{install, uninstall, upgrade};
pub use probe::Arch;
pub use tools::ToolsTarget;

use std::path::PathBuf;
use std::time::Duration;

/// Default install prefix on the guest.
pub const DEFAULT_PREFIX: &str = "/opt/ferry-mobility";
/// The agent binary's name in `<agents dir>`: `mobility-<arch>`.
pub const AGENT_FILE_PREFIX: &str = "mobility-";

/// How to log in.
#[derive(Clone)]
pub enum Auth {
    Password(String),
    /// An OpenSSH or PEM private key, optionally encrypted with `passphrase`.
    PrivateKey {
        pem: String,
        passphrase: Option<String>,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets, not even in debug output.
        match self {
            Auth::Password(_) => f.write_str("Password(..)"),
            Auth::PrivateKey { .. } => f.write_str("PrivateKey(..)"),
        }
    }
}

/// Which host key to accept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// Accept whatever key the host presents (the caller records it and pins it next time).
    TrustOnFirstUse,
    /// Accept only this key: its SHA-256 fingerprint as OpenSSH prints it (`SHA256:<base64>`).
    Pinned(String),
}

/// The guest to reach.
#[derive(Clone, Debug)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub auth: Auth,
    pub host_key: HostKeyPolicy,
    /// TCP connect plus SSH handshake and authentication.
    pub connect_timeout: Duration,
    /// One remote command (the binary upload gets [`Target::upload_timeout`]).
    pub command_timeout: Duration,
    pub upload_timeout: Duration,
}

impl Target {
    /// A target with the default timeouts (15 s to connect, 120 s per command, 600 s per upload).
    pub fn new(
        host: &str,
        port: u16,
        username: &str,
        auth: Auth,
        host_key: HostKeyPolicy,
    ) -> Target {
        Target {
            host: host.to_string(),
            port,
            username: username.to_string(),
            auth,
            host_key,
            connect_timeout: Duration::from_secs(15),
            command_timeout: Duration::from_secs(120),
            upload_timeout: Duration::from_secs(600),
        }
    }
}

/// The guest to reach, and how: over SSH, or through vSphere guest operations (VMware Tools).
#[derive(Clone, Debug)]
pub enum GuestTarget {
    Ssh(Target),
    Tools(ToolsTarget),
}

impl From<&Target> for GuestTarget {
    fn from(t: &Target) -> GuestTarget {
        GuestTarget::Ssh(t.clone())
    }
}

impl From<&ToolsTarget> for GuestTarget {
    fn from(t: &ToolsTarget) -> GuestTarget {
        GuestTarget::Tools(t.clone())
    }
}

impl GuestTarget {
    pub fn username(&self) -> &str {
        match self {
            GuestTarget::Ssh(t) => &t.username,
            GuestTarget::Tools(t) => &t.username,
        }
    }

    pub fn command_timeout(&self) -> Duration {
        match self {
            GuestTarget::Ssh(t) => t.command_timeout,
            GuestTarget::Tools(t) => t.command_timeout,
        }
    }
}

/// How the agent is kept running on the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceMode {
    Systemd,
    InitScript,
    /// Started with nohup and a pidfile; nothing restarts it after a reboot.
    Detached,
}

impl ServiceMode {
    pub fn name(self) -> &'static str {
        match self {
            ServiceMode::Systemd => "systemd",
            ServiceMode::InitScript => "init_script",
            ServiceMode::Detached => "detached",
        }
    }

    pub fn parse(s: &str) -> Option<ServiceMode> {
        match s.trim() {
            "systemd" => Some(ServiceMode::Systemd),
            "init_script" => Some(ServiceMode::InitScript),
            "detached" => Some(ServiceMode::Detached),
            _ => None,
        }
    }
}

/// The one-time enrollment token the appliance issued for this guest.
#[derive(Clone)]
pub struct Enrollment {
    /// Public id (written to the guest as `enrolled-by`, so a re-run recognises its registration).
    pub id: String,
    /// The secret, passed to the agent as its registration passphrase.
    pub token: String,
}

impl std::fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrollment")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// What to install and how.
#[derive(Clone, Debug)]
pub struct InstallSpec {
    /// Absolute install folder on the guest (see the module docs).
    pub prefix: String,
    /// Local folder holding `mobility-x86_64`, `mobility-aarch64`.
    pub agents_dir: PathBuf,
    /// HOST:PORT of the appliance's replication listener, as the guest reaches it.
    pub appliance_addr: String,
    /// SHA-256 fingerprint of the appliance CA (hex, colons allowed).
    pub ca_fingerprint: String,
    /// Disks (block devices or image files) on the guest to protect.
    pub disks: Vec<String>,
    /// Required to install; upgrades and uninstalls do not register.
    pub enrollment: Option<Enrollment>,
    /// `None`: chosen from what the guest runs.
    pub service: Option<ServiceMode>,
    /// Seconds between replication passes (`mobility run --interval`); `None`: the agent's default.
    pub interval_secs: Option<u64>,
}

/// What a successful operation found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The host key's SHA-256 fingerprint (`SHA256:<base64>`): record it to pin the key next time.
    /// Empty through VMware Tools (no SSH, no host key).
    pub host_key: String,
    pub arch: Option<Arch>,
    /// The distribution, from /etc/os-release.
    pub os: Option<String>,
    pub service: Option<ServiceMode>,
    /// The agent's id, from its registration on the guest.
    pub agent_id: Option<String>,
}

/// Where an operation reports its steps (one line each, for the job log).
pub type Log<'a> = &'a (dyn Fn(&str) + Send + Sync);

/// Why a push operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error("authentication failed for user {user}: {detail}")]
    AuthenticationFailed { user: String, detail: String },
    #[error("host {host} is unreachable: {detail}")]
    HostUnreachable { host: String, detail: String },
    #[error(
        "the host key of {host} changed: expected {expected}, the host presented {found}; if the guest \
         was reinstalled, accept the new key, otherwise something may be intercepting the connection"
    )]
    HostKeyChanged {
        host: String,
        expected: String,
        found: String,
    },
    #[error(
        "unsupported OS: the guest reports {found:?}; the agent runs on Linux x86_64 and aarch64"
    )]
    UnsupportedOs { found: String },
    #[error("not enough space in {path}: need {}, have {}", human(*need), human(*have))]
    NotEnoughSpace { path: String, need: u64, have: u64 },
    #[error("step {step} failed (exit status {status}): {stderr}")]
    CommandFailed {
        step: String,
        /// The exit status, or -1 when the command ended by a signal or without a status.
        status: i64,
        /// The last lines it printed on stderr (or stdout when stderr was empty).
        stderr: String,
    },
    #[error(
        "sudo asks user {user} for a password: allow it to run commands without one (NOPASSWD) or log \
         in as root"
    )]
    SudoNeedsPassword { user: String },
    /// Guest operations cannot reach the guest: the VM is powered off, or VMware Tools does not run
    /// in it (yet: retryable then).
    #[error("guest operations cannot reach VM {vm}: {detail}")]
    ToolsNotRunning {
        vm: String,
        detail: String,
        retryable: bool,
    },
    #[error("the agent did not register with the appliance within {waited_secs} s")]
    AgentDidNotRegister { waited_secs: u64 },
    #[error("{step} timed out after {secs} s")]
    Timeout { step: String, secs: u64 },
    /// The SSH session broke off after it was established.
    #[error("SSH session: {0}")]
    Ssh(String),
    /// The request or a local file is unusable (bad prefix, missing agent binary, bad private key).
    #[error("{0}")]
    Invalid(String),
}

impl PushError {
    /// Whether running the same operation again, unchanged, may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            PushError::HostUnreachable { .. }
                | PushError::Timeout { .. }
                | PushError::Ssh(_)
                | PushError::ToolsNotRunning {
                    retryable: true,
                    ..
                }
        )
    }

    /// Stable snake_case name, for job records and the API.
    pub fn code(&self) -> &'static str {
        match self {
            PushError::AuthenticationFailed { .. } => "authentication_failed",
            PushError::HostUnreachable { .. } => "host_unreachable",
            PushError::HostKeyChanged { .. } => "host_key_changed",
            PushError::UnsupportedOs { .. } => "unsupported_os",
            PushError::NotEnoughSpace { .. } => "not_enough_space",
            PushError::CommandFailed { .. } => "command_failed",
            PushError::SudoNeedsPassword { .. } => "sudo_needs_password",
            PushError::ToolsNotRunning { .. } => "tools_not_running",
            PushError::AgentDidNotRegister { .. } => "agent_did_not_register",
            PushError::Timeout { .. } => "timeout",
            PushError::Ssh(_) => "ssh",
            PushError::Invalid(_) => "invalid",
        }
    }
}

/// Bytes for a person: "85.6 MiB".
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
#[path = "mod_tests.rs"]
mod tests;
