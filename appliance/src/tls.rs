//! The appliance's own certificate authority, its server certificate, and agent client
//! certificates.
//!
//! Agents trust the appliance by the CA's fingerprint (entered at registration), so the CA is
//! created once and never replaced silently; the server certificate is reissued whenever the
//! configured names change or it nears expiry, which agents do not notice.
//!
//! Files in `<data_dir>/tls/`: `ca.pem`, `ca.key` (0600), `server.pem`, `server.key` (0600).

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::files::{self, PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, PUBLIC_FILE_MODE};

/// Name every agent can use for the appliance, whatever its address.
pub const APPLIANCE_SERVER_NAME: &str = "ferry-appliance";
const BUILTIN_SERVER_NAMES: [&str; 4] = [APPLIANCE_SERVER_NAME, "localhost", "127.0.0.1", "::1"];

const CA_VALIDITY: Duration = Duration::days(20 * 365);
const LEAF_VALIDITY: Duration = Duration::days(10 * 365);
/// A server certificate this close to expiry is reissued at start.
const RENEW_BEFORE: Duration = Duration::days(90);
/// Tolerates clocks of agents that run a little behind the appliance.
const BACKDATE: Duration = Duration::days(1);

/// Subdirectory of the data dir holding the CA and server certificate.
pub fn tls_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tls")
}

/// The CA and the server certificate, loaded from (or created in) `<data_dir>/tls/`.
pub struct ApplianceTls {
    ca_cert_pem: String,
    ca_cert_der: CertificateDer<'static>,
    ca_key: KeyPair,
    server_cert_der: CertificateDer<'static>,
    server_key_der: Vec<u8>,
}

impl std::fmt::Debug for ApplianceTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApplianceTls")
            .field("ca_fingerprint", &self.ca_fingerprint())
            .finish_non_exhaustive()
    }
}

impl ApplianceTls {
    /// Loads the CA and server certificate, creating them on first start. The server
    /// certificate is reissued (same CA) when it lacks one of `server_names`, does not match its
    /// key, or nears expiry.
    pub fn load_or_create(data_dir: &Path, server_names: &[String]) -> anyhow::Result<Self> {
        let names = server_san_list(server_names)?;
        let dir = tls_dir(data_dir);
        let ca = load_or_create_ca(&dir, &names)?;
        let server_paths = (dir.join("server.pem"), dir.join("server.key"));
        let (server_cert_der, server_key_der) =
            match load_server_cert(&server_paths.0, &server_paths.1, &names)? {
                Some(loaded) => loaded,
                None => {
                    tracing::info!(dir = %dir.display(), "issuing a new server certificate");
                    let (cert_pem, key) = issue_server_cert(&ca, &names)?;
                    // Key before certificate: a crash in between leaves a mismatched pair,
                    // which the next start detects and reissues.
                    let key_pem = key.serialize_pem();
                    files::replace_file(&server_paths.1, key_pem.as_bytes(), PRIVATE_FILE_MODE)?;
                    files::replace_file(&server_paths.0, cert_pem.as_bytes(), PUBLIC_FILE_MODE)?;
                    (
                        CertificateDer::from_pem_slice(cert_pem.as_bytes())?,
                        key.serialize_der(),
                    )
                }
            };
        Ok(ApplianceTls {
            ca_cert_pem: ca.cert_pem,
            ca_cert_der: ca.cert_der,
            ca_key: ca.key,
            server_cert_der,
            server_key_der,
        })
    }

    /// SHA-256 of the CA certificate (DER), lowercase hex bytes joined by colons.
    pub fn ca_fingerprint(&self) -> String {
        fingerprint(&self.ca_cert_der)
    }

    /// The CA certificate in PEM, as handed to agents at registration.
    pub fn ca_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    /// The CA certificate in DER.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_cert_der
    }

    /// TLS 1.3 server configuration for the data listener: presents [server, CA] and asks for
    /// a client certificate signed by the appliance CA, but also accepts connections without
    /// one (registration); the session code decides what an unauthenticated peer may do.
    pub fn server_config(&self) -> anyhow::Result<Arc<ServerConfig>> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_cert_der.clone())?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key_der.clone()));
        let config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![self.server_cert_der.clone(), self.ca_cert_der.clone()],
                key,
            )?;
        Ok(Arc::new(config))
    }

    /// TLS 1.3 server configuration for the management listener: the same certificate chain as
    /// the data listener, without asking for a client certificate (browsers would prompt for one;
    /// management callers authenticate over HTTP instead).
    pub fn management_server_config(&self) -> anyhow::Result<Arc<ServerConfig>> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key_der.clone()));
        let config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(
                vec![self.server_cert_der.clone(), self.ca_cert_der.clone()],
                key,
            )?;
        Ok(Arc::new(config))
    }

    /// A new key pair and a client certificate for `agent_id` (CN and DNS SAN), signed by the
    /// CA. Returns `(cert_pem, key_pem)`.
    pub fn issue_agent_cert(&self, agent_id: &str) -> anyhow::Result<(String, String)> {
        let mut params = CertificateParams::new(vec![agent_id.to_string()])
            .with_context(|| format!("agent id {agent_id:?} is not a valid DNS name"))?;
        params.distinguished_name.push(DnType::CommonName, agent_id);
        let (cert, key) = sign_leaf(
            params,
            ExtendedKeyUsagePurpose::ClientAuth,
            &self.ca_cert_der,
            &self.ca_key,
        )?;
        Ok((cert, key.serialize_pem()))
    }
}

/// SHA-256 of a DER certificate, lowercase hex bytes joined by colons.
pub fn fingerprint(cert_der: &[u8]) -> String {
    let digest = Sha256::digest(cert_der);
    let hex: Vec<String> = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex.join(":")
}

/// The agent id a (verified) client certificate was issued to: its CN, else its first DNS SAN.
pub fn agent_id_from_cert(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(cert_der).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    cn.or_else(|| dns_sans(&cert).into_iter().next())
        .filter(|id| !id.is_empty())
}

fn dns_sans(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.to_string()),
            _ => None,
        })
        .collect()
}

fn ip_sans(cert: &X509Certificate<'_>) -> Vec<IpAddr> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::IPAddress(b) if b.len() == 4 => {
                Some(IpAddr::from(<[u8; 4]>::try_from(*b).ok()?))
            }
            GeneralName::IPAddress(b) if b.len() == 16 => {
                Some(IpAddr::from(<[u8; 16]>::try_from(*b).ok()?))
            }
            _ => None,
        })
        .collect()
}

/// The server certificate's subject alternative names: the built-in ones, then the configured
/// ones, without duplicates.
fn server_san_list(extra: &[String]) -> anyhow::Result<Vec<SanType>> {
    let mut sans: Vec<SanType> = Vec::new();
    let all = BUILTIN_SERVER_NAMES
        .iter()
        .copied()
        .chain(extra.iter().map(String::as_str));
    for name in all {
        let name = name.trim();
        let san = match name.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) if is_dns_name(name) => SanType::DnsName(name.try_into()?),
            Err(_) => bail!("server_names: {name:?} is neither a DNS name nor an IP address"),
        };
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    Ok(sans)
}

/// A host name as a certificate SAN may carry it: dot-separated labels of letters, digits and
/// inner hyphens.
fn is_dns_name(name: &str) -> bool {
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    (1..=253).contains(&name.len()) && name.split('.').all(label_ok)
}

struct LoadedCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key: KeyPair,
}

fn load_or_create_ca(dir: &Path, names: &[SanType]) -> anyhow::Result<LoadedCa> {
    if !dir.exists() {
        create_tls_dir(dir, names)?;
    }
    let cert_path = dir.join("ca.pem");
    let key_path = dir.join("ca.key");
    if !cert_path.exists() || !key_path.exists() {
        // Regenerating would silently break every registered agent's trust.
        bail!(
            "{} exists but lacks ca.pem or ca.key; restore them from a backup, or remove the \
             directory to create a new CA (every agent must then register again)",
            dir.display()
        );
    }
    let cert_pem = fs::read_to_string(&cert_path)
        .with_context(|| format!("reading {}", cert_path.display()))?;
    let key_pem =
        fs::read_to_string(&key_path).with_context(|| format!("reading {}", key_path.display()))?;
    let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .with_context(|| format!("{} is not a PEM certificate", cert_path.display()))?;
    let key = KeyPair::from_pem(&key_pem)
        .with_context(|| format!("{} is not a PEM private key", key_path.display()))?;
    let (_, parsed) = X509Certificate::from_der(&cert_der)
        .map_err(|e| anyhow::anyhow!("{} does not parse: {e}", cert_path.display()))?;
    if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        bail!(
            "{} does not belong to {}",
            key_path.display(),
            cert_path.display()
        );
    }
    Ok(LoadedCa {
        cert_pem,
        cert_der,
        key,
    })
}

/// Builds the whole directory under a temporary name and renames it into place, so a crash
/// or a concurrent first start never leaves a CA certificate without its key.
fn create_tls_dir(dir: &Path, names: &[SanType]) -> anyhow::Result<()> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    files::create_dir_all(parent, PRIVATE_DIR_MODE)
        .with_context(|| format!("creating {}", parent.display()))?;
    let staging = parent.join(format!(".tls.tmp-{}", uuid::Uuid::new_v4().simple()));
    files::create_dir_all(&staging, PRIVATE_DIR_MODE)?;
    let result = (|| -> anyhow::Result<()> {
        let (ca_pem, ca_key) = new_ca()?;
        let ca = LoadedCa {
            cert_der: CertificateDer::from_pem_slice(ca_pem.as_bytes())?,
            cert_pem: ca_pem,
            key: ca_key,
        };
        let (server_pem, server_key) = issue_server_cert(&ca, names)?;
        let write = |name: &str, text: &str, mode| {
            files::write_new_file(&staging.join(name), text.as_bytes(), mode)
        };
        write("ca.key", &ca.key.serialize_pem(), PRIVATE_FILE_MODE)?;
        write("ca.pem", &ca.cert_pem, PUBLIC_FILE_MODE)?;
        write("server.key", &server_key.serialize_pem(), PRIVATE_FILE_MODE)?;
        write("server.pem", &server_pem, PUBLIC_FILE_MODE)?;
        Ok(())
    })();
    if let Err(err) = result {
        let _ = fs::remove_dir_all(&staging);
        return Err(err);
    }
    match fs::rename(&staging, dir) {
        Ok(()) => {
            files::sync_dir(parent)?;
            tracing::info!(dir = %dir.display(), "created the appliance CA");
            Ok(())
        }
        // Another process created it first: use theirs.
        Err(_) if dir.join("ca.pem").exists() => {
            let _ = fs::remove_dir_all(&staging);
            Ok(())
        }
        Err(err) => {
            let _ = fs::remove_dir_all(&staging);
            Err(err).with_context(|| format!("creating {}", dir.display()))
        }
    }
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // a positive INTEGER
    SerialNumber::from_slice(&bytes)
}

fn new_ca() -> anyhow::Result<(String, KeyPair)> {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
    params
        .distinguished_name
        .push(DnType::CommonName, format!("Ferry appliance CA {tag}"));
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Ferry");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + CA_VALIDITY;
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key))
}

/// Signs a leaf (non-CA) certificate for one purpose with the appliance CA: a new key pair, digital
/// signature only, the CA's key identifier, backdated validity and a random serial.
fn sign_leaf(
    mut params: CertificateParams,
    purpose: ExtendedKeyUsagePurpose,
    ca_cert_der: &CertificateDer<'_>,
    ca_key: &KeyPair,
) -> anyhow::Result<(String, KeyPair)> {
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![purpose];
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + LEAF_VALIDITY;
    params.serial_number = Some(random_serial());
    let key = KeyPair::generate()?;
    let issuer = Issuer::from_ca_cert_der(ca_cert_der, ca_key)?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key))
}

fn issue_server_cert(ca: &LoadedCa, names: &[SanType]) -> anyhow::Result<(String, KeyPair)> {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, APPLIANCE_SERVER_NAME);
    params.subject_alt_names = names.to_vec();
    sign_leaf(
        params,
        ExtendedKeyUsagePurpose::ServerAuth,
        &ca.cert_der,
        &ca.key,
    )
}

/// The stored server certificate and key (DER), or `None` when they must be reissued.
fn load_server_cert(
    cert_path: &Path,
    key_path: &Path,
    names: &[SanType],
) -> anyhow::Result<Option<(CertificateDer<'static>, Vec<u8>)>> {
    if !cert_path.exists() || !key_path.exists() {
        return Ok(None);
    }
    let cert_der = match CertificateDer::from_pem_file(cert_path) {
        Ok(der) => der,
        Err(err) => {
            tracing::warn!(path = %cert_path.display(), %err, "unreadable server certificate");
            return Ok(None);
        }
    };
    let key_pem = fs::read_to_string(key_path)?;
    let Ok(key) = KeyPair::from_pem(&key_pem) else {
        tracing::warn!(path = %key_path.display(), "unreadable server key");
        return Ok(None);
    };
    let Ok((_, cert)) = X509Certificate::from_der(&cert_der) else {
        return Ok(None);
    };
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        tracing::warn!("server certificate does not match its key");
        return Ok(None);
    }
    let renew_at = OffsetDateTime::now_utc() + RENEW_BEFORE;
    if cert.validity().not_after.to_datetime() < renew_at {
        tracing::info!("server certificate nears expiry");
        return Ok(None);
    }
    let dns = dns_sans(&cert);
    let ips = ip_sans(&cert);
    let missing = names.iter().find(|want| match want {
        SanType::DnsName(name) => !dns.iter().any(|d| d.eq_ignore_ascii_case(name.as_str())),
        SanType::IpAddress(ip) => !ips.contains(ip),
        _ => false,
    });
    if let Some(name) = missing {
        tracing::info!(?name, "server certificate lacks a configured name");
        return Ok(None);
    }
    Ok(Some((cert_der, key.serialize_der())))
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
