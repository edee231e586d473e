use std::sync::mpsc;
use std::sync::Condvar;
use std::time::Duration;

use vault::{
    open_store, BlockRef, DiskMap, DiskPoint, KdfParams, PointKind, PointManifest, StoreOptions,
    BLOCK_SIZE,
};

use super::*;
use crate::mgmt::auth::{Role, TokenKind};

const BS: usize = BLOCK_SIZE;

struct Fixture {
    _dir: tempfile::TempDir,
    cfg: Arc<Config>,
    state: State,
    vault: Vault,
    jobs: RestoreJobs,
    /// Point p1 (older) and p2 (newer) of vm-a disk0.
    older: Vec<u8>,
    newer: Vec<u8>,
}

fn operator() -> Principal {
    Principal {
        user: "olga".into(),
        role: Role::Operator,
        token_id: "tok1".into(),
        kind: TokenKind::Api,
    }
}

fn config(data_dir: &Path) -> Arc<Config> {
    let figment = figment::Figment::new().merge(figment::providers::Serialized::default(
        "data_dir", data_dir,
    ));
    Arc::new(Config::from_figment(figment).unwrap())
}

/// `blocks` blocks of distinct data, every fourth one zero, and a short last block.
fn image(seed: u8, blocks: usize) -> Vec<u8> {
    let mut out = vec![0u8; blocks * BS + 1000];
    for (b, block) in out.chunks_mut(BS).enumerate() {
        if b % 4 == 2 {
            continue;
        }
        for (i, x) in block.iter_mut().enumerate() {
            *x = (i as u8).wrapping_mul(31) ^ (b as u8) ^ seed.wrapping_mul(101) ^ 1;
        }
    }
    out
}

/// Stores `image` as the one disk of a point, each chunk in a pack of its own so that every
/// chunk is one range of the restore (ranges never span packs): progress comes in many steps.
async fn store_point(vault: &Vault, machine: &str, point: &str, created: u64, image: &[u8]) {
    let mut map = Vec::new();
    for block in image.chunks(BS) {
        if block.iter().all(|b| *b == 0) {
            map.push(BlockRef::Zero);
            continue;
        }
        let id = vault.chunk_id(block);
        let mut pack = vault.new_pack();
        pack.add(id, &vault.seal_chunk(&id, block));
        let entries = vault.put_pack(pack.finish()).await.unwrap();
        vault.put_index(&entries).await.unwrap();
        map.push(BlockRef::Chunk(id));
    }
    let manifest = PointManifest {
        machine_id: machine.into(),
        point_id: point.into(),
        parent: None,
        kind: PointKind::Crash,
        bookmark_id: created,
        created_unix_ms: created,
        disks: vec![DiskPoint {
            disk_id: "disk0".into(),
            size_bytes: image.len() as u64,
            seq: 1,
            map: DiskMap::Full(map),
        }],
    };
    vault.put_point(&manifest).await.unwrap();
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let state = State::open(&cfg.data_dir).unwrap();
    let root = dir.path().join("vault");
    let store = open_store(root.to_str().unwrap(), &StoreOptions::default()).unwrap();
    let vault = Vault::create(store, "pw", KdfParams::fast_for_tests())
        .await
        .unwrap();
    let older = image(1, 12);
    let newer = image(2, 40);
    store_point(&vault, "vm-a", "p1", 1_000, &older).await;
    store_point(&vault, "vm-a", "p2", 2_000, &newer).await;
    let jobs = RestoreJobs::new(cfg.clone(), state.clone());
    Fixture {
        _dir: dir,
        cfg,
        state,
        vault,
        jobs,
        older,
        newer,
    }
}

fn request(point: &str, path: &str) -> RestoreJobRequest {
    RestoreJobRequest {
        machine_id: "vm-a".into(),
        disk_id: "disk0".into(),
        point_id: point.into(),
        path: path.into(),
        format: None,
        overwrite: false,
    }
}

impl Fixture {
    async fn start(&self, req: RestoreJobRequest) -> Result<RestoreJobView, MgmtError> {
        self.jobs
            .start(&operator(), "127.0.0.1", self.vault.clone(), req)
            .await
    }

    async fn wait_end(&self, id: &str) -> RestoreJobView {
        for _ in 0..1000 {
            let view = self.jobs.get(id).unwrap();
            if view.state != JobState::Running {
                return view;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("job {id} still running after 10 s");
    }

    fn restores(&self) -> PathBuf {
        self.cfg.data_dir.join(RESTORES_DIR)
    }

    fn events(&self, event: &str) -> Vec<crate::state::AuditEvent> {
        let all = self.state.recent_audit(1000).unwrap();
        all.into_iter().filter(|e| e.event == event).collect()
    }
}

fn code(result: Result<RestoreJobView, MgmtError>) -> (String, String) {
    match result {
        Ok(view) => panic!("expected an error, got {view:?}"),
        Err(MgmtError::InvalidField { field, .. }) => ("invalid_field".into(), field),
        Err(other) => (other.code().into(), other.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_restores_the_disk_and_latest_resolves() {
    let f = fixture().await;
    let started = f.start(request("latest", "vm-a/disk0.raw")).await.unwrap();
    assert_eq!(started.state, JobState::Running);
    assert_eq!(started.point_id, "p2", "latest is the newer point");
    assert_eq!(started.format, RestoreFormat::Raw);
    assert_eq!(started.requested_by, "olga");
    let out = f.restores().join("vm-a").join("disk0.raw");
    assert_eq!(
        PathBuf::from(&started.path),
        std::path::absolute(&out).unwrap()
    );
    let done = f.wait_end(&started.id).await;
    assert_eq!(done.state, JobState::Succeeded, "{:?}", done.error);
    assert!(done.bytes_total > 0);
    assert_eq!(done.bytes_done, done.bytes_total);
    assert!(done.finished_at.is_some() && done.error.is_none());
    assert!(std::fs::read(&out).unwrap() == f.newer);
    assert!(!out.with_extension("raw.partial").exists());

    let explicit = f.start(request("p1", "p1.vhd")).await.unwrap();
    assert_eq!(explicit.format, RestoreFormat::Vhd, "from the extension");
    assert_eq!(f.wait_end(&explicit.id).await.state, JobState::Succeeded);
    let vhd = std::fs::read(f.restores().join("p1.vhd")).unwrap();
    assert!(vhd[..f.older.len()] == f.older[..]);
    assert_eq!(&vhd[vhd.len() - 512..vhd.len() - 504], b"conectix");

    // Newest first, paged; records survive a new runner on the same state.
    let jobs = RestoreJobs::new(f.cfg.clone(), f.state.clone());
    let page = jobs
        .list(PageRequest {
            limit: Some(1),
            offset: None,
        })
        .unwrap();
    assert_eq!((page.total, page.items.len()), (2, 1));
    assert_eq!(page.items[0].id, explicit.id);
    let second = jobs
        .list(PageRequest {
            limit: Some(1),
            offset: Some(1),
        })
        .unwrap();
    assert_eq!(second.items[0].id, started.id);
    assert_eq!(second.items[0].state, JobState::Succeeded);
    let too_big = jobs.list(PageRequest {
        limit: Some(1001),
        offset: None,
    });
    assert!(matches!(too_big, Err(MgmtError::InvalidField { .. })));
    assert_eq!(code(jobs.get("nope")).0, "not_found");

    let started_events = f.events("restore_started");
    assert_eq!(started_events.len(), 2);
    assert_eq!(started_events[0].actor, "olga");
    assert_eq!(started_events[0].source, "127.0.0.1");
    assert!(started_events[0].detail.contains(&started.id));
    let finished = f.events("restore_finished");
    assert_eq!(finished.len(), 2);
    assert!(finished.iter().all(|e| e.actor == "system"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_paths_and_ids_are_refused_and_nothing_is_written() {
    let f = fixture().await;
    let long = "a".repeat(256);
    for path in [
        "/etc/passwd",
        "../x",
        "a/../../x",
        "..",
        ".hidden",
        "a/.b",
        "./a",
        "",
        "a\0b",
        "a\nb",
        "a//b",
        "a/",
        long.as_str(),
        "disk.raw.partial",
    ] {
        let got = code(f.start(request("p1", path)).await);
        assert_eq!(got, ("invalid_field".into(), "path".into()), "{path:?}");
    }
    let mut bad_machine = request("p1", "x.raw");
    bad_machine.machine_id = "../vm".into();
    assert_eq!(code(f.start(bad_machine).await).1, "machine_id");
    let mut bad_disk = request("p1", "x.raw");
    bad_disk.disk_id = String::new();
    assert_eq!(code(f.start(bad_disk).await).1, "disk_id");
    assert_eq!(code(f.start(request(".p1", "x.raw")).await).1, "point_id");

    let viewer = Principal {
        role: Role::Viewer,
        ..operator()
    };
    let refused = f
        .jobs
        .start(&viewer, "local", f.vault.clone(), request("p1", "x.raw"))
        .await;
    assert_eq!(code(refused).0, "forbidden");

    assert!(!f.restores().exists(), "nothing may be created");
    let page = f
        .jobs
        .list(PageRequest {
            limit: None,
            offset: None,
        })
        .unwrap();
    assert_eq!(page.total, 0);
    assert!(f.events("restore_started").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symbolic_link_below_the_restore_folder_is_refused() {
    let f = fixture().await;
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(f.restores()).unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), f.restores().join("out")).unwrap();
    std::os::unix::fs::symlink(elsewhere.path().join("f"), f.restores().join("f.raw")).unwrap();
    for path in ["out/disk.raw", "f.raw"] {
        let mut req = request("p1", path);
        req.overwrite = true;
        assert_eq!(
            code(f.start(req).await),
            ("invalid_field".into(), "path".into()),
            "{path}"
        );
    }
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
}

#[test]
fn accepted_paths_stay_under_the_restore_folder() {
    let dir = Path::new("/data/restores");
    assert_eq!(
        target_path(dir, "vm/disk-0_1.vmdk").unwrap(),
        PathBuf::from("/data/restores/vm/disk-0_1.vmdk")
    );
    let longest = "b".repeat(MAX_PATH_BYTES);
    assert_eq!(target_path(dir, &longest).unwrap(), dir.join(&longest));
    assert!(target_path(dir, "a b.raw").is_ok());
    assert_eq!(format_for(Path::new("x.VHD")), RestoreFormat::Vhd);
    assert_eq!(format_for(Path::new("x.vmdk")), RestoreFormat::Vmdk);
    assert_eq!(format_for(Path::new("x.img")), RestoreFormat::Raw);
    assert_eq!(format_for(Path::new("x")), RestoreFormat::Raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_file_needs_overwrite() {
    let f = fixture().await;
    std::fs::create_dir_all(f.restores().join("dir.raw")).unwrap();
    let target = f.restores().join("x.raw");
    std::fs::write(&target, b"keep me").unwrap();
    let got = code(f.start(request("p1", "x.raw")).await);
    assert_eq!(got.0, "conflict", "{got:?}");
    assert!(got.1.contains("overwrite"), "{got:?}");
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    let mut on_dir = request("p1", "dir.raw");
    on_dir.overwrite = true;
    assert_eq!(code(f.start(on_dir).await).0, "conflict");
    let mut through_file = request("p1", "x.raw/y.raw");
    through_file.overwrite = true;
    assert_eq!(code(f.start(through_file).await).0, "conflict");

    let mut replace = request("p1", "x.raw");
    replace.overwrite = true;
    let job = f.start(replace).await.unwrap();
    assert_eq!(f.wait_end(&job.id).await.state, JobState::Succeeded);
    assert!(std::fs::read(&target).unwrap() == f.older);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_points_and_disks_are_not_found() {
    let f = fixture().await;
    for req in [
        request("p9", "x.raw"),
        RestoreJobRequest {
            disk_id: "disk9".into(),
            ..request("p1", "x.raw")
        },
        RestoreJobRequest {
            machine_id: "vm-z".into(),
            ..request("latest", "x.raw")
        },
    ] {
        let got = code(f.start(req.clone()).await);
        assert_eq!(got.0, "not_found", "{req:?}: {got:?}");
    }
    assert!(!f.restores().exists());
}

/// A progress hook that parks the restore's thread at its first report with data, tells the test,
/// and waits for the test to let it go.
fn park_at_first_data() -> (ProgressHook, mpsc::Receiver<()>, mpsc::Sender<()>) {
    let (reached_tx, reached_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let parked = AtomicBool::new(false);
    let go_rx = Mutex::new(go_rx);
    let hook: ProgressHook = Arc::new(move |_id, done, _total| {
        if done > 0 && !parked.swap(true, Ordering::SeqCst) {
            let _ = reached_tx.send(());
            let _ = go_rx.lock().unwrap().recv_timeout(Duration::from_secs(10));
        }
    });
    (hook, reached_rx, go_tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_stops_and_leaves_no_file() {
    let f = fixture().await;
    let (hook, reached, go) = park_at_first_data();
    f.jobs.set_progress_hook(Some(hook));
    let job = f.start(request("p2", "big.raw")).await.unwrap();
    reached.recv_timeout(Duration::from_secs(10)).unwrap();

    let out = f.restores().join("big.raw");
    let partial = f.restores().join("big.raw.partial");
    let running = f.jobs.get(&job.id).unwrap();
    assert_eq!(running.state, JobState::Running);
    assert!(running.bytes_done > 0 && running.bytes_done < running.bytes_total);
    assert!(partial.exists(), "the restore is mid-way");

    let asked = f.jobs.cancel(&operator(), "10.0.0.9", &job.id).unwrap();
    assert_eq!(asked.state, JobState::Running);
    assert!(asked.cancel_requested);
    // Asking twice is harmless and audited once.
    assert!(f.jobs.cancel(&operator(), "10.0.0.9", &job.id).is_ok());
    go.send(()).unwrap();

    let ended = f.wait_end(&job.id).await;
    assert_eq!(ended.state, JobState::Cancelled);
    assert!(ended.cancel_requested && ended.finished_at.is_some());
    assert!(ended.bytes_done < ended.bytes_total, "{ended:?}");
    assert!(!out.exists() && !partial.exists());
    let cancelled = f.events("restore_cancelled");
    assert_eq!(cancelled.len(), 1);
    assert_eq!(
        (cancelled[0].actor.as_str(), cancelled[0].source.as_str()),
        ("olga", "10.0.0.9")
    );
    assert!(f.events("restore_finished").is_empty());

    let again = f.jobs.cancel(&operator(), "local", &job.id);
    assert_eq!(code(again).0, "conflict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_finished_or_unknown_job_is_refused() {
    let f = fixture().await;
    let job = f.start(request("p1", "done.raw")).await.unwrap();
    assert_eq!(f.wait_end(&job.id).await.state, JobState::Succeeded);
    let got = code(f.jobs.cancel(&operator(), "local", &job.id));
    assert_eq!(got.0, "conflict");
    assert!(got.1.contains("succeeded"), "{got:?}");
    assert!(
        f.restores().join("done.raw").exists(),
        "a refused cancel removes nothing"
    );
    assert_eq!(
        code(f.jobs.cancel(&operator(), "local", "ffffffffffffffff")).0,
        "not_found"
    );
    let viewer = Principal {
        role: Role::Viewer,
        ..operator()
    };
    assert_eq!(
        code(f.jobs.cancel(&viewer, "local", &job.id)).0,
        "forbidden"
    );
    assert!(f.events("restore_cancelled").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_restore_ends_failed_with_its_error() {
    let f = fixture().await;
    // Without its packs the restore finds the point and its index, then cannot read a chunk.
    std::fs::remove_dir_all(f._dir.path().join("vault").join("packs")).unwrap();
    let job = f.start(request("p2", "broken.raw")).await.unwrap();
    let ended = f.wait_end(&job.id).await;
    assert_eq!(ended.state, JobState::Failed);
    let error = ended.error.unwrap();
    assert!(error.contains("pack object is missing"), "{error}");
    assert!(!f.restores().join("broken.raw").exists());
    assert!(!f.restores().join("broken.raw.partial").exists());
    let failed = f.events("restore_failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].actor, "system");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_marks_running_jobs_failed() {
    let f = fixture().await;
    let job = f.start(request("p1", "ok.raw")).await.unwrap();
    assert_eq!(f.wait_end(&job.id).await.state, JobState::Succeeded);

    // What a daemon killed mid-restore leaves: a running record and a partial file.
    let tree = f.state.db().open_tree(TREE).unwrap();
    let partial = f.restores().join("killed.raw.partial");
    std::fs::write(&partial, b"half").unwrap();
    let orphan = RestoreJobView {
        id: "00000000000000ff".into(),
        path: f
            .restores()
            .join("killed.raw")
            .to_string_lossy()
            .into_owned(),
        state: JobState::Running,
        bytes_done: 7,
        finished_at: None,
        ..job.clone()
    };
    tree.insert(
        orphan.id.as_bytes(),
        encode_record(&serde_json::to_vec(&orphan).unwrap()),
    )
    .unwrap();

    let restarted = RestoreJobs::new(f.cfg.clone(), f.state.clone());
    let failed = restarted.get(&orphan.id).unwrap();
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(failed.error.as_deref(), Some(INTERRUPTED));
    assert!(failed.finished_at.is_some());
    assert!(!partial.exists());
    let kept = restarted.get(&job.id).unwrap();
    assert_eq!(kept.state, JobState::Succeeded);
    assert!(f.restores().join("ok.raw").exists());
    let events = f.events("restore_failed");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].actor, "system");
    assert!(events[0].detail.contains(INTERRUPTED));
    assert_eq!(restarted.recover().unwrap(), 0, "recovery runs once");

    // A corrupt record is reported by get, and does not stop recovery of the others.
    tree.insert(b"0000000000000001", b"garbage".to_vec())
        .unwrap();
    let mut again = orphan.clone();
    again.id = "00000000000000fe".into();
    tree.insert(
        again.id.as_bytes(),
        encode_record(&serde_json::to_vec(&again).unwrap()),
    )
    .unwrap();
    assert_eq!(code(restarted.get("0000000000000001")).0, "internal");
    assert_eq!(restarted.recover().unwrap(), 1);
    assert_eq!(restarted.get(&again.id).unwrap().state, JobState::Failed);
}

/// Parks every restore at its first report with data until released.
fn park_all() -> (ProgressHook, Arc<(Mutex<bool>, Condvar)>) {
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let held = gate.clone();
    let hook: ProgressHook = Arc::new(move |_id, done, _total| {
        if done == 0 {
            return;
        }
        let (open, cv) = &*held;
        let guard = open.lock().unwrap();
        let _ = cv.wait_timeout_while(guard, Duration::from_secs(10), |open| !*open);
    });
    (hook, gate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_third_concurrent_job_is_refused() {
    let f = fixture().await;
    let (hook, gate) = park_all();
    f.jobs.set_progress_hook(Some(hook));
    let a = f.start(request("p2", "a.raw")).await.unwrap();
    let b = f.start(request("p1", "b.raw")).await.unwrap();
    let third = code(f.start(request("p1", "c.raw")).await);
    assert_eq!(
        third,
        (
            "conflict".into(),
            "2 restores are running; wait or cancel one".into()
        )
    );
    assert!(!f.restores().join("c.raw").exists());
    {
        let (open, cv) = &*gate;
        *open.lock().unwrap() = true;
        cv.notify_all();
    }
    assert_eq!(f.wait_end(&a.id).await.state, JobState::Succeeded);
    assert_eq!(f.wait_end(&b.id).await.state, JobState::Succeeded);
    let c = f.start(request("p1", "c.raw")).await.unwrap();
    assert_eq!(f.wait_end(&c.id).await.state, JobState::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_jobs_never_write_the_same_file() {
    let f = fixture().await;
    let (hook, reached, go) = park_at_first_data();
    f.jobs.set_progress_hook(Some(hook));
    let a = f.start(request("p2", "same.raw")).await.unwrap();
    reached.recv_timeout(Duration::from_secs(10)).unwrap();
    let mut again = request("p1", "same.raw");
    again.overwrite = true;
    let got = code(f.start(again).await);
    assert_eq!(got.0, "conflict");
    assert!(got.1.contains("a running restore writes"), "{got:?}");
    go.send(()).unwrap();
    assert_eq!(f.wait_end(&a.id).await.state, JobState::Succeeded);
    assert!(std::fs::read(f.restores().join("same.raw")).unwrap() == f.newer);
}
