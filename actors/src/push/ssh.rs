//! One SSH session to a guest (russh): connect with a host-key check and a timeout, log in, run
//! commands (with stdin, capturing bounded output), and copy a file over SFTP or, where the server
//! offers no SFTP, through `cat` on an exec channel.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::ChannelMsg;
use tokio::io::AsyncWriteExt;

use super::probe::quote;
use super::{Auth, HostKeyPolicy, PushError, Target};

/// Most bytes kept of a command's stdout (from the start) and of its stderr (the end).
const MAX_STDOUT: usize = 1 << 20;
const MAX_STDERR: usize = 64 << 10;
/// How long the server may take to accept or refuse the SFTP subsystem.
const SUBSYSTEM_REPLY: Duration = Duration::from_secs(15);
/// Unanswered keepalives (15 s apart) before the session counts as dead.
const KEEPALIVE: Duration = Duration::from_secs(15);
const KEEPALIVE_MAX: usize = 4;

/// What a remote command did.
#[derive(Clone, Debug, Default)]
pub struct Output {
    /// Exit status; `None` when it ended by a signal or the server sent none.
    pub status: Option<u32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// The status as the job log shows it (-1: none).
    pub fn status_code(&self) -> i64 {
        self.status.map_or(-1, i64::from)
    }

    /// The last lines of stderr (stdout when stderr is empty), for an error message.
    pub fn tail(&self) -> String {
        let text = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
        let tail: String = tail
            .chars()
            .rev()
            .take(600)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if tail.is_empty() {
            "(no output)".into()
        } else {
            tail
        }
    }
}

/// The SHA-256 fingerprint of a host key as OpenSSH prints it.
pub fn fingerprint(key: &PublicKeyOrCertificate) -> String {
    match key {
        PublicKeyOrCertificate::PublicKey { key, .. } => {
            key.fingerprint(HashAlg::Sha256).to_string()
        }
        PublicKeyOrCertificate::Certificate(cert) => {
            cert.public_key().fingerprint(HashAlg::Sha256).to_string()
        }
    }
}

/// A fingerprint in the form [`fingerprint`] prints, from what a person may paste: with or without
/// the `SHA256:` prefix and base64 padding.
pub fn normalize_fingerprint(given: &str) -> Result<String, PushError> {
    let body = given.trim();
    let body = body
        .strip_prefix("SHA256:")
        .unwrap_or(body)
        .trim_end_matches('=');
    let valid = body.len() == 43
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if !valid {
        return Err(PushError::Invalid(format!(
            "host key fingerprint {:?} is not a SHA-256 fingerprint (SHA256: and 43 base64 characters)",
            quote(given)
        )));
    }
    Ok(format!("SHA256:{body}"))
}

/// Whether a private key (OpenSSH or PEM, encrypted with `passphrase` if given) can be used, without
/// connecting anywhere: lets a caller refuse a bad key before it queues a job.
pub fn check_private_key(pem: &str, passphrase: Option<&str>) -> Result<(), PushError> {
    russh::keys::decode_secret_key(pem, passphrase)
        .map(drop)
        .map_err(|e| PushError::Invalid(format!("the private key cannot be read: {e}")))
}

/// Checks the host key against the policy and remembers what it saw.
struct Checker {
    expected: Option<String>,
    seen: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let found = fingerprint(key);
        let ok = self.expected.as_ref().is_none_or(|e| *e == found);
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(found);
        Ok(ok)
    }
}

/// An authenticated session.
pub struct Session {
    handle: client::Handle<Checker>,
    host_key: String,
    upload_timeout: Duration,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("host_key", &self.host_key)
            .finish_non_exhaustive()
    }
}

fn secs(d: Duration) -> u64 {
    d.as_secs().max(1)
}

impl Session {
    /// Connects, checks the host key and logs in, all within `target.connect_timeout` each.
    pub async fn connect(target: &Target) -> Result<Session, PushError> {
        let expected = match &target.host_key {
            HostKeyPolicy::TrustOnFirstUse => None,
            HostKeyPolicy::Pinned(fp) => Some(normalize_fingerprint(fp)?),
        };
        let key = match &target.auth {
            Auth::PrivateKey { pem, passphrase } => Some(
                russh::keys::decode_secret_key(pem, passphrase.as_deref()).map_err(|e| {
                    PushError::Invalid(format!("the private key cannot be read: {e}"))
                })?,
            ),
            Auth::Password(_) => None,
        };
        let unreachable = |detail: String| PushError::HostUnreachable {
            host: format!("{}:{}", target.host, target.port),
            detail,
        };
        let limit = target.connect_timeout;
        let tcp = tokio::time::timeout(
            limit,
            tokio::net::TcpStream::connect((target.host.as_str(), target.port)),
        )
        .await
        .map_err(|_| unreachable(format!("no answer within {} s", secs(limit))))?
        .map_err(|e| unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);

        let config = Arc::new(client::Config {
            keepalive_interval: Some(KEEPALIVE),
            keepalive_max: KEEPALIVE_MAX,
            inactivity_timeout: None,
            ..Default::default()
        });
        let seen = Arc::new(Mutex::new(None));
        let checker = Checker {
            expected: expected.clone(),
            seen: seen.clone(),
        };
        let handshake =
            tokio::time::timeout(limit, client::connect_stream(config, tcp, checker)).await;
        let seen_key = || seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut handle = match handshake {
            Err(_) => {
                return Err(PushError::Timeout {
                    step: "SSH handshake".into(),
                    secs: secs(limit),
                })
            }
            Ok(Err(russh::Error::UnknownKey)) => {
                return Err(PushError::HostKeyChanged {
                    host: format!("{}:{}", target.host, target.port),
                    expected: expected.unwrap_or_default(),
                    found: seen_key().unwrap_or_else(|| "(none)".into()),
                })
            }
            Ok(Err(e)) => return Err(unreachable(format!("SSH handshake failed: {e}"))),
            Ok(Ok(handle)) => handle,
        };
        let host_key =
            seen_key().ok_or_else(|| unreachable("the server presented no host key".into()))?;

        let user = target.username.clone();
        let login = async {
            match (&target.auth, key) {
                (Auth::PrivateKey { .. }, Some(key)) => {
                    let hash = handle.best_supported_rsa_hash().await?.flatten();
                    handle
                        .authenticate_publickey(
                            user.clone(),
                            PrivateKeyWithHashAlg::new(Arc::new(key), hash),
                        )
                        .await
                }
                (Auth::Password(password), _) => {
                    handle
                        .authenticate_password(user.clone(), password.clone())
                        .await
                }
                (Auth::PrivateKey { .. }, None) => Err(russh::Error::NotAuthenticated),
            }
        };
        let result = tokio::time::timeout(limit, login)
            .await
            .map_err(|_| PushError::Timeout {
                step: "SSH authentication".into(),
                secs: secs(limit),
            })?
            .map_err(|e| PushError::Ssh(format!("during authentication: {e}")))?;
        if !result.success() {
            let what = match target.auth {
                Auth::Password(_) => "the server refused the password",
                Auth::PrivateKey { .. } => "the server refused the private key",
            };
            return Err(PushError::AuthenticationFailed {
                user: target.username.clone(),
                detail: what.into(),
            });
        }
        Ok(Session {
            handle,
            host_key,
            upload_timeout: target.upload_timeout,
        })
    }

    /// The host key's fingerprint (`SHA256:<base64>`).
    pub fn host_key(&self) -> &str {
        &self.host_key
    }

    /// Runs `command` (through the login shell), feeding it `stdin`, within `limit`.
    pub async fn exec(
        &self,
        step: &str,
        command: &str,
        stdin: Option<&[u8]>,
        limit: Duration,
    ) -> Result<Output, PushError> {
        tokio::time::timeout(limit, self.exec_inner(command, stdin))
            .await
            .map_err(|_| PushError::Timeout {
                step: step.to_string(),
                secs: secs(limit),
            })?
    }

    async fn exec_inner(&self, command: &str, stdin: Option<&[u8]>) -> Result<Output, PushError> {
        let broke = |e: russh::Error| PushError::Ssh(e.to_string());
        let mut channel = self.handle.channel_open_session().await.map_err(broke)?;
        channel.exec(true, command).await.map_err(broke)?;
        if let Some(input) = stdin {
            channel.data(input).await.map_err(broke)?;
        }
        channel.eof().await.map_err(broke)?;
        let mut out = Output::default();
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        while let Some(msg) = channel.wait().await {
            match msg {
                ChannelMsg::Data { data } => keep_head(&mut stdout, &data, MAX_STDOUT),
                ChannelMsg::ExtendedData { data, ext: 1 } => {
                    keep_tail(&mut stderr, &data, MAX_STDERR)
                }
                ChannelMsg::ExitStatus { exit_status } => out.status = Some(exit_status),
                ChannelMsg::Failure => {
                    return Err(PushError::Ssh(
                        "the server refused to run the command".into(),
                    ))
                }
                _ => {}
            }
        }
        out.stdout = String::from_utf8_lossy(&stdout).into_owned();
        out.stderr = String::from_utf8_lossy(&stderr).into_owned();
        Ok(out)
    }

    /// Copies `local` to `remote` (created or replaced, mode left to the caller). Returns how:
    /// `"sftp"` or `"cat"`.
    pub async fn upload(&self, local: &Path, remote: &str) -> Result<&'static str, PushError> {
        let limit = self.upload_timeout;
        let timed_out = || PushError::Timeout {
            step: "upload".into(),
            secs: secs(limit),
        };
        match tokio::time::timeout(limit, self.upload_sftp(local, remote)).await {
            Err(_) => Err(timed_out()),
            Ok(Ok(())) => Ok("sftp"),
            Ok(Err(Upload::Failed(e))) => Err(e),
            Ok(Err(Upload::NoSftp(why))) => {
                tracing::info!(%why, "no SFTP; copying through cat");
                let file = tokio::fs::File::open(local)
                    .await
                    .map_err(|e| PushError::Invalid(format!("reading {}: {e}", local.display())))?;
                let command = format!("cat > {}", super::script::sq(remote));
                let copy = async {
                    let broke = |e: russh::Error| PushError::Ssh(e.to_string());
                    let mut channel = self.handle.channel_open_session().await.map_err(broke)?;
                    channel.exec(true, command).await.map_err(broke)?;
                    channel.data(file).await.map_err(broke)?;
                    channel.eof().await.map_err(broke)?;
                    let mut status = None;
                    let mut stderr = Vec::new();
                    while let Some(msg) = channel.wait().await {
                        match msg {
                            ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                            ChannelMsg::ExtendedData { data, .. } => {
                                keep_tail(&mut stderr, &data, MAX_STDERR)
                            }
                            _ => {}
                        }
                    }
                    if status != Some(0) {
                        return Err(PushError::CommandFailed {
                            step: "upload".into(),
                            status: status.map_or(-1, i64::from),
                            stderr: quote(&String::from_utf8_lossy(&stderr)),
                        });
                    }
                    Ok("cat")
                };
                tokio::time::timeout(limit, copy)
                    .await
                    .map_err(|_| timed_out())?
            }
        }
    }

    async fn upload_sftp(&self, local: &Path, remote: &str) -> Result<(), Upload> {
        let broke = |e: russh::Error| Upload::Failed(PushError::Ssh(e.to_string()));
        let mut channel = self.handle.channel_open_session().await.map_err(broke)?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(broke)?;
        let accepted = tokio::time::timeout(SUBSYSTEM_REPLY, async {
            while let Some(msg) = channel.wait().await {
                match msg {
                    ChannelMsg::Success => return true,
                    ChannelMsg::Failure | ChannelMsg::Close | ChannelMsg::Eof => return false,
                    _ => {}
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        if !accepted {
            return Err(Upload::NoSftp(
                "the server refused the sftp subsystem".into(),
            ));
        }
        let sftp = russh_sftp::client::SftpSession::new(channel.into_stream())
            .await
            .map_err(|e| Upload::NoSftp(format!("SFTP did not start: {e}")))?;
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            Upload::Failed(PushError::CommandFailed {
                step: "upload".into(),
                status: -1,
                stderr: format!("SFTP {what} {remote}: {e}"),
            })
        };
        let mut file = sftp
            .create(remote)
            .await
            .map_err(|e| failed("create", &e))?;
        let mut source = tokio::fs::File::open(local).await.map_err(|e| {
            Upload::Failed(PushError::Invalid(format!(
                "reading {}: {e}",
                local.display()
            )))
        })?;
        tokio::io::copy(&mut source, &mut file)
            .await
            .map_err(|e| failed("write", &e))?;
        file.shutdown().await.map_err(|e| failed("close", &e))?;
        let _ = sftp.close().await;
        Ok(())
    }

    /// Ends the session politely (errors ignored: the work is done or failed already).
    pub async fn close(self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}

enum Upload {
    /// SFTP is not offered: fall back to `cat`.
    NoSftp(String),
    Failed(PushError),
}

fn keep_head(buf: &mut Vec<u8>, data: &[u8], max: usize) {
    let room = max.saturating_sub(buf.len());
    buf.extend_from_slice(&data[..data.len().min(room)]);
}

fn keep_tail(buf: &mut Vec<u8>, data: &[u8], max: usize) {
    buf.extend_from_slice(data);
    if buf.len() > max {
        let cut = buf.len() - max;
        buf.drain(..cut);
    }
}
