//! The replication listener on port 9443: accepts TLS connections and runs one session each, until shutdown.

use crate::session::{handle_connection, SessionContext, SessionEnd};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// Sessions still running at shutdown get this long to drain (write and acknowledge what they read).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// rustls reads the socket 4 KiB at a time; a buffer under it turns that into one read per this many bytes,
/// which for a stream of extents saves most of the receive syscalls and their TCP work.
const SOCKET_READ_BUFFER: usize = 256 * 1024;

/// Accepts connections until `shutdown` turns true, then waits for the sessions to drain.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ctx: SessionContext,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut sessions = tokio::task::JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        sessions.spawn(async move { connection(acceptor, tcp, peer, ctx, shutdown).await });
        while sessions.try_join_next().is_some() {}
    }
    drop(listener);
    tracing::info!(
        sessions = sessions.len(),
        "replication listener stopped; draining sessions"
    );
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

async fn connection(
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    ctx: SessionContext,
    shutdown: watch::Receiver<bool>,
) {
    let tcp = tokio::io::BufReader::with_capacity(SOCKET_READ_BUFFER, tcp);
    let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            ctx.stats.sessions_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, error = %e, "TLS handshake failed; connection closed");
            return;
        }
        Err(_) => {
            ctx.stats.sessions_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, "TLS handshake timed out; connection closed");
            return;
        }
    };
    let agent = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| ctx.registry.identify(c.as_ref()));
    let agent_id = match agent {
        None => None,
        Some(Some(id)) => Some(id),
        Some(None) => {
            tracing::warn!(%peer, "client certificate names no agent; connection closed");
            return;
        }
    };
    let who = agent_id.clone().unwrap_or_else(|| "unregistered".into());
    match handle_connection(ctx.clone(), tls, agent_id, shutdown).await {
        Ok(()) | Err(SessionEnd::Closed) | Err(SessionEnd::Shutdown) => {
            tracing::info!(%peer, agent = %who, "session ended")
        }
        Err(SessionEnd::Replaced) => {
            tracing::info!(%peer, agent = %who, "session replaced by a reconnect")
        }
        Err(e) => {
            ctx.stats.sessions_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, agent = %who, reason = %e, "session closed")
        }
    }
}
