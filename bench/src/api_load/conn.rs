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
