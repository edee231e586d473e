//! The management listener (HTTPS, actix-web): health, readiness and Prometheus metrics for now.
//!
//! Handlers only read typed snapshots of the data path ([`actors::tree::Shared`]); they never change it, so a
//! slow or hostile scrape cannot disturb replication.

mod health;
mod metrics;

pub use health::{Readiness, VAULT_PROBE_TIMEOUT};
pub use metrics::{render_metrics, MetricsSnapshot};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;

/// How long a graceful stop waits for requests in flight.
const SHUTDOWN_TIMEOUT_SECS: u64 = 5;

/// Binds `listen` and serves the management endpoints on the current actix System until the returned
/// handle is stopped. Fails when the address does not parse or cannot be bound.
pub fn start(
    listen: &str,
    tls: Arc<rustls::ServerConfig>,
    core: crate::mgmt::Core,
) -> anyhow::Result<ServerHandle> {
    let addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("listen_management {listen:?} is not host:port"))?;
    let data = web::Data::new(core);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/healthz", web::get().to(health::healthz))
            .route("/readyz", web::get().to(health::readyz))
            .route("/metrics", web::get().to(metrics::metrics))
            .default_service(web::to(not_found))
    })
    // Scrapes and probes are light; the cores belong to the data path.
    .workers(1)
    // The daemon owns SIGTERM/SIGINT and stops this server itself, after which it drains the data path.
    .disable_signals()
    .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
    .bind_rustls_0_23(addr, (*tls).clone())
    .with_context(|| format!("binding the management listener on {addr}"))?
    .run();
    let handle = server.handle();
    actix_rt::spawn(async move {
        if let Err(err) = server.await {
            tracing::error!(%err, "management listener failed");
        }
    });
    tracing::info!(listen = %addr, "management listener started");
    Ok(handle)
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(serde_json::json!({"error": "not_found"}))
}
