//! OpenSSH's sshd as a stand-in guest for push-install tests: its own config in a temporary folder
//! (generated ed25519 host key, key authentication through an AuthorizedKeysFile there, no PAM, no
//! passwords), listening on 127.0.0.1 on a free port, in the foreground (`-D -e`), killed on drop.
//!
//! Tests run as root, so the guest's login user is root (`PermitRootLogin prohibit-password`).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// Where Debian's openssh-server puts the daemon.
pub const SSHD: &str = "/usr/sbin/sshd";

/// A running sshd. Killed on drop.
pub struct Sshd {
    pub port: u16,
    /// The client key the daemon accepts (OpenSSH private key format).
    pub client_key: PathBuf,
    pub sftp: bool,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// Runs `ssh-keygen` to make an unencrypted ed25519 key pair at `path` and `path.pub`.
pub fn keygen(path: &Path) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("pub"));
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ferry-test", "-f"])
        .arg(path)
        .output()
        .context("running ssh-keygen (package openssh-client)")?;
    if !out.status.success() {
        bail!(
            "ssh-keygen failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The SHA-256 fingerprint (`SHA256:<base64>`) of a public key file, as `ssh-keygen -l` prints it.
pub fn fingerprint(public_key: &Path) -> Result<String> {
    let out = Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(public_key)
        .output()?;
    let text = String::from_utf8(out.stdout)?;
    text.split_whitespace()
        .find(|w| w.starts_with("SHA256:"))
        .map(str::to_string)
        .with_context(|| format!("no fingerprint in {text:?}"))
}

impl Sshd {
    /// Starts sshd with SFTP (`internal-sftp`).
    pub fn start() -> Result<Sshd> {
        Self::start_with(true)
    }

    /// Starts sshd; without `sftp` the server refuses the subsystem (uploads must use `cat`).
    pub fn start_with(sftp: bool) -> Result<Sshd> {
        if !Path::new(SSHD).exists() {
            bail!("{SSHD} is missing: install the openssh-server package (scripts/install-test-deps.sh)");
        }
        // sshd refuses to start without its privilege separation folder (packages create it at boot).
        std::fs::create_dir_all("/run/sshd").context("creating /run/sshd")?;
        let dir = tempfile::tempdir()?;
        keygen(&dir.path().join("host_key"))?;
        let client_key = dir.path().join("client_key");
        keygen(&client_key)?;
        std::fs::copy(
            client_key.with_extension("pub"),
            dir.path().join("authorized_keys"),
        )?;
        let mut sshd = Sshd {
            port: free_port(),
            client_key,
            sftp,
            dir,
            child: None,
        };
        sshd.spawn()?;
        Ok(sshd)
    }

    fn config(&self) -> String {
        let d = self.dir.path().display();
        let sftp = if self.sftp {
            "Subsystem sftp internal-sftp\n"
        } else {
            ""
        };
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n\
             PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             UsePAM no\nStrictModes no\nPrintMotd no\nLogLevel VERBOSE\nMaxStartups 50\n{sftp}",
            port = self.port
        )
    }

    fn spawn(&mut self) -> Result<()> {
        let config = self.dir.path().join("sshd_config");
        std::fs::write(&config, self.config())?;
        let check = Command::new(SSHD)
            .arg("-t")
            .arg("-f")
            .arg(&config)
            .output()?;
        if !check.status.success() {
            bail!(
                "sshd -t refused the config: {}",
                String::from_utf8_lossy(&check.stderr)
            );
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting sshd")?;
        let start = Instant::now();
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                break;
            }
            if let Some(status) = child.try_wait()? {
                bail!("sshd exited with {status}:\n{}", self.log_text());
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "sshd did not listen on {} within 30 s:\n{}",
                    self.port,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
        Ok(())
    }

    /// The client private key (OpenSSH format) as text.
    pub fn client_key_pem(&self) -> Result<String> {
        Ok(std::fs::read_to_string(&self.client_key)?)
    }

    /// The host key's fingerprint as a client sees it.
    pub fn host_key_fingerprint(&self) -> Result<String> {
        fingerprint(&self.dir.path().join("host_key.pub"))
    }

    /// A folder that lives as long as this daemon (for test files of the "guest").
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Restarts on the same port with a newly generated host key (a reinstalled guest, or an attacker).
    pub fn replace_host_key(&mut self) -> Result<()> {
        self.stop();
        keygen(&self.dir.path().join("host_key"))?;
        self.spawn()
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("sshd.log")
    }

    /// What sshd logged (connections, authentication results).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}
