//! Server certificate trust: a pinned thumbprint of the leaf certificate, or a CA.
//!
//! vCenters usually run with a self-signed or VMCA certificate, so the operator pins its
//! thumbprint. vSphere shows SHA-1 thumbprints; SHA-256 is preferred and both are accepted.
//! On a mismatch the handshake fails and the client reports the thumbprints it was shown.

use std::sync::{Arc, Mutex};

use aws_lc_rs::digest;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use crate::error::VsphereError;

/// How the server certificate is checked.
#[derive(Debug, Clone)]
pub enum TlsTrust {
    /// The SHA-256 (64 hex digits) or SHA-1 (40 hex digits) thumbprint of the server's leaf
    /// certificate, with or without colons, any case.
    Thumbprint(String),
    /// One or more CA certificates (PEM); the server name is verified too.
    Ca(String),
}

/// A parsed thumbprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Thumbprint {
    Sha256([u8; 32]),
    Sha1([u8; 20]),
}

impl Thumbprint {
    pub fn parse(text: &str) -> Result<Thumbprint, VsphereError> {
        let hex: String = text
            .chars()
            .filter(|c| !matches!(c, ':' | ' ' | '-'))
            .collect();
        let bad = || {
            VsphereError::invalid_input(format!("{text:?} is not a SHA-256 or SHA-1 thumbprint"))
        };
        if !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let bytes: Vec<u8> = hex
            .as_bytes()
            .chunks(2)
            .map(|pair| {
                std::str::from_utf8(pair)
                    .ok()
                    .and_then(|s| u8::from_str_radix(s, 16).ok())
                    .ok_or_else(bad)
            })
            .collect::<Result<_, _>>()?;
        if let Ok(sha256) = <[u8; 32]>::try_from(bytes.as_slice()) {
            Ok(Thumbprint::Sha256(sha256))
        } else if let Ok(sha1) = <[u8; 20]>::try_from(bytes.as_slice()) {
            Ok(Thumbprint::Sha1(sha1))
        } else {
            Err(bad())
        }
    }

    fn matches(&self, presented: &Presented) -> bool {
        match self {
            Thumbprint::Sha256(t) => *t == presented.sha256,
            Thumbprint::Sha1(t) => *t == presented.sha1,
        }
    }
}

impl std::fmt::Display for Thumbprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Thumbprint::Sha256(t) => f.write_str(&colon_hex(t)),
            Thumbprint::Sha1(t) => f.write_str(&colon_hex(t)),
        }
    }
}

/// `AB:CD:...`, the way vSphere shows thumbprints.
pub fn colon_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{b:02X}"));
    }
    out
}

/// The thumbprints of a certificate a server presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    pub sha256: [u8; 32],
    pub sha1: [u8; 20],
}

impl Presented {
    pub fn of(der: &[u8]) -> Presented {
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(digest::digest(&digest::SHA256, der).as_ref());
        let mut sha1 = [0u8; 20];
        sha1.copy_from_slice(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, der).as_ref());
        Presented { sha256, sha1 }
    }

    pub(crate) fn mismatch(&self, expected: &Thumbprint) -> VsphereError {
        VsphereError::CertificateMismatch {
            expected: expected.to_string(),
            presented_sha256: colon_hex(&self.sha256),
            presented_sha1: colon_hex(&self.sha1),
        }
    }
}

/// What the verifier saw on its last mismatch; the client turns a failed connection into
/// `CertificateMismatch` with it. Cleared by the next matching handshake.
pub(crate) type MismatchSlot = Arc<Mutex<Option<Presented>>>;

#[derive(Debug)]
struct PinnedVerifier {
    pin: Thumbprint,
    provider: Arc<CryptoProvider>,
    last_mismatch: MismatchSlot,
}

/// Carried inside the rustls error, so the mismatch is also visible in the error chain.
#[derive(Debug)]
pub(crate) struct MismatchError(pub Presented);

impl std::fmt::Display for MismatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "certificate SHA-256 {} is not the pinned one",
            colon_hex(&self.0.sha256)
        )
    }
}

impl std::error::Error for MismatchError {}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The pin names this exact certificate: chain, name and dates are what the operator accepted.
        let presented = Presented::of(end_entity.as_ref());
        let mut slot = self.last_mismatch.lock().unwrap_or_else(|p| p.into_inner());
        if self.pin.matches(&presented) {
            *slot = None;
            return Ok(ServerCertVerified::assertion());
        }
        *slot = Some(presented.clone());
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            rustls::OtherError(Arc::new(MismatchError(presented))),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
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
        verify_tls13_signature(
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

/// CA trust (chain and server name by webpki), plus: a server certificate that is itself in the
/// PEM is trusted as is. Operators often paste a vCenter's self-signed certificate as its "CA";
/// such a certificate is marked CA:TRUE, which webpki refuses as an end entity.
#[derive(Debug)]
struct CaVerifier {
    webpki: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    listed: Vec<Vec<u8>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for CaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .listed
            .iter()
            .any(|c| c.as_slice() == end_entity.as_ref())
        {
            return Ok(ServerCertVerified::assertion());
        }
        match &self.webpki {
            Some(webpki) => webpki.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ),
            None => Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
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
        verify_tls13_signature(
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

/// The rustls configuration for a trust setting, and the pin (for error messages) if there is one.
pub(crate) fn client_config(
    trust: &TlsTrust,
    slot: MismatchSlot,
) -> Result<(rustls::ClientConfig, Option<Thumbprint>), VsphereError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| VsphereError::Tls {
            reason: e.to_string(),
        })?;
    let (mut config, pin) = match trust {
        TlsTrust::Thumbprint(text) => {
            let pin = Thumbprint::parse(text)?;
            let verifier = PinnedVerifier {
                pin: pin.clone(),
                provider,
                last_mismatch: slot,
            };
            let config = builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth();
            (config, Some(pin))
        }
        TlsTrust::Ca(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            let mut listed = Vec::new();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| VsphereError::invalid_input(format!("CA PEM: {e}")))?;
                listed.push(cert.as_ref().to_vec());
                // A self-signed server certificate may not be usable as a trust anchor; it is
                // still trusted as itself below.
                let _ = roots.add(cert);
            }
            if listed.is_empty() {
                return Err(VsphereError::invalid_input("no certificate in the CA PEM"));
            }
            let webpki = if roots.is_empty() {
                None
            } else {
                Some(
                    rustls::client::WebPkiServerVerifier::builder_with_provider(
                        Arc::new(roots),
                        provider.clone(),
                    )
                    .build()
                    .map_err(|e| VsphereError::invalid_input(format!("CA certificates: {e}")))?,
                )
            };
            let verifier = CaVerifier {
                webpki,
                listed,
                provider,
            };
            let config = builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth();
            (config, None)
        }
    };
    // SOAP is request/response; HTTP/1.1 is what vCenter's SDK endpoint is used with everywhere.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((config, pin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints_parse_in_every_shape() {
        // The SHA-1 thumbprint of sample 30, the way vSphere shows it.
        let sha1 = Thumbprint::parse("62:FB:D2:CB:B0:4D:59:C0:B6:8F:47:EF:13:A5:3F:78:3B:B9:8A:DA")
            .unwrap();
        assert!(matches!(sha1, Thumbprint::Sha1(t) if t[0] == 0x62 && t[19] == 0xDA));
        assert_eq!(
            Thumbprint::parse("62fbd2cbb04d59c0b68f47ef13a53f783bb98ada").unwrap(),
            sha1
        );
        assert_eq!(
            sha1.to_string(),
            "62:FB:D2:CB:B0:4D:59:C0:B6:8F:47:EF:13:A5:3F:78:3B:B9:8A:DA"
        );
        let sha256 = Thumbprint::parse(&"ab".repeat(32)).unwrap();
        assert!(matches!(sha256, Thumbprint::Sha256(t) if t == [0xab; 32]));
        for bad in [
            "",
            "zz",
            "abc",
            &"ab".repeat(16),
            &"ab".repeat(33),
            "é1",
            "62:FB:D2:CB:B0:4D:59:C0:B6:8F:47:EF:13:A5:3F:78:3B:B9:8A:D",
        ] {
            assert!(
                matches!(
                    Thumbprint::parse(bad),
                    Err(VsphereError::InvalidInput { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn presented_digests_are_sha256_and_sha1() {
        let p = Presented::of(b"abc");
        assert_eq!(
            colon_hex(&p.sha256[..4]),
            "BA:78:16:BF",
            "SHA-256(abc) starts ba7816bf"
        );
        assert_eq!(
            colon_hex(&p.sha1[..4]),
            "A9:99:3E:36",
            "SHA-1(abc) starts a9993e36"
        );
        assert!(Thumbprint::Sha256(p.sha256).matches(&p));
        assert!(Thumbprint::Sha1(p.sha1).matches(&p));
        assert!(!Thumbprint::Sha1([0; 20]).matches(&p));
    }

    #[test]
    fn bad_trust_settings_are_invalid_input() {
        let slot = MismatchSlot::default();
        for trust in [
            TlsTrust::Thumbprint("nope".into()),
            TlsTrust::Ca("not a pem".into()),
            TlsTrust::Ca("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n".into()),
        ] {
            assert!(
                matches!(
                    client_config(&trust, slot.clone()),
                    Err(VsphereError::InvalidInput { .. })
                ),
                "{trust:?}"
            );
        }
        assert!(client_config(&TlsTrust::Thumbprint("ab".repeat(20)), slot).is_ok());
    }
}
