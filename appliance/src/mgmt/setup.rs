//! First-boot setup as one resumable transaction (docs/MANAGEMENT.md "Setup as one transaction").
//! SKELETON: signatures agreed between modules; the bodies are being written.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::auth::Auth;
use super::MgmtError;
use crate::config::Config;
use crate::state::State;
use crate::tls::ApplianceTls;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SetupPhase {
    Required,
    Pending,
    Complete,
}

/// The first-boot form (the web wizard posts the same JSON).
#[derive(Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetupRequest {
    pub token: String,
    pub admin_password: String,
    pub vault_url: Option<String>,
    pub azure_access_key: Option<String>,
    pub s3_access_key_id: Option<String>,
    pub s3_secret_access_key: Option<String>,
    pub s3_region: Option<String>,
    pub s3_endpoint: Option<String>,
    pub vault_passphrase: Option<String>,
    pub registration_passphrase: Option<String>,
}

impl std::fmt::Debug for SetupRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetupRequest")
            .field("vault_url", &self.vault_url)
            .finish_non_exhaustive()
    }
}

/// What setup shows once (passphrases and the recovery kit).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SetupResult {
    pub admin_user: String,
    pub vault_url: String,
    pub ca_fingerprint: String,
    pub vault_passphrase: String,
    pub registration_passphrase: String,
    pub recovery_kit: String,
}

/// The vault connectivity test of the setup form.
#[derive(Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VaultTestRequest {
    pub token: String,
    pub vault_url: String,
    pub azure_access_key: Option<String>,
    pub s3_access_key_id: Option<String>,
    pub s3_secret_access_key: Option<String>,
    pub s3_region: Option<String>,
    pub s3_endpoint: Option<String>,
}

/// What `GET /api/v1/setup` tells the wizard.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SetupStatus {
    pub phase: SetupPhase,
    /// The vault URL setup proposes (the config's `vault_url`).
    pub default_vault_url: String,
    pub password_rules: Vec<String>,
    /// Network settings as the appliance sees them (read-only outside the image).
    pub network: Vec<String>,
}

/// Setup service. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Setup {
    cfg: Arc<Config>,
    state: State,
    tls: Arc<ApplianceTls>,
    auth: Auth,
}

impl Setup {
    pub fn new(
        cfg: Arc<Config>,
        state: State,
        tls: Arc<ApplianceTls>,
        auth: Auth,
    ) -> Result<Setup, MgmtError> {
        Ok(Setup {
            cfg,
            state,
            tls,
            auth,
        })
    }

    pub fn phase(&self) -> SetupPhase {
        let _ = (&self.cfg, &self.state, &self.tls, &self.auth);
        SetupPhase::Required
    }

    pub fn is_complete(&self) -> bool {
        self.phase() == SetupPhase::Complete
    }

    pub fn status(&self) -> SetupStatus {
        SetupStatus {
            phase: self.phase(),
            default_vault_url: self.cfg.vault_url.clone(),
            password_rules: Vec::new(),
            network: Vec::new(),
        }
    }

    /// Validates, stores the plan, executes it and commits (see the module docs).
    pub async fn submit(
        &self,
        _req: SetupRequest,
        _source: &str,
    ) -> Result<SetupResult, MgmtError> {
        Err(MgmtError::Internal("not built yet".into()))
    }

    /// Tries the vault target of the form without changing anything.
    pub async fn test_vault(&self, _req: VaultTestRequest) -> Result<(), MgmtError> {
        Err(MgmtError::Internal("not built yet".into()))
    }

    /// Resolves when setup is complete (immediately if it already is).
    pub async fn wait_complete(&self) {
        std::future::pending::<()>().await
    }
}
