//! The vCenter both clients discover: one vcsim started with `scripts/vcsim.sh start --dir D`, with
//! a login of its own, and stopped with `scripts/vcsim.sh stop D` when this handle is stopped or
//! dropped (an error or a signal ends the run by returning, so the drop runs).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use ferry_tests::vcsim::{parse_env, process_alive};

#[derive(Debug)]
pub struct Vcsim {
    /// `https://127.0.0.1:PORT/sdk`
    pub url: String,
    pub port: u16,
    pub pid: u32,
    /// The state folder given to `--dir`.
    pub dir: PathBuf,
    /// SHA-256 of the certificate, colon hex.
    pub thumbprint_sha256: String,
    script: PathBuf,
    running: bool,
}

impl Vcsim {
    /// Starts vcsim with `flags` (inventory flags such as `-cluster 4 -vm 500`) in `dir`; only
    /// `username` with `password` logs in. The password reaches vcsim through a file in `work`.
    pub fn start(
        root: &Path,
        work: &Path,
        flags: &[String],
        username: &str,
        password: &str,
    ) -> Result<Vcsim> {
        let script = root.join("scripts/vcsim.sh");
        let dir = work.join("vcsim");
        let password_file = work.join("vcsim-password");
        write_private(&password_file, &format!("{password}\n"))?;
        let out = Command::new("bash")
            .arg(&script)
            .args(["start", "--dir"])
            .arg(&dir)
            .args(flags)
            .args(["-username", username, "-password-file"])
            .arg(&password_file)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("run {}", script.display()))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            bail!(
                "scripts/vcsim.sh start failed ({}; scripts/install-test-deps.sh installs what it \
                 needs):\n{}",
                out.status,
                excerpt(&stderr)
            );
        }
        eprint!("{stderr}");
        // From here on it runs: a parse error below still stops it (on drop).
        let mut vcsim = Vcsim {
            url: String::new(),
            port: 0,
            pid: 0,
            dir,
            thumbprint_sha256: String::new(),
            script,
            running: true,
        };
        let env = parse_env(&String::from_utf8_lossy(&out.stdout));
        let get = |k: &str| {
            env.get(k)
                .cloned()
                .filter(|v| !v.is_empty())
                .with_context(|| format!("scripts/vcsim.sh start printed no {k}"))
        };
        vcsim.url = get("VCSIM_URL")?;
        vcsim.port = get("VCSIM_PORT")?.parse().context("VCSIM_PORT")?;
        vcsim.pid = get("VCSIM_PID")?.parse().context("VCSIM_PID")?;
        vcsim.thumbprint_sha256 = get("VCSIM_THUMBPRINT_SHA256")?;
        Ok(vcsim)
    }

    /// vcsim's summary of what it built (`2000 VMs, 8 hosts, 1 datastores in 1.26s`).
    pub fn inventory_line(&self) -> Option<String> {
        let log = std::fs::read_to_string(self.dir.join("vcsim.log")).ok()?;
        log.lines().find_map(|l| {
            l.split_once("inventory: ")
                .map(|(_, rest)| rest.to_string())
        })
    }

    /// SIGTERM through `scripts/vcsim.sh stop D`, which waits until it has exited.
    pub fn stop(&mut self) -> Result<()> {
        if !self.running {
            return Ok(());
        }
        self.running = false;
        let status = Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .status()
            .context("run scripts/vcsim.sh stop")?;
        if !status.success() {
            bail!("scripts/vcsim.sh stop failed ({status})");
        }
        if self.pid != 0 && process_alive(self.pid) {
            bail!("vcsim (pid {}) still runs after stop", self.pid);
        }
        Ok(())
    }
}

impl Drop for Vcsim {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("discovery_bench: {e:#}");
        }
    }
}

/// The first and last lines of a long text (Go prints the reason first, then its usage).
fn excerpt(text: &str) -> String {
    const EACH: usize = 8;
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= 2 * EACH {
        return lines.join("\n");
    }
    format!(
        "{}\n...\n{}",
        lines[..EACH].join("\n"),
        lines[lines.len() - EACH..].join("\n")
    )
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("write {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// The Debian package vcsim is built from, with its version.
pub fn govmomi_version() -> String {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "golang-github-vmware-govmomi-dev"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .filter(|v| !v.trim().is_empty())
        .map_or_else(
            || "govmomi (version unknown)".into(),
            |v| format!("govmomi {}", v.trim()),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_errors_keep_both_ends() {
        let text: Vec<String> = (0..40).map(|i| format!("line {i}")).collect();
        let short = excerpt(&text.join("\n"));
        assert!(short.starts_with("line 0\n") && short.ends_with("line 39"));
        assert!(short.contains("...") && !short.contains("line 20"));
        assert_eq!(excerpt("a\nb"), "a\nb");
        assert_eq!(excerpt(""), "");
    }

    #[test]
    fn a_failing_start_leaves_nothing_running() {
        let work = tempfile::tempdir().unwrap();
        // A flag the launcher refuses: the script fails and its own cleanup stops what it started.
        let err = Vcsim::start(
            &ferry_tests::root(),
            work.path(),
            &["-no-such-flag".to_string()],
            "u",
            "p",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("vcsim.sh start failed"), "{err:#}");
        assert!(
            text.contains("no-such-flag"),
            "the script's reason is shown: {err:#}"
        );
        let pid = std::fs::read_to_string(work.path().join("vcsim/vcsim.pid")).unwrap_or_default();
        if let Ok(pid) = pid.trim().parse::<u32>() {
            assert!(!process_alive(pid), "vcsim {pid} left running");
        }
    }
}
