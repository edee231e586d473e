//! TEST STAND-IN FOR THE APPLIANCE. This is not the Ferry appliance: it is a minimal in-process
//! TLS 1.3 server speaking the `wire` protocol, written for the agent's tests. It has its own
//! rcgen-made CA and server certificate (SAN "ferry-appliance"), issues client certificates on
//! Register, keeps every disk image in memory, treats each applied extent as durable at once and
//! acknowledges it, and answers a Bookmark with PointDurable. It can be told to drop a connection
//! mid-sync (after N applied extents, receiving one more that it does not apply), and to hang up on a
//! Register carrying a BIOS UUID, as appliances older than that field do.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use wire::*;

/// One extent the stand-in received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub conn: usize,
    pub disk_id: String,
    pub seq: u64,
    pub first_block: u64,
    pub blocks: u64,
    pub applied: bool,
}

#[derive(Debug, Default)]
pub struct Image {
    pub data: Vec<u8>,
    pub durable_seq: u64,
}

#[derive(Debug, Default)]
pub struct Shared {
    /// TCP connections accepted, of any kind.
    pub accepted: usize,
    pub connections: usize,
    pub images: HashMap<String, Image>,
    pub received: Vec<Received>,
    pub bookmarks: Vec<Bookmark>,
    pub hellos: Vec<Hello>,
    pub registered: Vec<String>,
    /// The BIOS UUID of each registration, in the order of `registered`.
    pub bios_uuids: Vec<Option<String>>,
    /// Act like an appliance older than `Register.bios_uuid`: hang up, without answering, on a
    /// Register that carries one (its decoder refuses the trailing bytes).
    pub predates_bios_uuid: bool,
    /// Registers hung up on that way.
    pub hung_up_registers: usize,
    /// Drop the next data connection after this many applied extents (then cleared).
    pub drop_after_extents: Option<usize>,
    pub revoked: bool,
    /// Nonces of Pongs received (the stand-in pings right after Welcome).
    pub pongs: Vec<u64>,
    /// Hold back PointDurable until the agent has sent this many Pings on the connection.
    pub pings_before_point: usize,
    pub pings: usize,
}

pub struct StandInAppliance {
    pub addr: SocketAddr,
    /// Hex SHA-256 of the CA certificate's DER.
    pub ca_fingerprint: String,
    pub shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StandInAppliance {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "stand-in appliance CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Pki { ca }
    }

    fn issue(
        &self,
        sans: Vec<String>,
        cn: &str,
        usage: ExtendedKeyUsagePurpose,
    ) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn der_of(pem: &str) -> CertificateDer<'static> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

impl StandInAppliance {
    pub async fn start(passphrase: &str, window_bytes: u32) -> StandInAppliance {
        let pki = Arc::new(Pki::new());
        let ca_der = pki.ca.der().clone();
        let ca_fingerprint = hex::encode(mobility::tls::fingerprint(&ca_der));
        let (server_pem, server_key) = pki.issue(
            vec!["ferry-appliance".into()],
            "ferry-appliance",
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let provider = mobility::tls::provider();
        let mut roots = RootCertStore::empty();
        roots.add(ca_der.clone()).unwrap();
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .unwrap();
        let key = {
            use rustls_pki_types::pem::PemObject;
            PrivateKeyDer::from_pem_slice(server_key.as_bytes()).unwrap()
        };
        let config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(vec![der_of(&server_pem), ca_der], key)
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let passphrase = passphrase.to_string();
        let s2 = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                s2.lock().unwrap().accepted += 1;
                let acceptor = acceptor.clone();
                let shared = s2.clone();
                let pki = pki.clone();
                let passphrase = passphrase.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    serve(tls, shared, pki, &passphrase, window_bytes).await;
                });
            }
        });
        StandInAppliance {
            addr,
            ca_fingerprint,
            shared,
            task,
        }
    }

    pub fn addr_string(&self) -> String {
        self.addr.to_string()
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap()
    }
}

async fn send(w: &mut tokio_rustls::server::TlsStream<tokio::net::TcpStream>, f: Frame) -> bool {
    write_frame(w, &f).await.is_ok() && w.flush().await.is_ok()
}

async fn serve(
    mut tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    shared: Arc<Mutex<Shared>>,
    pki: Arc<Pki>,
    passphrase: &str,
    window_bytes: u32,
) {
    let has_client_cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .is_some_and(|c| !c.is_empty());
    let first = match read_frame(&mut tls).await {
        Ok(Some(f)) => f,
        _ => return,
    };
    let hello = match first {
        Frame::Register(r) => {
            if r.bios_uuid.is_some() {
                let mut s = shared.lock().unwrap();
                if s.predates_bios_uuid {
                    s.hung_up_registers += 1;
                    return;
                }
            }
            if r.passphrase != passphrase {
                let _ = send(
                    &mut tls,
                    Frame::Error(ErrorFrame {
                        code: ErrorCode::BadPassphrase,
                        message: "wrong passphrase".into(),
                    }),
                )
                .await;
                return;
            }
            let agent_id = {
                let mut s = shared.lock().unwrap();
                s.registered.push(r.hostname.clone());
                s.bios_uuids.push(r.bios_uuid.clone());
                format!("agent-{}", s.registered.len())
            };
            let (cert_pem, key_pem) =
                pki.issue(vec![], &agent_id, ExtendedKeyUsagePurpose::ClientAuth);
            let _ = send(
                &mut tls,
                Frame::Registered(Registered {
                    agent_id,
                    cert_pem,
                    key_pem,
                    ca_pem: pki.ca.pem(),
                }),
            )
            .await;
            return;
        }
        Frame::Hello(h) if has_client_cert => h,
        _ => {
            let _ = send(
                &mut tls,
                Frame::Error(ErrorFrame {
                    code: ErrorCode::UnknownAgent,
                    message: "no client certificate".into(),
                }),
            )
            .await;
            return;
        }
    };
    let revoked = shared.lock().unwrap().revoked;
    if revoked {
        let _ = send(
            &mut tls,
            Frame::Error(ErrorFrame {
                code: ErrorCode::Revoked,
                message: "agent revoked".into(),
            }),
        )
        .await;
        return;
    }
    let (conn, drop_after, resume) = {
        let mut s = shared.lock().unwrap();
        s.connections += 1;
        let mut resume = Vec::new();
        for (i, d) in hello.disks.iter().enumerate() {
            let img = s.images.entry(d.disk_id.clone()).or_default();
            img.data.resize(d.size_bytes as usize, 0);
            resume.push(Resume {
                disk_index: i as u16,
                durable_seq: img.durable_seq,
            });
        }
        s.hellos.push(hello.clone());
        (s.connections, s.drop_after_extents.take(), resume)
    };
    let welcome = Frame::Welcome(Welcome {
        version: WIRE_VERSION,
        window_bytes,
        resume,
    });
    if !send(&mut tls, welcome).await || !send(&mut tls, Frame::Ping(conn as u64)).await {
        return;
    }
    let mut applied = 0usize;
    let pings_before_point = shared.lock().unwrap().pings_before_point;
    let mut pings_seen = 0usize;
    let mut held_point = None;
    loop {
        let frame = match read_frame(&mut tls).await {
            Ok(Some(f)) => f,
            _ => return,
        };
        match frame {
            Frame::Extent(e) => {
                let disk_id = hello.disks[e.disk_index as usize].disk_id.clone();
                let blocks = (e.data.len() as u64).div_ceil(BLOCK_SIZE);
                let dropping = drop_after.is_some_and(|n| applied >= n);
                {
                    let mut s = shared.lock().unwrap();
                    s.received.push(Received {
                        conn,
                        disk_id: disk_id.clone(),
                        seq: e.seq,
                        first_block: e.offset / BLOCK_SIZE,
                        blocks,
                        applied: !dropping,
                    });
                    if !dropping {
                        let img = s.images.get_mut(&disk_id).unwrap();
                        assert_eq!(
                            e.seq,
                            img.durable_seq + 1,
                            "sequence numbers must follow on"
                        );
                        let at = e.offset as usize;
                        img.data[at..at + e.data.len()].copy_from_slice(&e.data);
                        img.durable_seq = e.seq;
                    }
                }
                if dropping {
                    // Cut the connection with this extent received but not durable.
                    return;
                }
                applied += 1;
                let ack = Frame::Ack(Ack {
                    disk_index: e.disk_index,
                    durable_seq: e.seq,
                });
                if !send(&mut tls, ack).await {
                    return;
                }
            }
            Frame::Bookmark(b) => {
                let n = {
                    let mut s = shared.lock().unwrap();
                    for ds in &b.seqs {
                        let id = &hello.disks[ds.disk_index as usize].disk_id;
                        assert!(
                            ds.seq <= s.images[id].durable_seq,
                            "bookmark past durable data"
                        );
                    }
                    s.bookmarks.push(b.clone());
                    s.bookmarks.len()
                };
                let p = Frame::PointDurable(PointDurable {
                    bookmark_id: b.bookmark_id,
                    point_id: format!("pt-{n}"),
                });
                if pings_seen < pings_before_point {
                    held_point = Some(p);
                } else if !send(&mut tls, p).await {
                    return;
                }
            }
            Frame::Ping(n) => {
                shared.lock().unwrap().pings += 1;
                pings_seen += 1;
                let _ = send(&mut tls, Frame::Pong(n)).await;
                if pings_seen >= pings_before_point {
                    if let Some(p) = held_point.take() {
                        if !send(&mut tls, p).await {
                            return;
                        }
                    }
                }
            }
            Frame::Pong(n) => shared.lock().unwrap().pongs.push(n),
            _ => return,
        }
    }
}
