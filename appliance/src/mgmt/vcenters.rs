//! vCenters the appliance discovers VMs in: added, changed and removed through the API, followed by
//! `actors::discovery` (one worker each), their inventory kept in sled.
//!
//! ## sled trees (every value is a `crate::state` record: `FS`, version 1, JSON body)
//!
//! | tree | key | value |
//! |---|---|---|
//! | `vcenters` | vCenter id | [`VcenterRecord`]: URL, user, sealed password, pinned thumbprint, health |
//! | `vcenter_vms` | `<vCenter id>/<moref>` | [`VcenterVm`] as discovered (without `agent_id`, which is matched when read) |
//!
//! The password is sealed with `<data dir>/credentials.key` (see `vcenter_seal.rs`) and never leaves the
//! appliance through the API. A vCenter is only stored after a login with its URL, credential and
//! thumbprint worked, so a typo is answered at once rather than found later as an unhealthy vCenter.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actors::discovery::{
    Connector, Credentials, Discovery, DiscoveryConfig, Failure, TlsTrust, VcenterTarget,
};
use serde::{Deserialize, Serialize};

use super::auth::{Principal, Role};
use super::{MgmtError, Page, PageRequest};
use crate::state::{decode_record, encode_record, now_rfc3339, State, StateError};

#[cfg(test)]
#[path = "vcenter_api_tests.rs"]
mod api_tests;
#[path = "vcenter_inventory.rs"]
mod inventory;
#[cfg(test)]
#[path = "vcenter_inventory_tests.rs"]
mod inventory_tests;
#[path = "vcenter_plugin_roles.rs"]
mod plugin_roles;
#[path = "vcenter_seal.rs"]
pub mod seal;
#[cfg(test)]
#[path = "vcenter_testkit.rs"]
pub(crate) mod testkit;
#[cfg(test)]
#[path = "vcenters_tests.rs"]
mod tests;
#[path = "vcenter_validate.rs"]
mod validate;

pub use inventory::{VcenterVm, VmDisk, VmNic, VmQuery};
pub use plugin_roles::PluginTarget;
pub use validate::{normalize_thumbprint, normalize_url};

const VCENTERS_TREE: &str = "vcenters";
const VMS_TREE: &str = "vcenter_vms";
/// How long adding or changing a vCenter waits for its login.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether discovery currently works for a vCenter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    Ok,
    Unhealthy,
}

/// What the `vcenters` tree keeps per vCenter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VcenterRecord {
    pub id: String,
    pub url: String,
    pub username: String,
    /// See `vcenter_seal.rs`.
    pub password_sealed: String,
    /// Colon hex, upper case: SHA-256 (32 bytes) or SHA-1 (20 bytes), as the operator gave it.
    pub thumbprint: String,
    pub added_at: String,
    pub health: HealthState,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub last_sync: Option<String>,
    /// On a certificate mismatch: the SHA-256 thumbprint the vCenter presents now.
    #[serde(default)]
    pub presented_thumbprint: Option<String>,
    /// Whether discovery retries by itself (false: it waits for a fix by an operator).
    #[serde(default)]
    pub retrying: bool,
    /// vCenter plugin: vCenter user name (or `*`) -> Ferry role.
    #[serde(default)]
    pub plugin_roles: BTreeMap<String, Role>,
}

/// A vCenter as the API shows it (never its password).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VcenterView {
    pub id: String,
    /// `https://host[:port]/sdk`.
    pub url: String,
    pub username: String,
    /// The pinned certificate thumbprint (colon hex; SHA-256 or SHA-1).
    pub thumbprint: String,
    /// RFC 3339, UTC.
    pub added_at: String,
    pub health: HealthState,
    /// Why discovery is unhealthy, and how to fix it.
    pub last_error: Option<String>,
    /// RFC 3339, UTC: the last complete inventory.
    pub last_sync: Option<String>,
    /// When the vCenter presents another certificate: its SHA-256 thumbprint, to check and accept
    /// (`PATCH` with `{"thumbprint"}`).
    pub presented_thumbprint: Option<String>,
    /// VMs discovered.
    pub vm_count: usize,
    /// The Ferry role of each vCenter user the vCenter plugin signs in (`*`: everyone else).
    #[serde(default)]
    pub plugin_roles: BTreeMap<String, Role>,
}

/// `POST /api/v1/vcenters`.
#[derive(Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewVcenter {
    /// `https://host[:port][/sdk]`.
    pub url: String,
    pub username: String,
    pub password: String,
    /// The vCenter certificate's SHA-256 or SHA-1 thumbprint, hex with or without colons.
    pub thumbprint: String,
}

impl std::fmt::Debug for NewVcenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewVcenter")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("thumbprint", &self.thumbprint)
            .finish_non_exhaustive()
    }
}

/// `PATCH /api/v1/vcenters/{id}`: a new credential (`username` and/or `password`), or a new trusted
/// thumbprint, or both.
#[derive(Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VcenterUpdate {
    pub username: Option<String>,
    pub password: Option<String>,
    pub thumbprint: Option<String>,
    /// Replaces the plugin's role table, vCenter user (`DOMAIN\user`) or `*` -> role (no login).
    pub plugin_roles: Option<BTreeMap<String, Role>>,
}

impl std::fmt::Debug for VcenterUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VcenterUpdate")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "(given)"))
            .field("thumbprint", &self.thumbprint)
            .field("plugin_roles", &self.plugin_roles)
            .finish()
    }
}

struct Inner {
    state: State,
    data_dir: PathBuf,
    records: sled::Tree,
    vms: sled::Tree,
    /// Serializes read-modify-write of records (API changes and health reports).
    write: Mutex<()>,
    key: Mutex<Option<seal::CredentialKey>>,
    connector: Arc<dyn Connector>,
    discovery_config: DiscoveryConfig,
    discovery: Mutex<Option<Discovery>>,
}

/// The vCenters service. Cheap to clone.
#[derive(Clone)]
pub struct Vcenters {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Vcenters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vcenters").finish_non_exhaustive()
    }
}

fn decode<T: serde::de::DeserializeOwned>(
    tree: &'static str,
    key: &[u8],
    raw: &[u8],
) -> Result<T, StateError> {
    let corrupt = |reason: String| StateError::Corrupt {
        tree,
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
    };
    let body = decode_record(raw).map_err(corrupt)?;
    serde_json::from_slice(body).map_err(|e| corrupt(e.to_string()))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    encode_record(&serde_json::to_vec(value).expect("vCenter records always serialize"))
}

fn not_found(id: &str) -> MgmtError {
    MgmtError::NotFound(format!("no vCenter {id}"))
}

/// The trust a pinned thumbprint stands for.
fn trust_of(thumbprint: &str) -> TlsTrust {
    TlsTrust::Thumbprint(thumbprint.to_string())
}

/// A failed login of an add or update, as the field the caller should fix.
fn login_error(failure: Failure, url: &str, thumbprint: &str) -> MgmtError {
    match failure {
        Failure::InvalidLogin => MgmtError::invalid(
            "password",
            "the vCenter rejected this user name and password",
        ),
        Failure::CertificateMismatch {
            presented_sha256, ..
        } => MgmtError::invalid(
            "thumbprint",
            format!(
                "the vCenter at {url} presents a certificate with SHA-256 thumbprint \
                 {presented_sha256}, not {thumbprint}; if you trust that certificate, send its thumbprint"
            ),
        ),
        Failure::Other { message } => {
            MgmtError::invalid("url", format!("cannot log in to the vCenter at {url}: {message}"))
        }
    }
}

impl Vcenters {
    /// Opens the trees. `connector` logs in to vCenters (the vSphere client; tests pass a stand-in).
    pub fn new(
        state: State,
        data_dir: PathBuf,
        connector: Arc<dyn Connector>,
    ) -> Result<Vcenters, MgmtError> {
        let db = state.db();
        Ok(Vcenters {
            inner: Arc::new(Inner {
                records: db.open_tree(VCENTERS_TREE)?,
                vms: db.open_tree(VMS_TREE)?,
                state,
                data_dir,
                write: Mutex::new(()),
                key: Mutex::new(None),
                connector,
                discovery_config: DiscoveryConfig::default(),
                discovery: Mutex::new(None),
            }),
        })
    }

    /// The same service with other discovery timings (tests use short backoffs).
    pub fn with_discovery_config(self, config: DiscoveryConfig) -> Vcenters {
        let inner = &self.inner;
        Vcenters {
            inner: Arc::new(Inner {
                state: inner.state.clone(),
                data_dir: inner.data_dir.clone(),
                records: inner.records.clone(),
                vms: inner.vms.clone(),
                write: Mutex::new(()),
                key: Mutex::new(None),
                connector: inner.connector.clone(),
                discovery_config: config,
                discovery: Mutex::new(None),
            }),
        }
    }

    /// The credential key, loaded (or created) on first use.
    fn key(&self) -> Result<seal::CredentialKey, MgmtError> {
        let mut key = self.inner.key.lock().expect("vcenter key lock");
        if let Some(key) = key.as_ref() {
            return Ok(key.clone());
        }
        let loaded = seal::CredentialKey::load_or_create(&self.inner.data_dir)?;
        *key = Some(loaded.clone());
        Ok(loaded)
    }

    fn record(&self, id: &str) -> Result<Option<VcenterRecord>, MgmtError> {
        match self.inner.records.get(id.as_bytes())? {
            Some(raw) => Ok(Some(decode(VCENTERS_TREE, id.as_bytes(), &raw)?)),
            None => Ok(None),
        }
    }

    fn records(&self) -> Result<Vec<VcenterRecord>, MgmtError> {
        self.inner
            .records
            .iter()
            .map(|entry| {
                let (key, raw) = entry?;
                Ok(decode(VCENTERS_TREE, &key, &raw)?)
            })
            .collect()
    }

    fn put(&self, record: &VcenterRecord) -> Result<(), MgmtError> {
        self.inner
            .records
            .insert(record.id.as_bytes(), encode(record))?;
        Ok(())
    }

    fn view(&self, r: VcenterRecord) -> VcenterView {
        VcenterView {
            vm_count: self.inner.vms.scan_prefix(format!("{}/", r.id)).count(),
            id: r.id,
            url: r.url,
            username: r.username,
            thumbprint: r.thumbprint,
            added_at: r.added_at,
            health: r.health,
            last_error: r.last_error,
            last_sync: r.last_sync,
            presented_thumbprint: r.presented_thumbprint,
            plugin_roles: r.plugin_roles,
        }
    }

    /// The target discovery follows for a stored vCenter.
    fn target(&self, r: &VcenterRecord) -> Result<VcenterTarget, MgmtError> {
        let password = self.key()?.open(&r.id, &r.password_sealed)?;
        Ok(VcenterTarget {
            id: r.id.clone(),
            url: r.url.clone(),
            credentials: Credentials {
                username: r.username.clone(),
                password,
            },
            trust: trust_of(&r.thumbprint),
        })
    }

    /// The login of stored vCenter `id` (URL, credentials, pinned trust), as discovery uses it:
    /// push jobs reach guests through it.
    pub(crate) fn login_target(&self, id: &str) -> Result<VcenterTarget, MgmtError> {
        let record = self.record(id)?.ok_or_else(|| not_found(id))?;
        self.target(&record)
    }

    /// Logs in once with `target` and logs out again: the check before anything is stored.
    async fn check_login(&self, target: &VcenterTarget, thumbprint: &str) -> Result<(), MgmtError> {
        let connect = self.inner.connector.connect(target);
        match tokio::time::timeout(LOGIN_TIMEOUT, connect).await {
            Ok(Ok(session)) => {
                let _ = tokio::time::timeout(Duration::from_secs(5), session.close()).await;
                Ok(())
            }
            Ok(Err(failure)) => Err(login_error(failure, &target.url, thumbprint)),
            Err(_) => Err(MgmtError::invalid(
                "url",
                format!(
                    "the vCenter at {} did not answer within {} s",
                    target.url,
                    LOGIN_TIMEOUT.as_secs()
                ),
            )),
        }
    }

    fn discovery(&self) -> Option<Discovery> {
        self.inner.discovery.lock().expect("discovery lock").clone()
    }

    pub fn list(&self, page: PageRequest) -> Result<Page<VcenterView>, MgmtError> {
        let mut records = self.records()?;
        records.sort_by(|a, b| (&a.url, &a.id).cmp(&(&b.url, &b.id)));
        page.apply(records.into_iter().map(|r| self.view(r)).collect())
    }

    pub fn get(&self, id: &str) -> Result<VcenterView, MgmtError> {
        let record = self.record(id)?.ok_or_else(|| not_found(id))?;
        Ok(self.view(record))
    }

    /// Adds a vCenter after a successful login, and starts discovering it.
    pub async fn add(
        &self,
        by: &Principal,
        source: &str,
        new: NewVcenter,
    ) -> Result<VcenterView, MgmtError> {
        let url = normalize_url(&new.url)?;
        let username = validate::username(&new.username)?;
        validate::password(&new.password)?;
        let thumbprint = normalize_thumbprint(&new.thumbprint)?;
        if self.records()?.iter().any(|r| r.url == url) {
            return Err(MgmtError::Conflict(format!(
                "the vCenter {url} is already added"
            )));
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let target = VcenterTarget {
            id: id.clone(),
            url: url.clone(),
            credentials: Credentials {
                username: username.clone(),
                password: new.password.clone(),
            },
            trust: trust_of(&thumbprint),
        };
        self.check_login(&target, &thumbprint).await?;
        let record = VcenterRecord {
            password_sealed: self.key()?.seal(&id, &new.password),
            id: id.clone(),
            url: url.clone(),
            username: username.clone(),
            thumbprint: thumbprint.clone(),
            added_at: now_rfc3339(),
            health: HealthState::Ok,
            last_error: None,
            last_sync: None,
            presented_thumbprint: None,
            retrying: false,
            plugin_roles: BTreeMap::new(),
        };
        {
            let _write = self.inner.write.lock().expect("vcenter write lock");
            // Checked again under the lock: two adds of one URL racing through their logins.
            if self.records()?.iter().any(|r| r.url == url) {
                return Err(MgmtError::Conflict(format!(
                    "the vCenter {url} is already added"
                )));
            }
            self.put(&record)?;
        }
        self.inner.state.audit_as(
            &by.user,
            source,
            "vcenter_added",
            &format!("{id} {url} (user {username}, thumbprint {thumbprint})"),
        )?;
        self.inner.state.flush()?;
        if let Some(discovery) = self.discovery() {
            discovery.set_target(target);
        }
        Ok(self.view(record))
    }

    /// Changes the credential or the trusted thumbprint after a successful login with the result; a
    /// vCenter waiting for exactly this fix resumes discovery at once.
    pub async fn update(
        &self,
        by: &Principal,
        source: &str,
        id: &str,
        update: VcenterUpdate,
    ) -> Result<VcenterView, MgmtError> {
        let roles = update
            .plugin_roles
            .as_ref()
            .map(plugin_roles::check)
            .transpose()?;
        if update.username.is_none() && update.password.is_none() && update.thumbprint.is_none() {
            return match roles {
                Some(roles) => self.set_plugin_roles(by, source, id, roles),
                None => Err(MgmtError::BadRequest(
                    "nothing to change: send username and/or password, thumbprint, or plugin_roles"
                        .into(),
                )),
            };
        }
        let current = self.record(id)?.ok_or_else(|| not_found(id))?;
        let username = match &update.username {
            Some(u) => validate::username(u)?,
            None => current.username.clone(),
        };
        let password = match &update.password {
            Some(p) => {
                validate::password(p)?;
                p.clone()
            }
            None => self.key()?.open(id, &current.password_sealed)?,
        };
        let thumbprint = match &update.thumbprint {
            Some(t) => normalize_thumbprint(t)?,
            None => current.thumbprint.clone(),
        };
        let target = VcenterTarget {
            id: id.to_string(),
            url: current.url.clone(),
            credentials: Credentials {
                username: username.clone(),
                password: password.clone(),
            },
            trust: trust_of(&thumbprint),
        };
        self.check_login(&target, &thumbprint).await?;
        let sealed = self.key()?.seal(id, &password);
        let record = {
            let _write = self.inner.write.lock().expect("vcenter write lock");
            let mut record = self.record(id)?.ok_or_else(|| not_found(id))?;
            record.username.clone_from(&username);
            record.password_sealed = sealed;
            record.thumbprint.clone_from(&thumbprint);
            // The login just worked: what was wrong is fixed.
            record.health = HealthState::Ok;
            record.last_error = None;
            record.presented_thumbprint = None;
            record.retrying = false;
            if let Some(roles) = &roles {
                record.plugin_roles.clone_from(roles);
            }
            self.put(&record)?;
            record
        };
        let mut changed = Vec::new();
        if update.username.is_some() {
            changed.push(format!("user {username}"));
        }
        if update.password.is_some() {
            changed.push("password".to_string());
        }
        if update.thumbprint.is_some() {
            changed.push(format!("thumbprint {thumbprint}"));
        }
        if let Some(roles) = &roles {
            changed.push(plugin_roles::describe(roles));
        }
        self.inner.state.audit_as(
            &by.user,
            source,
            "vcenter_updated",
            &format!("{id} {}: {}", record.url, changed.join(", ")),
        )?;
        self.inner.state.flush()?;
        if let Some(discovery) = self.discovery() {
            discovery.set_target(target);
        }
        Ok(self.view(record))
    }

    /// Stops discovering a vCenter and forgets it and its inventory.
    pub async fn remove(&self, by: &Principal, source: &str, id: &str) -> Result<(), MgmtError> {
        let record = self.record(id)?.ok_or_else(|| not_found(id))?;
        if let Some(discovery) = self.discovery() {
            discovery.remove(id).await;
        }
        {
            let _write = self.inner.write.lock().expect("vcenter write lock");
            self.inner.records.remove(id.as_bytes())?;
            self.clear_inventory(id)?;
        }
        self.inner.state.audit_as(
            &by.user,
            source,
            "vcenter_removed",
            &format!("{id} {}", record.url),
        )?;
        self.inner.state.flush()?;
        Ok(())
    }

    /// Starts discovery of every stored vCenter (the daemon calls this once the data path runs). A
    /// vCenter whose password cannot be opened is marked unhealthy and skipped.
    pub fn start_discovery(&self) -> Result<(), MgmtError> {
        let discovery = Discovery::start(
            Arc::new(inventory::Sink(self.clone())),
            self.inner.connector.clone(),
            self.inner.discovery_config.clone(),
        );
        *self.inner.discovery.lock().expect("discovery lock") = Some(discovery.clone());
        for record in self.records()? {
            match self.target(&record) {
                Ok(target) => discovery.set_target(target),
                Err(err) => {
                    tracing::error!(vcenter = %record.id, %err, "not discovering this vCenter");
                    self.set_health_record(
                        &record.id,
                        HealthState::Unhealthy,
                        Some(err.to_string()),
                        None,
                        false,
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Stops discovery (at shutdown).
    pub async fn stop_discovery(&self) {
        let discovery = self.inner.discovery.lock().expect("discovery lock").take();
        if let Some(discovery) = discovery {
            discovery.shutdown().await;
        }
    }
}
