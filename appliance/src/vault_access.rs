//! Finding, testing and opening the vault. First-boot setup creates it and records where it is
//! in `<data dir>/vault-location.json`; the daemon and the admin commands only ever open it (the
//! commands may run on a machine with no data dir at all, given the vault URL and passphrase).
//!
//! `vault-location.json` (0600) is JSON tagged with its format and version, like the data path's
//! state files:
//!
//! ```text
//! {"format":"ferry-vault-location","version":1,"url":"az://acct/c?endpoint=..",
//!  "azure_access_key":"..","s3_access_key_id":null,"s3_secret_access_key":null,
//!  "s3_region":null,"s3_endpoint":null}
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use vault::{KdfParams, ObjectStore, StoreOptions, Vault, VaultError};

use crate::config::Config;
use crate::files::{self, PRIVATE_FILE_MODE};
use crate::secrets;

pub const VAULT_LOCATION_FILE: &str = "vault-location.json";
const LOCATION_FORMAT: &str = "ferry-vault-location";
const LOCATION_VERSION: u32 = 1;

/// How long setup's connectivity test may take before the target counts as unreachable.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

pub fn vault_location_path(data_dir: &Path) -> PathBuf {
    data_dir.join(VAULT_LOCATION_FILE)
}

/// Where the vault is and the credentials of its store (not the passphrase).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultTarget {
    pub url: String,
    pub azure_access_key: Option<String>,
    pub s3_access_key_id: Option<String>,
    pub s3_secret_access_key: Option<String>,
    pub s3_region: Option<String>,
    pub s3_endpoint: Option<String>,
}

impl std::fmt::Debug for VaultTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultTarget")
            .field("url", &self.url)
            .field("s3_region", &self.s3_region)
            .field("s3_endpoint", &self.s3_endpoint)
            .finish_non_exhaustive()
    }
}

/// What kind of store a vault URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    Local,
    Azure,
    S3,
}

impl VaultTarget {
    /// The target of the configuration alone (no location file).
    pub fn from_config(cfg: &Config) -> VaultTarget {
        VaultTarget {
            url: cfg.vault_url.clone(),
            azure_access_key: cfg.azure_access_key.clone(),
            ..VaultTarget::default()
        }
    }

    pub fn kind(&self) -> StoreKind {
        if self.url.starts_with("az://") {
            StoreKind::Azure
        } else if self.url.starts_with("s3://") {
            StoreKind::S3
        } else {
            StoreKind::Local
        }
    }

    pub fn store_options(&self) -> StoreOptions {
        StoreOptions {
            azure_access_key: self.azure_access_key.clone(),
            s3_access_key_id: self.s3_access_key_id.clone(),
            s3_secret_access_key: self.s3_secret_access_key.clone(),
            s3_region: self.s3_region.clone(),
            s3_endpoint: self.s3_endpoint.clone(),
            // Plain http is the operator's explicit choice in the URL (emulators, labs).
            allow_http: true,
        }
    }

    /// The local folder of a `file://` or plain-path vault; `None` for remote stores.
    pub fn local_dir(&self) -> Option<PathBuf> {
        if self.url.starts_with("file://") {
            // As the store reads it (percent-decoded); a relative file:// is no folder at all.
            return url::Url::parse(&self.url).ok()?.to_file_path().ok();
        }
        (!self.url.contains("://")).then(|| PathBuf::from(&self.url))
    }

    pub fn open_store(&self) -> Result<Arc<dyn ObjectStore>, VaultError> {
        vault::open_store(&self.url, &self.store_options())
    }
}

#[derive(Serialize, Deserialize)]
struct LocationFile {
    format: String,
    version: u32,
    #[serde(flatten)]
    target: VaultTarget,
}

/// The bytes of `vault-location.json` for `target`.
pub fn encode_location(target: &VaultTarget) -> Vec<u8> {
    let file = LocationFile {
        format: LOCATION_FORMAT.to_string(),
        version: LOCATION_VERSION,
        target: target.clone(),
    };
    serde_json::to_vec_pretty(&file).expect("vault locations serialize")
}

fn decode_location(path: &Path, bytes: &[u8]) -> anyhow::Result<VaultTarget> {
    let file: LocationFile =
        serde_json::from_slice(bytes).with_context(|| format!("{} is corrupt", path.display()))?;
    if file.format != LOCATION_FORMAT {
        bail!(
            "{} is a {:?} file, expected {LOCATION_FORMAT:?}",
            path.display(),
            file.format
        );
    }
    if file.version != LOCATION_VERSION {
        bail!(
            "{}: format version {} is not supported (this build reads {LOCATION_VERSION})",
            path.display(),
            file.version
        );
    }
    Ok(file.target)
}

/// Writes `<data dir>/vault-location.json` (0600, atomically, replacing any previous one).
pub fn write_location_file(data_dir: &Path, target: &VaultTarget) -> std::io::Result<()> {
    files::replace_file(
        &vault_location_path(data_dir),
        &encode_location(target),
        PRIVATE_FILE_MODE,
    )
}

/// Reads `<data dir>/vault-location.json`; `None` before setup wrote it.
pub fn read_location_file(data_dir: &Path) -> anyhow::Result<Option<VaultTarget>> {
    let path = vault_location_path(data_dir);
    match std::fs::read(&path) {
        Ok(bytes) => decode_location(&path, &bytes).map(Some),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

/// Everything needed to open a vault.
#[derive(Clone)]
pub struct VaultLocation {
    pub target: VaultTarget,
    pub passphrase: String,
}

impl std::fmt::Debug for VaultLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultLocation")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl VaultLocation {
    /// Which vault to open: `--vault` (with the configuration's credentials), else the location
    /// setup recorded in the data dir, else the configuration. The passphrase: the
    /// `--vault-passphrase-file`, else the data dir's `vault-passphrase`, else the
    /// configuration's. With both flags given nothing of the data dir is read.
    pub fn resolve(
        cfg: &Config,
        url: Option<&str>,
        passphrase_file: Option<&Path>,
    ) -> anyhow::Result<VaultLocation> {
        let target = match url {
            Some(url) => VaultTarget {
                url: url.to_string(),
                ..VaultTarget::from_config(cfg)
            },
            None => {
                read_location_file(&cfg.data_dir)?.unwrap_or_else(|| VaultTarget::from_config(cfg))
            }
        };
        let passphrase = match passphrase_file {
            Some(file) => secrets::read_secret_file(file)?,
            None => secrets::read_vault_passphrase(cfg)?,
        };
        Ok(VaultLocation { target, passphrase })
    }
}

/// Explains the vault errors an operator can act on.
fn explain(err: VaultError, url: &str) -> anyhow::Error {
    match err {
        VaultError::WrongPassphrase => {
            anyhow::anyhow!("the vault passphrase does not open the vault at {url}")
        }
        VaultError::NotInitialized => anyhow::anyhow!("there is no vault at {url}"),
        other => anyhow::Error::new(other).context(format!("vault at {url}")),
    }
}

/// Opens an existing vault; never creates one (nor, for a local vault, its folder).
pub async fn open_vault_readonly(loc: &VaultLocation) -> anyhow::Result<Vault> {
    let url = &loc.target.url;
    if let Some(dir) = loc.target.local_dir() {
        if !dir.is_dir() {
            bail!(
                "there is no vault at {url}: {} does not exist",
                dir.display()
            );
        }
    }
    let store = loc.target.open_store().map_err(|e| explain(e, url))?;
    Vault::open(store, &loc.passphrase)
        .await
        .map_err(|e| explain(e, url))
}

/// Opens the vault at `target`, creating it (and an Azure container) when there is none.
/// Returns the vault and whether it was created now.
pub async fn open_or_create(
    target: &VaultTarget,
    passphrase: &str,
    kdf: KdfParams,
) -> Result<(Vault, bool), VaultError> {
    if target.kind() == StoreKind::Azure {
        vault::ensure_azure_container(&target.url, &target.store_options()).await?;
    }
    let store = target.open_store()?;
    if Vault::is_initialized(&store).await? {
        return Ok((Vault::open(store, passphrase).await?, false));
    }
    match Vault::create(store.clone(), passphrase, kdf).await {
        Ok(vault) => {
            tracing::info!(url = %target.url, "created a new vault");
            Ok((vault, true))
        }
        // Created in between (a restart racing us, another appliance): open it.
        Err(VaultError::AlreadyInitialized) => Ok((Vault::open(store, passphrase).await?, false)),
        Err(e) => Err(e),
    }
}

/// Setup's connectivity test: the target accepts a write and a delete, within
/// [`PROBE_TIMEOUT`]. A local folder is created; an Azure container too (setup would create
/// it anyway). Returns whether the target already holds a Ferry vault; the error is a sentence
/// for the person at the form.
pub async fn probe_target(target: &VaultTarget) -> Result<bool, String> {
    match tokio::time::timeout(PROBE_TIMEOUT, probe_inner(target)).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "{} did not answer within {} s",
            target.url,
            PROBE_TIMEOUT.as_secs()
        )),
    }
}

async fn probe_inner(target: &VaultTarget) -> Result<bool, String> {
    let url = &target.url;
    let name = format!(".ferry-setup-probe-{}", uuid::Uuid::new_v4().simple());
    if let Some(dir) = target.local_dir() {
        // Checked by hand first: object_store would report only "generic error".
        let probe = dir.join(&name);
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&probe, b"probe"))
            .and_then(|()| std::fs::remove_file(&probe))
            .map_err(|e| format!("the folder {} is not writable: {e}", dir.display()))?;
    }
    if target.kind() == StoreKind::Azure {
        vault::ensure_azure_container(url, &target.store_options())
            .await
            .map_err(|e| format!("cannot reach or create the container of {url}: {e}"))?;
    }
    let store = target
        .open_store()
        .map_err(|e| format!("{url} is not a usable vault URL: {e}"))?;
    vault::probe_write(store.as_ref(), &name)
        .await
        .map_err(|e| format!("writing and deleting a test object in {url} failed: {e}"))?;
    Vault::is_initialized(&store)
        .await
        .map_err(|e| format!("reading {url} failed: {e}"))
}

#[cfg(test)]
#[path = "vault_access_tests.rs"]
mod tests;
