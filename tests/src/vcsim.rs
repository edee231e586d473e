//! A test vCenter: VMware's vSphere simulator (vcsim), built from Debian's govmomi package with the
//! project's launcher (`tests/vcsim/launch.go`) and started by `scripts/vcsim.sh` on 127.0.0.1
//! with a port vcsim picks itself and a fresh RSA-2048 certificate. Stopped (SIGTERM, its state
//! folder removed) by [`Vcsim::stop`] or on drop.
//!
//! [`Vcsim::pyvmomi_inventory`] is VMware's Python SDK's view of the same VMs
//! (`scripts/pyvmomi_inventory.py`): the reference Ferry's own vSphere client is compared with.
//!
//! Inventory flags are vcsim's: `-dc -cluster -host -standalone-host -vm -ds -pool -folder`, where
//! VMs = dc × (cluster + standalone-host) × vm (hosts per cluster do not multiply it).
//!
//! [`Vcsim::start_with_guest`] turns on the launcher's process-backed guest
//! (`tests/vcsim/guestops.go`): vcsim's own guest operations need Docker-backed VMs, so guest
//! operations on any VM run on THIS machine, as the launcher's user, standing in for the VM's guest.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::root;
use crate::web_harness::{ensure_test_deps, venv_dir};

/// A pyvmomi run over thousands of VMs takes seconds; this only catches a hang.
const PYVMOMI_TIMEOUT: Duration = Duration::from_secs(300);

/// A running vcsim. Any user name and password log in unless it was started with a login.
pub struct Vcsim {
    /// `https://127.0.0.1:PORT/sdk`
    pub url: String,
    pub port: u16,
    pub pid: u32,
    /// State folder: certificate, key, logs, datastores. Removed by `stop`.
    pub dir: PathBuf,
    /// SHA-1 of the certificate, colon hex, the way vSphere shows thumbprints.
    pub thumbprint: String,
    /// SHA-256 of the certificate, colon hex.
    pub thumbprint_sha256: String,
    /// The PEM certificate it serves (self-signed, for 127.0.0.1): a CA file for clients.
    pub cert: PathBuf,
    pub username: String,
    pub password: String,
    /// How long `scripts/vcsim.sh start` took: key generation, inventory, first SOAP answer.
    pub start_time: Duration,
    running: bool,
}

/// The launcher binary, built (or found built) once per test process; returns its path.
pub fn build() -> Result<PathBuf> {
    static BUILT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            ensure_test_deps();
            let out = script().arg("build").output().map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(format!(
                    "scripts/vcsim.sh build failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

fn script() -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(root().join("scripts/vcsim.sh"));
    cmd
}

/// The `KEY=value` pairs of `export KEY='value'` lines (what `vcsim.sh start` prints).
pub fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| {
            !k.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        })
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect()
}

impl Vcsim {
    /// Starts a vcsim with these extra flags (e.g. `&["-cluster", "4", "-vm", "250"]`); panics
    /// with the script's error when it does not come up.
    pub fn start(flags: &[&str]) -> Vcsim {
        Self::try_start(flags).unwrap_or_else(|e| panic!("vcsim {flags:?}: {e:#}"))
    }

    /// Like [`Vcsim::start`], but only `username` with `password` logs in.
    pub fn start_with_login(flags: &[&str], username: &str, password: &str) -> Vcsim {
        Self::try_start_with_login(flags, username, password)
            .unwrap_or_else(|e| panic!("vcsim {flags:?} with a login: {e:#}"))
    }

    /// Like [`Vcsim::start`], with guest operations answered by a process-backed guest (this
    /// machine, as the user vcsim runs as) that logs in only `guest_user` with `guest_password`.
    pub fn start_with_guest(flags: &[&str], guest_user: &str, guest_password: &str) -> Vcsim {
        Self::try_start_with_guest(flags, guest_user, guest_password)
            .unwrap_or_else(|e| panic!("vcsim {flags:?} with a guest: {e:#}"))
    }

    pub fn try_start_with_guest(
        flags: &[&str],
        guest_user: &str,
        guest_password: &str,
    ) -> Result<Vcsim> {
        if guest_user.is_empty() || guest_password.is_empty() {
            bail!("a guest login needs a non-empty user name and password");
        }
        let mut all: Vec<&str> = flags.to_vec();
        all.extend(["-guest-user", guest_user, "-guest-password", guest_password]);
        Self::try_start(&all)
    }

    pub fn try_start(flags: &[&str]) -> Result<Vcsim> {
        // vcsim without -username accepts any non-empty pair; these are what clients send.
        Self::launch(flags, None, "user", "pass")
    }

    pub fn try_start_with_login(flags: &[&str], username: &str, password: &str) -> Result<Vcsim> {
        if username.is_empty() || password.is_empty() {
            bail!("a vcsim login needs a non-empty user name and password");
        }
        // The password goes through a file, not the command line other processes can read.
        let mut file = tempfile::NamedTempFile::new()?;
        writeln!(file, "{password}")?;
        let path = file.path().to_string_lossy().into_owned();
        let mut all: Vec<&str> = flags.to_vec();
        all.extend(["-username", username, "-password-file", &path]);
        Self::launch(&all, Some(file), username, password)
    }

    fn launch(
        flags: &[&str],
        // Kept alive until vcsim has read it at startup.
        _password_file: Option<tempfile::NamedTempFile>,
        username: &str,
        password: &str,
    ) -> Result<Vcsim> {
        build()?;
        let started = Instant::now();
        let out = script()
            .arg("start")
            .args(flags)
            .stdin(Stdio::null())
            .output()?;
        let start_time = started.elapsed();
        if !out.status.success() {
            bail!(
                "scripts/vcsim.sh start failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let env = parse_env(&String::from_utf8(out.stdout)?);
        let get = |k: &str| {
            env.get(k)
                .cloned()
                .with_context(|| format!("scripts/vcsim.sh start printed no {k}"))
        };
        let mut vcsim = Vcsim {
            url: String::new(),
            port: 0,
            pid: 0,
            dir: PathBuf::from(get("VCSIM_DIR")?),
            thumbprint: String::new(),
            thumbprint_sha256: String::new(),
            cert: PathBuf::new(),
            username: username.to_string(),
            password: password.to_string(),
            start_time,
            // From here on a parse error below still stops it (on drop).
            running: true,
        };
        vcsim.url = get("VCSIM_URL")?;
        vcsim.port = get("VCSIM_PORT")?.parse().context("VCSIM_PORT")?;
        vcsim.pid = get("VCSIM_PID")?.parse().context("VCSIM_PID")?;
        vcsim.thumbprint = get("VCSIM_THUMBPRINT")?;
        vcsim.thumbprint_sha256 = get("VCSIM_THUMBPRINT_SHA256")?;
        vcsim.cert = PathBuf::from(get("VCSIM_CERT")?);
        Ok(vcsim)
    }

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// vcsim's own log: the inventory it built and how long that took, and the stop.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("vcsim.log")).unwrap_or_default()
    }

    /// SIGTERM through `scripts/vcsim.sh stop`; waits until it has exited (vcsim removes its
    /// datastore folders itself) and the state folder is gone.
    pub fn stop(&mut self) -> Result<()> {
        if !self.running {
            return Ok(());
        }
        self.running = false;
        let out = script().arg("stop").arg(&self.dir).output()?;
        if !out.status.success() {
            bail!(
                "scripts/vcsim.sh stop failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if process_alive(self.pid) {
            bail!("vcsim (pid {}) still runs after stop", self.pid);
        }
        Ok(())
    }

    /// A command for `scripts/pyvmomi_inventory.py` against this vcsim as `username` with
    /// `password`, verifying the certificate against [`Vcsim::cert`], with `--time`.
    pub fn pyvmomi_command(&self, username: &str, password: &str) -> Command {
        let mut cmd = Command::new(venv_dir().join("bin/python"));
        cmd.arg(root().join("scripts/pyvmomi_inventory.py"))
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--user", username, "--cafile"])
            .arg(&self.cert)
            .arg("--time")
            .env("VSPHERE_PASSWORD", password)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `cmd` (from [`Vcsim::pyvmomi_command`]) to completion within the timeout.
    pub fn run_pyvmomi(&self, cmd: Command) -> Result<Output> {
        run_with_timeout(cmd, PYVMOMI_TIMEOUT)
    }

    /// pyvmomi's inventory of every VM with this vcsim's login (the JSON of
    /// `scripts/pyvmomi_inventory.py`, including `retrieval_seconds`); panics when it fails.
    pub fn pyvmomi_inventory(&self) -> Value {
        self.try_pyvmomi_inventory()
            .unwrap_or_else(|e| panic!("pyvmomi inventory of {}: {e:#}", self.url))
    }

    pub fn try_pyvmomi_inventory(&self) -> Result<Value> {
        let out = self.run_pyvmomi(self.pyvmomi_command(&self.username, &self.password))?;
        if !out.status.success() {
            bail!(
                "pyvmomi_inventory.py failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        serde_json::from_slice(&out.stdout).context("pyvmomi_inventory.py printed no JSON")
    }
}

impl Drop for Vcsim {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// True while `pid` exists and is not a zombie (vcsim is not the test's child: nobody here
/// reaps it, so an exited one may linger as a zombie for a moment).
pub fn process_alive(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("State:"))
        .map(|s| !s.trim_start().starts_with('Z'))
        .unwrap_or(false)
}

/// Runs `cmd` with its output in temporary files (no pipe to fill up), killing it after `limit`.
fn run_with_timeout(mut cmd: Command, limit: Duration) -> Result<Output> {
    let stdout = tempfile::tempfile()?;
    let stderr = tempfile::tempfile()?;
    let mut child = cmd
        .stdout(stdout.try_clone()?)
        .stderr(stderr.try_clone()?)
        .spawn()
        .with_context(|| format!("run {cmd:?}"))?;
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: read_all(stdout)?,
        stderr: read_all(stderr)?,
    })
}

fn read_all(mut f: std::fs::File) -> Result<Vec<u8>> {
    use std::io::{Read, Seek};
    f.rewind()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::parse_env;

    #[test]
    fn parse_env_reads_export_lines_and_ignores_the_rest() {
        let env = parse_env(
            "export VCSIM_URL='https://127.0.0.1:1234/sdk'\n\
             vcsim.sh: serving\n\
             export VCSIM_THUMBPRINT=''\n\
             export BROKEN\n\
             VCSIM_PORT=99\n",
        );
        assert_eq!(env["VCSIM_URL"], "https://127.0.0.1:1234/sdk");
        assert_eq!(env["VCSIM_THUMBPRINT"], "");
        assert!(!env.contains_key("BROKEN"));
        assert!(!env.contains_key("VCSIM_PORT"), "only export lines count");
        assert!(parse_env("").is_empty());
        assert!(parse_env("\u{0}garbage=\nexport =x\nexport lower=y\nexport A-B=z").is_empty());
    }
}
