//! The two ways to reach a guest, behind what the install steps need of either: run a command
//! (with stdin, capturing its output and exit status) and copy a file in.

use std::path::Path;
use std::time::Duration;

use super::ssh::{Output, Session};
use super::tools::ToolsSession;
use super::{GuestTarget, PushError};

pub(super) enum Conn {
    Ssh(Session),
    Tools(Box<ToolsSession>),
}

impl Conn {
    pub(super) async fn connect(target: &GuestTarget) -> Result<Conn, PushError> {
        Ok(match target {
            GuestTarget::Ssh(t) => Conn::Ssh(Session::connect(t).await?),
            GuestTarget::Tools(t) => Conn::Tools(Box::new(ToolsSession::open(t).await?)),
        })
    }

    /// Runs `command` through a shell as the login user, feeding it `stdin`, within `limit`.
    pub(super) async fn exec(
        &self,
        step: &str,
        command: &str,
        stdin: Option<&[u8]>,
        limit: Duration,
    ) -> Result<Output, PushError> {
        match self {
            Conn::Ssh(s) => s.exec(step, command, stdin, limit).await,
            Conn::Tools(t) => t.exec(step, command, stdin, limit).await,
        }
    }

    /// Copies `local` to `remote` as the login user; returns how it went (for the log).
    pub(super) async fn upload(
        &self,
        local: &Path,
        remote: &str,
    ) -> Result<&'static str, PushError> {
        match self {
            Conn::Ssh(s) => s.upload(local, remote).await,
            Conn::Tools(t) => t.upload(local, remote).await,
        }
    }

    /// The SSH host key's fingerprint; empty over VMware Tools, where the vCenter's pinned
    /// certificate vouches for the path to the guest instead.
    pub(super) fn host_key(&self) -> &str {
        match self {
            Conn::Ssh(s) => s.host_key(),
            Conn::Tools(_) => "",
        }
    }

    pub(super) async fn close(self) {
        match self {
            Conn::Ssh(s) => s.close().await,
            Conn::Tools(t) => (*t).close().await,
        }
    }
}
