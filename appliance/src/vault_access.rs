//! Finding and opening the vault: created by the daemon on first start, only ever opened by
//! the admin commands (which may run on a machine with no data dir at all, given the vault URL
//! and the passphrase).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use vault::{KdfParams, StoreOptions, Vault, VaultError};

use crate::config::Config;
use crate::secrets;

/// Everything needed to open a vault.
#[derive(Clone)]
pub struct VaultLocation {
    pub url: String,
    pub passphrase: String,
    pub azure_access_key: Option<String>,
}

impl std::fmt::Debug for VaultLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultLocation")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl VaultLocation {
    /// The configured vault, overridden by `--vault` and `--vault-passphrase-file`. With both
    /// flags given nothing of the data dir is read.
    pub fn resolve(
        cfg: &Config,
        url: Option<&str>,
        passphrase_file: Option<&Path>,
    ) -> anyhow::Result<VaultLocation> {
        let passphrase = match passphrase_file {
            Some(file) => secrets::read_secret_file(file)?,
            None => secrets::read_vault_passphrase(cfg)?,
        };
        Ok(VaultLocation {
            url: url.unwrap_or(&cfg.vault_url).to_string(),
            passphrase,
            azure_access_key: cfg.azure_access_key.clone(),
        })
    }

    fn store_options(&self) -> StoreOptions {
        StoreOptions {
            azure_access_key: self.azure_access_key.clone(),
            // Plain http is the operator's explicit choice in the URL (emulators, labs).
            allow_http: true,
        }
    }

    /// The local folder of a `file://` or plain-path vault; `None` for remote stores.
    fn local_dir(&self) -> Option<PathBuf> {
        if let Some(rest) = self.url.strip_prefix("file://") {
            return Some(PathBuf::from(rest));
        }
        (!self.url.contains("://")).then(|| PathBuf::from(&self.url))
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
    if let Some(dir) = loc.local_dir() {
        if !dir.is_dir() {
            bail!(
                "there is no vault at {}: {} does not exist",
                loc.url,
                dir.display()
            );
        }
    }
    let store =
        vault::open_store(&loc.url, &loc.store_options()).map_err(|e| explain(e, &loc.url))?;
    Vault::open(store, &loc.passphrase)
        .await
        .map_err(|e| explain(e, &loc.url))
}

/// Opens the configured vault, creating it (and an Azure container) on first start.
/// Returns the vault and whether it was created now.
pub async fn open_or_create_vault(cfg: &Config, passphrase: &str) -> anyhow::Result<(Vault, bool)> {
    let loc = VaultLocation {
        url: cfg.vault_url.clone(),
        passphrase: passphrase.to_string(),
        azure_access_key: cfg.azure_access_key.clone(),
    };
    let opts = loc.store_options();
    if loc.url.starts_with("az://") {
        vault::ensure_azure_container(&loc.url, &opts)
            .await
            .with_context(|| format!("creating the Azure container of {}", loc.url))?;
    }
    let store = vault::open_store(&loc.url, &opts).map_err(|e| explain(e, &loc.url))?;
    let initialized = Vault::is_initialized(&store)
        .await
        .map_err(|e| explain(e, &loc.url))?;
    if initialized {
        let vault = Vault::open(store, passphrase)
            .await
            .map_err(|e| explain(e, &loc.url))?;
        return Ok((vault, false));
    }
    match Vault::create(store.clone(), passphrase, KdfParams::default()).await {
        Ok(vault) => {
            tracing::info!(url = %loc.url, "created a new vault");
            Ok((vault, true))
        }
        // Another appliance (or a restart racing us) created it in between: open theirs.
        Err(VaultError::AlreadyInitialized) => {
            let vault = Vault::open(store, passphrase)
                .await
                .map_err(|e| explain(e, &loc.url))?;
            Ok((vault, false))
        }
        Err(e) => Err(explain(e, &loc.url)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with_vault(url: &str) -> Config {
        let figment = figment::Figment::new()
            .merge(figment::providers::Serialized::default("vault_url", url))
            .merge(figment::providers::Serialized::default(
                "vault_passphrase",
                "pw",
            ));
        Config::from_figment(figment).unwrap()
    }

    /// Argon2 with the default 64 MiB is slow in debug builds; these tests create once.
    #[tokio::test]
    async fn create_then_open_then_wrong_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("vault").to_string_lossy().into_owned();
        let cfg = config_with_vault(&url);
        let (_, created) = open_or_create_vault(&cfg, "pw").await.unwrap();
        assert!(created);
        let (_, created) = open_or_create_vault(&cfg, "pw").await.unwrap();
        assert!(!created);

        let loc = VaultLocation::resolve(&cfg, None, None).unwrap();
        let vault = open_vault_readonly(&loc).await.unwrap();
        assert!(vault.list_points().await.unwrap().is_empty());

        let wrong = VaultLocation {
            passphrase: "nope".into(),
            ..loc
        };
        let err = open_vault_readonly(&wrong).await.unwrap_err().to_string();
        assert!(err.contains("passphrase does not open"), "{err}");
        let err = open_or_create_vault(&cfg, "nope")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("passphrase does not open"), "{err}");
    }

    #[tokio::test]
    async fn readonly_open_never_creates() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent");
        let loc = VaultLocation {
            url: missing.to_string_lossy().into_owned(),
            passphrase: "pw".into(),
            azure_access_key: None,
        };
        let err = open_vault_readonly(&loc).await.unwrap_err().to_string();
        assert!(err.contains("there is no vault"), "{err}");
        assert!(!missing.exists());

        std::fs::create_dir(&missing).unwrap();
        let err = open_vault_readonly(&loc).await.unwrap_err().to_string();
        assert!(err.contains("there is no vault"), "{err}");
    }

    #[test]
    fn flags_override_the_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let pass_file = dir.path().join("pass");
        std::fs::write(&pass_file, "from-file\n").unwrap();
        let cfg = config_with_vault("/configured");
        let loc =
            VaultLocation::resolve(&cfg, Some("file:///elsewhere"), Some(&pass_file)).unwrap();
        assert_eq!(loc.url, "file:///elsewhere");
        assert_eq!(loc.passphrase, "from-file");
        assert_eq!(loc.local_dir(), Some(PathBuf::from("/elsewhere")));
        let loc = VaultLocation::resolve(&cfg, None, None).unwrap();
        assert_eq!(
            (loc.url.as_str(), loc.passphrase.as_str()),
            ("/configured", "pw")
        );
        let az = VaultLocation {
            url: "az://acct/c".into(),
            ..loc
        };
        assert_eq!(az.local_dir(), None);
        assert!(!format!("{az:?}").contains("pw"));
    }
}
