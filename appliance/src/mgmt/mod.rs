//! The management core: everything the REST API, the dashboard and the CLI can ask of the appliance, as
//! typed calls. The HTTP layer (`crate::web`) only parses and validates requests and hands them here
//! (docs/MANAGEMENT.md is the contract).

pub mod agents;
pub mod audit;
pub mod auth;
pub mod catalog;
pub mod error;
pub mod guest_credentials;
pub mod login_limit;
pub mod plugin;
pub mod plugin_auth;
pub mod protect;
pub mod push_jobs;
pub mod restore_jobs;
pub mod settings;
pub mod setup;
pub mod status;
pub mod vcenters;

pub use error::MgmtError;

use std::sync::{Arc, RwLock};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::registry::Registry;
use crate::state::State;
use crate::tls::ApplianceTls;

/// Default and largest page of a list.
pub const DEFAULT_PAGE: usize = 100;
pub const MAX_PAGE: usize = 1000;

/// Which slice of a list a caller wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageRequest {
    /// Items per page, 1..=1000 (default 100).
    pub limit: Option<usize>,
    /// Items to skip (default 0).
    pub offset: Option<usize>,
}

impl PageRequest {
    /// (offset, limit) after defaults; a limit outside 1..=1000 is a bad request.
    pub fn resolve(&self) -> Result<(usize, usize), MgmtError> {
        let limit = self.limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(MgmtError::invalid("limit", "must be between 1 and 1000"));
        }
        Ok((self.offset.unwrap_or(0), limit))
    }

    /// Cuts one page out of a complete list.
    pub fn apply<T>(&self, all: Vec<T>) -> Result<Page<T>, MgmtError> {
        let (offset, limit) = self.resolve()?;
        let total = all.len();
        let items = all.into_iter().skip(offset).take(limit).collect();
        Ok(Page {
            items,
            total,
            limit,
            offset,
        })
    }
}

/// One page of a list.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Items in the whole list.
    pub total: usize,
    pub limit: usize,
    pub offset: usize,
}

/// What exists only once setup is complete and the data path runs.
#[derive(Clone)]
pub struct Running {
    pub shared: actors::tree::Shared,
    pub registry: Arc<Registry>,
}

/// The management core shared by every handler (cheap to clone: everything is behind `Arc`s).
#[derive(Clone)]
pub struct Core {
    pub cfg: Arc<Config>,
    pub state: State,
    pub tls: Arc<ApplianceTls>,
    pub auth: auth::Auth,
    pub setup: setup::Setup,
    pub catalog: catalog::Catalog,
    pub restores: restore_jobs::RestoreJobs,
    /// Push installs of the mobility agent into guests over SSH.
    pub push_jobs: push_jobs::PushJobs,
    pub vcenters: vcenters::Vcenters,
    /// The vCenter plugin: its registration, and the sign-in of its calls.
    pub plugin: plugin::Plugin,
    pub plugin_auth: plugin_auth::PluginAuth,
    /// Named guest logins push installs refer to.
    pub guest_credentials: guest_credentials::GuestCredentials,
    pub started: Instant,
    running: Arc<RwLock<Option<Running>>>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").finish_non_exhaustive()
    }
}

impl Core {
    pub fn new(cfg: Arc<Config>, state: State, tls: Arc<ApplianceTls>) -> Result<Core, MgmtError> {
        let auth = auth::Auth::new(state.clone());
        let setup = setup::Setup::new(cfg.clone(), state.clone(), tls.clone(), auth.clone())?;
        let catalog = catalog::Catalog::new(state.clone())?;
        let restores = restore_jobs::RestoreJobs::new(cfg.clone(), state.clone());
        let mut push_settings =
            push_jobs::PushSettings::new(cfg.agents_dir.clone(), tls.ca_fingerprint());
        push_settings.appliance_addr = Some(cfg.agent_data_address.clone());
        let push_jobs = push_jobs::PushJobs::new(state.clone(), push_settings);
        let vcenters = vcenters::Vcenters::new(
            state.clone(),
            cfg.data_dir.clone(),
            Arc::new(actors::discovery::VsphereConnector::default()),
        )?;
        push_jobs.use_vcenters(vcenters.clone());
        let guest_credentials =
            guest_credentials::GuestCredentials::new(state.clone(), cfg.data_dir.clone())?;
        push_jobs.use_guest_credentials(guest_credentials.clone());
        let plugin = plugin::Plugin::new(cfg.clone(), state.clone(), vcenters.clone());
        let plugin_auth = plugin_auth::PluginAuth::new(
            vcenters.clone(),
            Arc::new(plugin_auth::VsphereVerifier::default()),
            plugin_session_ttl(),
        );
        Ok(Core {
            plugin,
            plugin_auth,
            guest_credentials,
            cfg,
            state,
            tls,
            auth,
            setup,
            catalog,
            restores,
            push_jobs,
            vcenters,
            started: Instant::now(),
            running: Arc::new(RwLock::new(None)),
        })
    }

    /// The data path and registry, once setup is complete and they started.
    pub fn running(&self) -> Option<Running> {
        self.running.read().expect("running lock").clone()
    }

    /// Like [`Core::running`], as an error the API answers with when they are not there.
    pub fn require_running(&self) -> Result<Running, MgmtError> {
        if !self.setup.is_complete() {
            return Err(MgmtError::SetupRequired);
        }
        self.running().ok_or_else(|| {
            MgmtError::Unavailable("the data path is starting; retry shortly".into())
        })
    }

    pub fn set_running(&self, running: Option<Running>) {
        *self.running.write().expect("running lock") = running;
    }
}

/// How long a checked vCenter plugin session is trusted; `FERRY_TEST_PLUGIN_SESSION_TTL_SECS`
/// shortens it for end-to-end tests (0: every call asks the vCenter).
fn plugin_session_ttl() -> std::time::Duration {
    std::env::var("FERRY_TEST_PLUGIN_SESSION_TTL_SECS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .map(std::time::Duration::from_secs)
        .map_or(plugin_auth::DEFAULT_TTL, |t| {
            t.min(plugin_auth::DEFAULT_TTL)
        })
}
