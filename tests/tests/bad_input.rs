//! Bad input to port 9443 (random bytes, a truncated frame, a huge length, garbage after TLS, a wrong
//! passphrase or fingerprint) is refused with a logged reason while another agent keeps replicating; a
//! revoked agent is refused.

use ferry_tests::image::real_ext4;
use ferry_tests::{assert_point_restores, bin, finished_point, Agent, Appliance};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// A TLS client that trusts anything: these tests attack the frame layer, not the certificate check.
fn tls_client(addr: &str) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    #[derive(Debug)]
    struct AnyCert;
    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::aws_lc_rs::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AnyCert))
    .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(config), "ferry-appliance".try_into().unwrap())
            .unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// Sends `bytes` and reads until the appliance closes the connection; returns what it answered.
fn send_and_drain(addr: &str, bytes: &[u8], tls: bool) -> Vec<u8> {
    let mut answer = Vec::new();
    if tls {
        let mut s = tls_client(addr);
        let _ = s.write_all(bytes);
        let _ = s.flush();
        let _ = s.read_to_end(&mut answer);
    } else {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let _ = s.write_all(bytes);
        let _ = s.read_to_end(&mut answer);
    }
    answer
}

fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn bad_input_is_refused_while_another_agent_replicates() {
    let t = tempfile::tempdir().unwrap();
    let img = real_ext4(t.path(), 128).unwrap();
    let app = Appliance::start(&t.path().join("data"), &[]).unwrap();
    let addr = app.addr();
    let agent = Agent::register(&app, &t.path().join("agent")).unwrap();
    let good = agent
        .command(&[&img])
        .arg("--once")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    // Not TLS at all.
    send_and_drain(&addr, &pseudo_random(4096, 1), false);
    // TLS, then random bytes instead of a frame.
    send_and_drain(&addr, &pseudo_random(4096, 2), true);
    // TLS, a frame header announcing a huge payload.
    send_and_drain(&addr, &[b'F', b'W', 1, 1, 0xff, 0xff, 0xff, 0xf0], true);
    // TLS, a truncated Register frame, then close.
    send_and_drain(&addr, &[b'F', b'W', 1, 1, 0, 0, 0, 40, 0, 5, b'a'], true);
    // TLS, a well-formed Extent without a client certificate: only registration is allowed.
    let mut extent = Vec::new();
    wire::encode(
        &wire::Frame::Extent(wire::Extent {
            disk_index: 0,
            seq: 1,
            offset: 0,
            data: vec![1u8; 65536].into(),
        }),
        &mut extent,
    );
    let answer = send_and_drain(&addr, &extent, true);
    assert!(!answer.is_empty(), "expected an Error frame back");

    // Wrong registration passphrase and wrong CA fingerprint: the agent says which.
    let fp = app.cli(&["fingerprint"]).unwrap();
    let wrong = t.path().join("wrong.pass");
    std::fs::write(&wrong, "not-the-passphrase").unwrap();
    let out = Command::new(bin("mobility"))
        .args(["register", "--appliance", &addr, "--passphrase-file"])
        .arg(&wrong)
        .args(["--ca-fingerprint", fp.trim(), "--state-dir"])
        .arg(t.path().join("a2"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("passphrase"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let right = t.path().join("right.pass");
    std::fs::write(&right, app.cli(&["passphrase", "show"]).unwrap().trim()).unwrap();
    let out = Command::new(bin("mobility"))
        .args(["register", "--appliance", &addr, "--passphrase-file"])
        .arg(&right)
        .args(["--ca-fingerprint", &"ab".repeat(32), "--state-dir"])
        .arg(t.path().join("a3"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("fingerprint"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The good agent was never disturbed.
    let point = finished_point(good, &app, "good agent");
    assert_point_restores(&app, t.path(), &point, &img);

    // Each refusal left a logged reason.
    let log = app.log_text();
    for needle in ["TLS handshake failed", "bad frame", "session closed"] {
        assert!(log.contains(needle), "log lacks {needle:?}:\n{log}");
    }
}

#[test]
fn revoked_agent_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("small.img");
    std::fs::write(&img, vec![7u8; 4 << 20]).unwrap();
    let mut app = Appliance::start(&t.path().join("data"), &[]).unwrap();
    let agent = Agent::register(&app, &t.path().join("agent")).unwrap();
    agent.once(&[&img]).unwrap();
    app.stop().unwrap();
    let list = app.cli(&["agents", "list", "--json"]).unwrap();
    let agents: Vec<serde_json::Value> = serde_json::from_str(&list).unwrap();
    let id = agents[0]["agent_id"]
        .as_str()
        .or(agents[0]["id"].as_str())
        .unwrap()
        .to_string();
    app.cli(&["agents", "revoke", &id]).unwrap();
    app.restart().unwrap();
    let out = agent
        .command(&[&img])
        .args(["--once", "--timeout", "20"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a revoked agent must be refused");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("revoked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
