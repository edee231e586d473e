//! The appliance's configuration: built-in defaults, then a TOML file, then `APPLIANCE_*`
//! environment variables, each layer overriding the one before.
//!
//! Unknown keys are errors (and the error names the key), because a mistyped key that is
//! silently ignored leaves the appliance running on a default the operator thought was changed.

use std::fmt;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

/// The file read from the current directory when no `--config` is given (if it exists).
pub const DEFAULT_CONFIG_FILE: &str = "appliance.toml";
/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "APPLIANCE_";

const GIB: u64 = 1024 * 1024 * 1024;
const MIB: u64 = 1024 * 1024;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The keys an operator may set. Keys whose default depends on another key (`vault_url`,
/// `cache_dir`) are optional here and resolved in [`Config`].
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ConfigKeys {
    data_dir: PathBuf,
    listen_data: String,
    listen_management: String,
    listen_redirect: Option<String>,
    vault_url: Option<String>,
    vault_passphrase: Option<String>,
    azure_access_key: Option<String>,
    admin_password_file: Option<PathBuf>,
    cache_max_bytes: u64,
    cache_dir: Option<PathBuf>,
    pack_target_bytes: u64,
    full_map_every: u32,
    compress_threads: usize,
    upload_concurrency: usize,
    server_names: Vec<String>,
    log_format: LogFormat,
    agents_dir: Option<PathBuf>,
    agent_data_address: Option<String>,
}

impl Default for ConfigKeys {
    fn default() -> Self {
        ConfigKeys {
            data_dir: PathBuf::from("./ferry-data"),
            listen_data: "127.0.0.1:9443".to_string(),
            listen_management: "127.0.0.1:8443".to_string(),
            listen_redirect: None,
            vault_url: None,
            vault_passphrase: None,
            azure_access_key: None,
            admin_password_file: None,
            cache_max_bytes: 8 * GIB,
            cache_dir: None,
            pack_target_bytes: 8 * MIB,
            full_map_every: 16,
            compress_threads: available_cores(),
            upload_concurrency: 4,
            server_names: Vec::new(),
            log_format: LogFormat::Human,
            agents_dir: None,
            agent_data_address: None,
        }
    }
}

fn available_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Keys whose environment value is taken verbatim. figment would otherwise read a passphrase
/// `true` as a boolean or `1e5` as a number and refuse (or mangle) it.
const STRING_KEYS: &[&str] = &[
    "data_dir",
    "listen_data",
    "listen_management",
    "listen_redirect",
    "vault_url",
    "vault_passphrase",
    "azure_access_key",
    "admin_password_file",
    "cache_dir",
    "agents_dir",
    "agent_data_address",
];

/// `APPLIANCE_*` variables of [`STRING_KEYS`], as unparsed strings.
struct EnvStrings(Env);

impl Provider for EnvStrings {
    fn metadata(&self) -> Metadata {
        self.0.metadata()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let dict: Dict = self
            .0
            .iter()
            .map(|(key, value)| (key.to_string(), Value::from(value)))
            .collect();
        Ok(Map::from([(Profile::Default, dict)]))
    }
}

/// The resolved configuration. Every derived default is filled in.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    /// Root of everything the appliance keeps locally (state, TLS, secrets, cache).
    pub data_dir: PathBuf,
    /// Address of the agents' data listener (mutual TLS).
    pub listen_data: String,
    /// Address of the management listener (web UI, REST API).
    pub listen_management: String,
    /// Plain-HTTP address that only redirects browsers to the management listener (the image: port 80).
    pub listen_redirect: Option<String>,
    /// Where recovery points go: a plain path, `file://`, `az://` or `s3://` URL.
    pub vault_url: String,
    /// Vault passphrase from configuration; when absent, `<data_dir>/vault-passphrase` is used.
    pub vault_passphrase: Option<String>,
    /// Azure storage account key for `az://` vaults.
    pub azure_access_key: Option<String>,
    /// A file holding the first admin password: when set, first-boot setup runs unattended at
    /// start with this configuration's defaults (the OVF first-boot unit, test harnesses).
    pub admin_password_file: Option<PathBuf>,
    /// Upper bound of the change-log cache on disk; the receiver stops reading when it is full.
    pub cache_max_bytes: u64,
    /// Directory of the change-log cache.
    pub cache_dir: PathBuf,
    /// Size at which the compressor closes a pack.
    pub pack_target_bytes: u64,
    /// Every n-th point of a disk stores a full block map instead of a delta.
    pub full_map_every: u32,
    /// Threads of the compressor's pool.
    pub compress_threads: usize,
    /// Uploads in flight at once.
    pub upload_concurrency: usize,
    /// Extra DNS names or IP addresses for the server certificate.
    pub server_names: Vec<String>,
    /// Log line format.
    pub log_format: LogFormat,
    /// Folder of the agent binaries push installs copy into guests (`mobility-x86_64`,
    /// `mobility-aarch64`).
    pub agents_dir: PathBuf,
    /// HOST:PORT of the data listener as guests reach it, written into pushed agents' settings.
    /// Defaults to `listen_data` as given: a wildcard bind (`0.0.0.0`) is no address a guest can
    /// use, so an appliance listening on every interface sets this (the image does).
    pub agent_data_address: String,
}

// Secrets must never reach a log line through `{:?}`.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field("listen_data", &self.listen_data)
            .field("listen_management", &self.listen_management)
            .field("listen_redirect", &self.listen_redirect)
            .field("vault_url", &self.vault_url)
            .field("vault_passphrase", &redact(&self.vault_passphrase))
            .field("azure_access_key", &redact(&self.azure_access_key))
            // The path is not secret (the password is in the file, never read here).
            .field("admin_password_file", &self.admin_password_file)
            .field("cache_max_bytes", &self.cache_max_bytes)
            .field("cache_dir", &self.cache_dir)
            .field("pack_target_bytes", &self.pack_target_bytes)
            .field("full_map_every", &self.full_map_every)
            .field("compress_threads", &self.compress_threads)
            .field("upload_concurrency", &self.upload_concurrency)
            .field("server_names", &self.server_names)
            .field("log_format", &self.log_format)
            .field("agents_dir", &self.agents_dir)
            .field("agent_data_address", &self.agent_data_address)
            .finish()
    }
}

/// A configuration that could not be loaded. The message names the file or variable and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl From<figment::Error> for ConfigError {
    fn from(err: figment::Error) -> Self {
        // figment's Display of a multi-error shows only the first; list them all.
        let all: Vec<String> = err.into_iter().map(|e| e.to_string()).collect();
        ConfigError::Invalid(all.join("; "))
    }
}

impl Config {
    /// Loads defaults, then `file` (or `./appliance.toml` when `file` is `None` and it exists),
    /// then `APPLIANCE_*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let file = match file {
            Some(path) if !path.is_file() => return Err(ConfigError::MissingFile(path.into())),
            Some(path) => Some(path.to_path_buf()),
            None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.is_file()),
        };
        Self::from_figment(Self::figment(file.as_deref()))
    }

    /// The layered sources, without extracting them.
    pub fn figment(file: Option<&Path>) -> Figment {
        let mut figment = Figment::new();
        if let Some(path) = file {
            figment = figment.merge(Toml::file_exact(path));
        }
        // No `.split("_")`: keys such as `data_dir` contain underscores themselves.
        figment
            .merge(Env::prefixed(ENV_PREFIX).ignore(STRING_KEYS))
            .merge(EnvStrings(Env::prefixed(ENV_PREFIX).only(STRING_KEYS)))
    }

    /// Extracts and resolves a configuration from any set of sources.
    pub fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let keys: ConfigKeys = figment.extract()?;
        Config::resolve(keys)
    }

    fn resolve(keys: ConfigKeys) -> Result<Config, ConfigError> {
        let invalid = |msg: &str| Err(ConfigError::Invalid(msg.to_string()));
        if keys.data_dir.as_os_str().is_empty() {
            return invalid("data_dir must not be empty");
        }
        if keys.compress_threads == 0 {
            return invalid("compress_threads must be at least 1");
        }
        if keys.upload_concurrency == 0 {
            return invalid("upload_concurrency must be at least 1");
        }
        if keys.full_map_every == 0 {
            return invalid("full_map_every must be at least 1");
        }
        if keys.pack_target_bytes < 64 * 1024 {
            return invalid("pack_target_bytes must be at least 65536 (one block)");
        }
        if keys
            .admin_password_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return invalid(
                "admin_password_file must not be empty (leave it out for the web setup)",
            );
        }
        if keys.vault_passphrase.as_deref() == Some("") {
            return invalid(
                "vault_passphrase must not be empty (leave it out to use a generated one)",
            );
        }
        if keys
            .agents_dir
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return invalid("agents_dir must not be empty (leave it out for <data_dir>/agents)");
        }
        if keys
            .agent_data_address
            .as_deref()
            .is_some_and(|a| a.trim().is_empty())
        {
            return invalid(
                "agent_data_address must not be empty (leave it out to use listen_data)",
            );
        }
        let vault_url = keys
            .vault_url
            .unwrap_or_else(|| keys.data_dir.join("vault").to_string_lossy().into_owned());
        let cache_dir = keys
            .cache_dir
            .unwrap_or_else(|| keys.data_dir.join("cache"));
        let agents_dir = keys
            .agents_dir
            .unwrap_or_else(|| keys.data_dir.join("agents"));
        let agent_data_address = keys
            .agent_data_address
            .map(|a| a.trim().to_string())
            .unwrap_or_else(|| keys.listen_data.clone());
        Ok(Config {
            data_dir: keys.data_dir,
            listen_data: keys.listen_data,
            listen_management: keys.listen_management,
            listen_redirect: keys.listen_redirect.filter(|l| !l.is_empty()),
            vault_url,
            vault_passphrase: keys.vault_passphrase,
            azure_access_key: keys.azure_access_key,
            admin_password_file: keys.admin_password_file,
            cache_max_bytes: keys.cache_max_bytes,
            cache_dir,
            pack_target_bytes: keys.pack_target_bytes,
            full_map_every: keys.full_map_every,
            compress_threads: keys.compress_threads,
            upload_concurrency: keys.upload_concurrency,
            server_names: keys.server_names,
            log_format: keys.log_format,
            agents_dir,
            agent_data_address,
        })
    }
}

#[cfg(test)]
// figment's Jail closures must return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    fn load_in_jail(file: Option<&str>) -> Result<Config, ConfigError> {
        Config::load(file.map(Path::new))
    }

    #[test]
    fn defaults_without_file_or_env() {
        Jail::expect_with(|_jail| {
            let cfg = load_in_jail(None).unwrap();
            assert_eq!(cfg.data_dir, PathBuf::from("./ferry-data"));
            assert_eq!(cfg.listen_data, "127.0.0.1:9443");
            assert_eq!(cfg.listen_management, "127.0.0.1:8443");
            assert_eq!(cfg.vault_url, "./ferry-data/vault");
            assert_eq!(cfg.cache_dir, PathBuf::from("./ferry-data/cache"));
            assert_eq!(cfg.cache_max_bytes, 8 * GIB);
            assert_eq!(cfg.pack_target_bytes, 8 * MIB);
            assert_eq!(cfg.full_map_every, 16);
            assert_eq!(cfg.compress_threads, available_cores());
            assert_eq!(cfg.upload_concurrency, 4);
            assert!(cfg.server_names.is_empty());
            assert_eq!(cfg.log_format, LogFormat::Human);
            assert_eq!(cfg.vault_passphrase, None);
            assert_eq!(cfg.azure_access_key, None);
            assert_eq!(cfg.admin_password_file, None);
            assert_eq!(cfg.agents_dir, PathBuf::from("./ferry-data/agents"));
            assert_eq!(cfg.agent_data_address, "127.0.0.1:9443");
            Ok(())
        });
    }

    #[test]
    fn derived_defaults_follow_data_dir() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "appliance.toml",
                "data_dir = \"/srv/ferry\"\nlisten_data = \"0.0.0.0:9443\"",
            )?;
            let cfg = load_in_jail(None).unwrap();
            assert_eq!(cfg.vault_url, "/srv/ferry/vault");
            assert_eq!(cfg.cache_dir, PathBuf::from("/srv/ferry/cache"));
            assert_eq!(cfg.agents_dir, PathBuf::from("/srv/ferry/agents"));
            // Taken as given: the image sets agent_data_address when it binds every interface.
            assert_eq!(cfg.agent_data_address, "0.0.0.0:9443");
            Ok(())
        });
    }

    /// The configuration the image ships (image/overlay) is one this code accepts, with the
    /// addresses the image's units and firewall expect.
    #[test]
    fn the_image_configuration_loads() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "image.toml",
                include_str!("../../image/overlay/etc/ferry/appliance.toml"),
            )?;
            let cfg = load_in_jail(Some("image.toml")).unwrap();
            assert_eq!(cfg.data_dir, PathBuf::from("/var/lib/ferry"));
            assert_eq!(cfg.listen_management, "0.0.0.0:443");
            assert_eq!(cfg.listen_redirect.as_deref(), Some("0.0.0.0:80"));
            assert_eq!(cfg.listen_data, "0.0.0.0:9443");
            assert_eq!(cfg.agents_dir, PathBuf::from("/usr/lib/ferry/agents"));
            Ok(())
        });
    }

    #[test]
    fn push_install_keys_come_from_file_and_env() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "appliance.toml",
                "agents_dir = \"/opt/agents\"\nagent_data_address = \"dr.example.test:9443\"",
            )?;
            let cfg = load_in_jail(None).unwrap();
            assert_eq!(cfg.agents_dir, PathBuf::from("/opt/agents"));
            assert_eq!(cfg.agent_data_address, "dr.example.test:9443");
            jail.set_env("APPLIANCE_AGENTS_DIR", "/from/env/agents");
            jail.set_env("APPLIANCE_AGENT_DATA_ADDRESS", "10.0.0.5:9443");
            let cfg = load_in_jail(None).unwrap();
            assert_eq!(cfg.agents_dir, PathBuf::from("/from/env/agents"));
            assert_eq!(cfg.agent_data_address, "10.0.0.5:9443");
            assert_eq!(cfg.listen_data, "127.0.0.1:9443", "listen_data untouched");
            Ok(())
        });
    }

    #[test]
    fn empty_push_install_keys_are_refused() {
        Jail::expect_with(|jail| {
            jail.set_env("APPLIANCE_AGENTS_DIR", "");
            let err = load_in_jail(None).unwrap_err().to_string();
            assert!(err.contains("agents_dir"), "{err}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.create_file("appliance.toml", "agent_data_address = \"  \"")?;
            let err = load_in_jail(None).unwrap_err().to_string();
            assert!(err.contains("agent_data_address"), "{err}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.create_file("appliance.toml", "agent_data_address = 9443")?;
            let err = load_in_jail(None).unwrap_err().to_string();
            assert!(err.contains("agent_data_address"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn env_overrides_file_overrides_defaults() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "custom.toml",
                r#"
                data_dir = "/from/file"
                listen_data = "0.0.0.0:9443"
                upload_concurrency = 8
                server_names = ["dr.example.test", "10.0.0.5"]
                log_format = "json"
                "#,
            )?;
            jail.set_env("APPLIANCE_DATA_DIR", "/from/env");
            jail.set_env("APPLIANCE_CACHE_MAX_BYTES", "1073741824");
            jail.set_env("APPLIANCE_VAULT_URL", "az://account/container");
            jail.set_env("APPLIANCE_ADMIN_PASSWORD_FILE", "/run/ferry/admin-pass");
            let cfg = load_in_jail(Some("custom.toml")).unwrap();
            assert_eq!(
                cfg.data_dir,
                PathBuf::from("/from/env"),
                "env wins over file"
            );
            assert_eq!(cfg.listen_data, "0.0.0.0:9443", "file wins over default");
            assert_eq!(cfg.upload_concurrency, 8);
            assert_eq!(cfg.cache_max_bytes, GIB);
            assert_eq!(cfg.vault_url, "az://account/container");
            assert_eq!(
                cfg.admin_password_file,
                Some(PathBuf::from("/run/ferry/admin-pass"))
            );
            assert_eq!(cfg.cache_dir, PathBuf::from("/from/env/cache"));
            assert_eq!(cfg.server_names, vec!["dr.example.test", "10.0.0.5"]);
            assert_eq!(cfg.log_format, LogFormat::Json);
            assert_eq!(cfg.listen_management, "127.0.0.1:8443", "untouched default");
            Ok(())
        });
    }

    #[test]
    fn explicit_file_is_used_instead_of_the_default_file() {
        Jail::expect_with(|jail| {
            jail.create_file("appliance.toml", "listen_data = \"1.1.1.1:1\"")?;
            jail.create_file("other.toml", "listen_data = \"2.2.2.2:2\"")?;
            assert_eq!(load_in_jail(None).unwrap().listen_data, "1.1.1.1:1");
            assert_eq!(
                load_in_jail(Some("other.toml")).unwrap().listen_data,
                "2.2.2.2:2"
            );
            Ok(())
        });
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        Jail::expect_with(|_jail| {
            let err = load_in_jail(Some("nope.toml")).unwrap_err();
            assert!(matches!(err, ConfigError::MissingFile(_)), "{err}");
            assert!(err.to_string().contains("nope.toml"));
            Ok(())
        });
    }

    #[test]
    fn unknown_key_in_file_is_named() {
        Jail::expect_with(|jail| {
            jail.create_file("appliance.toml", "data_dri = \"/x\"")?;
            let err = load_in_jail(None).unwrap_err().to_string();
            assert!(err.contains("data_dri"), "{err}");
            assert!(err.contains("appliance.toml"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unknown_env_key_is_named() {
        Jail::expect_with(|jail| {
            jail.set_env("APPLIANCE_UPLOAD_CONCURENCY", "3");
            let err = load_in_jail(None).unwrap_err().to_string();
            assert!(err.to_lowercase().contains("upload_concurency"), "{err}");
            assert!(err.contains("APPLIANCE_"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn wrong_type_is_named() {
        Jail::expect_with(|jail| {
            jail.create_file("appliance.toml", "cache_max_bytes = \"lots\"")?;
            let err = load_in_jail(None).unwrap_err().to_string();
            assert!(err.contains("cache_max_bytes"), "{err}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("APPLIANCE_LOG_FORMAT", "xml");
            let err = load_in_jail(None).unwrap_err().to_string();
            assert!(err.to_lowercase().contains("log_format"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn bad_values_are_refused() {
        Jail::expect_with(|jail| {
            jail.set_env("APPLIANCE_COMPRESS_THREADS", "0");
            let err = load_in_jail(None).unwrap_err().to_string();
            assert!(err.contains("compress_threads"), "{err}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.create_file("appliance.toml", "pack_target_bytes = 100")?;
            let err = load_in_jail(None).unwrap_err().to_string();
            assert!(err.contains("pack_target_bytes"), "{err}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.create_file("appliance.toml", "admin_password_file = \"\"")?;
            let err = load_in_jail(None).unwrap_err().to_string();
            assert!(err.contains("admin_password_file"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn debug_output_hides_secrets() {
        Jail::expect_with(|jail| {
            jail.set_env("APPLIANCE_VAULT_PASSPHRASE", "hunter2-secret");
            jail.set_env("APPLIANCE_AZURE_ACCESS_KEY", "azure-key-secret");
            jail.set_env("APPLIANCE_ADMIN_PASSWORD_FILE", "/etc/ferry/first-admin");
            let cfg = load_in_jail(None).unwrap();
            assert_eq!(cfg.vault_passphrase.as_deref(), Some("hunter2-secret"));
            let shown = format!("{cfg:?}");
            assert!(shown.contains("/etc/ferry/first-admin"), "{shown}");
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(!shown.contains("azure-key"), "{shown}");
            assert!(shown.contains("<redacted>"));
            Ok(())
        });
    }

    #[test]
    fn numeric_looking_strings_from_env_stay_strings() {
        Jail::expect_with(|jail| {
            jail.set_env("APPLIANCE_VAULT_PASSPHRASE", "12345");
            jail.set_env("APPLIANCE_AZURE_ACCESS_KEY", "true");
            jail.set_env("APPLIANCE_VAULT_URL", "1e5");
            jail.set_env("APPLIANCE_ADMIN_PASSWORD_FILE", "42");
            let cfg = load_in_jail(None).unwrap();
            assert_eq!(cfg.admin_password_file, Some(PathBuf::from("42")));
            assert_eq!(cfg.vault_passphrase.as_deref(), Some("12345"));
            assert_eq!(cfg.azure_access_key.as_deref(), Some("true"));
            assert_eq!(cfg.vault_url, "1e5");
            Ok(())
        });
    }
}
