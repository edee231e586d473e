//! `appliance console-banner`: the text agetty shows on the VM console (tty1 and the serial
//! console) above the login prompt: where to point a browser, the CA fingerprint agents pin,
//! and, until setup is done, the setup token. Showing the token there is intended: whoever has
//! the VM's console owns the VM anyway.
//!
//! Everything but [`run`] is pure or works on given paths, and is tested with temporary folders.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::config::Config;
use crate::files;
use crate::mgmt::setup::SETUP_TOKEN_FILE;

/// agetty reads every `*.issue` in /run/issue.d.
pub const DEFAULT_ISSUE_FILE: &str = "/run/issue.d/50-ferry.issue";
pub const PRODUCT: &str = "Ferry disaster-recovery appliance";
const ISSUE_FILE_MODE: u32 = 0o644;
const ISSUE_DIR_MODE: u32 = 0o755;
const HTTPS_PORT: u16 = 443;
/// The daemon writes the setup token just after its listener is up: a short grace covers that.
const TOKEN_GRACE: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(500);

/// Why the banner could not be made. The variant says whether running again can help.
#[derive(Debug, thiserror::Error)]
pub enum BannerError {
    /// A configuration mistake: running again changes nothing until it is fixed.
    #[error("listen_management {0:?} has no port")]
    ListenAddress(String),
    /// A broken CA certificate file: needs a person.
    #[error("{0} is not a PEM certificate")]
    BadCertificate(PathBuf),
    /// I/O: may pass.
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// I/O: may pass.
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How far setup is, as the data folder shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetupState {
    /// The daemon waits for the web setup with this token.
    Pending {
        token: String,
    },
    Complete,
    /// Neither file yet: the daemon has not started (or not got that far).
    Unknown,
}

/// The CA fingerprint, or why there is none to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaFingerprint {
    Known(String),
    NotCreated,
    Unreadable(String),
}

/// Everything the banner shows.
#[derive(Debug, Clone)]
pub struct BannerFacts {
    pub version: String,
    pub hostname: String,
    pub addresses: Vec<IpAddr>,
    pub port: u16,
    pub ca: CaFingerprint,
    pub setup: SetupState,
    /// Whether the management listener answered before the wait ran out.
    pub listening: bool,
    /// What first boot reported (a bad OVF value and its DHCP fallback is the case that matters).
    pub first_boot: Vec<String>,
}

/// The global addresses in `ip -o addr show scope global` output. Lines that do not parse, and
/// addresses no browser elsewhere could use (loopback, link-local, multicast), are skipped.
pub fn parse_addresses(ip_output: &str) -> Vec<IpAddr> {
    let mut addresses = Vec::new();
    for line in ip_output.lines() {
        let mut tokens = line.split_whitespace();
        let Some(family) = tokens.find(|t| *t == "inet" || *t == "inet6") else {
            continue;
        };
        let Some(cidr) = tokens.next() else { continue };
        let text = cidr.split_once('/').map_or(cidr, |(addr, _)| addr);
        let Ok(addr) = text.parse::<IpAddr>() else {
            continue;
        };
        if addr.is_ipv6() != (family == "inet6") || !usable(addr) || addresses.contains(&addr) {
            continue;
        }
        addresses.push(addr);
    }
    addresses
}

fn usable(addr: IpAddr) -> bool {
    if addr.is_loopback() || addr.is_unspecified() || addr.is_multicast() {
        return false;
    }
    match addr {
        IpAddr::V4(v4) => !v4.is_link_local(),
        // fe80::/10
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 != 0xfe80,
    }
}

/// `https://ADDR[:PORT]PATH`, the port left out when it is 443.
pub fn url(addr: IpAddr, port: u16, path: &str) -> String {
    let host = match addr {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    if port == HTTPS_PORT {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{port}{path}")
    }
}

/// The port of `listen_management` (`host:port`, `[v6]:port`).
pub fn management_port(listen: &str) -> Result<u16, BannerError> {
    listen
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .ok_or_else(|| BannerError::ListenAddress(listen.to_string()))
}

/// Where this machine reaches the management listener: over loopback for a wildcard bind.
pub fn probe_address(listen: &str) -> Result<SocketAddr, BannerError> {
    let port = management_port(listen)?;
    Ok(match listen.parse::<SocketAddr>() {
        Ok(addr) if addr.ip().is_unspecified() && addr.is_ipv6() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port)
        }
        Ok(addr) if !addr.ip().is_unspecified() => addr,
        _ => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port),
    })
}

/// Tries to connect until it works or `wait` has passed (at least once).
pub fn wait_for_listener(addr: SocketAddr, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = left.clamp(Duration::from_millis(100), Duration::from_secs(1));
        if TcpStream::connect_timeout(&addr, timeout).is_ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL.min(deadline.saturating_duration_since(Instant::now())));
    }
}

/// The CA's fingerprint as `appliance fingerprint` prints it, without ever creating a CA.
pub fn read_ca_fingerprint(data_dir: &Path) -> Result<Option<String>, BannerError> {
    let path = crate::tls::tls_dir(data_dir).join("ca.pem");
    let pem = match std::fs::read(&path) {
        Ok(pem) => pem,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(BannerError::Read { path, source }),
    };
    let der =
        CertificateDer::from_pem_slice(&pem).map_err(|_| BannerError::BadCertificate(path))?;
    Ok(Some(crate::tls::fingerprint(&der)))
}

/// Setup is complete once the admin token file exists (it is written only then); pending while
/// the setup token file exists.
pub fn read_setup_state(data_dir: &Path) -> Result<SetupState, BannerError> {
    if crate::api_client::admin_token_path(data_dir).exists() {
        return Ok(SetupState::Complete);
    }
    let path = data_dir.join(SETUP_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => Ok(SetupState::Pending {
            token: token.trim().to_string(),
        }),
        Ok(_) => Ok(SetupState::Unknown),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(SetupState::Unknown),
        Err(source) => Err(BannerError::Read { path, source }),
    }
}

/// The banner as plain text (escape it with [`escape_issue`] for agetty).
pub fn render(facts: &BannerFacts) -> String {
    let mut lines = vec![
        format!("{PRODUCT} {}", facts.version),
        format!("Host name: {}", facts.hostname),
        String::new(),
    ];
    let urls = |path: &str| -> Vec<String> {
        let port = facts.port;
        facts
            .addresses
            .iter()
            .map(|a| format!("  {}", url(*a, port, path)))
            .collect()
    };
    if facts.addresses.is_empty() {
        lines.push("No network address yet: check the VM's network (DHCP, or the".into());
        lines.push("OVF properties ferry.ip and ferry.gateway).".into());
    } else {
        lines.push("Management (open in a browser):".into());
        lines.extend(urls("/"));
    }
    if !facts.listening {
        lines.push("The management service is not answering yet; it may still be starting.".into());
    }
    lines.push(String::new());
    lines.push("CA certificate SHA-256 fingerprint (agents pin it):".into());
    lines.push(match &facts.ca {
        CaFingerprint::Known(fingerprint) => format!("  {fingerprint}"),
        CaFingerprint::NotCreated => {
            "  not created yet (the appliance creates it at its first start)".into()
        }
        CaFingerprint::Unreadable(reason) => format!("  unreadable: {reason}"),
    });
    lines.push(String::new());
    match &facts.setup {
        SetupState::Pending { token } => {
            lines.push("Setup is not complete. Open the setup page:".into());
            if facts.addresses.is_empty() {
                lines.push("  https://<address>/setup (once the VM has an address)".into());
            }
            lines.extend(urls("/setup"));
            lines.push("and enter this setup token:".into());
            lines.push(format!("  {token}"));
        }
        SetupState::Complete => {
            lines.push("Setup is complete. Log in at:".into());
            lines.extend(urls("/login"));
        }
        SetupState::Unknown => lines.push(
            "Setup state not known yet: the appliance service has not started (see \
             journalctl -u ferry-appliance)."
                .into(),
        ),
    }
    if !facts.first_boot.is_empty() {
        lines.push(String::new());
        lines.push("First boot:".into());
        lines.extend(facts.first_boot.iter().map(|line| format!("  {line}")));
    }
    lines.push(String::new());
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// agetty reads `\x` as an escape (`\n` is the host name, `\l` the tty...): a literal backslash
/// must be doubled.
pub fn escape_issue(text: &str) -> String {
    text.replace('\\', "\\\\")
}

/// Replaces `path` atomically (0644), creating its folder.
pub fn write_issue(path: &Path, text: &str) -> Result<(), BannerError> {
    let wrap = |source| BannerError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        files::create_dir_all(dir, ISSUE_DIR_MODE).map_err(wrap)?;
    }
    files::replace_file(path, text.as_bytes(), ISSUE_FILE_MODE).map_err(wrap)
}

/// Waits for the management listener (at most `wait`), writes the banner to `issue_file` and
/// `out`, and asks agetty to show it. Not unit tested as a whole (it reads this machine's
/// addresses and host name and runs agetty); `ova-build --boot-test` reads its banner off the VM's
/// serial console.
pub fn run(
    cfg: &Config,
    issue_file: &Path,
    wait: Duration,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let port = management_port(&cfg.listen_management)?;
    let probe = probe_address(&cfg.listen_management)?;
    let listening = wait_for_listener(probe, wait);
    if !listening {
        tracing::warn!(%probe, wait_secs = wait.as_secs(), "the management listener did not answer");
    }
    let mut setup = setup_state_or_unknown(&cfg.data_dir);
    // An unattended setup (the OVF admin password) takes a while to finish: wait for it within
    // the same budget, so the banner does not settle on "not known".
    let grace = Instant::now() + wait.max(TOKEN_GRACE);
    while listening && setup == SetupState::Unknown && Instant::now() < grace {
        std::thread::sleep(POLL);
        setup = setup_state_or_unknown(&cfg.data_dir);
    }
    let ca = match read_ca_fingerprint(&cfg.data_dir) {
        Ok(Some(fingerprint)) => CaFingerprint::Known(fingerprint),
        Ok(None) => CaFingerprint::NotCreated,
        Err(err) => CaFingerprint::Unreadable(err.to_string()),
    };
    let facts = BannerFacts {
        version: env!("CARGO_PKG_VERSION").to_string(),
        hostname: host_name(),
        addresses: global_addresses(),
        port,
        ca,
        setup,
        listening,
        first_boot: read_first_boot_summary(
            Path::new("/")
                .join(crate::firstboot::SUMMARY_FILE)
                .as_path(),
        ),
    };
    let text = render(&facts);
    write_issue(issue_file, &escape_issue(&text))?;
    out.write_all(text.as_bytes())?;
    out.flush()?;
    reload_agetty();
    Ok(())
}

/// The summary first boot left, at most 20 lines; none when first boot has not run.
pub fn read_first_boot_summary(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|text| {
            text.lines()
                .map(str::trim_end)
                .filter(|line| !line.is_empty())
                .take(20)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn setup_state_or_unknown(data_dir: &Path) -> SetupState {
    read_setup_state(data_dir).unwrap_or_else(|err| {
        tracing::warn!(%err, "reading the setup state");
        SetupState::Unknown
    })
}

fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| {
            let name = std::fs::read_to_string(path).ok()?;
            Some(name.trim().to_string()).filter(|n| !n.is_empty())
        })
        .unwrap_or_else(|| "(unknown)".into())
}

fn global_addresses() -> Vec<IpAddr> {
    match std::process::Command::new("ip")
        .args(["-o", "addr", "show", "scope", "global"])
        .output()
    {
        Ok(output) if output.status.success() => {
            parse_addresses(&String::from_utf8_lossy(&output.stdout))
        }
        Ok(output) => {
            tracing::warn!(status = %output.status, "`ip addr` failed");
            Vec::new()
        }
        Err(err) => {
            tracing::warn!(%err, "`ip addr` could not run");
            Vec::new()
        }
    }
}

/// Already shown prompts keep the old text until agetty is told; failing that, the next prompt
/// shows the new one.
fn reload_agetty() {
    match std::process::Command::new("agetty")
        .arg("--reload")
        .status()
    {
        Ok(status) if status.success() => {}
        Ok(status) => tracing::warn!(%status, "agetty --reload failed"),
        Err(err) => tracing::warn!(%err, "agetty --reload could not run"),
    }
}

#[cfg(test)]
#[path = "console_banner_tests.rs"]
mod console_banner_tests;
