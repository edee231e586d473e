//! Certificate trust against a local rustls server: pinned thumbprints (SHA-256 and SHA-1, any
//! spelling), a mismatch that reports the presented thumbprints, and CA trust.

mod support;

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use support::{serve_tls, FakeVc};
use vsphere::{list_vms, Client, ClientOptions, Credentials, TlsTrust, VsphereError};

struct Cert {
    der: CertificateDer<'static>,
    pem: String,
    key: KeyPair,
}

fn self_signed() -> Cert {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    Cert {
        der: cert.der().clone(),
        pem: cert.pem(),
        key,
    }
}

/// A CA (its PEM) and a leaf it signed for `names`.
fn ca_and_leaf(names: &[&str]) -> (String, Cert) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (
        ca_cert.pem(),
        Cert {
            der: leaf.der().clone(),
            pem: leaf.pem(),
            key,
        },
    )
}

fn acceptor(cert: &Cert) -> tokio_rustls::TlsAcceptor {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der.clone()],
        PrivateKeyDer::Pkcs8(cert.key.serialize_der().into()),
    )
    .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

fn hex(bytes: &[u8], sep: &str) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(sep)
}

fn sha256(der: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA256, der).as_ref().to_vec()
}

fn sha1(der: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, der)
        .as_ref()
        .to_vec()
}

async fn connect(url: &str, trust: TlsTrust) -> Result<Client, VsphereError> {
    let creds = Credentials {
        username: "user".into(),
        password: "pass".into(),
    };
    let options = ClientOptions {
        call_timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    };
    Client::connect_with(url, creds, trust, options).await
}

#[tokio::test]
async fn pinned_thumbprints_in_every_spelling_connect() {
    let cert = self_signed();
    let vc = FakeVc::new(2);
    let server = serve_tls(vc.handler(), acceptor(&cert)).await;
    assert!(server.url.starts_with("https://"));
    let pins = [
        hex(&sha256(&cert.der), ""),
        hex(&sha256(&cert.der), ":").to_lowercase(),
        hex(&sha1(&cert.der), ":"),
        hex(&sha1(&cert.der), "").to_lowercase(),
    ];
    for pin in pins {
        let client = connect(&server.url, TlsTrust::Thumbprint(pin.clone()))
            .await
            .unwrap_or_else(|e| panic!("{pin}: {e}"));
        assert_eq!(list_vms(&client).await.unwrap().len(), 2);
    }
}

#[tokio::test]
async fn a_wrong_thumbprint_is_a_mismatch_that_shows_the_new_one() {
    let cert = self_signed();
    let vc = FakeVc::new(1);
    let server = serve_tls(vc.handler(), acceptor(&cert)).await;
    let other = self_signed();
    let pinned = hex(&sha256(&other.der), ":");
    let err = connect(&server.url, TlsTrust::Thumbprint(pinned.clone()))
        .await
        .unwrap_err();
    match &err {
        VsphereError::CertificateMismatch {
            expected,
            presented_sha256,
            presented_sha1,
        } => {
            assert_eq!(expected, &pinned);
            assert_eq!(presented_sha256, &hex(&sha256(&cert.der), ":"));
            assert_eq!(presented_sha1, &hex(&sha1(&cert.der), ":"));
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.is_retryable());
    assert!(err.to_string().contains(&hex(&sha256(&cert.der), ":")));
    // A SHA-1 pin of another certificate fails the same way.
    let err = connect(
        &server.url,
        TlsTrust::Thumbprint(hex(&sha1(&other.der), ":")),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, VsphereError::CertificateMismatch { .. }),
        "{err:?}"
    );
    assert!(
        server.requests().is_empty(),
        "nothing was sent to the wrong server"
    );
}

#[tokio::test]
async fn ca_trust_checks_chain_and_name() {
    let (ca_pem, leaf) = ca_and_leaf(&["127.0.0.1"]);
    let vc = FakeVc::new(1);
    let server = serve_tls(vc.handler(), acceptor(&leaf)).await;
    let client = connect(&server.url, TlsTrust::Ca(ca_pem.clone()))
        .await
        .unwrap();
    assert_eq!(list_vms(&client).await.unwrap().len(), 1);
    // Another CA: a TLS error (not a pin mismatch).
    let (other_ca, _) = ca_and_leaf(&["127.0.0.1"]);
    let err = connect(&server.url, TlsTrust::Ca(other_ca))
        .await
        .unwrap_err();
    assert!(matches!(err, VsphereError::Tls { .. }), "{err:?}");
    assert!(!err.is_retryable());
    // The right CA but a certificate for another name.
    let (ca_pem2, wrong_name) = ca_and_leaf(&["vcenter.example.com"]);
    let server2 = serve_tls(vc.handler(), acceptor(&wrong_name)).await;
    let err = connect(&server2.url, TlsTrust::Ca(ca_pem2))
        .await
        .unwrap_err();
    assert!(matches!(err, VsphereError::Tls { .. }), "{err:?}");
    // A server certificate pasted as its own "CA" is trusted as itself, whatever its name.
    let client = connect(&server2.url, TlsTrust::Ca(wrong_name.pem.clone()))
        .await
        .unwrap();
    assert_eq!(list_vms(&client).await.unwrap().len(), 1);
    let self_signed = self_signed();
    let server3 = serve_tls(vc.handler(), acceptor(&self_signed)).await;
    let client = connect(&server3.url, TlsTrust::Ca(self_signed.pem.clone()))
        .await
        .unwrap();
    assert_eq!(list_vms(&client).await.unwrap().len(), 1);
    // ... but not some other certificate.
    let err = connect(&server3.url, TlsTrust::Ca(leaf.pem.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, VsphereError::Tls { .. }), "{err:?}");
}

#[tokio::test]
async fn plain_http_against_tls_and_tls_against_nothing() {
    let cert = self_signed();
    let vc = FakeVc::new(1);
    let server = serve_tls(vc.handler(), acceptor(&cert)).await;
    // Speaking plain HTTP to a TLS port gets no SOAP answer.
    let plain = server.url.replacen("https://", "http://", 1);
    let err = connect(&plain, TlsTrust::Thumbprint(hex(&sha256(&cert.der), "")))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            VsphereError::Transport { .. } | VsphereError::Http { .. }
        ),
        "{err:?}"
    );
}
