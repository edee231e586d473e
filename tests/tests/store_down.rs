//! A vault that is down fills the cache up to its limit, the receiver then stops reading (the agent waits,
//! nothing is dropped), and replication completes exactly once the store is back.

use ferry_tests::image::real_ext4;
use ferry_tests::{assert_point_restores, dir_bytes, finished_point, Agent, Appliance};
use std::time::{Duration, Instant};

fn cache_bytes(dir: &std::path::Path) -> u64 {
    dir_bytes(dir, |name| name.starts_with("seg-"))
}

#[test]
fn store_down_fills_cache_then_recovers() {
    let t = tempfile::tempdir().unwrap();
    let img = real_ext4(t.path(), 128).unwrap();
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
    let point = finished_point(run, &app, "after the store came back");
    assert_point_restores(&app, t.path(), &point, &img);
    assert!(
        app.log_text().contains("restarting"),
        "the failing uploads were not reported"
    );
}
