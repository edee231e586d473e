use std::os::unix::fs::PermissionsExt;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;

fn new_tls(dir: &Path, names: &[&str]) -> ApplianceTls {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    ApplianceTls::load_or_create(dir, &names).unwrap()
}

fn client_config(tls: &ApplianceTls, client_cert: Option<(String, String)>) -> ClientConfig {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(tls.ca_der().clone()).unwrap();
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    match client_cert {
        None => builder.with_no_client_auth(),
        Some((cert_pem, key_pem)) => {
            let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
            builder.with_client_auth_cert(vec![cert], key).unwrap()
        }
    }
}

/// Runs a handshake over an in-memory pipe and one request/response; returns the client
/// certificate the server saw (DER), or the first error of either side.
async fn handshake(
    server: Arc<ServerConfig>,
    client: ClientConfig,
    server_name: &str,
) -> Result<Option<Vec<u8>>, String> {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let acceptor = TlsAcceptor::from(server);
    let server_task = tokio::spawn(async move {
        let mut stream = acceptor
            .accept(server_io)
            .await
            .map_err(|e| e.to_string())?;
        let peer = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .map(|c| c.to_vec());
        let mut buf = [0u8; 4];
        stream
            .read_exact(&mut buf)
            .await
            .map_err(|e| e.to_string())?;
        stream.write_all(b"pong").await.map_err(|e| e.to_string())?;
        stream.flush().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(peer)
    });
    let connector = TlsConnector::from(Arc::new(client));
    let name = ServerName::try_from(server_name.to_string()).unwrap();
    let client_result = async {
        let mut stream = connector
            .connect(name, client_io)
            .await
            .map_err(|e| e.to_string())?;
        stream.write_all(b"ping").await.map_err(|e| e.to_string())?;
        stream.flush().await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        // With TLS 1.3 the server's verdict on a client certificate arrives after the client's
        // handshake finished, so a refusal surfaces here.
        stream
            .read_exact(&mut buf)
            .await
            .map_err(|e| e.to_string())?;
        assert_eq!(&buf, b"pong");
        Ok::<_, String>(())
    }
    .await;
    let server_result = server_task.await.unwrap();
    client_result?;
    server_result
}

#[test]
fn fingerprint_is_colon_separated_lowercase_sha256() {
    // SHA-256 of the empty string, a well-known value.
    assert_eq!(
        fingerprint(b""),
        "e3:b0:c4:42:98:fc:1c:14:9a:fb:f4:c8:99:6f:b9:24:\
         27:ae:41:e4:64:9b:93:4c:a4:95:99:1b:78:52:b8:55"
    );
}

#[test]
fn created_once_then_reused_with_private_key_modes() {
    let dir = tempfile::tempdir().unwrap();
    let first = new_tls(dir.path(), &[]);
    let tls = tls_dir(dir.path());
    for (name, mode) in [
        ("ca.pem", 0o644),
        ("ca.key", 0o600),
        ("server.pem", 0o644),
        ("server.key", 0o600),
    ] {
        let meta = fs::metadata(tls.join(name)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{name}");
    }
    let server_pem = fs::read(tls.join("server.pem")).unwrap();
    let second = new_tls(dir.path(), &[]);
    assert_eq!(first.ca_fingerprint(), second.ca_fingerprint());
    assert_eq!(first.ca_pem(), second.ca_pem());
    assert_eq!(fs::read(tls.join("server.pem")).unwrap(), server_pem);
    assert_eq!(first.ca_fingerprint(), fingerprint(first.ca_der()));
    assert_eq!(first.ca_fingerprint().len(), 32 * 3 - 1);
}

#[test]
fn new_server_name_reissues_server_cert_but_keeps_ca() {
    let dir = tempfile::tempdir().unwrap();
    let first = new_tls(dir.path(), &[]);
    let server_pem = fs::read(tls_dir(dir.path()).join("server.pem")).unwrap();
    let second = new_tls(dir.path(), &["dr.example.test", "10.1.2.3"]);
    assert_eq!(first.ca_fingerprint(), second.ca_fingerprint());
    let reissued = fs::read(tls_dir(dir.path()).join("server.pem")).unwrap();
    assert_ne!(reissued, server_pem);
    let der = CertificateDer::from_pem_slice(&reissued).unwrap();
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let dns = dns_sans(&cert);
    for want in ["ferry-appliance", "localhost", "dr.example.test"] {
        assert!(dns.iter().any(|d| d == want), "{want} in {dns:?}");
    }
    let ips = ip_sans(&cert);
    for want in ["127.0.0.1", "::1", "10.1.2.3"] {
        assert!(ips.contains(&want.parse().unwrap()), "{want} in {ips:?}");
    }
}

#[test]
fn mismatched_server_key_is_reissued() {
    let dir = tempfile::tempdir().unwrap();
    new_tls(dir.path(), &[]);
    let key_path = tls_dir(dir.path()).join("server.key");
    let other = KeyPair::generate().unwrap();
    fs::write(&key_path, other.serialize_pem()).unwrap();
    let tls = new_tls(dir.path(), &[]);
    tls.server_config().unwrap();
    assert_ne!(
        fs::read_to_string(&key_path).unwrap(),
        other.serialize_pem()
    );
}

#[test]
fn missing_ca_key_is_an_error_not_a_new_ca() {
    let dir = tempfile::tempdir().unwrap();
    new_tls(dir.path(), &[]);
    fs::remove_file(tls_dir(dir.path()).join("ca.key")).unwrap();
    let err = ApplianceTls::load_or_create(dir.path(), &[]).unwrap_err();
    assert!(err.to_string().contains("ca.key"), "{err}");
}

#[test]
fn bad_server_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = ApplianceTls::load_or_create(dir.path(), &["bad name!".to_string()]).unwrap_err();
    assert!(err.to_string().contains("bad name!"), "{err}");
}

#[test]
fn dns_name_check() {
    for good in ["ferry-appliance", "dr.example.test", "a", "x1.y-2.z"] {
        assert!(is_dns_name(good), "{good}");
    }
    for bad in ["", "bad name!", "-a", "a-", "a..b", "a_b", "*.example.test"] {
        assert!(!is_dns_name(bad), "{bad}");
    }
}

#[test]
fn agent_cert_carries_the_agent_id_and_client_auth() {
    let dir = tempfile::tempdir().unwrap();
    let tls = new_tls(dir.path(), &[]);
    let id = "0b7c4a5e-3c1d-4d36-9d8f-2f7b3c1a9e10";
    let (cert_pem, key_pem) = tls.issue_agent_cert(id).unwrap();
    assert!(key_pem.contains("PRIVATE KEY"));
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    assert_eq!(agent_id_from_cert(&der).as_deref(), Some(id));
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    assert_eq!(dns_sans(&cert), vec![id.to_string()]);
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    let (_, ca) = X509Certificate::from_der(tls.ca_der()).unwrap();
    assert_eq!(cert.issuer(), ca.subject());
}

#[test]
fn agent_id_from_garbage_is_none() {
    assert_eq!(agent_id_from_cert(b""), None);
    assert_eq!(agent_id_from_cert(&[0x30, 0x82, 0xff, 0xff, 1, 2, 3]), None);
    let random: Vec<u8> = (0..512).map(|i| (i * 37 % 251) as u8).collect();
    assert_eq!(agent_id_from_cert(&random), None);
}

#[tokio::test]
async fn handshake_without_client_cert_is_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let tls = new_tls(dir.path(), &[]);
    let peer = handshake(
        tls.server_config().unwrap(),
        client_config(&tls, None),
        APPLIANCE_SERVER_NAME,
    )
    .await
    .unwrap();
    assert_eq!(peer, None);
}

#[tokio::test]
async fn handshake_with_agent_cert_identifies_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let tls = new_tls(dir.path(), &["dr.example.test"]);
    let creds = tls.issue_agent_cert("agent-1").unwrap();
    for name in [
        "ferry-appliance",
        "localhost",
        "127.0.0.1",
        "dr.example.test",
    ] {
        let peer = handshake(
            tls.server_config().unwrap(),
            client_config(&tls, Some(creds.clone())),
            name,
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let der = peer.expect("server saw the client certificate");
        assert_eq!(agent_id_from_cert(&der).as_deref(), Some("agent-1"));
    }
}

#[tokio::test]
async fn cert_from_another_ca_is_refused() {
    let ours_dir = tempfile::tempdir().unwrap();
    let theirs_dir = tempfile::tempdir().unwrap();
    let ours = new_tls(ours_dir.path(), &[]);
    let theirs = new_tls(theirs_dir.path(), &[]);
    let foreign = theirs.issue_agent_cert("intruder").unwrap();
    let err = handshake(
        ours.server_config().unwrap(),
        client_config(&ours, Some(foreign)),
        APPLIANCE_SERVER_NAME,
    )
    .await
    .unwrap_err();
    assert!(
        err.to_lowercase().contains("unknownca") || err.to_lowercase().contains("unknownissuer"),
        "{err}"
    );
}

#[tokio::test]
async fn server_of_another_appliance_is_not_trusted() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let ours = new_tls(a.path(), &[]);
    let theirs = new_tls(b.path(), &[]);
    let result = handshake(
        theirs.server_config().unwrap(),
        client_config(&ours, None),
        APPLIANCE_SERVER_NAME,
    )
    .await;
    assert!(result.is_err());
}

#[tokio::test]
async fn tls12_clients_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tls = new_tls(dir.path(), &[]);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(tls.ca_der().clone()).unwrap();
    let client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let result = handshake(tls.server_config().unwrap(), client, APPLIANCE_SERVER_NAME).await;
    assert!(result.is_err());
}
