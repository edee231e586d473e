//! A vault that is down fills the cache up to its limit, the receiver then stops reading (the agent waits,
//! nothing is dropped), and replication completes exactly once the store is back.

use ferry_tests::image::{collect_real_files, make_ext4};
use ferry_tests::{points, restore, sha256_file, Agent, Appliance};
use std::time::{Duration, Instant};

fn cache_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else if e.file_name().to_string_lossy().starts_with("seg-") {
                total += m.len();
            }
        }
    }
    total
}

#[test]
fn store_down_fills_cache_then_recovers() {
    let t = tempfile::tempdir().unwrap();
    let files = t.path().join("files");
    collect_real_files(&files, 100 << 20).unwrap();
    let img = t.path().join("disk.img");
    make_ext4(&img, 128, &files).unwrap();
    let limit: u64 = 40 << 20;
    let app = Appliance::start(
        &t.path().join("data"),
        &[("APPLIANCE_CACHE_MAX_BYTES", &limit.to_string())],
    )
    .unwrap();
    let agent = Agent::register(&app, &t.path().join("agent")).unwrap();

    // The store goes down: its folder is replaced by a regular file, so every write to it fails.
    let vault = app.data_dir.join("vault");
    let aside = t.path().join("vault-aside");
    std::fs::rename(&vault, &aside).unwrap();
    std::fs::write(&vault, b"not a folder").unwrap();

    let mut run = agent
        .command(&[&img])
        .arg("--once")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The cache fills up to about its limit and stays there: the agent is held back, not dropped.
    let start = Instant::now();
    let mut peak = 0;
    while start.elapsed() < Duration::from_secs(20) {
        peak = peak.max(cache_bytes(&app.data_dir.join("cache")));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        peak >= limit / 2,
        "the cache never filled: {peak} bytes\n{}",
        app.log_text()
    );
    assert!(
        peak <= limit + (65 << 20),
        "the cache overran its limit: {peak} bytes"
    );
    assert!(
        run.try_wait().unwrap().is_none(),
        "the agent finished although the store was down"
    );

    // The store is back: everything drains and the point is exact.
    std::fs::remove_file(&vault).unwrap();
    std::fs::rename(&aside, &vault).unwrap();
    let out = run.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "agent failed after the store came back\n{}",
        app.log_text()
    );
    let point = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap()
        .to_string();
    let list = points(&app).unwrap();
    let p = &list[0];
    let restored = t.path().join("r.img");
    restore(
        &app,
        p["machine"].as_str().unwrap(),
        p["disk"].as_str().unwrap(),
        &point,
        &restored,
        "raw",
    )
    .unwrap();
    assert_eq!(sha256_file(&restored), sha256_file(&img));
    assert!(
        app.log_text().contains("restarting"),
        "the failing uploads were not reported"
    );
}
