use super::follow::{committed_view, summary_view};
use super::*;
use crate::state::{now_rfc3339, AgentRecord};
use actors::machines::{DiskFact, MachineFacts, PointCommitted};

const MIN: u64 = 60_000;
const HOUR: u64 = 60 * MIN;

fn open(dir: &std::path::Path) -> (State, Catalog) {
    let state = State::open(dir).unwrap();
    let catalog = Catalog::new(state.clone()).unwrap();
    (state, catalog)
}

fn page(limit: Option<usize>, offset: Option<usize>) -> PageRequest {
    PageRequest { limit, offset }
}

fn all() -> PageRequest {
    page(Some(1000), None)
}

fn descriptor(id: &str, name: &str) -> vault::MachineDescriptor {
    vault::MachineDescriptor {
        machine_id: id.into(),
        name: name.into(),
        disks: vec![vault::DiskDescriptor {
            disk_id: "disk0".into(),
            size_bytes: 1 << 30,
            label: "sda".into(),
        }],
    }
}

fn point(machine: &str, bookmark: u64, created_unix_ms: u64) -> PointView {
    summary_view(&vault::PointSummary {
        machine_id: machine.into(),
        point_id: actors::upload::point_id(bookmark),
        kind: vault::PointKind::Crash,
        created_unix_ms,
        disks: vec![("disk0".into(), 1 << 30)],
    })
}

fn agent(state: &State, id: &str, hostname: &str, revoked: bool) {
    let record = AgentRecord {
        hostname: hostname.into(),
        registered_at: now_rfc3339(),
        revoked,
        last_seen: None,
        bios_uuid: None,
    };
    state.put_agent(id, &record).unwrap();
}

fn facts(id: &str, connected: bool, bytes: u64) -> MachineFacts {
    MachineFacts {
        machine_id: id.into(),
        hostname: String::new(),
        connected,
        bytes_received: bytes,
        disks: vec![],
        last_point: None,
    }
}

fn ids(p: &Page<MachineView>) -> Vec<&str> {
    p.items.iter().map(|m| m.id.as_str()).collect()
}

fn view(c: &Catalog, id: &str) -> MachineView {
    c.get(id).unwrap().machine
}

#[test]
fn list_pages_with_offset_limit_and_total_and_refuses_bad_limits() {
    let dir = tempfile::tempdir().unwrap();
    let (_state, c) = open(dir.path());
    let machines: Vec<_> = (0..250)
        .map(|i| descriptor(&format!("m{i:04}"), &format!("host-{i:04}")))
        .collect();
    c.record_machines(&machines).unwrap();

    let first = c.list(page(None, None)).unwrap();
    assert_eq!((first.items.len(), first.total), (100, 250));
    assert_eq!((first.limit, first.offset), (100, 0));
    assert_eq!(first.items[0].id, "m0000");
    assert_eq!(first.items[0].disks[0].label, "sda");
    let last = c.list(page(Some(100), Some(200))).unwrap();
    assert_eq!((last.items.len(), last.total), (50, 250));
    assert_eq!(last.items[49].id, "m0249");
    let beyond = c.list(page(Some(10), Some(300))).unwrap();
    assert!(beyond.items.is_empty());
    assert_eq!(beyond.total, 250);
    assert_eq!(c.list(page(Some(1000), None)).unwrap().items.len(), 250);
    for bad in [0, 1001, usize::MAX] {
        let err = c.list(page(Some(bad), None)).unwrap_err();
        assert_eq!(err.code(), "invalid_field", "{bad}");
        let err = c.points(None, page(Some(bad), None)).unwrap_err();
        assert_eq!(err.code(), "invalid_field", "{bad}");
    }
}

#[test]
fn machines_sort_by_name_then_id_and_agents_without_points_appear() {
    let dir = tempfile::tempdir().unwrap();
    let (state, c) = open(dir.path());
    c.record_machines(&[
        descriptor("m2", "beta"),
        descriptor("m3", "alpha"),
        descriptor("m1", "alpha"),
        descriptor("m4", ""),
    ])
    .unwrap();
    // Registered, never replicated: listed under its hostname.
    agent(&state, "a9", "gamma\u{7}", false);
    c.refresh();
    let list = c.list(all()).unwrap();
    assert_eq!(ids(&list), ["m1", "m3", "m2", "a9", "m4"]);
    let names: Vec<_> = list.items.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["alpha", "alpha", "beta", "gamma", "m4"]);
    let a9 = &list.items[3];
    assert_eq!((a9.points, a9.bytes_received), (0, 0));
    assert!(a9.last_point.is_none() && a9.rpo_seconds.is_none());
    assert_eq!(a9.state, ProtectionState::Disconnected);
    // A machine id the vault would refuse is refused here too, and nothing of the batch is kept.
    let long = "x".repeat(129);
    for bad in ["", "a/b", ".hidden", "sp ace", long.as_str()] {
        let err = c.record_machine(&descriptor(bad, "x")).unwrap_err();
        assert_eq!(err.code(), "invalid_field", "{bad:?}");
    }
    assert_eq!(c.list(all()).unwrap().total, 5);
}

#[test]
fn protection_states_follow_revocation_connection_and_rpo() {
    let dir = tempfile::tempdir().unwrap();
    let (state, c) = open(dir.path());
    let now = now_unix_ms();
    for id in ["revoked", "initial", "fresh", "late", "gone", "quiet"] {
        agent(&state, id, id, id == "revoked");
    }
    c.refresh();
    c.record_point(&point("revoked", 1, now - MIN)).unwrap();
    c.record_point(&point("fresh", 1, now - MIN)).unwrap();
    c.record_point(&point("quiet", 1, now - MIN)).unwrap();
    c.record_point(&point("late", 1, now - 20 * MIN)).unwrap();
    c.record_point(&point("gone", 1, now - 20 * MIN)).unwrap();
    let connected = ["revoked", "initial", "fresh", "late"];
    let f: Vec<_> = connected.iter().map(|id| facts(id, true, 0)).collect();
    c.sample(&f, now).unwrap();

    let expect = [
        ("revoked", ProtectionState::Revoked),
        ("initial", ProtectionState::InitialSync),
        ("fresh", ProtectionState::Protected),
        // Not connected but within the RPO: still protected.
        ("quiet", ProtectionState::Protected),
        ("late", ProtectionState::RpoExceeded),
        ("gone", ProtectionState::Disconnected),
    ];
    for (id, want) in expect {
        let v = view(&c, id);
        assert_eq!(v.state, want, "{id}");
        assert_eq!(v.agent_connected, connected.contains(&id), "{id}");
    }
    let rpo = view(&c, "late").rpo_seconds.unwrap();
    assert!((1200..1260).contains(&rpo), "{rpo}");
    assert!(view(&c, "initial").rpo_seconds.is_none());
    let rpos: BTreeMap<_, _> = c.rpo_per_machine().into_iter().collect();
    assert_eq!(rpos.len(), 6);
    assert_eq!(rpos["initial"], None);
    assert!(rpos["fresh"].is_some_and(|r| (60..120).contains(&r)));
    // The boundary: exactly the target is still protected.
    assert_eq!(
        protection(false, true, Some(RPO_TARGET_SECS)),
        ProtectionState::Protected
    );
    assert_eq!(
        protection(false, true, Some(RPO_TARGET_SECS + 1)),
        ProtectionState::RpoExceeded
    );
    assert_eq!(
        protection(false, false, None),
        ProtectionState::Disconnected
    );
}

#[test]
fn points_are_newest_first_filtered_by_machine_and_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_state, c) = open(dir.path());
    c.record_machine(&descriptor("m1", "one")).unwrap();
    // Recorded out of order, one of them twice.
    for (m, b, at) in [
        ("m1", 2, 2000),
        ("m2", 1, 1500),
        ("m1", 1, 1000),
        ("m1", 3, 3000),
        ("m2", 2, 2500),
        ("m1", 2, 2000),
    ] {
        c.record_point(&point(m, b, at)).unwrap();
    }
    let m1 = c.points(Some("m1"), all()).unwrap();
    let ids: Vec<_> = m1.items.iter().map(|p| p.created_unix_ms).collect();
    assert_eq!((ids, m1.total), (vec![3000, 2000, 1000], 3));
    assert!(m1.items.iter().all(|p| p.machine_id == "m1"));
    assert_eq!(m1.items[0].disks[0].label, "sda", "label from the machine");
    assert_eq!(m1.items[0].created_at, "1970-01-01T00:00:03Z");
    let second = c.points(Some("m1"), page(Some(1), Some(1))).unwrap();
    assert_eq!(second.items[0].point_id, actors::upload::point_id(2));
    assert_eq!(second.total, 3);

    let every = c.points(None, all()).unwrap();
    let order: Vec<_> = every
        .items
        .iter()
        .map(|p| (p.machine_id.as_str(), p.created_unix_ms))
        .collect();
    assert_eq!(
        order,
        [
            ("m1", 3000),
            ("m2", 2500),
            ("m1", 2000),
            ("m2", 1500),
            ("m1", 1000)
        ]
    );
    assert_eq!(every.total, 5);
    let tail = c.points(None, page(Some(2), Some(4))).unwrap();
    assert_eq!((tail.items.len(), tail.total), (1, 5));

    let v = view(&c, "m1");
    assert_eq!(v.points, 3);
    assert_eq!(v.last_point.unwrap().created_unix_ms, 3000);
    let detail = c.point("m1", &actors::upload::point_id(3)).unwrap();
    assert_eq!(
        (detail.kind.as_str(), detail.created_unix_ms),
        ("crash", 3000)
    );
    for (m, p) in [
        ("m1", "0000000000000009"),
        ("m9", "x"),
        ("../m1", "x"),
        ("m1", ""),
    ] {
        assert_eq!(c.point(m, p).unwrap_err().code(), "not_found", "{m}/{p}");
    }
    assert_eq!(c.points(Some("m9"), all()).unwrap_err().code(), "not_found");
    // Bad input never lands.
    let mut bad = point("m1", 9, 9000);
    bad.kind = "weird".into();
    assert_eq!(c.record_point(&bad).unwrap_err().code(), "invalid_field");
    let bad = point("m1/../x", 9, 9000);
    assert_eq!(c.record_point(&bad).unwrap_err().code(), "invalid_field");
    assert_eq!(c.points(None, all()).unwrap().total, 5);
}

#[test]
fn samples_count_bytes_throughput_and_keep_24_hours_of_history() {
    let dir = tempfile::tempdir().unwrap();
    let (_state, c) = open(dir.path());
    // Mid-minute, so that `now + 1` falls in the same minute.
    let now = now_unix_ms() / MIN * MIN + 30_000;
    let t0 = now - 30 * HOUR;
    let mut f = facts("m1", true, 0);
    f.hostname = "db01".into();
    f.disks = vec![DiskFact {
        disk_id: "disk0".into(),
        size_bytes: 4096,
        label: "sda".into(),
    }];
    c.sample(&[f.clone()], t0).unwrap();
    f.bytes_received = 10_000;
    c.sample(&[f.clone()], t0 + 10_000).unwrap();
    let v = view(&c, "m1");
    assert_eq!(
        (v.bytes_received, v.throughput_bytes_per_sec),
        (10_000, 1000)
    );
    assert_eq!(
        (v.name.as_str(), v.disks[0].label.as_str()),
        ("db01", "sda")
    );
    // The data path restarted: its counter starts over; nothing is lost or subtracted.
    f.bytes_received = 500;
    c.sample(&[f.clone()], t0 + 20_000).unwrap();
    assert_eq!(view(&c, "m1").bytes_received, 10_500);

    c.sample(&[f.clone()], now - 23 * HOUR).unwrap();
    c.sample(&[f.clone()], now - 2 * MIN).unwrap();
    // Disconnected: the machine still gets samples (its RPO grows).
    c.sample(&[], now).unwrap();
    c.sample(&[], now + 1).unwrap();
    let detail = c.get("m1").unwrap();
    let at: Vec<u64> = detail.history.iter().map(|s| s.at_unix).collect();
    assert_eq!(
        at,
        [(now - 23 * HOUR) / 1000, (now - 2 * MIN) / 1000, now / 1000],
        "oldest first, one per minute, nothing older than 24 h"
    );
    assert!(detail.history.iter().all(|s| s.rpo_seconds.is_none()));
    assert!(!detail.machine.agent_connected);
    assert_eq!(detail.machine.state, ProtectionState::Disconnected);
    // The samples older than 24 h are gone from sled, not only filtered out.
    let stored = c.inner.history.scan_prefix(b"m1/").count();
    assert_eq!(stored, 3);
    assert_eq!(c.get("m9").unwrap_err().code(), "not_found");
}

#[test]
fn the_catalog_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_unix_ms();
    {
        let (state, c) = open(dir.path());
        c.record_machine(&descriptor("m1", "one")).unwrap();
        c.record_point(&point("m1", 1, now - MIN)).unwrap();
        c.sample(&[facts("m1", true, 4096)], now).unwrap();
        state.flush().unwrap();
    }
    let (_state, c) = open(dir.path());
    let v = view(&c, "m1");
    assert_eq!(
        (v.name.as_str(), v.points, v.bytes_received),
        ("one", 1, 4096)
    );
    assert_eq!(v.state, ProtectionState::Protected);
    assert!(
        !v.agent_connected,
        "connections are not remembered across restarts"
    );
    assert_eq!(c.points(None, all()).unwrap().total, 1);
    assert_eq!(c.get("m1").unwrap().history.len(), 1);
    // Recording the same point again after the reopen does not count it twice.
    c.record_point(&point("m1", 1, now - MIN)).unwrap();
    assert_eq!(view(&c, "m1").points, 1);
}

#[test]
fn corrupt_records_are_internal_errors_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (state, c) = open(dir.path());
    c.record_point(&point("m1", 1, 1000)).unwrap();
    c.sample(&[facts("m1", true, 1)], now_unix_ms()).unwrap();
    drop(c);
    let db = state.db();
    let pid = actors::upload::point_id(1);
    db.open_tree(MACHINES_TREE)
        .unwrap()
        .insert("m-bad", &b"\x00\x01garbage"[..])
        .unwrap();
    db.open_tree(POINTS_TREE)
        .unwrap()
        .insert(format!("m1/{pid}"), encode_record(b"{not json"))
        .unwrap();
    let history = db.open_tree(HISTORY_TREE).unwrap();
    let (key, _) = history.iter().next().unwrap().unwrap();
    history.insert(key, &b"FS\x07{}"[..]).unwrap();

    let c = Catalog::new(state.clone()).expect("a bad record never stops the appliance");
    let err = c.list(all()).unwrap_err();
    assert_eq!(err.code(), "internal");
    assert!(err.to_string().contains("m-bad"), "{err}");
    for err in [
        c.points(Some("m1"), all()).unwrap_err(),
        c.points(None, all()).unwrap_err(),
        c.point("m1", &pid).unwrap_err(),
    ] {
        assert_eq!(err.code(), "internal");
        assert!(err.to_string().contains(&format!("m1/{pid}")), "{err}");
    }
    let err = c.get("m1").unwrap_err();
    assert_eq!(err.code(), "internal");
    assert!(
        err.to_string().contains("history") && err.to_string().contains("m1/"),
        "{err}"
    );
    // Reconciliation rewrites the machine from the vault's description: lists work again.
    c.record_machine(&descriptor("m-bad", "healed")).unwrap();
    assert_eq!(c.list(all()).unwrap().total, 2);
}

#[test]
fn committed_points_map_to_views() {
    let p = PointCommitted {
        machine_id: "m1".into(),
        point_id: "00000000000007d0".into(),
        kind: vault::PointKind::App,
        created_unix_ms: 1_767_323_045_123,
        disks: vec![("disk0".into(), 42)],
    };
    let v = committed_view(&p);
    assert_eq!(v.kind, "app");
    assert_eq!(v.created_at, "2026-01-02T03:04:05.123Z");
    assert_eq!(v.disks[0].size_bytes, 42);
    assert_eq!(
        rfc3339_of_ms(u64::MAX),
        "",
        "out of range is empty, not a panic"
    );
}

async fn local_vault(dir: &std::path::Path) -> vault::Vault {
    let url = dir.join("vault");
    let store = vault::open_store(url.to_str().unwrap(), &vault::StoreOptions::default()).unwrap();
    vault::Vault::create(store, "pass", vault::KdfParams::fast_for_tests())
        .await
        .unwrap()
}

#[tokio::test]
async fn following_reconciles_with_the_vault_and_records_announced_points_and_facts() {
    let dir = tempfile::tempdir().unwrap();
    let (_state, c) = open(dir.path());
    let vault = local_vault(dir.path()).await;
    let now = now_unix_ms();
    // Committed before this process: only the vault knows it.
    vault
        .put_machine(&descriptor("m-old", "old-host"))
        .await
        .unwrap();
    let manifest = vault::PointManifest {
        machine_id: "m-old".into(),
        point_id: actors::upload::point_id(1),
        parent: None,
        kind: vault::PointKind::App,
        bookmark_id: 1,
        created_unix_ms: now - MIN,
        disks: vec![vault::DiskPoint {
            disk_id: "disk0".into(),
            size_bytes: 65536,
            seq: 1,
            map: vault::DiskMap::Full(vec![vault::BlockRef::Zero]),
        }],
    };
    vault.put_point(&manifest).await.unwrap();
    // A live session, and a point announced after the catalog starts following.
    let stats = Arc::new(actors::stats::Stats::default());
    let disks = vec![DiskFact {
        disk_id: "disk0".into(),
        size_bytes: 65536,
        label: "sdb".into(),
    }];
    let session = stats.machines.session_started("m-new", "new-host", disks);
    session.entry().add_bytes(1000);
    c.follow_data_path(vault.clone(), stats.clone());
    c.follow_data_path(vault, stats.clone()); // a second attach is a no-op
    stats.machines.point_committed(PointCommitted {
        machine_id: "m-new".into(),
        point_id: actors::upload::point_id(5),
        kind: vault::PointKind::Crash,
        created_unix_ms: now,
        disks: vec![("disk0".into(), 65536)],
    });

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let old = c.get("m-old").is_ok_and(|d| d.machine.points == 1);
        let new = c
            .get("m-new")
            .is_ok_and(|d| d.machine.points == 1 && d.machine.agent_connected);
        if old && new {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{:?}", c.list(all()));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let new = c.get("m-new").unwrap();
    assert_eq!(
        (new.machine.name.as_str(), new.machine.bytes_received),
        ("new-host", 1000)
    );
    assert_eq!(new.machine.state, ProtectionState::Protected);
    let last = new.machine.last_point.unwrap();
    assert_eq!(
        (last.kind.as_str(), last.disks[0].label.as_str()),
        ("crash", "sdb")
    );
    assert_eq!(new.history.len(), 1, "sampled at once");
    let old = view(&c, "m-old");
    assert_eq!(
        (old.name.as_str(), old.state),
        ("old-host", ProtectionState::Protected)
    );
    assert!(!old.agent_connected);
    let last = old.last_point.unwrap();
    assert_eq!(
        (last.kind.as_str(), last.disks[0].label.as_str()),
        ("app", "sda")
    );
    drop(session);
}

#[test]
fn list_json_is_the_serialized_list() {
    let dir = tempfile::tempdir().unwrap();
    let (state, c) = open(dir.path());
    let now = now_unix_ms();
    agent(&state, "revoked", "r", true);
    agent(&state, "initial", "i", false);
    c.refresh();
    c.record_machine(&descriptor("quoted", "we\"ird \\ ñame\u{1F600}"))
        .unwrap();
    c.record_point(&point("quoted", 1, now - MIN)).unwrap();
    c.record_point(&point("late", 1, now - 20 * MIN)).unwrap();
    c.record_point(&point("revoked", 1, now - MIN)).unwrap();
    c.sample(&[facts("initial", true, 5), facts("late", true, 7)], now)
        .unwrap();
    for (limit, offset) in [(None, None), (Some(2), Some(1)), (Some(5), Some(10))] {
        let p = page(limit, offset);
        // A second boundary between the two calls changes an RPO: compare a few times.
        let same = (0..5).any(|_| {
            let fast = c.list_json(p).unwrap();
            fast == serde_json::to_vec(&c.list(p).unwrap()).unwrap()
        });
        assert!(
            same,
            "{}",
            String::from_utf8_lossy(&c.list_json(p).unwrap())
        );
    }
    // Every value the per-request parts can take was in the comparison.
    let states: Vec<_> = c
        .list(all())
        .unwrap()
        .items
        .iter()
        .map(|m| m.state)
        .collect();
    for s in [
        ProtectionState::InitialSync,
        ProtectionState::Protected,
        ProtectionState::RpoExceeded,
        ProtectionState::Revoked,
    ] {
        assert!(states.contains(&s), "{states:?}");
    }
    assert_eq!(
        c.list_json(page(Some(0), None)).unwrap_err().code(),
        "invalid_field"
    );
    drop(c);
    state
        .db()
        .open_tree(MACHINES_TREE)
        .unwrap()
        .insert("late", &b"FS\x01["[..])
        .unwrap();
    let c = Catalog::new(state).unwrap();
    let err = c.list_json(all()).unwrap_err();
    assert!(err.to_string().contains("\"late\""), "{err}");
}
