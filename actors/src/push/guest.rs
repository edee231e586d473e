//! A logged-in guest: running commands as the login user or as root (`sudo -n` when the user is not
//! root), and the steps the operations share: probing the system, checking space, placing the binary,
//! starting the agent and checking it runs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::conn::Conn;
use super::probe::{self, quote, Arch};
use super::script::{self, sq, Layout};
use super::ssh::Output;
use super::{human, GuestTarget, InstallSpec, Log, PushError, ServiceMode, AGENT_FILE_PREFIX};

/// Space kept free beyond the binary: configuration, the agent's state and trackers, logs.
pub const SPACE_RESERVE: u64 = 16 << 20;
/// How long a started agent must stay up before the install counts it as running.
const SETTLE: Duration = Duration::from_secs(2);

/// A logged-in guest and how to run things as root there.
pub(super) struct Guest<'a> {
    pub(super) session: Conn,
    user: String,
    /// Commands that change the system go through `sudo -n` when false.
    root: bool,
    /// The login user's home (where a user other than root stages the upload).
    home: String,
    timeout: Duration,
    log: Log<'a>,
}

impl<'a> Guest<'a> {
    pub(super) async fn open(target: &GuestTarget, log: Log<'a>) -> Result<Guest<'a>, PushError> {
        match target {
            GuestTarget::Ssh(t) => log(&format!(
                "connecting to {}@{}:{}",
                t.username, t.host, t.port
            )),
            GuestTarget::Tools(t) => log(&format!(
                "connecting to VM {} as {} through VMware Tools via the vCenter at {}",
                t.vm,
                t.username,
                t.vcenter_host()
            )),
        }
        let session = Conn::connect(target).await?;
        match target {
            GuestTarget::Ssh(t) => {
                let how = match &t.host_key {
                    super::HostKeyPolicy::TrustOnFirstUse => "trusted on first use",
                    super::HostKeyPolicy::Pinned(_) => "matches the pinned key",
                };
                log(&format!("host key {} ({how})", session.host_key()));
            }
            GuestTarget::Tools(_) => {
                if let Conn::Tools(tools) = &session {
                    log(&format!(
                        "guest operations: logged in; commands run with their output in {}",
                        tools.temp_dir()
                    ));
                }
            }
        }
        let mut guest = Guest {
            session,
            user: target.username().to_string(),
            root: false,
            home: String::new(),
            timeout: target.command_timeout(),
            log,
        };
        // Closed on failure too: through VMware Tools that removes the guest's temporary folder.
        match guest.identify().await {
            Ok(()) => Ok(guest),
            Err(e) => {
                guest.session.close().await;
                Err(e)
            }
        }
    }

    /// Whether the login user is root, else its home and that `sudo -n` works.
    async fn identify(&mut self) -> Result<(), PushError> {
        let guest = self;
        let log = guest.log;
        let id = guest.plain("id", "id -u").await?;
        let uid = probe::parse_uid(&id.stdout).map_err(|e| PushError::CommandFailed {
            step: "id".into(),
            status: id.status_code(),
            stderr: e,
        })?;
        guest.root = uid == 0;
        if !guest.root {
            let home = guest.plain("home", "printf '%s' \"$HOME\"").await?;
            guest.home = home.stdout.trim().to_string();
            if !guest.home.starts_with('/') {
                return Err(PushError::CommandFailed {
                    step: "home".into(),
                    status: home.status_code(),
                    stderr: format!(
                        "user {} has no home folder to stage the upload in",
                        guest.user
                    ),
                });
            }
            guest.as_root("sudo", "true", None).await?;
            log(&format!(
                "user {} (uid {uid}) runs system commands with sudo -n",
                guest.user
            ));
        }
        Ok(())
    }

    /// Runs a command as the login user; a non-zero exit is [`PushError::CommandFailed`].
    pub(super) async fn plain(&self, step: &str, command: &str) -> Result<Output, PushError> {
        let out = self.session.exec(step, command, None, self.timeout).await?;
        if !out.success() {
            return Err(failed(step, &out));
        }
        Ok(out)
    }

    /// Runs a shell script as root and returns what it did, whatever its exit status.
    pub(super) async fn as_root_unchecked(
        &self,
        step: &str,
        script: &str,
        stdin: Option<&[u8]>,
    ) -> Result<Output, PushError> {
        let command = if self.root {
            format!("sh -c {}", sq(script))
        } else {
            format!("sudo -n sh -c {}", sq(script))
        };
        let out = self
            .session
            .exec(step, &command, stdin, self.timeout)
            .await?;
        if !self.root && !out.success() && probe::sudo_wants_password(&out.stderr) {
            return Err(PushError::SudoNeedsPassword {
                user: self.user.clone(),
            });
        }
        if !self.root && out.status == Some(127) && out.stderr.contains("sudo") {
            return Err(PushError::CommandFailed {
                step: step.to_string(),
                status: 127,
                stderr: format!("sudo is not installed and {} is not root", self.user),
            });
        }
        Ok(out)
    }

    /// Runs a shell script as root; a non-zero exit is [`PushError::CommandFailed`].
    pub(super) async fn as_root(
        &self,
        step: &str,
        script: &str,
        stdin: Option<&[u8]>,
    ) -> Result<Output, PushError> {
        let out = self.as_root_unchecked(step, script, stdin).await?;
        if !out.success() {
            return Err(failed(step, &out));
        }
        Ok(out)
    }

    pub(super) async fn write(
        &self,
        step: &str,
        path: &str,
        mode: &str,
        content: &str,
    ) -> Result<(), PushError> {
        self.as_root(
            step,
            &script::write_file(path, mode),
            Some(content.as_bytes()),
        )
        .await
        .map(drop)
    }

    /// `uname -sm` and /etc/os-release: the architecture, or why the guest is not supported.
    pub(super) async fn probe(&self) -> Result<(Arch, Option<String>), PushError> {
        let out = self
            .session
            .exec("uname", "uname -sm", None, self.timeout)
            .await?;
        if !out.success() {
            return Err(PushError::UnsupportedOs {
                found: format!("no working uname ({})", out.tail()),
            });
        }
        let arch = probe::parse_uname(&out.stdout)?;
        let release = self
            .session
            .exec(
                "os-release",
                "cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release 2>/dev/null",
                None,
                self.timeout,
            )
            .await?;
        let os = probe::parse_os_release(&release.stdout);
        (self.log)(&format!(
            "guest: {} on {}",
            os.as_deref().unwrap_or("Linux (no os-release)"),
            arch.name()
        ));
        Ok((arch, os))
    }

    /// The SHA-256 of a file on the guest, `None` when it is missing or sha256sum is not there.
    async fn remote_sha256(&self, path: &str) -> Result<Option<String>, PushError> {
        let out = self
            .as_root_unchecked(
                "checksum",
                &format!("sha256sum {} 2>/dev/null", sq(path)),
                None,
            )
            .await?;
        Ok(out
            .success()
            .then(|| probe::parse_sha256sum(&out.stdout))
            .flatten())
    }

    /// Fails with [`PushError::NotEnoughSpace`] unless `need` bytes are free where `path` will be.
    async fn check_space(&self, path: &str, need: u64) -> Result<(), PushError> {
        let out = self
            .as_root("space", &script::df_script(path), None)
            .await?;
        let have =
            probe::parse_df_available(&out.stdout).map_err(|e| PushError::CommandFailed {
                step: "space".into(),
                status: out.status_code(),
                stderr: e,
            })?;
        let dir = probe::report_value(&out.stdout, "dir").unwrap_or(path);
        if have < need {
            return Err(PushError::NotEnoughSpace {
                path: path.to_string(),
                need,
                have,
            });
        }
        (self.log)(&format!(
            "space: {} free in {} (need {})",
            human(have),
            quote(dir),
            human(need)
        ));
        Ok(())
    }

    /// Puts the agent binary for `arch` at `<prefix>/bin/ferry-mobility` (0755) unless it is there
    /// already: uploaded under a temporary name, then renamed.
    pub(super) async fn put_binary(&self, layout: &Layout, local: &Path) -> Result<(), PushError> {
        let (size, digest) = local_file(local).await?;
        if self.remote_sha256(&layout.bin()).await?.as_deref() == Some(digest.as_str()) {
            (self.log)(&format!("binary: {} is up to date", layout.bin()));
            return Ok(());
        }
        self.check_space(&layout.prefix, size + SPACE_RESERVE)
            .await?;
        self.as_root("folders", &folders_script(layout), None)
            .await?;
        // Root writes next to the target (same file system: the rename is atomic); another user
        // cannot, so it uploads to its home and root copies the file into place.
        let staged = if self.root {
            format!("{}/bin/.ferry-mobility.upload", layout.prefix)
        } else {
            format!("{}/.ferry-mobility.upload", self.home.trim_end_matches('/'))
        };
        let started = Instant::now();
        let how = self.session.upload(local, &staged).await?;
        let place = if self.root {
            format!(
                "chmod 0755 {s} && mv -f {s} {b}",
                s = sq(&staged),
                b = sq(&layout.bin())
            )
        } else {
            let new = format!("{}/bin/.ferry-mobility.new", layout.prefix);
            format!(
                "install -m 0755 {s} {n} && mv -f {n} {b} && rm -f {s}",
                s = sq(&staged),
                n = sq(&new),
                b = sq(&layout.bin())
            )
        };
        self.as_root("install binary", &place, None).await?;
        match self.remote_sha256(&layout.bin()).await? {
            Some(remote) if remote != digest => {
                return Err(PushError::CommandFailed {
                    step: "upload".into(),
                    status: -1,
                    stderr: format!(
                        "the copy's SHA-256 {remote} differs from the agent's {digest}"
                    ),
                })
            }
            Some(_) => {}
            None => (self.log)("binary: sha256sum is not available; the copy was not verified"),
        }
        (self.log)(&format!(
            "binary: {} ({}) copied over {how} in {:.1} s",
            layout.bin(),
            human(size),
            started.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// Starts (or restarts) the agent the way `mode` says and checks it stays up.
    pub(super) async fn start(
        &self,
        layout: &Layout,
        mode: ServiceMode,
        boot_tool: &str,
        run: &str,
    ) -> Result<(), PushError> {
        match mode {
            ServiceMode::Systemd => {
                self.write(
                    "unit",
                    script::UNIT_PATH,
                    "0644",
                    &script::systemd_unit(run),
                )
                .await?;
                let unit = script::UNIT_NAME;
                self.as_root(
                    "start",
                    &format!("systemctl daemon-reload && systemctl enable {unit} && systemctl restart {unit}"),
                    None,
                )
                .await?;
                (self.log)(&format!(
                    "service: systemd unit {unit} enabled and (re)started"
                ));
            }
            ServiceMode::InitScript => {
                let ctl = script::ctl_script(layout, run);
                self.write("control script", &layout.ctl(), "0755", &ctl)
                    .await?;
                self.write("init script", script::INIT_PATH, "0755", &ctl)
                    .await?;
                let enabled = match script::enable_init_script(boot_tool) {
                    Some(cmd) => {
                        self.as_root("enable", cmd, None).await?;
                        format!("enabled at boot with {boot_tool}")
                    }
                    None => "no tool to enable it at boot was found".to_string(),
                };
                self.as_root("start", &format!("{} restart", sq(script::INIT_PATH)), None)
                    .await?;
                (self.log)(&format!(
                    "service: init script {} ({enabled}), started",
                    script::INIT_PATH
                ));
            }
            ServiceMode::Detached => {
                let ctl = script::ctl_script(layout, run);
                self.write("control script", &layout.ctl(), "0755", &ctl)
                    .await?;
                self.as_root("start", &format!("{} restart", sq(&layout.ctl())), None)
                    .await?;
                (self.log)(&format!(
                    "service: no service manager can start it here: started detached with nohup, pidfile {} \
                     (it does not start again after a reboot)",
                    layout.pidfile()
                ));
            }
        }
        self.verify_running(layout, mode, "start").await
    }

    /// Waits [`SETTLE`], then checks the agent still runs; else fails `step` with the end of its log.
    pub(super) async fn verify_running(
        &self,
        layout: &Layout,
        mode: ServiceMode,
        step: &str,
    ) -> Result<(), PushError> {
        tokio::time::sleep(SETTLE).await;
        let (check, logs) = match mode {
            ServiceMode::Systemd => (
                format!("systemctl is-active --quiet {}", script::UNIT_NAME),
                format!("journalctl -u {} -n 20 --no-pager", script::UNIT_NAME),
            ),
            _ => (
                format!("{} status", sq(&layout.ctl())),
                format!("tail -n 20 {}", sq(&layout.log())),
            ),
        };
        if self
            .as_root_unchecked("status", &check, None)
            .await?
            .success()
        {
            (self.log)("agent is running");
            return Ok(());
        }
        let out = self.as_root_unchecked("agent log", &logs, None).await?;
        Err(PushError::CommandFailed {
            step: step.into(),
            status: -1,
            stderr: format!("the agent is not running; its log: {}", out.tail()),
        })
    }

    /// The agent id in the guest's registration, if it registered.
    pub(super) async fn agent_id(&self, layout: &Layout) -> Result<Option<String>, PushError> {
        let out = self
            .as_root_unchecked(
                "registration",
                &format!("cat {} 2>/dev/null", sq(&layout.registration())),
                None,
            )
            .await?;
        if !out.success() {
            return Ok(None);
        }
        probe::parse_registration(&out.stdout)
            .map(Some)
            .map_err(|e| PushError::CommandFailed {
                step: "registration".into(),
                status: 0,
                stderr: e,
            })
    }

    pub(super) async fn installed_mode(
        &self,
        layout: &Layout,
    ) -> Result<Option<ServiceMode>, PushError> {
        let out = self
            .as_root_unchecked(
                "config",
                &format!("cat {} 2>/dev/null", sq(&layout.env())),
                None,
            )
            .await?;
        Ok(probe::report_value(&out.stdout, "FERRY_SERVICE_MODE").and_then(ServiceMode::parse))
    }
}

fn failed(step: &str, out: &Output) -> PushError {
    PushError::CommandFailed {
        step: step.to_string(),
        status: out.status_code(),
        stderr: out.tail(),
    }
}

fn folders_script(layout: &Layout) -> String {
    let p = |rel: &str| sq(&format!("{}/{rel}", layout.prefix));
    format!(
        "install -d -m 0755 {} {} {} {} && install -d -m 0700 {} {}",
        sq(&layout.prefix),
        p("bin"),
        p("run"),
        p("log"),
        p("etc"),
        p("state")
    )
}

/// Size and SHA-256 of the local agent binary.
async fn local_file(path: &Path) -> Result<(u64, String), PushError> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&owned)?;
        let mut hasher = Sha256::new();
        let size = std::io::copy(&mut file, &mut hasher)?;
        Ok::<_, std::io::Error>((size, hex::encode(hasher.finalize())))
    })
    .await
    .map_err(|e| PushError::Invalid(format!("hashing {}: {e}", path.display())))?
    .map_err(|e| PushError::Invalid(format!("the agent binary {}: {e}", path.display())))
}

pub(super) fn agent_binary(spec: &InstallSpec, arch: Arch) -> PathBuf {
    spec.agents_dir
        .join(format!("{AGENT_FILE_PREFIX}{}", arch.name()))
}
