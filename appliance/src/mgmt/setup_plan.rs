//! Setup's validation: from a request to a plan that can run (everything checked, the vault
//! target tested live, passphrases chosen, the admin password hashed), and the recovery kit a
//! finished plan shows.

use std::path::Path;

use serde::{Deserialize, Serialize};
use vault::{Vault, VaultError};

use super::{SetupRequest, SetupResult, VaultTestRequest, ADMIN_USER};
use crate::config::Config;
use crate::mgmt::auth::{Auth, Role};
use crate::mgmt::MgmtError;
use crate::secrets;
use crate::state::now_rfc3339;
use crate::vault_access::{self, StoreKind, VaultTarget, PROBE_TIMEOUT};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// Shortest passphrase accepted for a new vault or for agent registration, counted after
/// `secrets::normalize_passphrase` (spaces and dashes do not count).
pub const MIN_PASSPHRASE_CHARS: usize = 12;
pub const DEFAULT_S3_REGION: &str = "us-east-1";

/// A validated setup, stored while pending (see the module docs of `setup`).
#[derive(Clone, Serialize, Deserialize)]
pub struct Plan {
    pub admin_user: String,
    /// Hex of the `users` key and value from `Auth::user_entry`.
    pub admin_key: String,
    pub admin_value: String,
    pub target: VaultTarget,
    pub vault_passphrase: String,
    pub registration_passphrase: String,
    pub vault_passphrase_generated: bool,
    pub registration_passphrase_generated: bool,
    /// Who asked: a remote address, or `local` for the unattended setup.
    pub source: String,
    pub accepted_at: String,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("admin_user", &self.admin_user)
            .field("target", &self.target)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Passphrases to use when the request gives none, with whether they were generated: those of
/// a pending plan (its vault may exist already), or an older data dir's files.
#[derive(Default)]
pub struct Carry {
    vault: Option<(String, bool)>,
    registration: Option<(String, bool)>,
}

impl Carry {
    pub fn from_pending(plan: &Plan, cfg: &Config, req: &SetupRequest) -> Carry {
        let url = nonempty(req.vault_url.as_deref()).unwrap_or_else(|| cfg.vault_url.clone());
        Carry {
            vault: (plan.target.url == url).then(|| {
                (
                    plan.vault_passphrase.clone(),
                    plan.vault_passphrase_generated,
                )
            }),
            registration: Some((
                plan.registration_passphrase.clone(),
                plan.registration_passphrase_generated,
            )),
        }
    }

    pub fn from_files(data_dir: &Path) -> Result<Carry, MgmtError> {
        let read = |path: &Path| {
            secrets::read_secret_file_if_exists(path)
                .map(|found| found.map(|p| (p, false)))
                .map_err(|e| MgmtError::Internal(format!("{e:#}")))
        };
        Ok(Carry {
            vault: read(&secrets::vault_passphrase_path(data_dir))?,
            registration: read(&secrets::registration_passphrase_path(data_dir))?,
        })
    }
}

/// The vault fields of either form.
pub struct TargetInput<'a> {
    url: Option<&'a str>,
    azure_access_key: Option<&'a str>,
    s3_access_key_id: Option<&'a str>,
    s3_secret_access_key: Option<&'a str>,
    s3_region: Option<&'a str>,
    s3_endpoint: Option<&'a str>,
}

impl<'a> From<&'a SetupRequest> for TargetInput<'a> {
    fn from(r: &'a SetupRequest) -> Self {
        TargetInput {
            url: r.vault_url.as_deref(),
            azure_access_key: r.azure_access_key.as_deref(),
            s3_access_key_id: r.s3_access_key_id.as_deref(),
            s3_secret_access_key: r.s3_secret_access_key.as_deref(),
            s3_region: r.s3_region.as_deref(),
            s3_endpoint: r.s3_endpoint.as_deref(),
        }
    }
}

impl<'a> From<&'a VaultTestRequest> for TargetInput<'a> {
    fn from(r: &'a VaultTestRequest) -> Self {
        TargetInput {
            url: Some(&r.vault_url),
            azure_access_key: r.azure_access_key.as_deref(),
            s3_access_key_id: r.s3_access_key_id.as_deref(),
            s3_secret_access_key: r.s3_secret_access_key.as_deref(),
            s3_region: r.s3_region.as_deref(),
            s3_endpoint: r.s3_endpoint.as_deref(),
        }
    }
}

fn nonempty(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The vault target a form names (default: the configuration's), with the credentials its kind
/// needs. Checks the form only; [`vault_access::probe_target`] checks the store.
pub fn target_of(cfg: &Config, input: &TargetInput<'_>) -> Result<VaultTarget, MgmtError> {
    let url = nonempty(input.url).unwrap_or_else(|| cfg.vault_url.clone());
    if url.chars().any(char::is_control) {
        return Err(MgmtError::invalid(
            "vault_url",
            "must not contain control characters",
        ));
    }
    let mut target = VaultTarget {
        url,
        ..VaultTarget::default()
    };
    match target.kind() {
        StoreKind::Local => {
            let url = &target.url;
            if url.contains("://") && !url.starts_with("file:///") {
                return Err(MgmtError::invalid(
                    "vault_url",
                    "use a folder path, or a file:///absolute/path, az://<account>/<container> \
                     or s3://<bucket> URL",
                ));
            }
            return Ok(target);
        }
        StoreKind::Azure => {
            let key = nonempty(input.azure_access_key).or_else(|| cfg.azure_access_key.clone());
            target.azure_access_key = Some(key.ok_or_else(|| {
                MgmtError::invalid(
                    "azure_access_key",
                    "an az:// vault needs the storage account's access key",
                )
            })?);
        }
        StoreKind::S3 => {
            let required = |value: Option<&str>, field: &str, what: &str| {
                nonempty(value).ok_or_else(|| {
                    MgmtError::invalid(field, format!("an s3:// vault needs the {what}"))
                })
            };
            target.s3_access_key_id = Some(required(
                input.s3_access_key_id,
                "s3_access_key_id",
                "access key id",
            )?);
            target.s3_secret_access_key = Some(required(
                input.s3_secret_access_key,
                "s3_secret_access_key",
                "secret access key",
            )?);
            target.s3_region =
                Some(nonempty(input.s3_region).unwrap_or_else(|| DEFAULT_S3_REGION.into()));
            if let Some(endpoint) = nonempty(input.s3_endpoint) {
                let ok = url::Url::parse(&endpoint)
                    .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
                if !ok {
                    return Err(MgmtError::invalid(
                        "s3_endpoint",
                        "must be an http:// or https:// URL, e.g. http://minio.example:9000",
                    ));
                }
                target.s3_endpoint = Some(endpoint);
            }
        }
    }
    // Parses the URL; for remote stores this only builds a client.
    target
        .open_store()
        .map_err(|e| MgmtError::invalid("vault_url", e.to_string()))?;
    Ok(target)
}

fn checked_passphrase(field: &str, passphrase: &str) -> Result<(), MgmtError> {
    let chars = secrets::normalize_passphrase(passphrase).chars().count();
    if chars < MIN_PASSPHRASE_CHARS {
        return Err(MgmtError::invalid(
            field,
            format!(
                "must have at least {MIN_PASSPHRASE_CHARS} characters besides spaces and dashes \
                 (leave it empty to get a generated one)"
            ),
        ));
    }
    Ok(())
}

impl Plan {
    /// Checks everything a request asks for, before anything is written (a local vault folder
    /// and an Azure container are created by the live test, as setup would anyway).
    pub async fn validate(
        cfg: &Config,
        req: &SetupRequest,
        source: &str,
        carry: Carry,
    ) -> Result<Plan, MgmtError> {
        let problems = Auth::password_problems_for(ADMIN_USER, &req.admin_password);
        if !problems.is_empty() {
            return Err(MgmtError::invalid("admin_password", problems.join("; ")));
        }
        let (registration_passphrase, registration_passphrase_generated) =
            match nonempty(req.registration_passphrase.as_deref()) {
                Some(given) => {
                    checked_passphrase("registration_passphrase", &given)?;
                    (given, false)
                }
                None => carry.registration.unwrap_or_else(|| {
                    (
                        secrets::generate_passphrase(secrets::REGISTRATION_SYMBOLS),
                        true,
                    )
                }),
            };
        let target = target_of(cfg, &TargetInput::from(req))?;
        let holds_vault = vault_access::probe_target(&target)
            .await
            .map_err(|reason| MgmtError::invalid("vault_url", reason))?;
        let given = nonempty(req.vault_passphrase.as_deref());
        let (vault_passphrase, vault_passphrase_generated) = if holds_vault {
            let (passphrase, generated) =
                given.map(|p| (p, false)).or(carry.vault).ok_or_else(|| {
                    MgmtError::invalid(
                        "vault_passphrase",
                        format!(
                            "{} already holds a Ferry vault: give its vault passphrase to use \
                             it, or choose another location",
                            target.url
                        ),
                    )
                })?;
            opens_existing(&target, &passphrase).await?;
            (passphrase, generated)
        } else {
            match given {
                Some(given) => {
                    checked_passphrase("vault_passphrase", &given)?;
                    (given, false)
                }
                None => carry.vault.unwrap_or_else(|| {
                    (secrets::generate_passphrase(secrets::VAULT_SYMBOLS), true)
                }),
            }
        };
        let (key, value) = Auth::user_entry(ADMIN_USER, Role::Admin, &req.admin_password)?;
        Ok(Plan {
            admin_user: ADMIN_USER.to_string(),
            admin_key: hex::encode(key),
            admin_value: hex::encode(value),
            target,
            vault_passphrase,
            registration_passphrase,
            vault_passphrase_generated,
            registration_passphrase_generated,
            source: source.to_string(),
            accepted_at: now_rfc3339(),
        })
    }

    /// The `users` entry to insert.
    pub fn admin_entry(&self) -> Result<(Vec<u8>, Vec<u8>), MgmtError> {
        let decode = |hex_text: &str| {
            hex::decode(hex_text)
                .map_err(|e| MgmtError::Internal(format!("the stored setup plan is corrupt: {e}")))
        };
        Ok((decode(&self.admin_key)?, decode(&self.admin_value)?))
    }
}

/// The passphrase must open the vault already at the target.
async fn opens_existing(target: &VaultTarget, passphrase: &str) -> Result<(), MgmtError> {
    let url = &target.url;
    let unreadable = |why: String| {
        MgmtError::invalid(
            "vault_url",
            format!("the existing vault at {url} cannot be read: {why}"),
        )
    };
    let store = target.open_store().map_err(|e| unreadable(e.to_string()))?;
    match tokio::time::timeout(PROBE_TIMEOUT, Vault::open(store, passphrase)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(VaultError::WrongPassphrase)) => Err(MgmtError::invalid(
            "vault_passphrase",
            format!("does not open the existing vault at {url}"),
        )),
        Ok(Err(err)) => Err(unreadable(err.to_string())),
        Err(_) => Err(unreadable(format!(
            "no answer within {} s",
            PROBE_TIMEOUT.as_secs()
        ))),
    }
}

/// Single-quotes a word for a POSIX shell.
fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// The recovery kit's line width: it is read in an 80-column terminal, a `<pre>` and on paper.
const KIT_WIDTH: usize = 78;

/// Words of `text` filled into lines of at most [`KIT_WIDTH`] characters, each after `indent`
/// (a word longer than a line gets a line of its own rather than being cut).
fn kit_prose(text: &str, indent: &str) -> String {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && indent.len() + line.len() + 1 + word.len() > KIT_WIDTH {
            lines.push(format!("{indent}{}", std::mem::take(&mut line)));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(format!("{indent}{line}"));
    }
    lines.join("\n")
}

/// A shell command over lines of at most [`KIT_WIDTH`] characters, continued with ` \`. Each
/// group (a program and its subcommand, or an option with its value) stays on one line, so a
/// break never separates an option from its value; a group too long for any line (a long vault
/// URL) gets a line of its own.
fn kit_command(groups: &[String]) -> String {
    const FIRST: &str = "       ";
    const NEXT: &str = "         ";
    const CONTINUED: &str = " \\";
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for group in groups {
        let indent = if lines.is_empty() { FIRST } else { NEXT };
        let room = indent.len() + line.len() + 1 + group.len() + CONTINUED.len();
        if !line.is_empty() && room > KIT_WIDTH {
            lines.push(format!("{indent}{}{CONTINUED}", std::mem::take(&mut line)));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(group);
    }
    let indent = if lines.is_empty() { FIRST } else { NEXT };
    lines.push(format!("{indent}{line}"));
    lines.join("\n")
}

/// An RFC 3339 time to whole seconds in UTC ("2026-11-26T11:23:37Z"); text that is not one is
/// shown as it is (a plan stored by an older version).
fn kit_time(rfc3339: &str) -> String {
    OffsetDateTime::parse(rfc3339, &Rfc3339)
        .ok()
        .and_then(|t| t.to_offset(UtcOffset::UTC).replace_nanosecond(0).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| rfc3339.to_string())
}

/// What setup shows once: the passphrases and the recovery kit.
pub fn result_of(plan: &Plan, ca_fingerprint: &str) -> SetupResult {
    let url = &plan.target.url;
    let vault = format!("--vault {}", shell_quote(url));
    let passphrase_file = "--vault-passphrase-file vault-pass.txt".to_string();
    let credentials = match plan.target.kind() {
        StoreKind::Local => String::new(),
        StoreKind::Azure => kit_prose(
            "The storage account key must be in APPLIANCE_AZURE_ACCESS_KEY (or \
             AZURE_STORAGE_ACCESS_KEY) of the shell running these commands.",
            "     ",
        ),
        StoreKind::S3 => kit_prose(
            &format!(
                "The S3 credentials must be in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
                 and the region in AWS_REGION (this vault: {}{}), of the shell running these \
                 commands.",
                plan.target
                    .s3_region
                    .as_deref()
                    .unwrap_or(DEFAULT_S3_REGION),
                plan.target
                    .s3_endpoint
                    .as_deref()
                    .map(|e| format!("; endpoint {e}, also as AWS_ENDPOINT"))
                    .unwrap_or_default()
            ),
            "     ",
        ),
    };
    let credentials = if credentials.is_empty() {
        credentials
    } else {
        format!("\n{credentials}")
    };
    let list = kit_command(&[
        "appliance points list".to_string(),
        vault.clone(),
        passphrase_file.clone(),
    ]);
    let restore = kit_command(
        &[
            "appliance restore",
            &vault,
            &passphrase_file,
            "--machine MACHINE",
            "--disk DISK",
            "--point latest",
            "--out disk.vhd",
            "--format vhd",
        ]
        .map(str::to_string),
    );
    // The fingerprint (95 characters) has a line of its own, unbroken: the agent's registration
    // takes it whole (--ca-fingerprint), so it is copied rather than retyped.
    let recovery_kit = format!(
        "FERRY RECOVERY KIT
{intro}

Vault URL:         {url}
Vault passphrase:  {passphrase}
Set up:            {at}
Appliance CA fingerprint (SHA-256):
{ca_fingerprint}

Restore without this appliance:
  1. Save the vault passphrase alone in a file, e.g. vault-pass.txt.{credentials}
  2. List the recovery points (machine, disk, point):
{list}
  3. Write one disk of a point to an image file (--format raw, vhd or vmdk):
{restore}
",
        intro = kit_prose(
            "Keep this outside the appliance (a password manager, a safe). With the vault \
             passphrase alone, any machine with the `appliance` program restores every recovery \
             point; without it, nothing can: there is no other copy and no reset.",
            "",
        ),
        passphrase = plan.vault_passphrase,
        at = kit_time(&plan.accepted_at),
    );
    SetupResult {
        admin_user: plan.admin_user.clone(),
        vault_url: url.clone(),
        ca_fingerprint: ca_fingerprint.to_string(),
        vault_passphrase: plan.vault_passphrase.clone(),
        registration_passphrase: plan.registration_passphrase.clone(),
        recovery_kit,
    }
}

#[cfg(test)]
#[path = "setup_kit_tests.rs"]
mod kit_tests;
