use super::*;
use appliance::mgmt::catalog::ProtectionState;
use appliance::mgmt::PageRequest;

const NOW: u64 = 1_800_000_000_000;

fn all() -> PageRequest {
    PageRequest {
        limit: Some(1000),
        offset: None,
    }
}

fn points_of<'a>(demo: &'a Demo, id: &str) -> Vec<&'a PointView> {
    demo.plan
        .points
        .iter()
        .filter(|p| p.machine_id == id)
        .collect()
}

#[test]
fn plan_is_deterministic_and_tells_every_story() {
    let a = plan(24, NOW, 1);
    let b = plan(24, NOW, 1);
    assert_eq!(a.plan.machines, b.plan.machines);
    assert_eq!(a.plan.points, b.plan.points);
    assert_eq!(a.history, b.history);
    let names: Vec<&str> = a.plan.machines.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        &names[..4],
        ["sql-prod-01", "fileserver", "dc-01", "web-03"]
    );
    let unique: std::collections::BTreeSet<_> = names.iter().collect();
    assert_eq!(unique.len(), 24);
    let s = &a.plan.seeded;
    assert_eq!((s.machines, s.agents, s.revoked, s.stale), (24, 24, 1, 4));
    for (n, m) in a.plan.machines.iter().enumerate() {
        let story = MACHINES[n].1;
        let points = points_of(&a, &m.machine_id);
        let newest = points
            .last()
            .expect("every machine has points")
            .created_unix_ms;
        let age = NOW - newest;
        match story {
            Story::Protected | Story::Interrupted(_) => {
                assert!(age < 5 * MINUTE_MS, "{}: {age}", m.name)
            }
            Story::Behind(min) => assert_eq!(age, min * MINUTE_MS, "{}", m.name),
            Story::Disconnected => assert!(age > 6 * HOUR_MS, "{}", m.name),
            Story::Revoked => assert!(age >= 3 * DAY_MS, "{}", m.name),
        }
        // Oldest first, and ids that sort like their times (as the data path's do).
        assert!(points
            .windows(2)
            .all(|w| w[0].created_unix_ms < w[1].created_unix_ms && w[0].point_id < w[1].point_id));
        assert_eq!(
            a.plan.agents[&m.machine_id].revoked,
            story == Story::Revoked
        );
    }
}

#[test]
fn history_is_a_saw_tooth_with_a_working_day() {
    let demo = plan(24, NOW, 1);
    // web-03: protected all day.
    assert_eq!(MACHINES[3].1, Story::Protected);
    let id = &demo.plan.machines[3].machine_id;
    let samples = &demo.history[id];
    assert_eq!(samples.len() as u64, HISTORY_SECS / 60);
    // One sample per minute, the newest at `NOW`.
    assert!(samples.windows(2).all(|w| w[1].0 == w[0].0 + 1));
    assert_eq!(samples.last().map(|s| s.1.at_unix), Some(NOW / 1000));
    let rpo: Vec<u64> = samples
        .iter()
        .map(|s| s.1.rpo_seconds.expect("a point before every sample"))
        .collect();
    assert!(rpo.iter().all(|r| *r <= 330), "{:?}", rpo.iter().max());
    // It drops back when a point is cut: a saw-tooth, not a flat line.
    let drops = rpo.windows(2).filter(|w| w[1] < w[0]).count();
    assert!((250..=330).contains(&drops), "{drops}");
    let rate: Vec<u64> = samples
        .iter()
        .map(|s| s.1.throughput_bytes_per_sec)
        .collect();
    let (lo, hi) = (rate.iter().min().unwrap(), rate.iter().max().unwrap());
    assert!(*lo > 0 && *hi > 3 * lo, "{lo}..{hi}");
    assert!(*hi < 100_000_000, "{hi}");
}

#[test]
fn stopped_agents_have_rising_rpo_and_no_throughput() {
    let demo = plan(24, NOW, 1);
    for (n, story) in [(5, Story::Disconnected), (6, Story::Revoked)] {
        assert_eq!(MACHINES[n].1, story);
        let samples = &demo.history[&demo.plan.machines[n].machine_id];
        let last = samples.last().unwrap().1.clone();
        assert_eq!(last.throughput_bytes_per_sec, 0);
        assert!(last.rpo_seconds.unwrap() > 6 * 3600, "{last:?}");
    }
    // The revoked machine replicated nothing in the last day.
    let revoked = &demo.history[&demo.plan.machines[6].machine_id];
    assert!(revoked.iter().all(|s| s.1.throughput_bytes_per_sec == 0));
}

#[test]
fn more_machines_than_names_are_protected_vms() {
    let demo = plan(30, NOW, 1);
    assert_eq!(demo.plan.machines[24].name, "vm-025");
    assert_eq!(demo.plan.machines[29].name, "vm-030");
    assert_eq!(demo.plan.seeded.stale, 4);
    assert_eq!(plan(3, NOW, 1).plan.machines.len(), 3);
}

#[test]
fn seeds_a_state_the_catalog_and_its_charts_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let now = appliance::mgmt::catalog::now_unix_ms();
    let demo = plan(24, now, 1);
    write(dir.path(), &demo).unwrap();
    let state = State::open(dir.path()).unwrap();
    let catalog = Catalog::new(state.clone()).unwrap();
    let page = catalog.list(all()).unwrap();
    assert_eq!(page.total, 24);
    let count = |s: ProtectionState| page.items.iter().filter(|m| m.state == s).count();
    // Without a data path no agent is connected: the machines behind show as disconnected.
    assert_eq!(count(ProtectionState::Protected), 20);
    assert_eq!(count(ProtectionState::Disconnected), 3);
    assert_eq!(count(ProtectionState::Revoked), 1);
    let sql = page.items.iter().find(|m| m.name == "sql-prod-01").unwrap();
    let detail = catalog.get(&sql.id).unwrap();
    assert!(detail.history.len() >= 1430, "{}", detail.history.len());
    assert_eq!(detail.machine.disks.len(), 2);
    assert_eq!(sql.points, points_of(&demo, &sql.id).len() as u64);
}

#[test]
fn a_state_in_use_is_not_seeded() {
    let dir = tempfile::tempdir().unwrap();
    // The daemon holds the state open; seeding beside it must fail, not corrupt it.
    let _held = State::open(dir.path()).unwrap();
    let err = write(dir.path(), &plan(2, NOW, 1)).unwrap_err();
    assert!(format!("{err:#}").contains("state"), "{err:#}");
}

#[test]
fn a_demo_data_folder_must_be_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("a").join("b");
    assert_eq!(fresh_dir(&absent).unwrap(), absent.canonicalize().unwrap());
    // Empty (the one just made): accepted.
    fresh_dir(&absent).unwrap();
    std::fs::write(absent.join("x"), "x").unwrap();
    let err = fresh_dir(&absent).unwrap_err().to_string();
    assert!(err.contains("is not empty"), "{err}");
    assert!(absent.join("x").is_file());
    let err = fresh_dir(&absent.join("x")).unwrap_err().to_string();
    assert!(err.contains("not a folder"), "{err}");
}

#[test]
fn too_many_machines_are_refused_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let never = dir.path().join("never");
    let err = serve(Options {
        machines: MAX_MACHINES + 1,
        seed: 1,
        bin_dir: dir.path().to_path_buf(),
        work_dir: Some(never.clone()),
        data_dir: Some(never.join("data")),
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("at most 1000"), "{err}");
    assert!(!never.exists());
}

#[test]
fn an_interruption_shows_in_rpo_and_throughput() {
    let demo = plan(1, NOW, 1);
    let Story::Interrupted(minutes) = MACHINES[0].1 else {
        panic!("sql-prod-01 tells of an interruption")
    };
    let samples = &demo.history[&demo.plan.machines[0].machine_id];
    let worst = samples
        .iter()
        .filter_map(|s| s.1.rpo_seconds)
        .max()
        .unwrap();
    // The gap plus the point interval before it, at most.
    assert!(
        worst >= minutes * 60 && worst <= (minutes + 6) * 60,
        "{worst}"
    );
    let idle = samples
        .iter()
        .filter(|s| s.1.throughput_bytes_per_sec == 0)
        .count() as u64;
    assert!((minutes - 1..=minutes + 1).contains(&idle), "{idle}");
    // The surge after it is the busiest minute of the day.
    let peak = samples
        .iter()
        .max_by_key(|s| s.1.throughput_bytes_per_sec)
        .unwrap();
    let resumed = samples
        .iter()
        .rposition(|s| s.1.throughput_bytes_per_sec == 0)
        .unwrap();
    assert!(
        peak.0 > samples[resumed].0 && peak.0 <= samples[resumed].0 + 20,
        "{peak:?}"
    );
}
