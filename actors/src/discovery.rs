//! Discovery of vCenters: one worker per vCenter keeps the appliance's copy of its VM inventory up to date.
//!
//! A worker connects and logs in, lists every VM (`list_vms`), hands the complete list to the
//! [`InventorySink`] (`replace_all`), then follows changes with a property-collector filter and
//! `WaitForUpdatesEx`, handing each created, changed or deleted VM to the sink as it arrives. A vCenter
//! that goes away (refused connection, timeout, cut or garbled response) is retried with exponential
//! backoff (1 s .. 60 s), and every reconnection starts over with a full list, so nothing missed while
//! it was down stays missed. A rejected password or a changed certificate cannot heal by retrying: the
//! worker marks the vCenter unhealthy with the reason and waits for the appliance to hand it a new
//! credential or thumbprint ([`Discovery::set_target`]).
//!
//! Workers run on one arbiter (thread) of their own, so parsing a large inventory never delays the
//! management API or the data path. Each worker supervises itself: a panic while following a vCenter is
//! caught, reported as that vCenter's health, and followed by a backoff and a fresh start; other vCenters
//! and replication carry on. This crate knows nothing of sled or HTTP: the appliance implements
//! [`InventorySink`] over its state database, and [`Connector`] is the vSphere client
//! ([`VsphereConnector`]) or, in tests, a scripted stand-in.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::{oneshot, watch};

#[path = "discovery_vsphere.rs"]
mod real;

pub use real::VsphereConnector;
pub use vsphere::inventory::VmInfo;
pub use vsphere::{Credentials, TlsTrust, VsphereError};

/// A vCenter to follow.
#[derive(Clone)]
pub struct VcenterTarget {
    /// The appliance's id of this vCenter (what the sink is told).
    pub id: String,
    /// `https://host[:port]/sdk`.
    pub url: String,
    pub credentials: Credentials,
    pub trust: TlsTrust,
}

impl std::fmt::Debug for VcenterTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("VcenterTarget")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("username", &self.credentials.username)
            .finish_non_exhaustive()
    }
}

/// How a vCenter's discovery is doing, as the sink records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VcenterHealth {
    /// Logged in and the inventory is current.
    Healthy,
    Unhealthy {
        reason: String,
        /// True: the worker retries by itself. False: it waits for a new credential or thumbprint.
        retryable: bool,
        /// On a certificate mismatch: the SHA-256 thumbprint the vCenter presents now.
        presented_thumbprint: Option<String>,
    },
}

/// Why following a vCenter stopped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The user name or password was refused: retrying cannot help until the credential changes.
    #[error("the vCenter rejected the user name or password; update the credential")]
    InvalidLogin,
    /// The vCenter presents another certificate than the pinned one: retrying cannot help until an
    /// operator checks and accepts the new thumbprint.
    #[error("{message}; if the new certificate is expected, accept its thumbprint")]
    CertificateMismatch {
        presented_sha256: String,
        message: String,
    },
    /// Anything else: unreachable, timed out, a fault, a garbled answer, the sink failing.
    #[error("{message}")]
    Other { message: String },
}

impl Failure {
    pub fn other(message: impl Into<String>) -> Failure {
        Failure::Other {
            message: message.into(),
        }
    }

    /// Whether only an operator's change (credential, thumbprint) can end this failure.
    pub fn needs_operator(&self) -> bool {
        matches!(
            self,
            Failure::InvalidLogin | Failure::CertificateMismatch { .. }
        )
    }

    pub fn health(&self) -> VcenterHealth {
        VcenterHealth::Unhealthy {
            reason: self.to_string(),
            retryable: !self.needs_operator(),
            presented_thumbprint: match self {
                Failure::CertificateMismatch {
                    presented_sha256, ..
                } => Some(presented_sha256.clone()),
                _ => None,
            },
        }
    }
}

impl From<VsphereError> for Failure {
    fn from(err: VsphereError) -> Failure {
        match err {
            VsphereError::InvalidLogin => Failure::InvalidLogin,
            VsphereError::CertificateMismatch {
                ref presented_sha256,
                ..
            } => Failure::CertificateMismatch {
                presented_sha256: presented_sha256.clone(),
                message: err.to_string(),
            },
            // Non-retryable calls (a truncated answer, a fault) still end in a retry of the whole
            // discovery: a vCenter coming back or being repaired must be picked up without an operator.
            other => Failure::other(other.to_string()),
        }
    }
}

/// One change to a vCenter's inventory.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A VM appeared or changed: its complete current description.
    Upsert(Box<VmInfo>),
    /// A VM is gone (deleted or unregistered), by moref value.
    Remove(String),
}

/// Opens sessions to vCenters.
pub trait Connector: Send + Sync + 'static {
    /// Connects to `target`, checks its certificate and logs in.
    fn connect(
        &self,
        target: &VcenterTarget,
    ) -> BoxFuture<'static, Result<Box<dyn Session>, Failure>>;
}

/// A logged-in session with one vCenter.
pub trait Session: Send {
    /// Every VM, complete.
    fn list_vms(&mut self) -> BoxFuture<'_, Result<Vec<VmInfo>, Failure>>;
    /// Starts following changes (call once, after `list_vms`).
    fn watch(&mut self) -> BoxFuture<'_, Result<(), Failure>>;
    /// Waits up to `max_wait` for changes since the previous call; empty when nothing changed.
    fn changes(&mut self, max_wait: Duration) -> BoxFuture<'_, Result<Vec<Change>, Failure>>;
    /// Logs out (best effort).
    fn close(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// Where discovery puts what it learns. Called from the discovery thread; may block briefly.
pub trait InventorySink: Send + Sync + 'static {
    /// The complete inventory of a vCenter: VMs not in `vms` are gone.
    fn replace_all(&self, vcenter_id: &str, vms: Vec<VmInfo>) -> Result<(), String>;
    fn upsert(&self, vcenter_id: &str, vm: VmInfo) -> Result<(), String>;
    fn remove(&self, vcenter_id: &str, moref: &str) -> Result<(), String>;
    fn set_health(&self, vcenter_id: &str, health: VcenterHealth);
}

/// Timing of discovery.
#[derive(Clone, Debug)]
pub struct DiscoveryConfig {
    /// Longest a `WaitForUpdatesEx` call waits for changes.
    pub max_wait: Duration,
    /// First and largest wait before reconnecting after a failure.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Longest a connection, login or full listing may take before it counts as failed.
    pub call_timeout: Duration,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            max_wait: Duration::from_secs(30),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            call_timeout: Duration::from_secs(300),
        }
    }
}

#[derive(Clone)]
enum Control {
    Run(Arc<VcenterTarget>),
    Stop,
}

struct Worker {
    control: watch::Sender<Control>,
    done: oneshot::Receiver<()>,
}

struct Inner {
    arbiter: Mutex<Option<actix_rt::Arbiter>>,
    workers: Mutex<HashMap<String, Worker>>,
    sink: Arc<dyn InventorySink>,
    connector: Arc<dyn Connector>,
    config: DiscoveryConfig,
}

/// The running discovery: add, change and remove vCenters at runtime. Cheap to clone.
#[derive(Clone)]
pub struct Discovery {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("vcenters", &self.ids())
            .finish_non_exhaustive()
    }
}

/// Sends `()` when dropped: a worker that ends for any reason (stop, its arbiter going away) says so.
struct DoneGuard(Option<oneshot::Sender<()>>);

impl Drop for DoneGuard {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

impl Discovery {
    /// Starts discovery on an arbiter of its own, following no vCenter yet. Must be called inside an actix
    /// System.
    pub fn start(
        sink: Arc<dyn InventorySink>,
        connector: Arc<dyn Connector>,
        config: DiscoveryConfig,
    ) -> Discovery {
        Discovery {
            inner: Arc::new(Inner {
                arbiter: Mutex::new(Some(actix_rt::Arbiter::new())),
                workers: Mutex::default(),
                sink,
                connector,
                config,
            }),
        }
    }

    /// The ids of the vCenters followed.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .inner
            .workers
            .lock()
            .expect("discovery lock")
            .keys()
            .cloned()
            .collect();
        ids.sort();
        ids
    }

    /// Follows `target`: a new vCenter starts at once; a known one starts over with the new URL,
    /// credential or trust (which also ends a wait for an operator's fix).
    pub fn set_target(&self, target: VcenterTarget) {
        let target = Arc::new(target);
        let mut workers = self.inner.workers.lock().expect("discovery lock");
        if let Some(worker) = workers.get(&target.id) {
            if worker.control.send(Control::Run(target.clone())).is_ok() {
                return;
            }
        }
        let arbiter = self.inner.arbiter.lock().expect("discovery lock");
        let Some(arbiter) = arbiter.as_ref() else {
            tracing::warn!(vcenter = %target.id, "discovery is shut down; not following");
            return;
        };
        let (control, control_rx) = watch::channel(Control::Run(target.clone()));
        let (done_tx, done) = oneshot::channel();
        let (sink, connector, config) = (
            self.inner.sink.clone(),
            self.inner.connector.clone(),
            self.inner.config.clone(),
        );
        let spawned = arbiter.spawn(async move {
            let _done = DoneGuard(Some(done_tx));
            worker(control_rx, sink, connector, config).await;
        });
        if !spawned {
            tracing::error!(vcenter = %target.id, "the discovery thread is gone; not following");
            return;
        }
        workers.insert(target.id.clone(), Worker { control, done });
    }

    /// Stops following a vCenter and returns once its worker has ended, so the sink hears nothing more
    /// about it afterwards. Unknown ids are ignored.
    pub async fn remove(&self, id: &str) {
        let worker = self
            .inner
            .workers
            .lock()
            .expect("discovery lock")
            .remove(id);
        if let Some(worker) = worker {
            stop(worker).await;
        }
    }

    /// Stops every worker and the discovery thread.
    pub async fn shutdown(&self) {
        let workers: Vec<Worker> = self
            .inner
            .workers
            .lock()
            .expect("discovery lock")
            .drain()
            .map(|(_, w)| w)
            .collect();
        futures::future::join_all(workers.into_iter().map(stop)).await;
        let arbiter = self.inner.arbiter.lock().expect("discovery lock").take();
        if let Some(arbiter) = arbiter {
            arbiter.stop();
            let _ = tokio::task::spawn_blocking(move || arbiter.join()).await;
        }
    }
}

/// How long a stopping worker may take: it only has to reach its next await point.
const STOP_WAIT: Duration = Duration::from_secs(10);

async fn stop(worker: Worker) {
    let _ = worker.control.send(Control::Stop);
    if tokio::time::timeout(STOP_WAIT, worker.done).await.is_err() {
        tracing::warn!("a discovery worker did not stop within {STOP_WAIT:?}");
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

/// Resolves when the control value changes (`true`) or its sender is gone (`false`).
async fn changed(control: &mut watch::Receiver<Control>) -> bool {
    control.changed().await.is_ok()
}

/// One vCenter's worker: follows the current target until told to stop, restarting after failures.
async fn worker(
    mut control: watch::Receiver<Control>,
    sink: Arc<dyn InventorySink>,
    connector: Arc<dyn Connector>,
    config: DiscoveryConfig,
) {
    let mut backoff = config.backoff_min;
    loop {
        let target = match &*control.borrow_and_update() {
            Control::Run(target) => target.clone(),
            Control::Stop => return,
        };
        let mut synced = false;
        let run = AssertUnwindSafe(follow(
            &target,
            sink.as_ref(),
            connector.as_ref(),
            &config,
            &mut synced,
        ))
        .catch_unwind();
        let outcome = tokio::select! {
            outcome = run => outcome,
            alive = changed(&mut control) => {
                if !alive {
                    return;
                }
                // A new target (or stop): start over at once.
                backoff = config.backoff_min;
                continue;
            }
        };
        let failure = outcome.unwrap_or_else(|panic| {
            Failure::other(format!(
                "discovery crashed ({}); restarting it",
                panic_message(&*panic)
            ))
        });
        if synced {
            backoff = config.backoff_min;
        }
        sink.set_health(&target.id, failure.health());
        if failure.needs_operator() {
            tracing::error!(vcenter = %target.id, url = %target.url, error = %failure,
                "vCenter discovery stopped until its credential or thumbprint is updated");
            if !changed(&mut control).await {
                return;
            }
            backoff = config.backoff_min;
            continue;
        }
        tracing::warn!(vcenter = %target.id, url = %target.url, error = %failure,
            retry_in_ms = backoff.as_millis() as u64, "vCenter discovery failed; retrying");
        tokio::select! {
            () = tokio::time::sleep(backoff) => {
                backoff = (backoff * 2).min(config.backoff_max);
            }
            alive = changed(&mut control) => {
                if !alive {
                    return;
                }
                backoff = config.backoff_min;
            }
        }
    }
}

/// How long logging out may delay a restart.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

fn sink_failure(what: &str, err: String) -> Failure {
    Failure::other(format!("storing the inventory ({what}): {err}"))
}

/// Connects, lists, stores, then follows changes until something fails. Never returns otherwise.
async fn follow(
    target: &VcenterTarget,
    sink: &dyn InventorySink,
    connector: &dyn Connector,
    config: &DiscoveryConfig,
    synced: &mut bool,
) -> Failure {
    let timed_out =
        |what: &str| Failure::other(format!("{what} took longer than {:?}", config.call_timeout));
    let mut session =
        match tokio::time::timeout(config.call_timeout, connector.connect(target)).await {
            Ok(Ok(session)) => session,
            Ok(Err(failure)) => return failure,
            Err(_) => return timed_out("connecting and logging in"),
        };
    let result: Result<(), Failure> = async {
        let started = std::time::Instant::now();
        let vms = tokio::time::timeout(config.call_timeout, session.list_vms())
            .await
            .map_err(|_| timed_out("listing the VMs"))??;
        let count = vms.len();
        sink.replace_all(&target.id, vms)
            .map_err(|e| sink_failure("full list", e))?;
        sink.set_health(&target.id, VcenterHealth::Healthy);
        *synced = true;
        tracing::info!(vcenter = %target.id, vms = count, ms = started.elapsed().as_millis() as u64,
            "vCenter inventory synchronized");
        tokio::time::timeout(config.call_timeout, session.watch())
            .await
            .map_err(|_| timed_out("creating the change filter"))??;
        // The server holds each call up to max_wait; the slack covers a slow answer after that.
        let wait_limit = config.max_wait + config.call_timeout;
        loop {
            let changes = tokio::time::timeout(wait_limit, session.changes(config.max_wait))
                .await
                .map_err(|_| timed_out("waiting for changes"))??;
            for change in changes {
                match change {
                    Change::Upsert(vm) => sink
                        .upsert(&target.id, *vm)
                        .map_err(|e| sink_failure("change", e))?,
                    Change::Remove(moref) => sink
                        .remove(&target.id, &moref)
                        .map_err(|e| sink_failure("removal", e))?,
                }
            }
        }
    }
    .await;
    let _ = tokio::time::timeout(CLOSE_WAIT, session.close()).await;
    match result {
        Err(failure) => failure,
        Ok(()) => Failure::other("discovery ended without an error"),
    }
}

#[cfg(test)]
#[path = "discovery_tests.rs"]
mod tests;
#[cfg(test)]
#[path = "discovery_vcsim_tests.rs"]
mod vcsim_tests;
