//! The dashboard in a real browser: headless Chromium (Debian's) driven by playwright-core walks the
//! first-boot wizard, signs in (a wrong password first), opens every page and signs out
//! (tests/browser/setup_and_dashboard.mjs). Screenshots of every step land in
//! target/test-artifacts/web_ui/.

use ferry_tests::root;
use ferry_tests::web_harness::{artifacts_dir, ensure_test_deps, WebAppliance};
use std::process::Command;

#[test]
fn setup_wizard_sign_in_and_every_page_in_chromium() {
    ensure_test_deps();
    let app = WebAppliance::start_fresh(&[]).expect("start a fresh appliance");
    let token = app.setup_token().expect("setup token");
    let artifacts = artifacts_dir("web_ui");
    println!("screenshots: {}", artifacts.display());
    let browser = root().join("tests/browser");
    let out = Command::new("node")
        .current_dir(&browser)
        .arg(browser.join("setup_and_dashboard.mjs"))
        .arg(app.base_url())
        .arg(&token)
        .arg(&artifacts)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the browser run failed ({}):\n{stdout}{stderr}\nscreenshots: {}\nappliance log:\n{}",
        out.status,
        artifacts.display(),
        app.log_text()
    );
    // The run's claims, checked from the outside: it did complete setup and it left its screenshots.
    let phase = app.get("/api/v1/setup", None).expect("GET /api/v1/setup");
    assert_eq!(phase.json()["phase"], "complete", "{}", phase.text());
    assert!(
        !app.setup_token_path().exists(),
        "the setup token outlived setup"
    );
    let pngs = std::fs::read_dir(&artifacts)
        .expect("artifacts")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".png"))
        .count();
    assert!(
        pngs >= 12,
        "only {pngs} screenshots in {}",
        artifacts.display()
    );
}
