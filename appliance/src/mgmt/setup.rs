//! First-boot setup as one resumable transaction (docs/MANAGEMENT.md "Setup as one transaction").
//!
//! ## Phases, stored in sled tree `setup`, key `record`
//!
//! No record: setup is *required*. Otherwise the value is a state record (`FS` v1, see
//! `crate::state`) of JSON, one of:
//!
//! ```text
//! {"phase":"pending","plan":{"admin_user":"admin","admin_key":"<hex>","admin_value":"<hex>",
//!   "target":{"url":..,credentials..},"vault_passphrase":..,"registration_passphrase":..,
//!   "vault_passphrase_generated":true,"registration_passphrase_generated":true,
//!   "source":"<remote address or local>","accepted_at":"<RFC 3339>"}}
//! {"phase":"complete","completed_at":"<RFC 3339>","vault_url":".."}
//! ```
//!
//! `admin_key`/`admin_value` are the `users` entry `Auth::user_entry` made (the password hash,
//! never the password). A *pending* plan was validated and accepted but not finished; running it
//! again is harmless (every step is idempotent), so a restart resumes it.
//!
//! ## Steps
//!
//! token (constant time) -> validation and a live vault test (nothing written) -> plan stored
//! (pending) -> passphrase files, `vault-location.json`, vault created or opened -> one sled
//! transaction over `setup`, `users` and `audit` (admin user, record complete, audit event) ->
//! flush -> setup-token removed, admin-token written, waiters woken.
//!
//! Test hook: when the environment variable `FERRY_TEST_SETUP_ABORT_AFTER` is `plan` or
//! `vault`, the process aborts right after the plan is stored, or right after the vault exists,
//! for the kill-mid-setup tests. Unset (always, outside those tests) it does nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sled::Transactional;
use subtle::ConstantTimeEq;
use tokio::sync::{watch, Mutex};
use vault::{KdfParams, VaultError};

use super::auth::Auth;
use super::MgmtError;
use crate::config::Config;
use crate::files::{self, PRIVATE_DIR_MODE, PRIVATE_FILE_MODE};
use crate::secrets;
use crate::state::{decode_record, encode_record, now_rfc3339, AuditEvent, State};
use crate::tls::ApplianceTls;
use crate::vault_access::{self, VaultTarget};

#[path = "network.rs"]
mod network;
#[path = "setup_plan.rs"]
mod plan;

use plan::{Carry, Plan};

const SETUP_TREE: &str = "setup";
const USERS_TREE: &str = "users";
/// The tree `State` appends audit events to (big-endian u64 keys from the db's id generator).
const AUDIT_TREE: &str = "audit";
const RECORD_KEY: &[u8] = b"record";

/// The file holding the setup token while setup is not complete.
pub const SETUP_TOKEN_FILE: &str = "setup-token";
/// The user setup creates.
pub const ADMIN_USER: &str = "admin";
/// See the module docs: a fault-injection hook for tests, inert unless set.
pub const ABORT_HOOK_ENV: &str = "FERRY_TEST_SETUP_ABORT_AFTER";
/// Creating or opening the vault during execution; beyond it the plan stays pending.
const VAULT_STEP_TIMEOUT: Duration = Duration::from_secs(60);

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
    /// The one-time setup token (`<data dir>/setup-token`); a missing one is refused like a wrong one.
    #[serde(default)]
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
    #[serde(default)]
    pub token: String,
    pub vault_url: String,
    pub azure_access_key: Option<String>,
    pub s3_access_key_id: Option<String>,
    pub s3_secret_access_key: Option<String>,
    pub s3_region: Option<String>,
    pub s3_endpoint: Option<String>,
}

impl std::fmt::Debug for VaultTestRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultTestRequest")
            .field("vault_url", &self.vault_url)
            .finish_non_exhaustive()
    }
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

/// The stored record (see the module docs).
#[derive(Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
enum Record {
    Pending {
        plan: Box<Plan>,
    },
    Complete {
        completed_at: String,
        vault_url: String,
    },
}

/// Setup service. Cheap to clone.
#[derive(Clone)]
pub struct Setup {
    cfg: Arc<Config>,
    state: State,
    tls: Arc<ApplianceTls>,
    auth: Auth,
    tree: sled::Tree,
    /// One submit, resume or unattended run at a time: two must never run two plans.
    running: Arc<Mutex<()>>,
    complete: Arc<watch::Sender<bool>>,
    kdf: KdfParams,
}

impl std::fmt::Debug for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setup")
            .field("phase", &self.phase())
            .finish_non_exhaustive()
    }
}

impl Setup {
    pub fn new(
        cfg: Arc<Config>,
        state: State,
        tls: Arc<ApplianceTls>,
        auth: Auth,
    ) -> Result<Setup, MgmtError> {
        let tree = state.db().open_tree(SETUP_TREE)?;
        let done = matches!(read_record(&tree)?, Some(Record::Complete { .. }));
        Ok(Setup {
            cfg,
            state,
            tls,
            auth,
            tree,
            running: Arc::new(Mutex::new(())),
            complete: Arc::new(watch::channel(done).0),
            kdf: KdfParams::default(),
        })
    }

    /// The same service creating vaults with other key-derivation costs (tests use cheap ones).
    pub fn with_kdf(mut self, kdf: KdfParams) -> Setup {
        self.kdf = kdf;
        self
    }

    fn read_record(&self) -> Result<Option<Record>, MgmtError> {
        read_record(&self.tree)
    }

    fn write_record(&self, record: &Record) -> Result<(), MgmtError> {
        let json = serde_json::to_vec(record).expect("setup records serialize");
        self.tree.insert(RECORD_KEY, encode_record(&json))?;
        self.state.flush()?;
        Ok(())
    }

    pub fn phase(&self) -> SetupPhase {
        match self.read_record() {
            Ok(None) => SetupPhase::Required,
            Ok(Some(Record::Pending { .. })) => SetupPhase::Pending,
            Ok(Some(Record::Complete { .. })) => SetupPhase::Complete,
            // Not complete (the data path stays off), and submit refuses to write over it.
            Err(err) => {
                tracing::error!(%err, "reading the setup record");
                SetupPhase::Pending
            }
        }
    }

    /// Asked on every API request: answered from memory once this service saw completion.
    pub fn is_complete(&self) -> bool {
        *self.complete.borrow() || self.phase() == SetupPhase::Complete
    }

    pub fn status(&self) -> SetupStatus {
        SetupStatus {
            phase: self.phase(),
            default_vault_url: self.cfg.vault_url.clone(),
            password_rules: Auth::password_rules(),
            network: network::describe(&self.cfg.listen_management, &self.cfg.listen_data),
        }
    }

    pub fn token_path(&self) -> PathBuf {
        self.cfg.data_dir.join(SETUP_TOKEN_FILE)
    }

    /// Writes a fresh setup token to `<data dir>/setup-token` (0600) and returns it for the log.
    /// Each start makes a new one; only while setup is not complete.
    pub fn prepare_token(&self) -> Result<String, MgmtError> {
        if self.is_complete() {
            return Err(MgmtError::SetupComplete);
        }
        let token = hex::encode(rand::random::<[u8; 32]>());
        files::create_dir_all(&self.cfg.data_dir, PRIVATE_DIR_MODE)
            .and_then(|()| {
                files::replace_file(&self.token_path(), token.as_bytes(), PRIVATE_FILE_MODE)
            })
            .map_err(|e| internal("writing the setup token", &e))?;
        Ok(token)
    }

    /// Compares in constant time (over SHA-256 digests, so the length does not show either).
    fn check_token(&self, given: &str) -> Result<(), MgmtError> {
        let expected = match std::fs::read_to_string(self.token_path()) {
            Ok(text) => text.trim().to_string(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(MgmtError::BadSetupToken)
            }
            Err(err) => return Err(internal("reading the setup token", &err)),
        };
        let a = Sha256::digest(given.trim().as_bytes());
        let b = Sha256::digest(expected.as_bytes());
        if expected.is_empty() || !bool::from(a.ct_eq(&b)) {
            return Err(MgmtError::BadSetupToken);
        }
        Ok(())
    }

    /// Validates, stores the plan, executes it and commits (see the module docs).
    pub async fn submit(&self, req: SetupRequest, source: &str) -> Result<SetupResult, MgmtError> {
        let _one = self.running.lock().await;
        let record = self.read_record()?;
        if matches!(record, Some(Record::Complete { .. })) {
            return Err(MgmtError::SetupComplete);
        }
        self.check_token(&req.token)?;
        // A plan that did not finish may have created its vault with its generated passphrase.
        let carry = match &record {
            Some(Record::Pending { plan }) => Carry::from_pending(plan, &self.cfg, &req),
            _ => Carry::default(),
        };
        self.accept(&req, source, carry).await
    }

    /// Tries the vault target of the form without changing the appliance's state.
    pub async fn test_vault(&self, req: VaultTestRequest) -> Result<(), MgmtError> {
        if self.is_complete() {
            return Err(MgmtError::SetupComplete);
        }
        self.check_token(&req.token)?;
        let target = plan::target_of(&self.cfg, &plan::TargetInput::from(&req))?;
        vault_access::probe_target(&target)
            .await
            .map(|_holds_vault| ())
            .map_err(|reason| MgmtError::invalid("vault_url", reason))
    }

    /// Runs a stored pending plan (at start, after a crash mid-setup). `None` when there is none.
    pub async fn resume(&self) -> Result<Option<SetupResult>, MgmtError> {
        let _one = self.running.lock().await;
        match self.read_record()? {
            Some(Record::Pending { plan }) => {
                tracing::info!(vault = %plan.target.url, "resuming the stored setup plan");
                self.execute(&plan).await.map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Setup without the web form (`admin_password_file`): the configuration's vault and
    /// credentials; its vault passphrase, else the data dir's passphrase files when they exist
    /// (an older data dir keeps working), else generated ones. `None` when already complete.
    pub async fn run_unattended(
        &self,
        admin_password: &str,
    ) -> Result<Option<Unattended>, MgmtError> {
        let _one = self.running.lock().await;
        let carry = match self.read_record()? {
            Some(Record::Complete { .. }) => return Ok(None),
            Some(Record::Pending { plan }) => {
                let result = self.execute(&plan).await?;
                return Ok(Some(Unattended::of(&plan, result)));
            }
            None => Carry::from_files(&self.cfg.data_dir)?,
        };
        let req = SetupRequest {
            admin_password: admin_password.to_string(),
            vault_passphrase: self.cfg.vault_passphrase.clone(),
            ..SetupRequest::default()
        };
        let plan = Plan::validate(&self.cfg, &req, "local", carry).await?;
        let result = self.run_plan(&plan).await?;
        Ok(Some(Unattended::of(&plan, result)))
    }

    /// Resolves when setup is complete (immediately if it already is).
    pub async fn wait_complete(&self) {
        let mut rx = self.complete.subscribe();
        // The sender lives as long as `self`, so this cannot fail while we wait.
        let _ = rx.wait_for(|done| *done).await;
    }

    async fn accept(
        &self,
        req: &SetupRequest,
        source: &str,
        carry: Carry,
    ) -> Result<SetupResult, MgmtError> {
        let plan = Plan::validate(&self.cfg, req, source, carry).await?;
        self.run_plan(&plan).await
    }

    /// Stores the plan (from here on setup is pending), then executes it.
    async fn run_plan(&self, plan: &Plan) -> Result<SetupResult, MgmtError> {
        self.write_record(&Record::Pending {
            plan: Box::new(plan.clone()),
        })?;
        abort_hook("plan");
        self.execute(plan).await
    }

    /// The idempotent steps of a plan, then the commit.
    async fn execute(&self, plan: &Plan) -> Result<SetupResult, MgmtError> {
        let dir = &self.cfg.data_dir;
        files::create_dir_all(dir, PRIVATE_DIR_MODE)
            .map_err(|e| internal("creating the data folder", &e))?;
        secrets::write_secret_file(
            &secrets::registration_passphrase_path(dir),
            &plan.registration_passphrase,
        )
        .map_err(|e| internal("writing registration-passphrase", &e))?;
        secrets::write_secret_file(&secrets::vault_passphrase_path(dir), &plan.vault_passphrase)
            .map_err(|e| internal("writing vault-passphrase", &e))?;
        vault_access::write_location_file(dir, &plan.target)
            .map_err(|e| internal("writing vault-location.json", &e))?;
        self.ensure_vault(&plan.target, &plan.vault_passphrase)
            .await?;
        abort_hook("vault");
        self.commit(plan)?;
        match std::fs::remove_file(self.token_path()) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => tracing::warn!(%err, "removing the setup token"),
        }
        // Setup is committed; a failure here is repaired at the next start.
        if let Err(err) = self.auth.ensure_admin_token_file(dir) {
            tracing::warn!(%err, "writing the admin token file");
        }
        self.complete.send_replace(true);
        tracing::info!(vault = %plan.target.url, "setup complete");
        Ok(plan::result_of(plan, &self.tls.ca_fingerprint()))
    }

    async fn ensure_vault(&self, target: &VaultTarget, passphrase: &str) -> Result<(), MgmtError> {
        let url = &target.url;
        let step = vault_access::open_or_create(target, passphrase, self.kdf);
        match tokio::time::timeout(VAULT_STEP_TIMEOUT, step).await {
            Ok(Ok((_, created))) => {
                tracing::info!(%url, created, "setup: the vault is ready");
                Ok(())
            }
            Ok(Err(VaultError::WrongPassphrase)) => Err(MgmtError::invalid(
                "vault_passphrase",
                format!("does not open the existing vault at {url}"),
            )),
            Ok(Err(err)) => Err(MgmtError::Unavailable(format!(
                "creating or opening the vault at {url} failed: {err}; the setup is stored and \
                 is retried by submitting again or at the next start"
            ))),
            Err(_) => Err(MgmtError::Unavailable(format!(
                "the vault at {url} did not answer within {} s; the setup is stored and is \
                 retried by submitting again or at the next start",
                VAULT_STEP_TIMEOUT.as_secs()
            ))),
        }
    }

    /// The one transaction that makes setup complete: the admin user, the record and the audit
    /// event appear together or not at all.
    fn commit(&self, plan: &Plan) -> Result<(), MgmtError> {
        let db = self.state.db();
        let users = db.open_tree(USERS_TREE)?;
        let audit = db.open_tree(AUDIT_TREE)?;
        let (user_key, user_value) = plan.admin_entry()?;
        let audit_key = db.generate_id()?.to_be_bytes();
        let event = AuditEvent {
            at: now_rfc3339(),
            actor: "system".into(),
            source: plan.source.clone(),
            event: "setup_completed".into(),
            detail: format!(
                "user {} created; vault {}",
                plan.admin_user, plan.target.url
            ),
        };
        let audit_value = encode_record(&serde_json::to_vec(&event).expect("events serialize"));
        let record = Record::Complete {
            completed_at: now_rfc3339(),
            vault_url: plan.target.url.clone(),
        };
        let record_value = encode_record(&serde_json::to_vec(&record).expect("records serialize"));
        (&self.tree, &users, &audit)
            .transaction(|(setup, users, audit)| {
                users.insert(user_key.as_slice(), user_value.as_slice())?;
                setup.insert(RECORD_KEY, record_value.as_slice())?;
                audit.insert(&audit_key[..], audit_value.as_slice())?;
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| MgmtError::Internal(format!("committing the setup: {e:?}")))?;
        self.state.flush()?;
        Ok(())
    }
}

fn read_record(tree: &sled::Tree) -> Result<Option<Record>, MgmtError> {
    let Some(raw) = tree.get(RECORD_KEY)? else {
        return Ok(None);
    };
    let corrupt = |why: String| {
        MgmtError::Internal(format!(
            "the setup record in the appliance state is corrupt ({why}); \
             restore the data folder from a backup or set the appliance up anew"
        ))
    };
    let body = decode_record(&raw).map_err(corrupt)?;
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| corrupt(e.to_string()))
}

fn internal(what: &str, err: &dyn std::fmt::Display) -> MgmtError {
    MgmtError::Internal(format!("{what}: {err}"))
}

/// The fault-injection hook of the module docs.
fn abort_hook(step: &str) {
    if std::env::var(ABORT_HOOK_ENV).is_ok_and(|v| v == step) {
        eprintln!("{ABORT_HOOK_ENV}={step}: aborting as the test asked");
        std::process::abort();
    }
}

/// What an unattended setup did, for the daemon to announce once.
#[derive(Clone, Debug)]
pub struct Unattended {
    pub result: SetupResult,
    pub registration_passphrase_generated: bool,
    pub vault_passphrase_generated: bool,
}

impl Unattended {
    fn of(plan: &Plan, result: SetupResult) -> Unattended {
        Unattended {
            result,
            registration_passphrase_generated: plan.registration_passphrase_generated,
            vault_passphrase_generated: plan.vault_passphrase_generated,
        }
    }

    /// Prints the passphrases generated now (only those), the CA fingerprint and, when the
    /// vault passphrase is new, the recovery kit: the operator has not seen them anywhere else.
    pub fn announce(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let r = &self.result;
        secrets::announce(
            out,
            Some(r.registration_passphrase.as_str())
                .filter(|_| self.registration_passphrase_generated),
            Some(r.vault_passphrase.as_str()).filter(|_| self.vault_passphrase_generated),
            &r.ca_fingerprint,
        )?;
        if self.vault_passphrase_generated {
            writeln!(out, "{}", r.recovery_kit)?;
        }
        out.flush()
    }
}

/// The password of `admin_password_file` (surrounding whitespace ignored; empty is an error).
pub fn read_admin_password_file(path: &Path) -> Result<String, MgmtError> {
    secrets::read_secret_file(path)
        .map_err(|e| MgmtError::invalid("admin_password_file", format!("{e:#}")))
}

#[cfg(test)]
#[path = "setup_tests.rs"]
mod tests;
