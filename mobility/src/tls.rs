//! TLS 1.3 client configurations: registration (server pinned by CA fingerprint, no client
//! certificate) and replication (mutual TLS, trusting only the stored appliance CA).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The name the appliance puts in its server certificate's SANs; the agent checks it whatever
/// address it dials.
pub const SERVER_NAME: &str = "ferry-appliance";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

pub fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    // Replication data is the bulk of what crosses this connection and both ends share the CPU with
    // compression: AES-128-GCM first (about a third cheaper than AES-256-GCM, and still a TLS 1.3
    // suite with full strength for this use). The server follows the client's order.
    p.cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(p)
}

/// SHA-256 of a certificate's DER.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

/// Parses a SHA-256 fingerprint: 64 hex digits, any case, colons (and spaces) allowed.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32]> {
    let digits: String = text
        .trim()
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .collect();
    let bytes =
        hex::decode(&digits).map_err(|_| anyhow!("CA fingerprint {text:?} is not hexadecimal"))?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        anyhow!(
            "CA fingerprint must be 32 bytes (SHA-256), got {} bytes",
            b.len()
        )
    })
}

/// Lower-case hex without separators (what `sha256sum` prints; `parse_fingerprint` takes it back).
pub fn format_fingerprint(fp: &[u8; 32]) -> String {
    hex::encode(fp)
}

/// Accepts the appliance only if one presented certificate has the pinned fingerprint and the
/// server certificate chains to that certificate (checked by rustls' WebPKI verifier).
#[derive(Debug)]
pub struct PinnedCaVerifier {
    pinned: [u8; 32],
    provider: Arc<CryptoProvider>,
    /// The fingerprint of the CA the appliance presented when it did not match; the handshake
    /// error itself is generic, so the caller reads the exact reason here.
    mismatch: MismatchSlot,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = std::iter::once(end_entity).chain(intermediates);
        let Some(ca) = presented.clone().find(|c| fingerprint(c) == self.pinned) else {
            // Report the CA (last in the chain) the appliance sent, which is what the user compares.
            let shown = intermediates.last().unwrap_or(end_entity);
            let msg = format!(
                "CA fingerprint mismatch: the appliance presented {}",
                format_fingerprint(&fingerprint(shown))
            );
            *self.mismatch.lock().unwrap_or_else(|e| e.into_inner()) = Some(msg.clone());
            return Err(rustls::Error::General(msg));
        };
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(|e| rustls::Error::General(format!("pinned CA unusable: {e}")))?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(format!("pinned CA unusable: {e}")))?;
        inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Where the pinned verifier leaves the reason a pin failed.
pub type MismatchSlot = Arc<Mutex<Option<String>>>;

/// Client config for `register`: no client certificate, server pinned by CA fingerprint.
/// The returned slot receives the mismatch message if the pin fails.
pub fn registration_config(pinned: [u8; 32]) -> Result<(Arc<ClientConfig>, MismatchSlot)> {
    let provider = provider();
    let mismatch = Arc::new(Mutex::new(None));
    let verifier = PinnedCaVerifier {
        pinned,
        provider: provider.clone(),
        mismatch: mismatch.clone(),
    };
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok((Arc::new(cfg), mismatch))
}

/// Client config for `run`: mutual TLS with the agent's certificate, trusting only the appliance CA.
pub fn agent_config(cert_pem: &str, key_pem: &str, ca_pem: &str) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(ca.context("parsing ca.pem")?)
            .context("adding the appliance CA")?;
    }
    if roots.is_empty() {
        bail!("ca.pem holds no certificate");
    }
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("parsing cert.pem")?;
    if chain.is_empty() {
        bail!("cert.pem holds no certificate");
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("parsing key.pem")?;
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .context("the agent certificate does not match its key")?;
    Ok(Arc::new(cfg))
}

/// Why a connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connection refused by the appliance at {0} (is it running, and is the port open?)")]
    Refused(String),
    #[error("cannot reach the appliance at {addr}: {source}")]
    Tcp {
        addr: String,
        source: std::io::Error,
    },
    #[error("timed out connecting to the appliance at {0}")]
    Timeout(String),
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        addr: String,
        source: std::io::Error,
    },
}

/// TCP connect (with keepalive, so a silently vanished appliance is noticed) plus TLS handshake.
pub async fn connect(
    addr: &str,
    cfg: Arc<ClientConfig>,
) -> Result<TlsStream<TcpStream>, ConnectError> {
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Err(_) => return Err(ConnectError::Timeout(addr.into())),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(ConnectError::Refused(addr.into()))
        }
        Ok(Err(source)) => {
            return Err(ConnectError::Tcp {
                addr: addr.into(),
                source,
            })
        }
        Ok(Ok(s)) => s,
    };
    let _ = tcp.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive);
    let name = ServerName::try_from(SERVER_NAME).expect("valid DNS name");
    let connector = TlsConnector::from(cfg);
    match tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp)).await {
        Err(_) => Err(ConnectError::Timeout(addr.into())),
        Ok(Err(source)) => Err(ConnectError::Tls {
            addr: addr.into(),
            source,
        }),
        Ok(Ok(s)) => Ok(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_any_common_spelling() {
        let lower = "ab".repeat(32);
        let want = [0xab; 32];
        assert_eq!(parse_fingerprint(&lower).unwrap(), want);
        assert_eq!(parse_fingerprint(&lower.to_uppercase()).unwrap(), want);
        let colons = vec!["AB"; 32].join(":");
        assert_eq!(parse_fingerprint(&colons).unwrap(), want);
        assert_eq!(parse_fingerprint(&format!("  {colons}\n")).unwrap(), want);
        assert_eq!(format_fingerprint(&want), lower);
    }

    #[test]
    fn bad_fingerprints_are_rejected_with_a_reason() {
        let short = parse_fingerprint("abcd").unwrap_err().to_string();
        assert!(short.contains("32 bytes"), "{short}");
        let bad = parse_fingerprint(&"zz".repeat(32)).unwrap_err().to_string();
        assert!(bad.contains("not hexadecimal"), "{bad}");
        assert!(parse_fingerprint(&"a".repeat(63)).is_err());
        assert!(parse_fingerprint("").is_err());
    }
}
