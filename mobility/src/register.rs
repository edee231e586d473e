//! The `register` command: a one-time exchange of the registration passphrase for the agent's
//! identity and client certificate, over TLS with the appliance pinned by its CA fingerprint.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use wire::{ErrorCode, Frame, Register, WireError};

use crate::bios_uuid;
use crate::state::{Credentials, Registration, StateDir};
use crate::tls;

const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct RegisterOptions {
    /// HOST:PORT of the appliance's replication listener.
    pub appliance: String,
    pub passphrase: String,
    /// SHA-256 of the appliance CA certificate (hex, colons allowed).
    pub ca_fingerprint: String,
    pub state_dir: Option<PathBuf>,
    pub hostname: Option<String>,
    /// The machine's BIOS UUID (any case, dashes optional); `None` reads it from
    /// [`bios_uuid::PRODUCT_UUID_PATH`], and registers without it when that is not readable.
    pub bios_uuid: Option<String>,
}

/// Reads a passphrase file; only the line break an editor or `echo` adds is removed.
pub fn read_passphrase_file(path: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading passphrase file {}", path.display()))?;
    let pass = text.strip_suffix('\n').unwrap_or(&text);
    let pass = pass.strip_suffix('\r').unwrap_or(pass);
    if pass.is_empty() {
        bail!("passphrase file {} is empty", path.display());
    }
    Ok(pass.to_string())
}

/// This machine's host name (kernel host name, else /etc/hostname).
pub fn local_hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// How a registration exchange ended.
enum Answer {
    /// The appliance answered with this frame (the stream, to be shut down politely).
    Frame(Frame, Box<TlsStream<TcpStream>>),
    /// It closed the connection without answering: the error, if reading failed rather than ending.
    Silent(Option<WireError>),
}

/// One connection: sends `request`, waits for the answer.
async fn exchange(opts: &RegisterOptions, pinned: [u8; 32], request: &Register) -> Result<Answer> {
    let (cfg, mismatch) = tls::registration_config(pinned)?;
    let mut stream = match tls::connect(&opts.appliance, cfg).await {
        Ok(s) => s,
        Err(e) => {
            if let Some(msg) = mismatch.lock().unwrap_or_else(|p| p.into_inner()).take() {
                bail!(msg);
            }
            return Err(e.into());
        }
    };
    wire::write_frame(&mut stream, &Frame::Register(request.clone()))
        .await
        .context("sending the registration request")?;
    stream
        .flush()
        .await
        .context("sending the registration request")?;
    let reply = tokio::time::timeout(REPLY_TIMEOUT, wire::read_frame(&mut stream))
        .await
        .map_err(|_| anyhow!("the appliance did not answer the registration request"))?;
    Ok(match reply {
        Ok(Some(frame)) => Answer::Frame(frame, Box::new(stream)),
        Ok(None) => Answer::Silent(None),
        Err(e) if e.is_retryable() => Answer::Silent(Some(e)),
        Err(e) => return Err(e).context("reading the registration reply"),
    })
}

/// Registers and stores the identity in the state dir. Errors carry the user-facing reason.
pub async fn register(opts: &RegisterOptions) -> Result<Registration> {
    let pinned = tls::parse_fingerprint(&opts.ca_fingerprint)?;
    let state = StateDir::open(opts.state_dir.as_deref())?;
    let hostname = opts.hostname.clone().unwrap_or_else(local_hostname);
    let bios_uuid = match &opts.bios_uuid {
        Some(given) => Some(bios_uuid::normalize(given).context("--bios-uuid")?),
        None => bios_uuid::read_local(),
    };
    let mut request = Register {
        passphrase: opts.passphrase.clone(),
        hostname: hostname.clone(),
        bios_uuid,
    };
    let mut answer = exchange(opts, pinned, &request).await?;
    if matches!(answer, Answer::Silent(_)) && request.bios_uuid.is_some() {
        // An appliance older than the field refuses the frame (trailing bytes) by hanging up.
        // It recorded nothing, so asking again in the old layout is safe.
        tracing::warn!(
            "the appliance closed the connection without answering; it may predate BIOS UUID \
             reporting, so registering again without it"
        );
        request.bios_uuid = None;
        answer = exchange(opts, pinned, &request).await?;
    }
    let (reply, mut stream) = match answer {
        Answer::Frame(frame, stream) => (frame, stream),
        Answer::Silent(Some(e)) => return Err(e).context("reading the registration reply"),
        Answer::Silent(None) => {
            bail!("the appliance closed the connection without answering the registration")
        }
    };
    let registered = match reply {
        Frame::Registered(r) => r,
        Frame::Error(e) if e.code == ErrorCode::BadPassphrase => {
            bail!("registration refused: wrong registration passphrase")
        }
        Frame::Error(e) => bail!("registration refused: {}: {}", e.code, e.message),
        other => bail!("protocol error: expected Registered, got {}", other.name()),
    };
    let _ = stream.shutdown().await;
    // Refuse credentials we could not use later, before replacing a working registration.
    tls::agent_config(
        &registered.cert_pem,
        &registered.key_pem,
        &registered.ca_pem,
    )
    .context("the appliance sent unusable credentials")?;
    let reg = StateDir::new_registration(
        &registered.agent_id,
        &opts.appliance,
        &hostname,
        &tls::format_fingerprint(&pinned),
    );
    state.save_registration(
        &reg,
        &Credentials {
            cert_pem: registered.cert_pem,
            key_pem: registered.key_pem,
            ca_pem: registered.ca_pem,
        },
    )?;
    Ok(reg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passphrase_file_keeps_inner_whitespace_and_drops_the_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, " two words \r\n").unwrap();
        assert_eq!(read_passphrase_file(&p).unwrap(), " two words ");
        std::fs::write(&p, "\n").unwrap();
        assert!(read_passphrase_file(&p).is_err());
    }
}
