//! Ferry: the release `appliance` daemon and `mobility` agent on loopback, the agent replicating
//! the image file as its disk, the appliance's CLI restoring the latest point.

use anyhow::{bail, ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::procs::{dir_bytes, vm_hwm_kib, Logged, Timed};
use crate::tool::Tool;

const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// A running appliance with one registered agent.
pub struct Ferry {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    state_dir: PathBuf,
    data_port: u16,
    management_port: u16,
    log: Logged,
    appliance: Option<Child>,
}

impl Ferry {
    /// Starts the appliance from `bin_dir` with its data in `work`, and registers an agent.
    pub fn start(bin_dir: &Path, work: &Path) -> Result<Ferry> {
        for name in ["appliance", "mobility"] {
            ensure!(
                bin_dir.join(name).is_file(),
                "{} is missing: build it with `cargo build --release -p appliance -p mobility` \
                 (or pass --bin-dir, or --skip-ferry)",
                bin_dir.join(name).display()
            );
        }
        let mut ferry = Ferry {
            bin_dir: bin_dir.to_path_buf(),
            data_dir: work.join("ferry-data"),
            state_dir: work.join("ferry-agent"),
            data_port: ferry_tests::free_port(),
            management_port: ferry_tests::free_port(),
            log: Logged::new(work.join("ferry.log")),
            appliance: None,
        };
        let _ = std::fs::remove_dir_all(&ferry.data_dir);
        let _ = std::fs::remove_dir_all(&ferry.state_dir);
        std::fs::create_dir_all(&ferry.data_dir)?;
        let child = ferry
            .log
            .spawn("appliance run", ferry.appliance_cmd().arg("run"))?;
        ferry.appliance = Some(child);
        ferry.wait_listening()?;
        ferry.register()?;
        Ok(ferry)
    }

    fn appliance_cmd(&self) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("appliance"));
        cmd.env("APPLIANCE_DATA_DIR", &self.data_dir)
            .env(
                "APPLIANCE_LISTEN_DATA",
                format!("127.0.0.1:{}", self.data_port),
            )
            .env(
                "APPLIANCE_LISTEN_MANAGEMENT",
                format!("127.0.0.1:{}", self.management_port),
            )
            .env_remove("RUST_LOG");
        cmd
    }

    fn mobility_cmd(&self) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("mobility"));
        cmd.env_remove("RUST_LOG");
        cmd
    }

    fn wait_listening(&mut self) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < START_TIMEOUT {
            if std::net::TcpStream::connect(("127.0.0.1", self.data_port)).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.appliance.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.appliance = None;
                    bail!(
                        "the appliance exited ({status}) before listening; log:\n{}",
                        self.log.last_lines()
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "the appliance did not listen on 127.0.0.1:{} within {START_TIMEOUT:?}; log:\n{}",
            self.data_port,
            self.log.last_lines()
        )
    }

    fn register(&self) -> Result<()> {
        let passphrase = self.log.output(
            "appliance passphrase show",
            self.appliance_cmd().args(["passphrase", "show"]),
        )?;
        let fingerprint = self.log.output(
            "appliance fingerprint",
            self.appliance_cmd().arg("fingerprint"),
        )?;
        let passphrase_file = self.passphrase_file();
        std::fs::write(&passphrase_file, passphrase.trim())?;
        self.log.output(
            "mobility register",
            self.mobility_cmd()
                .args(["register", "--appliance"])
                .arg(format!("127.0.0.1:{}", self.data_port))
                .arg("--passphrase-file")
                .arg(&passphrase_file)
                .args(["--ca-fingerprint", fingerprint.trim(), "--state-dir"])
                .arg(&self.state_dir),
        )?;
        Ok(())
    }

    fn passphrase_file(&self) -> PathBuf {
        self.data_dir.with_extension("passphrase")
    }

    /// Machine and disk of the newest point, from `appliance points list --json`.
    fn latest_point_location(&self) -> Result<(String, String)> {
        let text = self.log.output(
            "appliance points list",
            self.appliance_cmd().args(["points", "list", "--json"]),
        )?;
        parse_point_location(&text)
    }

    fn stop_appliance(&mut self) -> Result<Option<u64>> {
        let Some(mut child) = self.appliance.take() else {
            return Ok(None);
        };
        let peak = vm_hwm_kib(child.id());
        ferry_tests::signal(child.id(), "TERM");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    eprintln!("ferry: the appliance exited with {status} after SIGTERM");
                }
                return Ok(peak);
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

/// The machine and disk of a `points list --json` answer (an array of objects with machine, disk
/// and point). The benchmark replicates one disk of one machine, so every element names the same.
pub fn parse_point_location(json: &str) -> Result<(String, String)> {
    let points: Vec<serde_json::Value> =
        serde_json::from_str(json).context("`appliance points list --json` is not a JSON array")?;
    let first = points
        .first()
        .context("the vault holds no recovery point")?;
    let field = |p: &serde_json::Value, k: &str| -> Result<String> {
        p.get(k)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .with_context(|| format!("a point has no string field {k:?}: {p}"))
    };
    let location = (field(first, "machine")?, field(first, "disk")?);
    for p in &points {
        ensure!(
            (field(p, "machine")?, field(p, "disk")?) == location,
            "expected points of one machine and disk, found {p}"
        );
    }
    Ok(location)
}

impl Tool for Ferry {
    fn name(&self) -> &str {
        "ferry"
    }

    fn version(&self) -> String {
        let out = Command::new(self.bin_dir.join("appliance"))
            .arg("--version")
            .output();
        out.ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().replacen("appliance", "ferry", 1))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "ferry".into())
    }

    fn backup(&mut self, img: &Path, first: bool) -> Result<Timed> {
        let what = if first {
            "mobility run --once (initial)"
        } else {
            "mobility run --once (incremental)"
        };
        self.log.timed(
            what,
            self.mobility_cmd()
                .args(["run", "--disk"])
                .arg(img)
                .args(["--once", "--state-dir"])
                .arg(&self.state_dir),
        )
    }

    fn restore(&mut self, _img: &Path, dir: &Path) -> Result<(Timed, PathBuf)> {
        let (machine, disk) = self.latest_point_location()?;
        let out = dir.join("ferry-restored.img");
        let t = self.log.timed(
            "appliance restore",
            self.appliance_cmd()
                .args([
                    "restore",
                    "--machine",
                    &machine,
                    "--disk",
                    &disk,
                    "--point",
                    "latest",
                    "--out",
                ])
                .arg(&out),
        )?;
        Ok((t, out))
    }

    fn stored_bytes(&self) -> u64 {
        dir_bytes(&self.data_dir.join("vault"))
    }

    fn finish(&mut self) -> Result<Option<u64>> {
        let peak = self.stop_appliance()?;
        let _ = std::fs::remove_dir_all(&self.data_dir);
        let _ = std::fs::remove_dir_all(&self.state_dir);
        let _ = std::fs::remove_file(self.passphrase_file());
        Ok(peak)
    }
}

impl Drop for Ferry {
    fn drop(&mut self) {
        if let Some(mut child) = self.appliance.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_location_comes_from_the_json_list() {
        let json = r#"[{"machine":"m1","disk":"d1","point":"p1"},{"machine":"m1","disk":"d1","point":"p2"}]"#;
        assert_eq!(
            parse_point_location(json).unwrap(),
            ("m1".into(), "d1".into())
        );
        assert!(parse_point_location("[]").is_err());
        assert!(parse_point_location("not json").is_err());
        assert!(parse_point_location(r#"[{"machine":"m1"}]"#).is_err());
        let two = r#"[{"machine":"m1","disk":"d1"},{"machine":"m2","disk":"d1"}]"#;
        assert!(parse_point_location(two).is_err());
    }
}
