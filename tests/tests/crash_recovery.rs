//! `kill -9` during the initial sync, of the appliance and of the agent: the sync completes after a
//! restart and the restored image is exact (an acknowledged extent survives; nothing is resent in full).

use ferry_tests::image::real_ext4;
use ferry_tests::{assert_point_restores, dir_bytes, finished_point, Agent, Appliance};
use std::time::{Duration, Instant};

/// Waits until the appliance has taken in `bytes` (cache plus vault), i.e. the sync is well under way.
fn wait_for_progress(app: &Appliance, bytes: u64) {
    let start = Instant::now();
    while dir_bytes(&app.data_dir.join("cache"), |_| true)
        + dir_bytes(&app.data_dir.join("vault"), |_| true)
        < bytes
    {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no replication progress\n{}",
            app.log_text()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn appliance_killed_during_initial_sync_completes_exactly() {
    let t = tempfile::tempdir().unwrap();
    let img = real_ext4(t.path(), 256).unwrap();
    let mut app = Appliance::start(&t.path().join("data"), &[]).unwrap();
    let agent = Agent::register(&app, &t.path().join("agent")).unwrap();
    let mut run = agent
        .command(&[&img])
        .arg("--once")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_progress(&app, 8 << 20);
    assert!(
        run.try_wait().unwrap().is_none(),
        "the sync finished before the kill: the test proves nothing"
    );
    app.kill9();
    std::thread::sleep(Duration::from_millis(500));
    app.restart().unwrap();
    let point = finished_point(run, &app, "after the appliance restart");
    assert_point_restores(&app, t.path(), &point, &img);
}

#[test]
fn agent_killed_during_initial_sync_resumes_exactly() {
    let t = tempfile::tempdir().unwrap();
    let img = real_ext4(t.path(), 256).unwrap();
    let app = Appliance::start(&t.path().join("data"), &[]).unwrap();
    let agent = Agent::register(&app, &t.path().join("agent")).unwrap();
    let mut run = agent.command(&[&img]).arg("--once").spawn().unwrap();
    wait_for_progress(&app, 8 << 20);
    assert!(
        run.try_wait().unwrap().is_none(),
        "the sync finished before the kill: the test proves nothing"
    );
    run.kill().unwrap();
    run.wait().unwrap();
    let point = agent.once(&[&img]).unwrap();
    assert_point_restores(&app, t.path(), &point, &img);
}
