//! Discovery workers against a scripted vCenter and a recording sink: full sync, incremental changes,
//! backoff and recovery, waiting for an operator's fix, panics, removal.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::Notify;
use vsphere::MoRef;

use super::*;

const GOOD: &str = "right password";
const PINNED: &str = "AA:BB";

fn vm(id: &str, name: &str) -> VmInfo {
    let mut vm = VmInfo::new(MoRef::new("VirtualMachine", id));
    vm.name = name.to_string();
    vm.bios_uuid = Some(format!(
        "4221c7d8-0f6b-1a2b-3c4d-{:0>12}",
        id.trim_start_matches("vm-")
    ));
    vm
}

struct Fake {
    up: AtomicBool,
    password: Mutex<String>,
    presents: Mutex<String>,
    vms: Mutex<Vec<VmInfo>>,
    /// Handed out by `changes`; an `Err` ends the session there (the vCenter dropped away).
    queued: Mutex<VecDeque<Result<Change, Failure>>>,
    notify: Notify,
    connects: AtomicUsize,
    closes: AtomicUsize,
    panics_left: AtomicUsize,
}

impl Fake {
    fn new(vms: Vec<VmInfo>) -> Arc<Fake> {
        Arc::new(Fake {
            up: AtomicBool::new(true),
            password: Mutex::new(GOOD.into()),
            presents: Mutex::new(PINNED.into()),
            vms: Mutex::new(vms),
            queued: Mutex::default(),
            notify: Notify::new(),
            connects: AtomicUsize::new(0),
            closes: AtomicUsize::new(0),
            panics_left: AtomicUsize::new(0),
        })
    }

    fn push(&self, item: Result<Change, Failure>) {
        self.queued.lock().unwrap().push_back(item);
        self.notify.notify_waiters();
    }
}

struct FakeConnector(Arc<Fake>);
struct FakeSession(Arc<Fake>);

impl Connector for FakeConnector {
    fn connect(
        &self,
        target: &VcenterTarget,
    ) -> BoxFuture<'static, Result<Box<dyn Session>, Failure>> {
        let fake = self.0.clone();
        let target = target.clone();
        async move {
            fake.connects.fetch_add(1, Ordering::SeqCst);
            if !fake.up.load(Ordering::SeqCst) {
                return Err(Failure::from(VsphereError::Transport {
                    reason: "connection refused".into(),
                }));
            }
            let presents = fake.presents.lock().unwrap().clone();
            match &target.trust {
                TlsTrust::Thumbprint(t) if *t == presents => {}
                _ => {
                    return Err(Failure::from(VsphereError::CertificateMismatch {
                        expected: PINNED.into(),
                        presented_sha256: presents,
                        presented_sha1: "11:22".into(),
                    }))
                }
            }
            if target.credentials.password != *fake.password.lock().unwrap() {
                return Err(Failure::from(VsphereError::InvalidLogin));
            }
            Ok(Box::new(FakeSession(fake)) as Box<dyn Session>)
        }
        .boxed()
    }
}

impl Session for FakeSession {
    fn list_vms(&mut self) -> BoxFuture<'_, Result<Vec<VmInfo>, Failure>> {
        async move {
            if self.0.panics_left.load(Ordering::SeqCst) > 0 {
                self.0.panics_left.fetch_sub(1, Ordering::SeqCst);
                panic!("injected listing fault");
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
                let notified = self.0.notify.notified();
                let mut out = Vec::new();
                {
                    let mut queued = self.0.queued.lock().unwrap();
                    while let Some(item) = queued.pop_front() {
                        match item {
                            Ok(change) => out.push(change),
                            Err(failure) if out.is_empty() => return Err(failure),
                            Err(failure) => {
                                queued.push_front(Err(failure));
                                break;
                            }
                        }
                    }
                }
                if !out.is_empty() {
                    return Ok(out);
                }
                if tokio::time::timeout_at(deadline, notified).await.is_err() {
                    return Ok(Vec::new());
                }
            }
        }
        .boxed()
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        self.0.closes.fetch_add(1, Ordering::SeqCst);
        async {}.boxed()
    }
}

#[derive(Default)]
pub(super) struct Recorder {
    pub(super) inventory: Mutex<HashMap<String, BTreeMap<String, VmInfo>>>,
    pub(super) health: Mutex<HashMap<String, Vec<VcenterHealth>>>,
    pub(super) replaces: AtomicUsize,
    calls: AtomicUsize,
}

impl Recorder {
    pub(super) fn names(&self, id: &str) -> Vec<String> {
        let inv = self.inventory.lock().unwrap();
        let mut names: Vec<String> = inv
            .get(id)
            .map(|m| m.values().map(|v| v.name.clone()).collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    pub(super) fn last_health(&self, id: &str) -> Option<VcenterHealth> {
        self.health
            .lock()
            .unwrap()
            .get(id)
            .and_then(|h| h.last().cloned())
    }
}

impl InventorySink for Recorder {
    fn replace_all(&self, id: &str, vms: Vec<VmInfo>) -> Result<(), String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.replaces.fetch_add(1, Ordering::SeqCst);
        let map = vms
            .into_iter()
            .map(|v| (v.moref.value.clone(), v))
            .collect();
        self.inventory.lock().unwrap().insert(id.to_string(), map);
        Ok(())
    }

    fn upsert(&self, id: &str, vm: VmInfo) -> Result<(), String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut inv = self.inventory.lock().unwrap();
        inv.entry(id.to_string())
            .or_default()
            .insert(vm.moref.value.clone(), vm);
        Ok(())
    }

    fn remove(&self, id: &str, moref: &str) -> Result<(), String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(m) = self.inventory.lock().unwrap().get_mut(id) {
            m.remove(moref);
        }
        Ok(())
    }

    fn set_health(&self, id: &str, health: VcenterHealth) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.health
            .lock()
            .unwrap()
            .entry(id.to_string())
            .or_default()
            .push(health);
    }
}

pub(super) fn quick() -> DiscoveryConfig {
    DiscoveryConfig {
        max_wait: Duration::from_millis(200),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(80),
        call_timeout: Duration::from_secs(5),
    }
}

fn target(id: &str, password: &str, thumbprint: &str) -> VcenterTarget {
    VcenterTarget {
        id: id.into(),
        url: format!("https://{id}.test.invalid/sdk"),
        credentials: Credentials {
            username: "u".into(),
            password: password.into(),
        },
        trust: TlsTrust::Thumbprint(thumbprint.into()),
    }
}

pub(super) async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn start(fake: &Arc<Fake>) -> (Discovery, Arc<Recorder>) {
    let sink = Arc::new(Recorder::default());
    let discovery = Discovery::start(sink.clone(), Arc::new(FakeConnector(fake.clone())), quick());
    (discovery, sink)
}

#[actix_rt::test]
async fn full_sync_then_incremental_changes() {
    let fake = Fake::new(vec![vm("vm-1", "db"), vm("vm-2", "web")]);
    let (discovery, sink) = start(&fake);
    discovery.set_target(target("vc1", GOOD, PINNED));
    eventually("the full list", || sink.names("vc1") == ["db", "web"]).await;
    assert_eq!(sink.last_health("vc1"), Some(VcenterHealth::Healthy));
    assert_eq!(discovery.ids(), ["vc1"]);

    let mut renamed = vm("vm-1", "db-renamed");
    renamed.power_state = vsphere::PowerState::PoweredOff;
    fake.push(Ok(Change::Upsert(Box::new(renamed))));
    fake.push(Ok(Change::Upsert(Box::new(vm("vm-3", "new")))));
    fake.push(Ok(Change::Remove("vm-2".into())));
    eventually("the changes", || sink.names("vc1") == ["db-renamed", "new"]).await;
    let power = sink.inventory.lock().unwrap()["vc1"]["vm-1"].power_state;
    assert_eq!(power, vsphere::PowerState::PoweredOff);
    assert_eq!(
        sink.replaces.load(Ordering::SeqCst),
        1,
        "changes are applied one by one"
    );
    discovery.shutdown().await;
    assert!(discovery.ids().is_empty());
}

#[actix_rt::test]
async fn an_unreachable_vcenter_is_retried_and_resynchronized() {
    let fake = Fake::new(vec![vm("vm-1", "db")]);
    fake.up.store(false, Ordering::SeqCst);
    let (discovery, sink) = start(&fake);
    discovery.set_target(target("vc1", GOOD, PINNED));
    eventually("several attempts", || {
        fake.connects.load(Ordering::SeqCst) >= 3
    })
    .await;
    match sink.last_health("vc1") {
        Some(VcenterHealth::Unhealthy {
            reason, retryable, ..
        }) => {
            assert!(retryable);
            assert!(reason.contains("connection refused"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    fake.up.store(true, Ordering::SeqCst);
    eventually("recovery", || sink.names("vc1") == ["db"]).await;
    assert_eq!(sink.last_health("vc1"), Some(VcenterHealth::Healthy));

    // The vCenter drops away while being followed; what changed meanwhile comes with the next full list.
    let connects = fake.connects.load(Ordering::SeqCst);
    fake.vms
        .lock()
        .unwrap()
        .push(vm("vm-9", "created-while-down"));
    fake.push(Err(Failure::from(VsphereError::Malformed {
        reason: "truncated response".into(),
    })));
    eventually("a full list after reconnecting", || {
        sink.names("vc1") == ["created-while-down", "db"]
    })
    .await;
    assert!(fake.connects.load(Ordering::SeqCst) > connects);
    assert_eq!(sink.replaces.load(Ordering::SeqCst), 2);
    assert!(
        fake.closes.load(Ordering::SeqCst) >= 1,
        "the broken session was closed"
    );
    discovery.shutdown().await;
}

#[actix_rt::test]
async fn a_refused_login_waits_for_a_new_credential() {
    let fake = Fake::new(vec![vm("vm-1", "db")]);
    let (discovery, sink) = start(&fake);
    discovery.set_target(target("vc1", "wrong", PINNED));
    eventually("the refusal", || sink.last_health("vc1").is_some()).await;
    match sink.last_health("vc1") {
        Some(VcenterHealth::Unhealthy {
            retryable: false,
            reason,
            ..
        }) => assert!(reason.contains("update the credential"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // No hammering: many backoff periods later, still one attempt.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.connects.load(Ordering::SeqCst), 1);
    discovery.set_target(target("vc1", GOOD, PINNED));
    eventually("the sync with the new password", || {
        sink.names("vc1") == ["db"]
    })
    .await;
    assert_eq!(sink.last_health("vc1"), Some(VcenterHealth::Healthy));
    discovery.shutdown().await;
}

#[actix_rt::test]
async fn a_changed_certificate_waits_for_its_thumbprint_to_be_accepted() {
    let fake = Fake::new(vec![vm("vm-1", "db")]);
    *fake.presents.lock().unwrap() = "CC:DD".into();
    let (discovery, sink) = start(&fake);
    discovery.set_target(target("vc1", GOOD, PINNED));
    eventually("the mismatch", || sink.last_health("vc1").is_some()).await;
    assert_eq!(
        sink.last_health("vc1"),
        Some(VcenterHealth::Unhealthy {
            reason: Failure::CertificateMismatch {
                presented_sha256: "CC:DD".into(),
                message: VsphereError::CertificateMismatch {
                    expected: PINNED.into(),
                    presented_sha256: "CC:DD".into(),
                    presented_sha1: "11:22".into(),
                }
                .to_string(),
            }
            .to_string(),
            retryable: false,
            presented_thumbprint: Some("CC:DD".into()),
        })
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(fake.connects.load(Ordering::SeqCst), 1);
    discovery.set_target(target("vc1", GOOD, "CC:DD"));
    eventually("the sync after accepting", || sink.names("vc1") == ["db"]).await;
    discovery.shutdown().await;
}

#[actix_rt::test]
async fn a_panic_costs_one_vcenter_a_restart_and_nothing_else() {
    let broken = Fake::new(vec![vm("vm-1", "a")]);
    broken.panics_left.store(2, Ordering::SeqCst);
    let healthy = Fake::new(vec![vm("vm-1", "b")]);
    let sink = Arc::new(Recorder::default());
    // One connector serving two vCenters: by id.
    struct Two(Arc<Fake>, Arc<Fake>);
    impl Connector for Two {
        fn connect(
            &self,
            target: &VcenterTarget,
        ) -> BoxFuture<'static, Result<Box<dyn Session>, Failure>> {
            let fake = if target.id == "broken" {
                &self.0
            } else {
                &self.1
            };
            FakeConnector(fake.clone()).connect(target)
        }
    }
    let discovery = Discovery::start(
        sink.clone(),
        Arc::new(Two(broken.clone(), healthy.clone())),
        quick(),
    );
    discovery.set_target(target("broken", GOOD, PINNED));
    discovery.set_target(target("ok", GOOD, PINNED));
    eventually("the healthy vCenter", || sink.names("ok") == ["b"]).await;
    eventually("the broken one after its restarts", || {
        sink.names("broken") == ["a"]
    })
    .await;
    let health = sink.health.lock().unwrap()["broken"].clone();
    let crashes = health
        .iter()
        .filter(|h| matches!(h, VcenterHealth::Unhealthy { reason, retryable: true, .. } if reason.contains("injected listing fault")))
        .count();
    assert_eq!(crashes, 2, "{health:?}");
    assert_eq!(health.last(), Some(&VcenterHealth::Healthy));
    assert_eq!(
        sink.health.lock().unwrap()["ok"],
        vec![VcenterHealth::Healthy],
        "the other vCenter never noticed"
    );
    discovery.shutdown().await;
}

#[actix_rt::test]
async fn removal_stops_the_worker_before_it_returns() {
    let fake = Fake::new(vec![vm("vm-1", "db")]);
    let (discovery, sink) = start(&fake);
    discovery.set_target(target("vc1", GOOD, PINNED));
    eventually("the full list", || sink.names("vc1") == ["db"]).await;
    discovery.remove("vc1").await;
    assert!(discovery.ids().is_empty());
    let calls = sink.calls.load(Ordering::SeqCst);
    fake.push(Ok(Change::Upsert(Box::new(vm("vm-2", "late")))));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sink.calls.load(Ordering::SeqCst),
        calls,
        "nothing after removal"
    );
    assert_eq!(sink.names("vc1"), ["db"]);
    // Unknown ids are ignored, and a removed vCenter can come back.
    discovery.remove("nope").await;
    discovery.set_target(target("vc1", GOOD, PINNED));
    eventually("the second sync", || {
        sink.replaces.load(Ordering::SeqCst) == 2
    })
    .await;
    discovery.shutdown().await;
    // After shutdown nothing starts.
    discovery.set_target(target("vc2", GOOD, PINNED));
    assert!(discovery.ids().is_empty());
}

#[test]
fn failures_say_whether_an_operator_must_act() {
    assert!(Failure::from(VsphereError::InvalidLogin).needs_operator());
    let mismatch = Failure::from(VsphereError::CertificateMismatch {
        expected: "A".into(),
        presented_sha256: "B".into(),
        presented_sha1: "C".into(),
    });
    assert!(mismatch.needs_operator());
    assert!(mismatch.to_string().contains("accept its thumbprint"));
    for other in [
        VsphereError::Timeout,
        VsphereError::Malformed { reason: "x".into() },
        VsphereError::NotAuthenticated,
        VsphereError::Http { status: 500 },
    ] {
        let failure = Failure::from(other);
        assert!(!failure.needs_operator(), "{failure}");
        assert!(matches!(
            failure.health(),
            VcenterHealth::Unhealthy {
                retryable: true,
                presented_thumbprint: None,
                ..
            }
        ));
    }
    let target = target("vc1", "secret-password", PINNED);
    assert!(!format!("{target:?}").contains("secret-password"));
}

/// `err` after 12.4 s, as an operator reads it for the vCenter at `vc:443` (written `@` in `want`).
#[track_caller]
fn reads(err: VsphereError, want: &str) {
    let from = format!("{err:?}");
    let got = real::failure(err, "vc:443", "listing", Duration::from_millis(12_400));
    let want = format!("{}; retrying", want.replace('@', "vc:443"));
    assert_eq!(got, Failure::other(want), "from {from}");
}

#[test]
fn transport_failures_read_short_and_plain() {
    let transport = |reason: &str| VsphereError::Transport {
        reason: reason.into(),
    };
    // What the HTTP stack says (as the client passes it on), and what the operator reads.
    let closed = "the vCenter at @ closed the connection";
    reads(
        transport("error sending request for url (https://vc:443/sdk): client error (Connect): tcp connect error: Connection refused (os error 111)"),
        "the vCenter at @ does not answer (connection refused)",
    );
    reads(transport("error sending request for url (https://vc:443/sdk): client error (SendRequest): peer closed connection without sending TLS close_notify: https://docs.rs/rustls/latest/"), closed);
    let early = transport("connection closed before message completed");
    reads(early, closed);
    reads(transport("Connection reset by peer (os error 104)"), closed);
    reads(
        transport("dns error: failed to lookup address information: Name or service not known"),
        "the name of the vCenter at @ cannot be resolved (DNS)",
    );
    reads(
        transport("tcp connect error: No route to host (os error 113)"),
        "the vCenter at @ cannot be reached (no route to it)",
    );
    let timed_out = "the vCenter at @ timed out after 12 s";
    reads(transport("Connection timed out (os error 110)"), timed_out);
    reads(VsphereError::Timeout, timed_out);
    // Words nobody expects, or none at all: still short, still no stack text.
    let failed = "the connection to the vCenter at @ failed";
    reads(transport("something odd: https://docs.rs/x"), failed);
    reads(transport(""), failed);
    let tls = VsphereError::Tls {
        reason: "received fatal alert: HandshakeFailure".into(),
    };
    reads(tls, "the TLS handshake with the vCenter at @ failed");
    let http = VsphereError::Http { status: 503 };
    reads(http, "the vCenter at @ answered with HTTP status 503");
    let garbled = VsphereError::Malformed {
        reason: "unexpected end of XML".into(),
    };
    let unreadable = "the vCenter at @ sent an answer that cannot be read";
    reads(garbled, unreadable);
    // A very short wait still reads as a wait.
    let quick = real::failure(VsphereError::Timeout, "h", "x", Duration::from_millis(80));
    assert!(quick.to_string().contains("after 1 s"), "{quick}");
    // A rejected login and a certificate mismatch keep their own words.
    let mismatch = || VsphereError::CertificateMismatch {
        expected: "A".into(),
        presented_sha256: "B".into(),
        presented_sha1: "C".into(),
    };
    let login = real::failure(VsphereError::InvalidLogin, "h", "x", Duration::ZERO);
    assert_eq!(login, Failure::from(VsphereError::InvalidLogin));
    let pinned = real::failure(mismatch(), "h", "x", Duration::ZERO);
    assert_eq!(pinned, Failure::from(mismatch()));
}

#[test]
fn the_host_in_messages_never_carries_a_credential() {
    use real::host_of;
    assert_eq!(host_of("https://vc.example:8443/sdk"), "vc.example:8443");
    assert_eq!(host_of("https://user:secret@vc/sdk?x#y"), "vc");
    assert_eq!(host_of("vc.example/sdk"), "vc.example");
    assert_eq!(host_of("https:///sdk"), "(no host)");
    assert_eq!(host_of(""), "(no host)");
}

/// What the real client's failure to connect to 127.0.0.1:`port` reads as, less that address.
async fn connect_failure(port: u16) -> String {
    let mut target = target("vc1", GOOD, &"AB".repeat(32));
    target.url = format!("https://127.0.0.1:{port}/sdk");
    match VsphereConnector::default().connect(&target).await {
        Ok(_) => panic!("a session with 127.0.0.1:{port}"),
        Err(failure) => failure
            .to_string()
            .replace(&format!("127.0.0.1:{port}"), "@"),
    }
}

#[actix_rt::test]
async fn a_refused_or_dropped_connection_reads_short() {
    // A port nobody listens on: bound, its number taken, released.
    let free = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr());
    let port = free.expect("a free port").port();
    let want = "the vCenter at @ does not answer (connection refused); retrying";
    assert_eq!(connect_failure(port).await, want);
    // A server that accepts and hangs up at once.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let server = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    let got = connect_failure(port).await;
    server.abort();
    assert_eq!(got, "the vCenter at @ closed the connection; retrying");
}
