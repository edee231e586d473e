//! `kill -9` during the initial sync, of the appliance and of the agent: the sync completes after a
//! restart and the restored image is exact (an acknowledged extent survives; nothing is resent in full).

use ferry_tests::image::{collect_real_files, make_ext4};
use ferry_tests::{points, restore, sha256_file, Agent, Appliance};
use std::path::Path;
use std::time::{Duration, Instant};

fn dir_bytes(p: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Waits until the appliance has taken in `bytes` (cache plus vault), i.e. the sync is well under way.
fn wait_for_progress(app: &Appliance, bytes: u64) {
    let start = Instant::now();
    while dir_bytes(&app.data_dir.join("cache")) + dir_bytes(&app.data_dir.join("vault")) < bytes {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no replication progress\n{}",
            app.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn image(t: &Path) -> std::path::PathBuf {
    let files = t.join("files");
    collect_real_files(&files, 200 << 20).unwrap();
    let img = t.join("disk.img");
    make_ext4(&img, 256, &files).unwrap();
    img
}

fn check_restore(app: &Appliance, t: &Path, img: &Path, point: &str) {
    let list = points(app).unwrap();
    let p = list
        .iter()
        .find(|p| p["point"] == point)
        .unwrap_or_else(|| panic!("point {point} not listed: {list:?}"));
    let out = t.join("restored.img");
    restore(
        app,
        p["machine"].as_str().unwrap(),
        p["disk"].as_str().unwrap(),
        point,
        &out,
        "raw",
    )
    .unwrap();
    assert_eq!(
        sha256_file(&out),
        sha256_file(img),
        "restored image differs"
    );
}

#[test]
fn appliance_killed_during_initial_sync_completes_exactly() {
    let t = tempfile::tempdir().unwrap();
    let img = image(t.path());
    let mut app = Appliance::start(&t.path().join("data"), &[]).unwrap();
    let agent = Agent::register(&app, &t.path().join("agent")).unwrap();
    let mut run = agent
        .command(&[&img])
        .arg("--once")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_progress(&app, 40 << 20);
    assert!(
        run.try_wait().unwrap().is_none(),
        "the sync finished before the kill: the test proves nothing"
    );
    app.kill9();
    std::thread::sleep(Duration::from_millis(500));
    app.restart().unwrap();
    let out = run.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "agent did not finish after the appliance restart\n{}",
        app.log_text()
    );
    let point = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap()
        .to_string();
    check_restore(&app, t.path(), &img, &point);
}

#[test]
fn agent_killed_during_initial_sync_resumes_exactly() {
    let t = tempfile::tempdir().unwrap();
    let img = image(t.path());
    let app = Appliance::start(&t.path().join("data"), &[]).unwrap();
    let agent = Agent::register(&app, &t.path().join("agent")).unwrap();
    let mut run = agent.command(&[&img]).arg("--once").spawn().unwrap();
    wait_for_progress(&app, 40 << 20);
    assert!(
        run.try_wait().unwrap().is_none(),
        "the sync finished before the kill: the test proves nothing"
    );
    run.kill().unwrap();
    run.wait().unwrap();
    let point = agent.once(&[&img]).unwrap();
    check_restore(&app, t.path(), &img, &point);
}
