//! Reaching a guest through vSphere guest operations (VMware Tools), for VMs the appliance cannot
//! reach over the network: the vCenter starts programs in the guest and copies files in and out.
//!
//! Guest operations have no stdin, stdout or exit status stream, so a command runs as
//! `/bin/sh -c '<wrapper>'` with its stdin, stdout and stderr as files in a private folder
//! (`/tmp/.ferry-push-<random>`, mode 0700, made when the session opens and removed when it closes):
//! stdin is copied in first (and removed once the command opened it: it may hold a token), the
//! exit code comes from ListProcessesInGuest, the output is copied out afterwards.
//!
//! Faults map to the push errors an operator can act on: InvalidGuestLogin is
//! `authentication_failed`, a powered-off VM or Tools not running is `tools_not_running`, a
//! vCenter that does not answer is `host_unreachable`.

use std::path::Path;
use std::time::{Duration, Instant};

use vsphere::guest::{GuestAuth, GuestFileAttributes, GuestProgram};
use vsphere::{Client, ClientOptions, Credentials, MoRef, TlsTrust, VsphereError};

#[path = "tools_trust.rs"]
mod trust;

use super::script::sq;
use super::ssh::Output;
use super::PushError;

/// Most bytes of a command's stdout or stderr copied out of the guest.
const MAX_OUTPUT: u64 = 4 << 20;
/// First and longest pause between two looks at a running command.
const POLL_FIRST: Duration = Duration::from_millis(20);
const POLL_MAX: Duration = Duration::from_millis(500);
/// How long closing waits for the temporary folder's removal.
const CLOSE_LIMIT: Duration = Duration::from_secs(15);

/// A VM's guest, reached through its vCenter.
#[derive(Clone)]
pub struct ToolsTarget {
    /// `https://host[:port]/sdk` of the vCenter.
    pub vcenter_url: String,
    pub vcenter_credentials: Credentials,
    pub vcenter_trust: TlsTrust,
    /// The VM's managed object id (`vm-42`).
    pub vm: String,
    /// The user in the guest (root, or a user with password-less sudo) and its password.
    pub username: String,
    pub password: String,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub upload_timeout: Duration,
}

impl std::fmt::Debug for ToolsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the passwords.
        f.debug_struct("ToolsTarget")
            .field("vcenter_url", &self.vcenter_url)
            .field("vm", &self.vm)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl ToolsTarget {
    /// `host[:port]` of the vCenter, for messages (never a user name written into the URL).
    pub fn vcenter_host(&self) -> String {
        let rest = self
            .vcenter_url
            .split_once("://")
            .map_or(self.vcenter_url.as_str(), |(_, rest)| rest);
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        if host.is_empty() {
            "(the vCenter)".to_string()
        } else {
            host.to_string()
        }
    }
}

/// A logged-in vCenter session and the guest's private folder.
pub struct ToolsSession {
    client: Client,
    vm: MoRef,
    auth: GuestAuth,
    target: ToolsTarget,
    /// The private folder in the guest.
    dir: String,
    /// The ESXi host's certificate trust, once a transfer URL named the host (see `tools_trust.rs`).
    host_trust: std::sync::Mutex<Option<TlsTrust>>,
}

/// What a vSphere error means for a push.
fn mapped(e: VsphereError, t: &ToolsTarget, step: &str) -> PushError {
    let vm = t.vm.clone();
    match e {
        VsphereError::Fault { ref type_name, .. } if type_name == "InvalidGuestLogin" => {
            PushError::AuthenticationFailed {
                user: t.username.clone(),
                detail: "the guest rejected the user name or password (InvalidGuestLogin)".into(),
            }
        }
        VsphereError::GuestOperationsUnavailable => PushError::ToolsNotRunning {
            vm,
            detail: "VMware Tools is not running in the guest (GuestOperationsUnavailable)".into(),
            retryable: true,
        },
        VsphereError::InvalidPowerState { existing, .. } => PushError::ToolsNotRunning {
            vm,
            detail: format!(
                "the VM is {}; power it on",
                existing.as_deref().unwrap_or("not powered on")
            ),
            retryable: false,
        },
        VsphereError::InvalidState { message, .. } => PushError::ToolsNotRunning {
            vm,
            detail: format!("the VM is in no state for guest operations: {message}"),
            retryable: false,
        },
        VsphereError::InvalidLogin | VsphereError::NotAuthenticated => {
            PushError::AuthenticationFailed {
                user: t.vcenter_credentials.username.clone(),
                detail: "the vCenter rejected its stored credentials: update the vCenter".into(),
            }
        }
        VsphereError::ManagedObjectNotFound { .. } => PushError::Invalid(format!(
            "the vCenter has no VM {vm} (any more): pick it again from the inventory"
        )),
        VsphereError::CertificateMismatch {
            expected,
            presented_sha256,
            ..
        } => PushError::Invalid(format!(
            "the vCenter at {} presents a certificate with SHA-256 {presented_sha256}, not the \
             pinned {expected}: update the vCenter's thumbprint if you trust it",
            t.vcenter_host()
        )),
        VsphereError::Timeout => PushError::Timeout {
            step: step.to_string(),
            secs: t.command_timeout.as_secs(),
        },
        e if e.is_retryable() => PushError::HostUnreachable {
            host: t.vcenter_host(),
            detail: e.to_string(),
        },
        e => PushError::CommandFailed {
            step: step.to_string(),
            status: -1,
            stderr: format!("guest operation: {e}"),
        },
    }
}

/// The arguments of `/bin/sh` that run `command` in `dir` with its stdin from `dir/in` (removed
/// once opened) or /dev/null, stdout to `dir/out` and stderr to `dir/err`; 125 when `dir` is gone.
pub(super) fn shell_arguments(dir: &str, stdin: bool, command: &str) -> String {
    let input = if stdin { "in" } else { "/dev/null" };
    let wrapper = format!(
        "cd {dir} || exit 125; exec <{input} >out 2>err; rm -f in; exec /bin/sh -c {cmd}",
        dir = sq(dir),
        cmd = sq(command),
    );
    format!("-c {}", sq(&wrapper))
}

/// [`mapped`], for the HTTP part of a file transfer: the URL may name an ESXi host, whose
/// certificate is not the vCenter's.
fn mapped_transfer(e: VsphereError, t: &ToolsTarget, step: &str) -> PushError {
    match e {
        VsphereError::CertificateMismatch {
            presented_sha256, ..
        } => PushError::CommandFailed {
            step: step.to_string(),
            status: -1,
            stderr: format!(
                "the file transfer host presents a certificate (SHA-256 {presented_sha256}) other \
                 than the one it is checked against (the vCenter's pinned certificate, or for an \
                 ESXi host the thumbprint vCenter reports for it)"
            ),
        },
        e => mapped(e, t, step),
    }
}

impl ToolsSession {
    /// Logs in to the vCenter and makes the private folder in the guest (which also proves the
    /// guest credentials and that Tools runs).
    pub async fn open(target: &ToolsTarget) -> Result<ToolsSession, PushError> {
        let options = ClientOptions {
            connect_timeout: target.connect_timeout,
            ..ClientOptions::default()
        };
        let login = Client::connect_with(
            &target.vcenter_url,
            target.vcenter_credentials.clone(),
            target.vcenter_trust.clone(),
            options,
        );
        let client = tokio::time::timeout(target.connect_timeout, login)
            .await
            .map_err(|_| PushError::HostUnreachable {
                host: target.vcenter_host(),
                detail: format!("no answer within {} s", target.connect_timeout.as_secs()),
            })?
            .map_err(|e| mapped(e, target, "vCenter login"))?;
        let suffix: u64 = rand::random();
        let session = ToolsSession {
            client,
            vm: MoRef::new("VirtualMachine", target.vm.as_str()),
            auth: GuestAuth {
                username: target.username.clone(),
                password: target.password.clone(),
            },
            target: target.clone(),
            dir: format!("/tmp/.ferry-push-{suffix:016x}"),
            host_trust: std::sync::Mutex::new(None),
        };
        // mkdir fails when the name exists: the folder is this session's own.
        let code = session
            .run(
                "temporary folder",
                &GuestProgram {
                    path: "/bin/mkdir".into(),
                    arguments: format!("-m 0700 {}", sq(&session.dir)),
                    ..GuestProgram::default()
                },
                target.command_timeout,
            )
            .await?;
        if code != Some(0) {
            return Err(PushError::CommandFailed {
                step: "temporary folder".into(),
                status: code.map_or(-1, i64::from),
                stderr: format!("mkdir {} failed in the guest", session.dir),
            });
        }
        Ok(session)
    }

    /// The session's private folder in the guest (removed by [`ToolsSession::close`]).
    pub fn temp_dir(&self) -> &str {
        &self.dir
    }

    /// Starts `program` and waits for its exit code (`None`: it ended without one).
    async fn run(
        &self,
        step: &str,
        program: &GuestProgram,
        limit: Duration,
    ) -> Result<Option<i32>, PushError> {
        let started = Instant::now();
        let pid = self
            .client
            .start_program_in_guest(&self.vm, &self.auth, program)
            .await
            .map_err(|e| mapped(e, &self.target, step))?;
        let mut pause = POLL_FIRST;
        loop {
            let list = self
                .client
                .list_processes_in_guest(&self.vm, &self.auth, &[pid])
                .await
                .map_err(|e| mapped(e, &self.target, step))?;
            let Some(process) = list.into_iter().find(|p| p.pid == pid) else {
                return Err(PushError::CommandFailed {
                    step: step.to_string(),
                    status: -1,
                    stderr: format!("the guest no longer lists process {pid}"),
                });
            };
            if process.end_time.is_some() {
                // vSphere leaves out an exit code of 0.
                return Ok(Some(process.exit_code.unwrap_or(0)));
            }
            if started.elapsed() >= limit {
                return Err(PushError::Timeout {
                    step: step.to_string(),
                    secs: limit.as_secs(),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(POLL_MAX);
        }
    }

    /// Copies `bytes` to `path` in the guest (mode 0600, replacing it).
    async fn put(&self, step: &str, path: &str, bytes: Vec<u8>) -> Result<(), PushError> {
        let attrs = GuestFileAttributes::Posix {
            owner_id: None,
            group_id: None,
            permissions: Some(0o600),
        };
        let url = self
            .client
            .initiate_file_transfer_to_guest(
                &self.vm,
                &self.auth,
                path,
                &attrs,
                bytes.len() as u64,
                true,
            )
            .await
            .map_err(|e| mapped(e, &self.target, step))?;
        let trust = self.transfer_trust(&url, step).await?;
        self.client
            .put_guest_file(&url, bytes, trust.as_ref())
            .await
            .map_err(|e| mapped_transfer(e, &self.target, step))
    }

    /// The trust for a transfer URL: `None` (the vCenter's pinned one) when it names the vCenter,
    /// else the ESXi host's thumbprint as vCenter reports it (looked up once per session).
    async fn transfer_trust(
        &self,
        url: &url::Url,
        step: &str,
    ) -> Result<Option<TlsTrust>, PushError> {
        if trust::on_vcenter(url, self.client.sdk_url()) {
            return Ok(None);
        }
        if let Some(known) = self.host_trust.lock().expect("host trust lock").clone() {
            return Ok(Some(known));
        }
        let (host, reported) = trust::reported_host_thumbprint(&self.client, &self.vm)
            .await
            .map_err(|e| mapped(e, &self.target, step))?;
        let found = trust::host_trust(url, &host, reported.as_deref())?;
        *self.host_trust.lock().expect("host trust lock") = Some(found.clone());
        Ok(Some(found))
    }

    /// The content of a guest file; `None` when it does not exist.
    async fn fetch(&self, step: &str, path: &str) -> Result<Option<String>, PushError> {
        let download = match self
            .client
            .initiate_file_transfer_from_guest(&self.vm, &self.auth, path)
            .await
        {
            Ok(d) => d,
            Err(VsphereError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(mapped(e, &self.target, step)),
        };
        let trust = self.transfer_trust(&download.url, step).await?;
        let bytes = self
            .client
            .get_guest_file(&download.url, MAX_OUTPUT, trust.as_ref())
            .await
            .map_err(|e| match e {
                VsphereError::InvalidInput { reason } => PushError::CommandFailed {
                    step: step.to_string(),
                    status: -1,
                    stderr: reason,
                },
                e => mapped_transfer(e, &self.target, step),
            })?;
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Runs `command` through `/bin/sh` as the guest user, with `stdin`, within `limit`.
    pub async fn exec(
        &self,
        step: &str,
        command: &str,
        stdin: Option<&[u8]>,
        limit: Duration,
    ) -> Result<Output, PushError> {
        if let Some(bytes) = stdin {
            self.put(step, &format!("{}/in", self.dir), bytes.to_vec())
                .await?;
        }
        let program = GuestProgram {
            path: "/bin/sh".into(),
            arguments: shell_arguments(&self.dir, stdin.is_some(), command),
            ..GuestProgram::default()
        };
        let code = self.run(step, &program, limit).await?;
        let stdout = self.fetch(step, &format!("{}/out", self.dir)).await?;
        let stderr = self.fetch(step, &format!("{}/err", self.dir)).await?;
        if stdout.is_none() && code == Some(125) {
            return Err(PushError::CommandFailed {
                step: step.to_string(),
                status: 125,
                stderr: format!("the temporary folder {} is gone from the guest", self.dir),
            });
        }
        Ok(Output {
            status: code.and_then(|c| u32::try_from(c).ok()),
            stdout: stdout.unwrap_or_default(),
            stderr: stderr.unwrap_or_default(),
        })
    }

    /// Copies `local` to `remote` (created or replaced, mode 0600; the caller sets the final mode).
    pub async fn upload(&self, local: &Path, remote: &str) -> Result<&'static str, PushError> {
        let bytes = tokio::fs::read(local)
            .await
            .map_err(|e| PushError::Invalid(format!("reading {}: {e}", local.display())))?;
        let limit = self.target.upload_timeout;
        tokio::time::timeout(limit, self.put("upload", remote, bytes))
            .await
            .map_err(|_| PushError::Timeout {
                step: "upload".into(),
                secs: limit.as_secs(),
            })??;
        Ok("vmware tools file transfer")
    }

    /// Removes the private folder (its files may hold output of the install) and logs out; errors
    /// are only logged: the work is done or failed already.
    pub async fn close(self) {
        let program = GuestProgram {
            path: "/bin/rm".into(),
            arguments: format!("-rf {}", sq(&self.dir)),
            ..GuestProgram::default()
        };
        match self.run("cleanup", &program, CLOSE_LIMIT).await {
            Ok(Some(0)) => {}
            Ok(code) => {
                tracing::warn!(dir = %self.dir, ?code, "could not remove the guest's temporary folder")
            }
            Err(err) => {
                tracing::warn!(dir = %self.dir, %err, "could not remove the guest's temporary folder")
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.client.logout()).await;
    }
}

#[cfg(test)]
#[path = "tools_tests.rs"]
mod tests;
