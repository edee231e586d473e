//! One keep-alive HTTPS connection to the appliance: TCP, TLS (trusting only the appliance's CA) and
//! HTTP/1.1 with hyper's connection API. No pool: a connection is used by one task, request after
//! request, so the bench never opens a connection it did not mean to (a pooled client may race a new
//! connection against the return of the previous one to the pool).

use anyhow::{Context, Result};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::sync::Arc;

/// Opens connections to one address.
#[derive(Clone)]
pub struct Connector {
    tls: tokio_rustls::TlsConnector,
    addr: SocketAddr,
    host: String,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Connector {
    pub fn new(ca_pem: &[u8], addr: SocketAddr) -> Result<Connector> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            roots
                .add(cert.context("the appliance CA is not PEM")?)
                .context("the appliance CA")?;
        }
        anyhow::ensure!(
            !roots.is_empty(),
            "the appliance CA file holds no certificate"
        );
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // HTTP/1.1 only: the management listener offers nothing else over TLS today.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Connector {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            addr,
            host: addr.to_string(),
        })
    }

    /// A new connection: TCP connect, TLS handshake (the server's certificate checked against the
    /// CA for the address's IP), HTTP/1.1 handshake.
    pub async fn connect(&self) -> Result<Conn> {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connect {}", self.addr))?;
        tcp.set_nodelay(true)?;
        let name = ServerName::IpAddress(self.addr.ip().into());
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS handshake with {}", self.addr))?;
        let (_, session) = tls.get_ref();
        let protocol = format!(
            "{} {}",
            session
                .protocol_version()
                .map_or_else(|| "TLS".to_string(), |v| format!("{v:?}").replace('_', ".")),
            session.alpn_protocol().map_or_else(
                || "HTTP/1.1 (no ALPN)".to_string(),
                |p| String::from_utf8_lossy(p).to_uppercase()
            )
        );
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .context("HTTP/1.1 handshake")?;
        // The connection's I/O runs as its own task; it ends when the sender is dropped.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn {
            sender,
            host: self.host.clone(),
            protocol,
        })
    }
}

/// An open connection.
pub struct Conn {
    sender: SendRequest<Empty<Bytes>>,
    host: String,
    /// E.g. `TLSv1.3 HTTP/1.1`.
    pub protocol: String,
}

impl Conn {
    /// `GET path` (with `Authorization: Bearer <bearer>`): the status and the whole body.
    pub async fn get(&mut self, path: &str, bearer: Option<&str>) -> Result<(u16, Bytes)> {
        let mut request = hyper::Request::get(path).header(hyper::header::HOST, &self.host);
        if let Some(token) = bearer {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(Empty::new()).context("building a request")?;
        self.sender.ready().await.context("the connection closed")?;
        let response = self
            .sender
            .send_request(request)
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .with_context(|| format!("GET {path}: reading the body"))?
            .to_bytes();
        Ok((status, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn appliance_tls(dir: &std::path::Path) -> appliance::tls::ApplianceTls {
        appliance::tls::ApplianceTls::load_or_create(dir, &[]).unwrap()
    }

    /// A TLS server on a free port that takes one connection and answers its requests with
    /// `answers`, in order, then closes it.
    async fn serve_one(
        tls: &appliance::tls::ApplianceTls,
        answers: Vec<&'static str>,
    ) -> SocketAddr {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.management_server_config().unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let Ok(mut stream) = acceptor.accept(tcp).await else {
                return;
            };
            for answer in answers {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                stream.write_all(answer.as_bytes()).await.unwrap();
            }
            let _ = stream.shutdown().await;
        });
        addr
    }

    #[tokio::test]
    async fn keeps_one_connection_for_many_requests_and_reports_failures() {
        let dir = tempfile::tempdir().unwrap();
        let tls = appliance_tls(dir.path());
        let addr = serve_one(
            &tls,
            vec![
                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}",
                "HTTP/1.1 401 Unauthorized\r\ncontent-length: 5\r\n\r\nnope!",
                "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\ntruncated",
            ],
        )
        .await;
        let connector = Connector::new(tls.ca_pem().as_bytes(), addr).unwrap();
        let mut conn = connector.connect().await.unwrap();
        assert!(conn.protocol.starts_with("TLSv1.3"), "{}", conn.protocol);
        let (status, body) = conn.get("/a", Some("fat_x")).await.unwrap();
        assert_eq!((status, &body[..]), (200, &b"{}"[..]));
        // The second request went over the same connection (the server takes only one).
        let (status, body) = conn.get("/b", None).await.unwrap();
        assert_eq!((status, &body[..]), (401, &b"nope!"[..]));
        // A body cut short by the server's close is an error, not a short answer.
        assert!(conn.get("/c", None).await.is_err());
        assert!(conn.get("/d", None).await.is_err());
    }

    #[tokio::test]
    async fn refuses_a_server_of_another_ca() {
        let (ours, theirs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let addr = serve_one(&appliance_tls(theirs.path()), vec![]).await;
        let connector =
            Connector::new(appliance_tls(ours.path()).ca_pem().as_bytes(), addr).unwrap();
        let err = connector.connect().await.err().expect("an unknown CA");
        assert!(format!("{err:#}").contains("TLS handshake"), "{err:#}");
    }

    #[tokio::test]
    async fn refuses_bad_ca_files_and_closed_ports() {
        let addr = SocketAddr::from(([127, 0, 0, 1], ferry_tests::free_port()));
        assert!(Connector::new(b"", addr).is_err());
        assert!(Connector::new(b"not a PEM file", addr).is_err());
        let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(Connector::new(garbage, addr).is_err());
        let dir = tempfile::tempdir().unwrap();
        let connector =
            Connector::new(appliance_tls(dir.path()).ca_pem().as_bytes(), addr).unwrap();
        let err = connector.connect().await.err().expect("nothing listens");
        assert!(format!("{err:#}").contains("connect"), "{err:#}");
    }
}
