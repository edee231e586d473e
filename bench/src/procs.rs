//! Running the measured commands: wall time, peak resident memory, logs kept for when a step fails.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How often a running command's memory high-water mark is read. Short enough that the wall time
/// measured by polling `try_wait` is off by a few milliseconds at most.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// What one measured command took.
#[derive(Debug, Clone, Copy)]
pub struct Timed {
    pub seconds: f64,
    /// Peak resident set size (VmHWM) in KiB, as last seen while the process ran.
    pub peak_rss_kib: Option<u64>,
}

/// The `VmHWM:` line of a `/proc/<pid>/status` text, in KiB.
pub fn parse_vm_hwm_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let mut parts = line["VmHWM:".len()..].split_whitespace();
    let value = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") => Some(value),
        _ => None,
    }
}

/// The peak resident set size of a running process in KiB; None once it has exited.
pub fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_hwm_kib(&status)
}

/// Writes the output of the commands of one tool to one log file, so a failure can be explained.
#[derive(Debug, Clone)]
pub struct Logged {
    pub log: PathBuf,
}

impl Logged {
    pub fn new(log: PathBuf) -> Logged {
        Logged { log }
    }

    fn open(&self, header: &str) -> Result<std::fs::File> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("open log {}", self.log.display()))?;
        writeln!(f, "\n=== {header}")?;
        Ok(f)
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Runs `cmd` to completion with its output appended to the log; fails on a non-zero exit.
    /// Times it and follows its peak memory.
    pub fn timed(&self, what: &str, cmd: &mut Command) -> Result<Timed> {
        let log = self.open(&format!("{what}: {cmd:?}"))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let start = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("{what}: start {cmd:?}"))?;
        let mut peak = None;
        let status = loop {
            if let Some(hwm) = vm_hwm_kib(child.id()) {
                peak = peak.max(Some(hwm));
            }
            if let Some(status) = child.try_wait()? {
                break status;
            }
            std::thread::sleep(POLL_INTERVAL);
        };
        let seconds = start.elapsed().as_secs_f64();
        if !status.success() {
            bail!(
                "{what} failed ({status}); last lines of {}:\n{}",
                self.log.display(),
                self.tail()
            );
        }
        Ok(Timed {
            seconds,
            peak_rss_kib: peak,
        })
    }

    /// Runs `cmd` to completion and returns its standard output; its standard error goes to the log.
    pub fn output(&self, what: &str, cmd: &mut Command) -> Result<String> {
        let log = self.open(&format!("{what}: {cmd:?}"))?;
        let out = cmd
            .stdin(Stdio::null())
            .stderr(log)
            .output()
            .with_context(|| format!("{what}: start {cmd:?}"))?;
        if !out.status.success() {
            bail!(
                "{what} failed ({}): {}; last lines of {}:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                self.log.display(),
                self.tail()
            );
        }
        String::from_utf8(out.stdout).with_context(|| format!("{what}: output is not UTF-8"))
    }

    /// Starts a long-running process with its output appended to the log.
    pub fn spawn(&self, what: &str, cmd: &mut Command) -> Result<Child> {
        let log = self.open(&format!("{what}: {cmd:?}"))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        cmd.spawn()
            .with_context(|| format!("{what}: start {cmd:?}"))
    }

    /// The last lines of the log, for error messages.
    pub fn last_lines(&self) -> String {
        self.tail()
    }
}

/// True when `name` is an executable found on PATH.
pub fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| is_executable(&dir.join(name))))
        .unwrap_or(false)
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Installs the peers from the distribution when they are missing (they are not needed in CI,
/// only when the benchmark runs).
pub fn ensure_peers_installed() -> Result<()> {
    if on_path("restic") && on_path("borg") {
        return Ok(());
    }
    eprintln!("restic or borg missing: installing them with apt-get");
    let status = Command::new("apt-get")
        .arg("update")
        .stdout(Stdio::null())
        .status()
        .context("run apt-get update")?;
    if !status.success() {
        bail!("apt-get update failed ({status})");
    }
    let status = Command::new("apt-get")
        .args(["install", "-y", "restic", "borgbackup"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .context("run apt-get install")?;
    if !status.success() {
        bail!("apt-get install -y restic borgbackup failed ({status})");
    }
    if !(on_path("restic") && on_path("borg")) {
        bail!("restic and borg are still not on PATH after installing them");
    }
    Ok(())
}

/// The first line of `program args`, to record which peer version was measured.
pub fn version_of(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        // "restic 0.14.0 compiled with go1.19.8 on linux/amd64": name and version are enough.
        .map(|s| s.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("{program} (version unknown)"))
}

/// Total bytes of the regular files under `dir` (what a repository occupies).
pub fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in rd.flatten() {
            let Ok(md) = entry.metadata() else { continue };
            if md.is_dir() {
                stack.push(entry.path());
            } else if md.is_file() {
                use std::os::unix::fs::MetadataExt;
                // Allocated bytes: a sparse restore target or cache file counts what it really uses.
                total += md.blocks() * 512;
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_hwm() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmHWM:\t    1234 kB\nVmRSS:\t  1000 kB\n";
        assert_eq!(parse_vm_hwm_kib(status), Some(1234));
        assert_eq!(parse_vm_hwm_kib("Name: x\n"), None);
        assert_eq!(parse_vm_hwm_kib("VmHWM:\tabc kB\n"), None);
        assert_eq!(parse_vm_hwm_kib("VmHWM:\t12 MB\n"), None);
    }

    #[test]
    fn reads_own_peak_memory() {
        let hwm = vm_hwm_kib(std::process::id()).expect("own VmHWM");
        assert!(hwm > 100, "{hwm} KiB");
    }

    #[test]
    fn timed_follows_a_child_and_reports_failure() {
        let dir = tempfile::tempdir().unwrap();
        let logged = Logged::new(dir.path().join("log"));
        let t = logged
            .timed("sleep", Command::new("sleep").arg("0.2"))
            .unwrap();
        assert!(t.seconds >= 0.2 && t.seconds < 5.0, "{}", t.seconds);
        assert!(t.peak_rss_kib.is_some());
        let err = logged
            .timed(
                "false",
                Command::new("sh").args(["-c", "echo oops >&2; exit 3"]),
            )
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("false failed") && msg.contains("oops"),
            "{msg}"
        );
        let out = logged
            .output("echo", Command::new("echo").arg("hi"))
            .unwrap();
        assert_eq!(out, "hi\n");
    }

    #[test]
    fn finds_programs_on_path() {
        assert!(on_path("sh"));
        assert!(!on_path("no-such-program-ferry-bench"));
    }

    #[test]
    fn counts_directory_bytes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::fs::write(dir.path().join("a/f"), vec![1u8; 100_000]).unwrap();
        assert!(dir_bytes(dir.path()) >= 100_000);
    }
}
