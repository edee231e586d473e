//! Appliance settings that can change at runtime (the upload bandwidth limit) and what the appliance
//! shows of its fixed configuration.

use serde::{Deserialize, Serialize};

use super::auth::Principal;
use super::{Core, MgmtError};

/// sled `settings` key of the upload limit (decimal bytes per second; 0 = unlimited).
const UPLOAD_LIMIT_KEY: &str = "upload_limit_bytes_per_sec";
/// 10 Gbit/s: anything above is a typo, not a limit.
const MAX_UPLOAD_LIMIT: u64 = 10_000_000_000 / 8;

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SettingsView {
    /// Where recovery points go.
    pub vault_url: String,
    /// Upload bandwidth limit in bytes per second; 0 = unlimited.
    pub upload_limit_bytes_per_sec: u64,
    /// RPO target in seconds (a machine whose last point is older is flagged).
    pub rpo_target_secs: u64,
    /// Agents connect here (mutual TLS).
    pub listen_data: String,
    /// This API and the dashboard.
    pub listen_management: String,
    /// SHA-256 fingerprint of the appliance CA that agents pin.
    pub ca_fingerprint: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsUpdate {
    /// Upload bandwidth limit in bytes per second; 0 = unlimited.
    pub upload_limit_bytes_per_sec: Option<u64>,
}

impl Core {
    /// The persisted upload limit (0 when never set).
    pub fn upload_limit(&self) -> Result<u64, MgmtError> {
        Ok(self
            .state
            .setting(UPLOAD_LIMIT_KEY)?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    pub fn settings(&self) -> Result<SettingsView, MgmtError> {
        Ok(SettingsView {
            vault_url: crate::vault_access::read_location_file(&self.cfg.data_dir)
                .ok()
                .flatten()
                .map_or_else(|| self.cfg.vault_url.clone(), |target| target.url),
            upload_limit_bytes_per_sec: self.upload_limit()?,
            rpo_target_secs: super::catalog::RPO_TARGET_SECS,
            listen_data: self.cfg.listen_data.clone(),
            listen_management: self.cfg.listen_management.clone(),
            ca_fingerprint: self.tls.ca_fingerprint(),
        })
    }

    pub fn update_settings(
        &self,
        by: &Principal,
        source: &str,
        update: SettingsUpdate,
    ) -> Result<SettingsView, MgmtError> {
        if let Some(limit) = update.upload_limit_bytes_per_sec {
            if limit > MAX_UPLOAD_LIMIT {
                return Err(MgmtError::invalid(
                    "upload_limit_bytes_per_sec",
                    format!("at most {MAX_UPLOAD_LIMIT} (10 Gbit/s); 0 means unlimited"),
                ));
            }
            self.state
                .set_setting(UPLOAD_LIMIT_KEY, &limit.to_string())?;
            if let Some(running) = self.running() {
                running.shared.set_upload_limit(limit);
            }
            self.state.audit_as(
                &by.user,
                source,
                "settings_changed",
                &format!("upload_limit_bytes_per_sec={limit}"),
            )?;
        }
        self.settings()
    }
}
