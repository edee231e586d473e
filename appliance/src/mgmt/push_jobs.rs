//! Push-install jobs: install, upgrade or uninstall the mobility agent in a Linux guest over SSH or,
//! for a guest reached only through its vCenter, over vSphere guest operations (VMware Tools)
//! (`actors::push`), in the background, with retries, a log and a readable error.
//!
//! Each job is a record in the sled tree `push_jobs`: key = the job id (16 hex digits of a sled id,
//! so key order is start order), value = its [`PushJobView`] as JSON in the state record envelope,
//! rewritten at every state change and log line. SSH credentials live only in memory, in the job's
//! task: they are never stored. So a job that a restart interrupted cannot be resumed; at the next
//! start [`PushJobs::recover`] marks it failed ([`INTERRUPTED`]) and withdraws its enrollment tokens.
//! Running it again is safe: every install step is idempotent.
//!
//! An install issues a one-time enrollment token for the job's VM (`registry::Enrollments`), writes it
//! into the guest, and succeeds only when an agent registered with it (the `enrollments` record names
//! the agent, which must exist in `agents`), within [`PushSettings::register_timeout`].
//!
//! Host keys: a request may pin a fingerprint; otherwise the key an earlier job recorded for the same
//! `host:port` (tree `push_host_keys`) is required, and the first job to a host trusts and records the
//! key it is shown. A changed key fails with `host_key_changed`; pinning the new key in the next
//! request (or [`PushJobs::forget_host_key`]) accepts it.
//!
//! Through VMware Tools (`via: vmware_tools`) the request names the VM as `<vCenter id>/<moref>`;
//! the job logs in to that stored vCenter (`Vcenters::login_target`, the login discovery uses) and
//! has no host, port or host key.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use actors::push::PushError;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore};

use super::auth::{Principal, Role};
use super::guest_credentials::GuestCredentials;
use super::vcenters::Vcenters;
use super::{MgmtError, Page, PageRequest};
use crate::registry::{Enrollments, IssuedEnrollment};
use crate::state::{now_rfc3339, State, StateError};

#[path = "push_jobs_checks.rs"]
mod checks;
#[path = "push_jobs_credential.rs"]
mod credential;
#[path = "push_jobs_record.rs"]
mod record;
#[path = "push_jobs_run.rs"]
mod run;

pub(crate) use checks::Plan;
pub(crate) use record::state_name;
pub use record::Via;
use record::{decode_view, describe, host_key_name, push_log, put, record};
pub(crate) use run::{ssh_executor, Executor};

pub const TREE: &str = "push_jobs";
pub const HOST_KEYS_TREE: &str = "push_host_keys";
/// Attempts of one job; only retryable errors (unreachable host, timeout, broken session) retry.
pub const MAX_ATTEMPTS: u32 = 3;
/// Jobs running at once; more wait `queued`.
pub const MAX_RUNNING: usize = 4;
/// Log lines kept per job (the oldest give way, the first line says so).
pub const MAX_LOG_LINES: usize = 400;
/// Job records kept; the oldest finished ones go first.
pub const MAX_JOBS: usize = 2000;
/// The error of a job the appliance was restarted under.
pub const INTERRUPTED: &str =
    "interrupted by an appliance restart (credentials are not stored, so it cannot resume): start it again";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    #[default]
    Install,
    Upgrade,
    Uninstall,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PushJobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl PushJobState {
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            PushJobState::Succeeded | PushJobState::Failed | PushJobState::Cancelled
        )
    }
}

/// How to log in to the guest (VMware Tools: a password only). Used by the job's task and never
/// stored.
#[derive(Clone, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PushAuth {
    Password {
        password: String,
    },
    PrivateKey {
        /// OpenSSH or PEM private key.
        private_key: String,
        passphrase: Option<String>,
    },
    /// A stored guest credential (`/api/v1/guest-credentials`): its user and secret are used, so
    /// `username` may be left out.
    Credential {
        id: String,
    },
}

impl std::fmt::Debug for PushAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PushAuth::Password { .. } => f.write_str("Password(..)"),
            PushAuth::PrivateKey { .. } => f.write_str("PrivateKey(..)"),
            PushAuth::Credential { id } => write!(f, "Credential({id})"),
        }
    }
}

fn default_port() -> u16 {
    22
}

/// A push job as requested.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushRequest {
    /// `ssh` (default) or `vmware_tools`.
    #[serde(default)]
    pub via: Via,
    /// Guest address (name or IP) as the appliance reaches it (SSH only; leave it out with
    /// `vmware_tools`).
    #[serde(default)]
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Guest user (root, or a user with password-less sudo); taken from the credential when `auth`
    /// names one.
    #[serde(default)]
    pub username: String,
    pub auth: PushAuth,
    /// Pinned host key fingerprint (`SHA256:...`). Default: the key recorded for this host by an
    /// earlier job, else the key the host presents now (trusted on first use and recorded).
    pub host_key: Option<String>,
    /// Local folder of agent binaries (`mobility-x86_64`, `mobility-aarch64`). Set by the appliance,
    /// never by an API caller; `None`: [`PushSettings::agents_dir`].
    #[serde(skip)]
    #[schema(ignore)]
    pub agents_dir: Option<PathBuf>,
    /// HOST:PORT of the appliance's replication listener as the guest reaches it. Default:
    /// [`PushSettings::appliance_addr`].
    pub appliance_addr: Option<String>,
    /// Disks on the guest to protect (install).
    #[serde(default)]
    pub disks: Vec<String>,
    /// The VM: a vCenter id and managed object id (`vc-1/vm-42`) or, over SSH, a free label.
    pub vm: String,
    #[serde(default)]
    pub operation: Operation,
    /// Install folder on the guest (default `/opt/ferry-mobility`).
    pub prefix: Option<String>,
    /// Seconds between the agent's replication passes (default: the agent's).
    pub interval_secs: Option<u64>,
}

/// A job's error, as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PushJobError {
    /// `authentication_failed`, `host_unreachable`, `host_key_changed`, `unsupported_os`,
    /// `not_enough_space`, `command_failed`, `sudo_needs_password`, `tools_not_running`,
    /// `agent_did_not_register`, `timeout`, `ssh`, `invalid`, `interrupted`.
    pub code: String,
    pub message: String,
    pub retryable: bool,
}

impl From<&PushError> for PushJobError {
    fn from(e: &PushError) -> PushJobError {
        PushJobError {
            code: e.code().to_string(),
            message: e.to_string(),
            retryable: e.is_retryable(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PushJobView {
    pub id: String,
    pub vm: String,
    /// `ssh` or `vmware_tools`.
    #[serde(default)]
    pub via: Via,
    /// SSH only: empty (and port 0) through VMware Tools.
    pub host: String,
    pub port: u16,
    pub username: String,
    /// The stored guest credential the job logged in with, if it named one.
    #[serde(default)]
    pub credential: Option<String>,
    pub operation: Operation,
    pub state: PushJobState,
    /// Attempts started so far (at most [`MAX_ATTEMPTS`]).
    pub attempts: u32,
    /// What each step did, oldest first (`<RFC 3339> <text>`).
    pub log: Vec<String>,
    pub error: Option<PushJobError>,
    /// The host key the job saw (`SHA256:...`).
    pub host_key: Option<String>,
    /// The agent that registered (install) or was found (upgrade, uninstall).
    pub agent_id: Option<String>,
    /// How the agent is kept running: `systemd`, `init_script` or `detached`.
    pub service: Option<String>,
    pub arch: Option<String>,
    pub os: Option<String>,
    /// Ids of the enrollment tokens issued for this job (never the secrets).
    pub enrollments: Vec<String>,
    pub requested_by: String,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    #[serde(default)]
    pub cancel_requested: bool,
}

/// Appliance-side settings of the runner.
#[derive(Clone, Debug)]
pub struct PushSettings {
    /// Local folder of agent binaries (`mobility-<arch>`).
    pub agents_dir: PathBuf,
    /// The appliance CA's SHA-256 fingerprint (the agent pins it).
    pub ca_fingerprint: String,
    /// The replication listener as guests reach it, when a request names none.
    pub appliance_addr: Option<String>,
    /// How long an install waits for the agent to register (default 120 s).
    pub register_timeout: Duration,
    /// First pause before a retry; doubles per attempt up to `max_backoff` (default 5 s, 60 s).
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Per-step timeouts of the SSH session.
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub upload_timeout: Duration,
    /// Validity of a job's enrollment token (default 1 h).
    pub enrollment_ttl: Duration,
}

impl PushSettings {
    pub fn new(agents_dir: PathBuf, ca_fingerprint: String) -> PushSettings {
        PushSettings {
            agents_dir,
            ca_fingerprint,
            appliance_addr: None,
            register_timeout: Duration::from_secs(120),
            backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(15),
            command_timeout: Duration::from_secs(120),
            upload_timeout: Duration::from_secs(600),
            enrollment_ttl: crate::registry::DEFAULT_ENROLLMENT_TTL,
        }
    }
}

/// What a queued or running job shares with its task.
struct Live {
    cancel: AtomicBool,
    wake: Notify,
}

struct Inner {
    state: State,
    enrollments: Enrollments,
    settings: PushSettings,
    executor: Executor,
    slots: Semaphore,
    /// The stored vCenters, for jobs through VMware Tools (attached once the core has them).
    vcenters: OnceLock<Vcenters>,
    /// Stored guest logins a request may name (attached once the core has them).
    guest_credentials: OnceLock<GuestCredentials>,
    /// Queued and running jobs by id, with their target (`host:port`, or `vm:<vm>` through VMware
    /// Tools) for the one-job-per-guest rule.
    live: Mutex<HashMap<String, (String, Arc<Live>)>>,
    /// Serializes read-modify-write of job records (log lines from a task, cancel from a request).
    records: Mutex<()>,
}

/// The push job runner. Cheap to clone.
#[derive(Clone)]
pub struct PushJobs {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PushJobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushJobs")
            .field("agents_dir", &self.inner.settings.agents_dir)
            .finish_non_exhaustive()
    }
}

impl PushJobs {
    /// Opens the runner and fails jobs a previous process left queued or running (see
    /// [`PushJobs::recover`]; a failure there is logged).
    pub fn new(state: State, settings: PushSettings) -> PushJobs {
        Self::with_executor(state, settings, ssh_executor())
    }

    pub(crate) fn with_executor(
        state: State,
        settings: PushSettings,
        executor: Executor,
    ) -> PushJobs {
        let jobs = PushJobs {
            inner: Arc::new(Inner {
                enrollments: Enrollments::new(state.clone()),
                state,
                settings,
                executor,
                slots: Semaphore::new(MAX_RUNNING),
                vcenters: OnceLock::new(),
                guest_credentials: OnceLock::new(),
                live: Mutex::new(HashMap::new()),
                records: Mutex::new(()),
            }),
        };
        match jobs.recover() {
            Ok(0) => {}
            Ok(n) => tracing::warn!(jobs = n, "push jobs interrupted by a restart marked failed"),
            Err(err) => tracing::error!(%err, "could not recover interrupted push jobs"),
        }
        jobs
    }

    /// Lets jobs reach guests through these vCenters (`via: vmware_tools`); the first call counts.
    pub fn use_vcenters(&self, vcenters: Vcenters) {
        let _ = self.inner.vcenters.set(vcenters);
    }

    /// Lets requests name stored guest credentials; the first call counts.
    pub fn use_guest_credentials(&self, creds: GuestCredentials) {
        let _ = self.inner.guest_credentials.set(creds);
    }

    /// Marks every job recorded as queued or running but not live in this process failed with
    /// [`INTERRUPTED`] and withdraws its unused enrollment tokens. Returns how many it marked.
    pub fn recover(&self) -> Result<usize, MgmtError> {
        let tree = self.tree()?;
        let mut marked = 0;
        for entry in tree.iter() {
            let (key, raw) = entry?;
            let Ok(view) = decode_view(&key, &raw) else {
                tracing::warn!("skipping an unreadable push job record");
                continue;
            };
            if view.state.is_finished() || self.live().contains_key(&view.id) {
                continue;
            }
            for id in &view.enrollments {
                self.inner.enrollments.revoke(id)?;
            }
            self.update(&view.id, |v| {
                v.state = PushJobState::Failed;
                v.error = Some(PushJobError {
                    code: "interrupted".into(),
                    message: INTERRUPTED.into(),
                    retryable: true,
                });
                v.finished_at = Some(now_rfc3339());
                push_log(v, INTERRUPTED);
            })?;
            self.inner.state.audit(
                "push_job_failed",
                &format!("job {}: {INTERRUPTED}", view.id),
            )?;
            marked += 1;
        }
        if marked > 0 {
            self.inner.state.flush()?;
        }
        Ok(marked)
    }

    /// Validates the request, records the job `queued` and starts it on the current tokio runtime.
    /// Admin only: it hands credentials to the appliance and software to a guest.
    pub fn start(
        &self,
        by: &Principal,
        source: &str,
        req: PushRequest,
    ) -> Result<PushJobView, MgmtError> {
        if by.role < Role::Admin {
            return Err(MgmtError::Forbidden(
                "push installs need the admin role".into(),
            ));
        }
        let (req, credential) = credential::resolve(self.inner.guest_credentials.get(), req)?;
        let plan = checks::plan(&self.inner.settings, self.inner.vcenters.get(), req)?;
        let target_key = plan.target_key();
        let mut live_map = self.live();
        if live_map.values().any(|(t, _)| *t == target_key) {
            return Err(MgmtError::Conflict(format!(
                "a push job for {target_key} is queued or running; wait for it or cancel it"
            )));
        }
        let tree = self.tree()?;
        self.prune(&tree)?;
        let id = format!("{:016x}", self.inner.state.db().generate_id()?);
        let view = PushJobView {
            id: id.clone(),
            vm: plan.vm.clone(),
            via: plan.via(),
            host: plan.ssh().map(|t| t.host.clone()).unwrap_or_default(),
            port: plan.ssh().map_or(0, |t| t.port),
            username: plan.target.username().to_string(),
            credential,
            operation: plan.operation,
            state: PushJobState::Queued,
            attempts: 0,
            log: Vec::new(),
            error: None,
            host_key: None,
            agent_id: None,
            service: None,
            arch: None,
            os: None,
            enrollments: Vec::new(),
            requested_by: by.user.clone(),
            created_at: now_rfc3339(),
            started_at: None,
            finished_at: None,
            cancel_requested: false,
        };
        put(&tree, &view)?;
        let audited =
            self.inner
                .state
                .audit_as(&by.user, source, "push_job_started", &describe(&view));
        if let Err(err) = audited {
            let _ = tree.remove(id.as_bytes());
            return Err(err.into());
        }
        tree.flush()?;
        let live = Arc::new(Live {
            cancel: AtomicBool::new(false),
            wake: Notify::new(),
        });
        live_map.insert(id.clone(), (target_key, live.clone()));
        drop(live_map);
        let jobs = self.clone();
        tokio::spawn(async move { jobs.run(id, plan, live).await });
        Ok(view)
    }

    /// Jobs, newest first.
    pub fn list(&self, page: PageRequest) -> Result<Page<PushJobView>, MgmtError> {
        let (offset, limit) = page.resolve()?;
        let tree = self.tree()?;
        let items = tree
            .iter()
            .rev()
            .skip(offset)
            .take(limit)
            .map(|entry| {
                let (key, raw) = entry?;
                decode_view(&key, &raw)
            })
            .collect::<Result<Vec<_>, MgmtError>>()?;
        Ok(Page {
            items,
            total: tree.len(),
            limit,
            offset,
        })
    }

    pub fn get(&self, id: &str) -> Result<PushJobView, MgmtError> {
        record(&self.tree()?, id)
    }

    /// Cancels a queued job at once, or asks a running one to stop: its SSH session is dropped
    /// between two steps' packets and it ends `cancelled` (the guest may be partly installed; every
    /// step is idempotent, so install or uninstall again). A finished job is a conflict.
    pub fn cancel(&self, by: &Principal, source: &str, id: &str) -> Result<PushJobView, MgmtError> {
        if by.role < Role::Admin {
            return Err(MgmtError::Forbidden("push jobs need the admin role".into()));
        }
        let live_map = self.live();
        let view = self.get(id)?;
        let Some((_, live)) = live_map.get(id).filter(|_| !view.state.is_finished()) else {
            return Err(MgmtError::Conflict(format!(
                "push job {id} has ended ({})",
                state_name(view.state)
            )));
        };
        if !live.cancel.swap(true, Ordering::AcqRel) {
            self.inner
                .state
                .audit_as(&by.user, source, "push_job_cancelled", &describe(&view))?;
            live.wake.notify_waiters();
        }
        drop(live_map);
        self.update(id, |v| v.cancel_requested = true)
    }

    /// The host key recorded for `host:port` by an earlier job, if any.
    pub fn known_host_key(&self, host: &str, port: u16) -> Result<Option<String>, MgmtError> {
        let tree = self.inner.state.db().open_tree(HOST_KEYS_TREE)?;
        Ok(tree
            .get(host_key_name(host, port))?
            .map(|raw| String::from_utf8_lossy(&raw).into_owned()))
    }

    /// Forgets the recorded host key of `host:port` (the guest was reinstalled): the next job trusts
    /// the key it is shown. Audited. Returns whether a key was recorded.
    pub fn forget_host_key(
        &self,
        by: &Principal,
        source: &str,
        host: &str,
        port: u16,
    ) -> Result<bool, MgmtError> {
        if by.role < Role::Admin {
            return Err(MgmtError::Forbidden("push jobs need the admin role".into()));
        }
        let tree = self.inner.state.db().open_tree(HOST_KEYS_TREE)?;
        let removed = tree.remove(host_key_name(host, port))?.is_some();
        if removed {
            self.inner.state.audit_as(
                &by.user,
                source,
                "push_host_key_forgotten",
                &format!("{host}:{port}"),
            )?;
            self.inner.state.flush()?;
        }
        Ok(removed)
    }

    fn live(&self) -> MutexGuard<'_, HashMap<String, (String, Arc<Live>)>> {
        // Only inserted into and removed from; a panic elsewhere cannot leave it torn.
        self.inner.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tree(&self) -> Result<sled::Tree, MgmtError> {
        Ok(self.inner.state.db().open_tree(TREE)?)
    }

    /// Changes a job's record under the records lock and returns it.
    fn update(
        &self,
        id: &str,
        change: impl FnOnce(&mut PushJobView),
    ) -> Result<PushJobView, MgmtError> {
        let _guard = self.inner.records.lock().unwrap_or_else(|e| e.into_inner());
        let tree = self.tree()?;
        let mut view = record(&tree, id)?;
        change(&mut view);
        put(&tree, &view)?;
        Ok(view)
    }

    /// Keeps at most [`MAX_JOBS`] records by dropping the oldest finished ones.
    fn prune(&self, tree: &sled::Tree) -> Result<(), MgmtError> {
        let excess = tree.len().saturating_sub(MAX_JOBS - 1);
        if excess == 0 {
            return Ok(());
        }
        let mut dropped = 0;
        for entry in tree.iter() {
            let (key, raw) = entry?;
            if dropped >= excess {
                break;
            }
            if decode_view(&key, &raw).is_ok_and(|v| v.state.is_finished()) {
                tree.remove(key)?;
                dropped += 1;
            }
        }
        Ok(())
    }
}

/// The running part of a job (see `push_jobs_run.rs`).
impl PushJobs {
    async fn run(self, id: String, plan: Plan, live: Arc<Live>) {
        let started = Instant::now();
        let outcome = run::execute(&self, &id, &plan, &live).await;
        run::finish(&self, &id, &plan, outcome, started);
        self.live().remove(&id);
    }

    fn issue_enrollment(&self, vm: &str) -> Result<IssuedEnrollment, StateError> {
        self.inner
            .enrollments
            .issue(vm, self.inner.settings.enrollment_ttl, "system", "push-job")
    }
}

#[cfg(test)]
#[path = "push_jobs_tests.rs"]
mod tests;
