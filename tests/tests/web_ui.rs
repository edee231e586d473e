//! The dashboard in a real browser: headless Chromium (Debian's) driven by playwright-core walks the
//! first-boot wizard, signs in (a wrong password first), opens every page, adds a vcsim vCenter
//! through its form, opens its VMs and one VM, and signs out (tests/browser/setup_and_dashboard.mjs).
//! Screenshots of every step land in target/test-artifacts/web_ui/.

use ferry_tests::root;
use ferry_tests::vcsim::Vcsim;
use ferry_tests::web_harness::{artifacts_dir, ensure_test_deps, WebAppliance};
use std::process::Command;

#[test]
fn setup_wizard_sign_in_and_every_page_in_chromium() {
    ensure_test_deps();
    let app = WebAppliance::start_fresh(&[]).expect("start a fresh appliance");
    let token = app.setup_token().expect("setup token");
    // A few VMs: the pages, not discovery's volume, are under test here.
    let sim = Vcsim::start(&["-cluster", "1", "-vm", "2"]);
    let artifacts = artifacts_dir("web_ui");
    println!("screenshots: {}", artifacts.display());
    let browser = root().join("tests/browser");
    let out = Command::new("node")
        .current_dir(&browser)
        .arg(browser.join("setup_and_dashboard.mjs"))
        .arg(app.base_url())
        .arg(&token)
        .arg(&artifacts)
        .arg(&sim.url)
        .arg(&sim.username)
        .arg(&sim.password)
        .arg(&sim.thumbprint_sha256)
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
    protect_refusals_through_the_cli(&app);
    let pngs = std::fs::read_dir(&artifacts)
        .expect("artifacts")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".png"))
        .count();
    assert!(
        pngs >= 17,
        "only {pngs} screenshots in {}",
        artifacts.display()
    );
}

/// The vCenter the browser added, through the CLI: its VMs carry their protection, and protecting
/// one is refused with the reason when the request cannot work (nothing reaches a guest here).
fn protect_refusals_through_the_cli(app: &WebAppliance) {
    let vcenters: serde_json::Value = serde_json::from_str(
        &app.cli(&["vcenter", "list", "--json"])
            .expect("vcenter list"),
    )
    .expect("vcenter list JSON");
    let id = vcenters[0]["id"]
        .as_str()
        .expect("the vCenter the browser added");
    let vms: serde_json::Value = serde_json::from_str(
        &app.cli(&["vms", "list", "--vcenter", id, "--json"])
            .expect("vms list"),
    )
    .expect("vms list JSON");
    let vms = vms.as_array().expect("an array of VMs");
    assert!(!vms.is_empty());
    assert!(
        vms.iter()
            .all(|v| v["protection"]["state"] == "not_protected"),
        "{vms:?}"
    );
    let moref = vms[0]["moref"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("guest-password");
    std::fs::write(&password, "guest pass\n").unwrap();
    let password = password.to_str().unwrap();
    let protect = |moref: &str, extra: &[&str]| {
        let mut args = vec![
            "vms",
            "protect",
            "--vcenter",
            id,
            "--moref",
            moref,
            "--user",
            "root",
            "--password-file",
            password,
            "--disk",
            "/dev/sda",
        ];
        args.extend_from_slice(extra);
        app.cli(&args)
            .expect_err("the protect request is refused")
            .to_string()
    };
    let err = protect("vm-999999", &[]);
    assert!(err.contains("no VM vm-999999"), "{err}");
    // vcsim's VMs report no guest address: the appliance needs one to reach the guest over SSH.
    let err = protect(moref, &[]);
    assert!(err.contains("no guest IPv4 address"), "{err}");
    // With an address, the install is refused before any connection: this appliance has no agent
    // binaries to copy.
    let err = protect(moref, &["--host", "127.0.0.1", "--port", "1"]);
    assert!(err.contains("agent binaries"), "{err}");
    let err = app
        .cli(&["vms", "unprotect", "--vcenter", id, "--moref", moref])
        .expect_err("nothing to forget")
        .to_string();
    assert!(err.contains("never enabled"), "{err}");
}
