//! `appliance run`: first-start setup (secrets, CA, vault), then the data path's actor tree until SIGTERM
//! or SIGINT, then a drain.

use crate::config::Config;
use crate::registry::Registry;
use crate::state::State;
use crate::tls::ApplianceTls;
use anyhow::Context;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

/// After SIGTERM, how long the pipeline may keep uploading what the cache holds before the daemon exits.
/// Whatever is left stays in the durable cache and is uploaded after the next start.
const UPLOAD_DRAIN: Duration = Duration::from_secs(30);

pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let secrets = crate::secrets::ensure_secrets(&cfg)?;
    let tls = Arc::new(ApplianceTls::load_or_create(
        &cfg.data_dir,
        &cfg.server_names,
    )?);
    let state = State::open(&cfg.data_dir).context("opening the appliance state")?;
    let (vault, created) =
        crate::vault_access::open_or_create_vault(&cfg, &secrets.vault_passphrase).await?;
    if secrets.any_created() || created {
        // Printed once, on the start that created them; readable again from the data folder.
        let mut out = std::io::stdout().lock();
        secrets.announce(&mut out)?;
        writeln!(out, "CA fingerprint (SHA-256): {}", tls.ca_fingerprint())?;
        out.flush()?;
    }
    let listen = cfg
        .listen_data
        .parse()
        .with_context(|| format!("listen_data {:?} is not host:port", cfg.listen_data))?;
    let cache = actors::cache::Cache::open(&cfg.cache_dir, cfg.cache_max_bytes)
        .with_context(|| format!("opening the cache in {}", cfg.cache_dir.display()))?;
    let registry = Arc::new(Registry::new(
        state.clone(),
        tls.clone(),
        &secrets.registration_passphrase,
    ));
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config()?);
    let config = actors::DataPathConfig {
        listen,
        maps_dir: cfg.data_dir.join("maps"),
        compress_threads: cfg.compress_threads.max(1),
        batch_bytes: 32 << 20,
        pack_target_bytes: cfg.pack_target_bytes as usize,
        full_map_every: cfg.full_map_every,
        upload_concurrency: cfg.upload_concurrency,
    };
    tracing::info!(
        data_dir = %cfg.data_dir.display(),
        vault = %cfg.vault_url,
        listen = %cfg.listen_data,
        fingerprint = %tls.ca_fingerprint(),
        "appliance starting"
    );
    let data_path = actors::DataPath::start(
        config,
        cache,
        vault,
        registry.clone(),
        acceptor,
        Default::default(),
    );
    let core = crate::mgmt::Core::new(Arc::new(cfg.clone()), state.clone(), tls.clone())
        .context("starting the management core")?;
    core.set_running(Some(crate::mgmt::Running {
        shared: data_path.shared.clone(),
        registry,
    }));
    let management = tls.management_server_config().and_then(|server_config| {
        crate::web::start(&cfg.listen_management, server_config, core.clone())
    });
    let management = match management {
        Ok(handle) => handle,
        Err(err) => {
            data_path.shutdown(Duration::ZERO).await;
            return Err(err);
        }
    };

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: draining"),
    }
    management.stop(true).await;
    data_path.shutdown(UPLOAD_DRAIN).await;
    state.flush().context("flushing the appliance state")?;
    tracing::info!("appliance stopped cleanly");
    Ok(())
}
