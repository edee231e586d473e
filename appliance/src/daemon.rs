//! `appliance run` (docs/MANAGEMENT.md "Daemon phases"): the data folder, TLS, state and the
//! management listener always; then first-boot setup until it is complete (resumed, unattended,
//! or through the web form with the logged setup token); only then the vault and the data
//! path's actor tree, until SIGTERM or SIGINT, then a drain.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::config::Config;
use crate::files::{self, PRIVATE_DIR_MODE};
use crate::mgmt::setup::{self, SetupPhase};
use crate::mgmt::{Core, Running};
use crate::registry::Registry;
use crate::state::State;
use crate::tls::ApplianceTls;
use crate::vault_access::{self, VaultLocation};

/// After SIGTERM, how long the pipeline may keep uploading what the cache holds before the daemon exits.
/// Whatever is left stays in the durable cache and is uploaded after the next start.
const UPLOAD_DRAIN: Duration = Duration::from_secs(30);
/// Retries of a stored setup plan that failed to resume at start (the vault was down, say).
const RESUME_RETRY_FIRST: Duration = Duration::from_secs(5);
const RESUME_RETRY_MAX: Duration = Duration::from_secs(300);

/// Resolves on SIGTERM or SIGINT.
struct Signals {
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        Ok(Signals {
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = tokio::signal::ctrl_c() => "SIGINT",
        }
    }
}

pub async fn run(cfg: Config) -> anyhow::Result<()> {
    files::create_dir_all(&cfg.data_dir, PRIVATE_DIR_MODE)
        .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    let tls = Arc::new(ApplianceTls::load_or_create(
        &cfg.data_dir,
        &cfg.server_names,
    )?);
    let state = State::open(&cfg.data_dir).context("opening the appliance state")?;
    let cfg = Arc::new(cfg);
    let core = Core::new(cfg.clone(), state.clone(), tls.clone())
        .context("starting the management core")?;
    let management = crate::web::start(
        &cfg.listen_management,
        tls.management_server_config()?,
        core.clone(),
    )?;
    let mut signals = Signals::new()?;

    let setup_done = tokio::select! {
        done = first_boot(&core) => done.map(|()| true),
        signal = signals.recv() => {
            tracing::info!("{signal} before setup was complete: stopping");
            Ok(false)
        }
    };
    let setup_done = match setup_done {
        Ok(done) => done,
        Err(err) => {
            management.stop(true).await;
            return Err(err);
        }
    };
    if !setup_done {
        management.stop(true).await;
        state.flush().context("flushing the appliance state")?;
        return Ok(());
    }

    let data_path = match start_data_path(&core).await {
        Ok(data_path) => data_path,
        Err(err) => {
            management.stop(true).await;
            return Err(err);
        }
    };
    // Discovery of vCenters: a vCenter that is down or refuses the login never stops the appliance.
    if let Err(err) = core.vcenters.start_discovery() {
        tracing::error!(%err, "vCenter discovery could not start");
    }
    let signal = signals.recv().await;
    tracing::info!("{signal}: draining");
    management.stop(true).await;
    core.vcenters.stop_discovery().await;
    data_path.shutdown(UPLOAD_DRAIN).await;
    state.flush().context("flushing the appliance state")?;
    tracing::info!("appliance stopped cleanly");
    Ok(())
}

/// Returns once setup is complete. Fails only when the unattended setup the configuration asks
/// for cannot run (a wrong configuration is better refused at start than half-applied).
async fn first_boot(core: &Core) -> anyhow::Result<()> {
    let cfg = &core.cfg;
    match (core.setup.phase(), &cfg.admin_password_file) {
        (SetupPhase::Complete, _) => return Ok(()),
        // Also finishes a stored plan, so that a setup killed midway still announces it.
        (_, Some(file)) => {
            let password = setup::read_admin_password_file(file)?;
            tracing::info!(file = %file.display(), "running the unattended setup");
            let outcome = core
                .setup
                .run_unattended(&password)
                .await
                .context("the unattended setup (admin_password_file) failed")?;
            if let Some(done) = outcome {
                // Printed once, on the start that set the appliance up.
                let mut out = std::io::stdout().lock();
                done.announce(&mut out)?;
                out.flush()?;
            }
        }
        (SetupPhase::Pending, None) => match core.setup.resume().await {
            Ok(_) => tracing::info!(
                data_dir = %cfg.data_dir.display(),
                "the stored setup plan is complete; its passphrases are in the data folder"
            ),
            Err(err) => {
                tracing::error!(%err, "resuming the stored setup plan failed; retrying in the background");
                announce_token(core)?;
                let setup = core.setup.clone();
                actix_rt::spawn(async move { retry_resume(setup).await });
            }
        },
        (SetupPhase::Required, None) => announce_token(core)?,
    }
    core.setup.wait_complete().await;
    Ok(())
}

fn announce_token(core: &Core) -> anyhow::Result<()> {
    let token = core
        .setup
        .prepare_token()
        .context("writing the setup token")?;
    tracing::info!(
        setup_token = %token,
        path = %core.setup.token_path().display(),
        "setup required: open https://{}/setup",
        core.cfg.listen_management
    );
    Ok(())
}

async fn retry_resume(setup: setup::Setup) {
    let mut wait = RESUME_RETRY_FIRST;
    loop {
        tokio::time::sleep(wait).await;
        if setup.is_complete() {
            return;
        }
        match setup.resume().await {
            Ok(_) if setup.is_complete() => return,
            Ok(_) => {}
            Err(err) => tracing::warn!(%err, retry_in_secs = wait.as_secs(), "resuming setup"),
        }
        wait = (wait * 2).min(RESUME_RETRY_MAX);
    }
}

/// Opens the vault setup recorded and starts the data path (the data listener only now).
async fn start_data_path(core: &Core) -> anyhow::Result<actors::DataPath> {
    let cfg = &core.cfg;
    let tls = &core.tls;
    let loc = VaultLocation::resolve(cfg, None, None)?;
    let vault = vault_access::open_vault_readonly(&loc).await?;
    let registration_passphrase = crate::secrets::read_registration_passphrase(&cfg.data_dir)?;
    let listen = cfg
        .listen_data
        .parse()
        .with_context(|| format!("listen_data {:?} is not host:port", cfg.listen_data))?;
    let cache = actors::cache::Cache::open(&cfg.cache_dir, cfg.cache_max_bytes)
        .with_context(|| format!("opening the cache in {}", cfg.cache_dir.display()))?;
    let registry = Arc::new(
        Registry::new(core.state.clone(), tls.clone(), &registration_passphrase)
            .with_passphrase_file(crate::secrets::registration_passphrase_path(&cfg.data_dir)),
    );
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
        vault = %loc.target.url,
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
    let running = Running {
        shared: data_path.shared.clone(),
        registry,
    };
    data_path.shared.set_upload_limit(core.upload_limit()?);
    core.set_running(Some(running.clone()));
    core.catalog.attach(&running);
    if let Err(err) = core.auth.ensure_admin_token_file(&cfg.data_dir) {
        tracing::warn!(%err, "the admin token file could not be written");
    }
    Ok(data_path)
}
