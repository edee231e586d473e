//! Helpers for Ferry's end-to-end tests: build and start the real binaries, make disk images of real
//! files, start Azurite, compare restored images.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub mod image;
pub mod push_kit;
pub mod sshd;
pub mod vcsim;
pub mod web_harness;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// Path of a workspace binary, built once per test process (cargo test does not build other packages' bins).
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(root())
            .args(["build", "--bins", "-p", "appliance", "-p", "mobility"])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building the binaries failed");
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root().join("target"));
        target.join("debug")
    });
    dir.join(name)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn sha256_file(p: &Path) -> String {
    let mut f = std::fs::File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// Waits until something listens on `port`, or the process died.
pub fn wait_port(port: u16, child: &mut Child, what: &str) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Some(st) = child.try_wait()? {
            bail!("{what} exited with {st} before listening on {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not listen on {port} within 60 s")
}

/// The first admin's password in appliances the harness starts (it passes every password rule).
pub const ADMIN_PASSWORD: &str = "Ferry-Test-Admin-Passw0rd";

/// A running appliance daemon with its own data folder.
pub struct Appliance {
    pub data_dir: PathBuf,
    pub port: u16,
    /// The management listener's port (HTTPS), the same for the daemon and the CLI commands.
    pub management_port: u16,
    pub env: Vec<(String, String)>,
    /// Holds [`ADMIN_PASSWORD`]; given as `APPLIANCE_ADMIN_PASSWORD_FILE`, so the daemon sets
    /// itself up unattended at its first start and every test gets a ready appliance.
    pub admin_password_file: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl Appliance {
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> Result<Appliance> {
        let admin_password_file = data_dir.with_extension("admin-password");
        std::fs::write(&admin_password_file, format!("{ADMIN_PASSWORD}\n"))?;
        let mut a = Appliance {
            data_dir: data_dir.to_path_buf(),
            port: free_port(),
            management_port: free_port(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            admin_password_file,
            child: None,
            log: data_dir.with_extension("log"),
        };
        a.spawn()?;
        Ok(a)
    }

    /// The API token of `admin` the daemon keeps in `<data dir>/admin-token` after setup.
    pub fn admin_token(&self) -> Result<String> {
        let path = self.data_dir.join("admin-token");
        let token = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(token.trim().to_string())
    }

    fn spawn(&mut self) -> Result<()> {
        std::fs::create_dir_all(&self.data_dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = self.command();
        cmd.arg("run").stdout(log.try_clone()?).stderr(log);
        let mut child = cmd.spawn().context("start appliance")?;
        wait_port(self.port, &mut child, "appliance")
            .with_context(|| format!("appliance log:\n{}", self.log_text()))?;
        self.child = Some(child);
        Ok(())
    }

    /// A command for the appliance binary with this appliance's environment.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(bin("appliance"));
        cmd.env("APPLIANCE_DATA_DIR", &self.data_dir)
            .env("APPLIANCE_LISTEN_DATA", format!("127.0.0.1:{}", self.port))
            .env(
                "APPLIANCE_LISTEN_MANAGEMENT",
                format!("127.0.0.1:{}", self.management_port),
            )
            .env("APPLIANCE_ADMIN_PASSWORD_FILE", &self.admin_password_file)
            .env_remove("RUST_LOG");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs an appliance CLI command to completion; returns stdout.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let out = self.command().args(args).output()?;
        if !out.status.success() {
            bail!(
                "appliance {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> Result<std::process::ExitStatus> {
        let mut c = self.child.take().context("not running")?;
        signal(c.id(), libc_sigterm());
        let start = Instant::now();
        loop {
            if let Some(st) = c.try_wait()? {
                return Ok(st);
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = c.kill();
                bail!("appliance did not stop within 60 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn restart(&mut self) -> Result<()> {
        self.kill9();
        self.spawn()
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn libc_sigterm() -> &'static str {
    "TERM"
}

pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// An agent's state folder plus the commands around it.
pub struct Agent {
    pub state_dir: PathBuf,
}

impl Agent {
    pub fn register(appliance: &Appliance, state_dir: &Path) -> Result<Agent> {
        let pass = appliance.cli(&["passphrase", "show"])?;
        let fp = appliance.cli(&["fingerprint"])?;
        let pass_file = state_dir.with_extension("pass");
        std::fs::write(&pass_file, pass.trim())?;
        let out = Command::new(bin("mobility"))
            .args([
                "register",
                "--appliance",
                &appliance.addr(),
                "--passphrase-file",
            ])
            .arg(&pass_file)
            .args(["--ca-fingerprint", fp.trim(), "--state-dir"])
            .arg(state_dir)
            .output()?;
        if !out.status.success() {
            bail!(
                "mobility register failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(Agent {
            state_dir: state_dir.to_path_buf(),
        })
    }

    pub fn command(&self, disks: &[&Path]) -> Command {
        let mut cmd = Command::new(bin("mobility"));
        cmd.arg("run").arg("--state-dir").arg(&self.state_dir);
        for d in disks {
            cmd.arg("--disk").arg(d);
        }
        cmd.env_remove("RUST_LOG");
        cmd
    }

    /// `mobility run --once`: one point of every disk; returns the point id it printed.
    pub fn once(&self, disks: &[&Path]) -> Result<String> {
        let out = self.command(disks).arg("--once").output()?;
        if !out.status.success() {
            bail!(
                "mobility run --once failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = String::from_utf8(out.stdout)?;
        Ok(text
            .split_whitespace()
            .last()
            .unwrap_or_default()
            .to_string())
    }
}

/// Restores `point` of the only machine's `disk` to `out` via the CLI, reading the vault directly.
pub fn restore(
    appliance: &Appliance,
    machine: &str,
    disk: &str,
    point: &str,
    out: &Path,
    format: &str,
) -> Result<String> {
    appliance.cli(&[
        "restore",
        "--machine",
        machine,
        "--disk",
        disk,
        "--point",
        point,
        "--out",
        out.to_str().unwrap(),
        "--format",
        format,
    ])
}

/// `appliance points list --json` as JSON values.
pub fn points(appliance: &Appliance) -> Result<Vec<serde_json::Value>> {
    let out = appliance.cli(&["points", "list", "--json"])?;
    Ok(serde_json::from_str::<Vec<serde_json::Value>>(&out)?)
}

/// Waits for a backgrounded `mobility run --once` and returns the point id it printed; fails with the
/// appliance's log when the agent failed.
pub fn finished_point(run: Child, appliance: &Appliance, what: &str) -> String {
    let out = run.wait_with_output().expect("wait for the agent");
    assert!(
        out.status.success(),
        "{what}: agent failed\n{}",
        appliance.log_text()
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .last()
        .unwrap_or_default()
        .to_string()
}

/// Restores `point` (of the machine and disk that `points list` names for it) as a raw image in `work`
/// and asserts it equals `img` byte for byte.
pub fn assert_point_restores(appliance: &Appliance, work: &Path, point: &str, img: &Path) {
    let list = points(appliance).expect("points list");
    let p = list
        .iter()
        .find(|p| p["point"] == point)
        .unwrap_or_else(|| panic!("point {point} not listed: {list:?}"));
    let out = work.join(format!("restored-{point}.img"));
    restore(
        appliance,
        p["machine"].as_str().unwrap(),
        p["disk"].as_str().unwrap(),
        point,
        &out,
        "raw",
    )
    .expect("restore");
    assert_eq!(
        sha256_file(&out),
        sha256_file(img),
        "point {point} does not restore byte for byte"
    );
}

/// Bytes in the files below `dir` whose names pass `keep`.
pub fn dir_bytes(dir: &Path, keep: impl Fn(&str) -> bool) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else if keep(&e.file_name().to_string_lossy()) {
                total += m.len();
            }
        }
    }
    total
}

/// `e2fsck -fn` on an image: true when the file system is clean.
pub fn e2fsck_clean(img: &Path) -> bool {
    Command::new("e2fsck")
        .arg("-fn")
        .arg(img)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Azurite's blob service, started by the project's script on a free loopback port; stopped on drop.
pub struct Azurite {
    pub blob_url: String,
    pidfile: PathBuf,
    _dir: tempfile::TempDir,
}

impl Azurite {
    pub const KEY: &'static str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    pub fn start() -> Result<Azurite> {
        let dir = tempfile::tempdir()?;
        let out = Command::new("bash")
            .arg(root().join("scripts/azurite.sh"))
            .args(["start", "--dir"])
            .arg(dir.path())
            .output()?;
        if !out.status.success() {
            bail!(
                "azurite.sh start failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = String::from_utf8(out.stdout)?;
        let get = |k: &str| {
            text.split_whitespace()
                .filter_map(|w| w.strip_prefix(&format!("{k}=")))
                .map(|v| {
                    v.trim_matches(|c| c == '"' || c == '\'' || c == ';')
                        .to_string()
                })
                .next_back()
        };
        let blob_url = get("AZURITE_BLOB_URL").context("no AZURITE_BLOB_URL from azurite.sh")?;
        let pidfile = PathBuf::from(get("AZURITE_PIDFILE").context("no AZURITE_PIDFILE")?);
        Ok(Azurite {
            blob_url,
            pidfile,
            _dir: dir,
        })
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(root().join("scripts/azurite.sh"))
            .arg("stop")
            .env("AZURITE_PIDFILE", &self.pidfile)
            .status();
    }
}
