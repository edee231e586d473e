//! The management listener (HTTPS, actix-web): the REST API (`/api/v1`), health, readiness, Prometheus
//! metrics and the dashboard.
//!
//! Handlers only parse and validate, then call the management core ([`crate::mgmt::Core`]) with typed
//! arguments; health and metrics only read snapshots of the data path, so a slow or hostile scrape
//! cannot disturb replication.

pub mod api;
pub mod error;
pub mod extract;
mod health;
mod metrics;
pub mod plugin;
pub mod redirect;
pub mod ui;

pub use health::{Readiness, VAULT_PROBE_TIMEOUT};
pub use metrics::{render_metrics, MetricsSnapshot};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;

/// How long a graceful stop waits for requests in flight.
const SHUTDOWN_TIMEOUT_SECS: u64 = 5;
/// Largest JSON or form body; every request of this API is small.
pub const MAX_BODY_BYTES: usize = 64 << 10;
/// The Content-Security-Policy of every answer: nothing but our own scripts, styles and images.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Security headers on every answer (a handler may set its own CSP; `X-Frame-Options: DENY` comes
/// from [`plugin::frame_options`], which leaves it off the vCenter plugin's pages).
fn security_headers() -> actix_web::middleware::DefaultHeaders {
    actix_web::middleware::DefaultHeaders::new()
        .add(("Strict-Transport-Security", "max-age=31536000"))
        .add(("Content-Security-Policy", CSP))
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("Referrer-Policy", "same-origin"))
        .add(("Cache-Control", "no-store"))
}

/// The running management listeners: HTTPS, and the optional plain-HTTP redirect.
#[derive(Debug)]
pub struct Listeners {
    https: ServerHandle,
    redirect: Option<ServerHandle>,
}

impl Listeners {
    /// Stops both (waiting for requests in flight when `graceful`).
    pub async fn stop(&self, graceful: bool) {
        if let Some(redirect) = &self.redirect {
            redirect.stop(graceful).await;
        }
        self.https.stop(graceful).await;
    }
}

/// Binds `listen` (and the configured `listen_redirect`) and serves the management endpoints on the
/// current actix System until stopped. Fails when an address does not parse or cannot be bound.
pub fn start(
    listen: &str,
    tls: Arc<rustls::ServerConfig>,
    core: crate::mgmt::Core,
) -> anyhow::Result<Listeners> {
    let redirect_listen = core.cfg.listen_redirect.clone();
    let addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("listen_management {listen:?} is not host:port"))?;
    let data = web::Data::new(core);
    let server = HttpServer::new(move || {
        App::new()
            .wrap(security_headers())
            .wrap(actix_web::middleware::from_fn(plugin::frame_options))
            .app_data(data.clone())
            .app_data(error::json_config(MAX_BODY_BYTES))
            .app_data(error::query_config())
            .app_data(error::path_config())
            .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
            .app_data(web::FormConfig::default().limit(MAX_BODY_BYTES))
            .route("/healthz", web::get().to(health::healthz))
            .route("/readyz", web::get().to(health::readyz))
            .route("/metrics", web::get().to(metrics::metrics))
            .configure(api::configure)
            .configure(plugin::configure)
            .configure(ui::configure)
            .default_service(web::to(not_found))
    })
    // One worker serves thousands of API calls a second; the other core belongs to the data path.
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
    let redirect = match redirect_listen {
        Some(redirect_listen) => match redirect::start(&redirect_listen, addr.port()) {
            Ok(redirect) => Some(redirect),
            Err(err) => {
                actix_rt::spawn(async move { handle.stop(false).await });
                return Err(err);
            }
        },
        None => None,
    };
    Ok(Listeners {
        https: handle,
        redirect,
    })
}

async fn not_found() -> HttpResponse {
    error::error_response(&crate::mgmt::MgmtError::NotFound("no such page".into()))
}
