//! The release appliance on loopback over the seeded data folder, set up unattended.

use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::conn::Connector;

const START_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// A running appliance.
pub struct Appliance {
    pub pid: u32,
    pub management_port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Appliance {
    /// Starts `<bin_dir>/appliance run` on `data_dir` with an unattended setup from `password_file`.
    pub fn start(
        bin_dir: &Path,
        data_dir: &Path,
        password_file: &Path,
        log: &Path,
    ) -> Result<Appliance> {
        let exe = bin_dir.join("appliance");
        anyhow::ensure!(
            exe.is_file(),
            "{} is missing: build it with `cargo build --release -p appliance -p ferry-bench` \
             (or pass --bin-dir)",
            exe.display()
        );
        let management_port = ferry_tests::free_port();
        let data_port = ferry_tests::free_port();
        let out =
            std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        let child = Command::new(&exe)
            .arg("run")
            .env("APPLIANCE_DATA_DIR", data_dir)
            .env(
                "APPLIANCE_LISTEN_MANAGEMENT",
                format!("127.0.0.1:{management_port}"),
            )
            .env("APPLIANCE_LISTEN_DATA", format!("127.0.0.1:{data_port}"))
            .env("APPLIANCE_ADMIN_PASSWORD_FILE", password_file)
            // The daemon's default log level: a debug level would measure the logger.
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("start {} run", exe.display()))?;
        Ok(Appliance {
            pid: child.id(),
            management_port,
            data_dir: data_dir.to_path_buf(),
            log: log.to_path_buf(),
            child: Some(child),
        })
    }

    /// The last lines of the appliance's log, for error messages.
    pub fn last_lines(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Fails when the appliance has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut() {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                bail!(
                    "the appliance exited ({status}); last lines of {}:\n{}",
                    self.log.display(),
                    self.last_lines()
                );
            }
        }
        Ok(())
    }

    /// Waits until setup is complete (`admin-token` exists) and `/healthz` answers; returns the admin
    /// token and the CA's PEM.
    pub async fn wait_ready(&mut self) -> Result<(String, Vec<u8>)> {
        let start = Instant::now();
        let token_path = self.data_dir.join("admin-token");
        let ca_path = self.data_dir.join("tls").join("ca.pem");
        loop {
            self.check_running()?;
            anyhow::ensure!(
                start.elapsed() < START_TIMEOUT,
                "the appliance was not ready within {START_TIMEOUT:?}; last lines of {}:\n{}",
                self.log.display(),
                self.last_lines()
            );
            if token_path.is_file() && ca_path.is_file() {
                let token = std::fs::read_to_string(&token_path)?.trim().to_string();
                let ca = std::fs::read(&ca_path)?;
                if !token.is_empty() && self.healthy(&ca).await {
                    return Ok((token, ca));
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.management_port))
    }

    async fn healthy(&self, ca: &[u8]) -> bool {
        let Ok(connector) = Connector::new(ca, self.addr()) else {
            return false;
        };
        match connector.connect().await {
            Ok(mut conn) => conn
                .get("/healthz", None)
                .await
                .is_ok_and(|(s, _)| s == 200),
            Err(_) => false,
        }
    }

    /// SIGTERM, then waits for the clean stop.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        ferry_tests::signal(child.id(), "TERM");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    bail!("the appliance exited with {status} after SIGTERM");
                }
                return Ok(());
            }
            if start.elapsed() > STOP_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the appliance did not stop within {STOP_TIMEOUT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A password that passes the appliance's rules, for the unattended setup.
pub fn strong_password() -> String {
    let mut rng = super::seed::SplitMix64::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()),
    );
    let alphabet = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let body: String = (0..24)
        .map(|_| char::from(alphabet[(rng.next_u64() % alphabet.len() as u64) as usize]))
        .collect();
    // The fixed suffix guarantees every character class the rules count.
    format!("{body}-Aa9")
}

/// Writes `text` and a newline to a file only its owner can read (the admin password file).
pub fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    writeln!(f, "{text}")?;
    Ok(())
}
