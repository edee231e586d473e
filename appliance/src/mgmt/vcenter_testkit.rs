//! A scripted vCenter for the tests of vCenters and their API: it checks the password and the pinned
//! thumbprint like a real one, can be taken down, and serves a VM list and queued changes.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actors::discovery::{
    Change, Connector, DiscoveryConfig, Failure, Session, TlsTrust, VcenterTarget, VmInfo,
};
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::Notify;

use super::{normalize_thumbprint, Vcenters};
use crate::mgmt::auth::{Principal, Role, TokenKind};
use crate::state::State;

pub const URL: &str = "https://vc.test.invalid/sdk";
pub const PASSWORD: &str = "vc pass word";
/// SHA-256 of the certificate the fake vCenter presents.
pub const THUMBPRINT: &str =
    "4F:21:9A:0C:55:01:B2:73:9E:C4:11:08:6D:AA:3B:F0:12:34:56:78:9A:BC:DE:F0:0F:1E:2D:3C:4B:5A:69:78";
/// SHA-256 of a certificate it presents after a "renewal".
pub const RENEWED: &str =
    "AA:21:9A:0C:55:01:B2:73:9E:C4:11:08:6D:AA:3B:F0:12:34:56:78:9A:BC:DE:F0:0F:1E:2D:3C:4B:5A:69:78";

#[derive(Debug)]
pub struct FakeVcenter {
    pub password: Mutex<String>,
    pub presents: Mutex<String>,
    pub up: AtomicBool,
    pub vms: Mutex<Vec<VmInfo>>,
    pub changes: Mutex<VecDeque<Change>>,
    pub changed: Notify,
    pub logins: AtomicUsize,
    pub logouts: AtomicUsize,
}

impl FakeVcenter {
    pub fn new() -> Arc<FakeVcenter> {
        Arc::new(FakeVcenter {
            password: Mutex::new(PASSWORD.into()),
            presents: Mutex::new(THUMBPRINT.into()),
            up: AtomicBool::new(true),
            vms: Mutex::default(),
            changes: Mutex::default(),
            changed: Notify::new(),
            logins: AtomicUsize::new(0),
            logouts: AtomicUsize::new(0),
        })
    }

    pub fn push(&self, change: Change) {
        self.changes.lock().unwrap().push_back(change);
        self.changed.notify_waiters();
    }
}

struct FakeSession(Arc<FakeVcenter>);

/// Logs in to a [`FakeVcenter`].
pub struct FakeConnector(pub Arc<FakeVcenter>);

impl Connector for FakeConnector {
    fn connect(
        &self,
        target: &VcenterTarget,
    ) -> BoxFuture<'static, Result<Box<dyn Session>, Failure>> {
        let fake = self.0.clone();
        let target = target.clone();
        async move {
            if !fake.up.load(Ordering::SeqCst) {
                return Err(Failure::other("transport: connection refused"));
            }
            let presents = fake.presents.lock().unwrap().clone();
            let TlsTrust::Thumbprint(pinned) = &target.trust else {
                return Err(Failure::other("the fake only pins thumbprints"));
            };
            if normalize_thumbprint(pinned).ok().as_deref() != Some(presents.as_str()) {
                return Err(Failure::CertificateMismatch {
                    presented_sha256: presents.clone(),
                    message: format!("the certificate does not match: it presented {presents}"),
                });
            }
            if target.credentials.password != *fake.password.lock().unwrap() {
                return Err(Failure::InvalidLogin);
            }
            fake.logins.fetch_add(1, Ordering::SeqCst);
            Ok(Box::new(FakeSession(fake)) as Box<dyn Session>)
        }
        .boxed()
    }
}

impl Session for FakeSession {
    fn list_vms(&mut self) -> BoxFuture<'_, Result<Vec<VmInfo>, Failure>> {
        async move {
            if !self.0.up.load(Ordering::SeqCst) {
                return Err(Failure::other("transport: connection reset"));
            }
            Ok(self.0.vms.lock().unwrap().clone())
        }
        .boxed()
    }

    fn watch(&mut self) -> BoxFuture<'_, Result<(), Failure>> {
        async { Ok(()) }.boxed()
    }

    fn changes(&mut self, max_wait: Duration) -> BoxFuture<'_, Result<Vec<Change>, Failure>> {
        async move {
            let deadline = tokio::time::Instant::now() + max_wait;
            loop {
                if !self.0.up.load(Ordering::SeqCst) {
                    return Err(Failure::other("transport: connection reset"));
                }
                let notified = self.0.changed.notified();
                let queued: Vec<Change> = self.0.changes.lock().unwrap().drain(..).collect();
                if !queued.is_empty() {
                    return Ok(queued);
                }
                if tokio::time::timeout_at(deadline, notified).await.is_err() {
                    return Ok(Vec::new());
                }
            }
        }
        .boxed()
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        self.0.logouts.fetch_add(1, Ordering::SeqCst);
        async {}.boxed()
    }
}

/// Fast discovery timings for tests.
pub fn quick() -> DiscoveryConfig {
    DiscoveryConfig {
        max_wait: Duration::from_millis(200),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        call_timeout: Duration::from_secs(5),
    }
}

/// A vCenters service over a fresh state in `dir`, logging in to `fake`.
pub fn vcenters_in(dir: &Path, fake: &Arc<FakeVcenter>) -> (Vcenters, State) {
    let state = State::open(dir).unwrap();
    let vcenters = Vcenters::new(
        state.clone(),
        dir.to_path_buf(),
        Arc::new(FakeConnector(fake.clone())),
    )
    .unwrap()
    .with_discovery_config(quick());
    (vcenters, state)
}

pub fn admin() -> Principal {
    Principal {
        user: "admin".into(),
        role: Role::Admin,
        token_id: "t1".into(),
        kind: TokenKind::Api,
    }
}

/// Polls `check` until it holds (or fails after 5 s).
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
