//! The agent against the in-process stand-in appliance (tests/support): registration through the
//! real binary, then `run --once` passes, including a connection cut mid-sync.

mod support;

use std::io::Write;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use mobility::agent::{Agent, RunOptions};
use support::StandInAppliance;
use wire::BLOCK_SIZE;

const PASS: &str = "open sesame";
const B: usize = BLOCK_SIZE as usize;

async fn mobility(args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mobility"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_pass(dir: &Path, pass: &str) -> String {
    let p = dir.join(format!("pass-{}", pass.len()));
    std::fs::write(&p, format!("{pass}\n")).unwrap();
    p.to_string_lossy().into_owned()
}

async fn register(
    app: &StandInAppliance,
    state: &Path,
    pass: &str,
    fp: &str,
) -> (bool, String, String) {
    let pass_file = write_pass(state.parent().unwrap(), pass);
    mobility(&[
        "register",
        "--appliance",
        &app.addr_string(),
        "--passphrase-file",
        &pass_file,
        "--ca-fingerprint",
        fp,
        "--state-dir",
        state.to_str().unwrap(),
        "--hostname",
        "test-vm",
    ])
    .await
}

/// A disk image with data, zero holes, a changed pattern per block and a partial last block.
fn make_disk(path: &Path, blocks: usize, tail: usize) -> Vec<u8> {
    let mut data = vec![0u8; blocks * B + tail];
    for (i, block) in data.chunks_mut(B).enumerate() {
        if i % 7 == 3 {
            continue; // zero block
        }
        for (j, b) in block.iter_mut().enumerate() {
            *b = (i * 31 + j / 512) as u8 | 1;
        }
    }
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(&data).unwrap();
    data
}

fn nonzero_blocks(data: &[u8]) -> u64 {
    data.chunks(B).filter(|b| b.iter().any(|&x| x != 0)).count() as u64
}

fn opts(state: &Path, disk: &Path) -> RunOptions {
    let mut o = RunOptions::new(vec![disk.to_path_buf()]);
    o.state_dir = Some(state.to_path_buf());
    o.once = true;
    o.timeout = Duration::from_secs(60);
    o.backoff_min = Duration::from_millis(50);
    o.backoff_max = Duration::from_millis(200);
    o
}

async fn run_once(state: &Path, disk: &Path) -> anyhow::Result<String> {
    let agent = Agent::new(opts(state, disk))?;
    let r = agent.run().await;
    agent.shutdown();
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_outcomes() {
    let app = StandInAppliance::start(PASS, 4 << 20).await;
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");

    let (ok, _, err) = register(&app, &state, "not it", &app.ca_fingerprint).await;
    assert!(!ok);
    assert!(
        err.contains("registration refused: wrong registration passphrase"),
        "{err}"
    );

    let wrong_fp = "00".repeat(32);
    let (ok, _, err) = register(&app, &state, PASS, &wrong_fp).await;
    assert!(!ok);
    let want = format!(
        "CA fingerprint mismatch: the appliance presented {}",
        app.ca_fingerprint
    );
    assert!(err.contains(&want), "{err}");
    assert!(!state.join("registration.json").exists());

    // colon-separated upper case is the same fingerprint
    let fp = app
        .ca_fingerprint
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    let (ok, out, err) = register(&app, &state, PASS, &fp).await;
    assert!(ok, "{err}");
    assert!(out.contains("agent-1"), "{out}");
    let mode = std::fs::metadata(state.join("key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    for f in ["cert.pem", "ca.pem", "registration.json"] {
        assert!(state.join(f).exists(), "{f}");
    }
    assert_eq!(app.lock().registered, vec!["test-vm".to_string()]);

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let pass_file = write_pass(tmp.path(), PASS);
    let (ok, _, err) = mobility(&[
        "register",
        "--appliance",
        &addr,
        "--passphrase-file",
        &pass_file,
        "--ca-fingerprint",
        &app.ca_fingerprint,
        "--state-dir",
        state.to_str().unwrap(),
    ])
    .await;
    assert!(!ok);
    assert!(err.contains("connection refused"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_survives_a_cut_and_never_resends_acknowledged_blocks() {
    // A 1.5 MiB window keeps only a few extents in flight: flow control is exercised.
    let app = StandInAppliance::start(PASS, 3 << 19).await;
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let (ok, _, err) = register(&app, &state, PASS, &app.ca_fingerprint).await;
    assert!(ok, "{err}");
    let disk = tmp.path().join("disk.img");
    let mut content = make_disk(&disk, 150, 1000);

    // First pass: the appliance cuts the connection after 4 applied extents.
    app.lock().drop_after_extents = Some(4);
    let point = run_once(&state, &disk).await.unwrap();
    assert_eq!(point, "pt-1");
    {
        let s = app.lock();
        assert_eq!(
            s.images["disk0"].data, content,
            "appliance copy equals the disk"
        );
        assert_eq!(s.connections, 2);
        let block_set = |conn: usize, applied: bool| -> Vec<u64> {
            s.received
                .iter()
                .filter(|r| r.conn == conn && r.applied == applied)
                .flat_map(|r| r.first_block..r.first_block + r.blocks)
                .collect()
        };
        let durable_first = block_set(1, true);
        let lost_first = block_set(1, false);
        let second = block_set(2, true);
        assert!(!durable_first.is_empty() && !lost_first.is_empty());
        for b in &durable_first {
            assert!(!second.contains(b), "acknowledged block {b} was sent again");
        }
        for b in &lost_first {
            assert!(
                second.contains(b),
                "block {b} lost with the connection was not resent"
            );
        }
        assert_eq!(
            (durable_first.len() + second.len()) as u64,
            nonzero_blocks(&content)
        );
        assert!(
            s.received.iter().all(|r| r.blocks <= 16),
            "extents are at most 1 MiB"
        );
        // the bookmark names the last sequence number sent
        let last_seq = s
            .received
            .iter()
            .filter(|r| r.conn == 2)
            .map(|r| r.seq)
            .max()
            .unwrap();
        assert_eq!(s.bookmarks[0].seqs[0].seq, last_seq);
        assert_eq!(s.hellos[0].disks[0].size_bytes, content.len() as u64);
        assert!(s.pongs.contains(&2), "the agent answers Ping with Pong");
    }

    // A restart with nothing changed sends nothing, but still makes a point.
    let point = run_once(&state, &disk).await.unwrap();
    assert_eq!(point, "pt-2");
    assert!(
        app.lock().received.iter().all(|r| r.conn != 3),
        "unchanged disk resent data"
    );

    // Change three blocks (one zeroed, one in the partial tail) and run the real binary.
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    for (block, byte) in [(5usize, 0xAAu8), (77, 0), (150, 0x55)] {
        let len = B.min(content.len() - block * B);
        let bytes = vec![byte; len];
        f.write_all_at(&bytes, (block * B) as u64).unwrap();
        content[block * B..block * B + len].copy_from_slice(&bytes);
    }
    drop(f);
    let (ok, out, err) = mobility(&[
        "run",
        "--once",
        "--disk",
        disk.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--timeout",
        "60",
    ])
    .await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "pt-3");
    {
        let s = app.lock();
        let mut sent: Vec<u64> = s
            .received
            .iter()
            .filter(|r| r.conn == 4)
            .flat_map(|r| r.first_block..r.first_block + r.blocks)
            .collect();
        sent.sort();
        assert_eq!(sent, vec![5, 77, 150]);
        assert_eq!(s.images["disk0"].data, content);
    }

    let (ok, out, err) =
        mobility(&["status", "--json", "--state-dir", state.to_str().unwrap()]).await;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["registration"]["agent_id"], "agent-1");
    assert_eq!(v["run"]["last_point_id"], "pt-3");
    assert_eq!(v["run"]["disks"][0]["blocks_total"], 151);
    assert_eq!(v["run"]["disks"][0]["blocks_in_sync"], 151);
    assert_eq!(
        v["trackers"][0]["blocks_with_data_acked"],
        nonzero_blocks(&content)
    );
    let (ok, text, _) = mobility(&["status", "--state-dir", state.to_str().unwrap()]).await;
    assert!(
        ok && text.contains("agent-1") && text.contains("pt-3"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appliance_that_lost_its_data_gets_everything_again_and_revocation_is_final() {
    let app = StandInAppliance::start(PASS, 8 << 20).await;
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    assert!(register(&app, &state, PASS, &app.ca_fingerprint).await.0);
    let disk = tmp.path().join("disk.img");
    let content = make_disk(&disk, 40, 0);
    run_once(&state, &disk).await.unwrap();
    let first: usize = app.lock().received.len();

    // The appliance forgets the disk: durable_seq 0 < what the agent recorded.
    app.lock().images.clear();
    run_once(&state, &disk).await.unwrap();
    {
        let s = app.lock();
        assert_eq!(s.images["disk0"].data, content);
        let resent: u64 = s.received[first..].iter().map(|r| r.blocks).sum();
        assert_eq!(resent, nonzero_blocks(&content));
    }

    app.lock().revoked = true;
    let err = run_once(&state, &disk).await.unwrap_err().to_string();
    assert!(err.contains("revoked"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_gives_up_at_the_timeout_when_the_appliance_is_down() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let app = StandInAppliance::start(PASS, 8 << 20).await;
    assert!(register(&app, &state, PASS, &app.ca_fingerprint).await.0);
    drop(app);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let disk = tmp.path().join("disk.img");
    make_disk(&disk, 2, 0);
    let mut o = opts(&state, &disk);
    o.timeout = Duration::from_millis(700);
    let agent = Agent::new(o).unwrap();
    let started = std::time::Instant::now();
    let err = agent.run().await.unwrap_err().to_string();
    assert!(err.contains("did not become durable within"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_mode_bookmarks_each_pass_and_stops_cleanly_on_sigterm() {
    let app = StandInAppliance::start(PASS, 8 << 20).await;
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    assert!(register(&app, &state, PASS, &app.ca_fingerprint).await.0);
    let disk = tmp.path().join("disk.img");
    let content = make_disk(&disk, 20, 0);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mobility"))
        .args([
            "run",
            "--disk",
            disk.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ])
        .args(["--interval", "1"])
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    // wait for two passes: the second one must send nothing
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while app.lock().bookmarks.len() < 2 {
        assert!(std::time::Instant::now() < deadline, "no second bookmark");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    {
        let s = app.lock();
        assert_eq!(s.images["disk0"].data, content);
        assert!(s.bookmarks[1].bookmark_id > s.bookmarks[0].bookmark_id);
        let sent: u64 = s.received.iter().map(|r| r.blocks).sum();
        assert_eq!(sent, nonzero_blocks(&content), "second pass resent blocks");
    }
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "SIGTERM must exit 0, got {status}");
    let st: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("status.json")).unwrap()).unwrap();
    assert_eq!(st["state"], "stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_pings_while_waiting_for_a_slow_point() {
    let app = StandInAppliance::start(PASS, 8 << 20).await;
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    assert!(register(&app, &state, PASS, &app.ca_fingerprint).await.0);
    let disk = tmp.path().join("disk.img");
    make_disk(&disk, 4, 0);
    app.lock().pings_before_point = 3;
    let mut o = opts(&state, &disk);
    o.keepalive = Duration::from_millis(100);
    let agent = Agent::new(o).unwrap();
    assert_eq!(agent.run().await.unwrap(), "pt-1");
    agent.shutdown();
    assert!(app.lock().pings >= 3);
}
