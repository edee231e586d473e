//! A first-boot setup interrupted by a crash (docs/MANAGEMENT.md "Setup as one transaction"): the
//! daemon dies right after storing the plan, or right after creating the vault (the
//! `FERRY_TEST_SETUP_ABORT_AFTER` hook), and the next start completes the stored plan on its own,
//! without a new request.

use ferry_tests::web_harness::{wait_for, Response, WebAppliance, ADMIN_PASSWORD};
use serde_json::{json, Value};
use std::time::Duration;

/// Every answer must carry the security headers.
#[track_caller]
fn checked(r: anyhow::Result<Response>, what: &str) -> Response {
    let r = r.unwrap_or_else(|e| panic!("{what}: no answer: {e:#}"));
    r.assert_security_headers(what);
    r
}

#[track_caller]
fn get(app: &WebAppliance, path: &str, token: Option<&str>) -> Response {
    checked(app.get(path, token), &format!("GET {path}"))
}

fn setup_phase(app: &WebAppliance) -> String {
    get(app, "/api/v1/setup", None).json()["phase"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Starts with the setup abort hook at `step`, submits setup (the daemon dies inside it), starts again
/// without the hook and checks that the stored plan was carried out without a new request.
fn setup_resumes_after_a_crash_at(step: &str) {
    let mut app = WebAppliance::start_fresh(&[("FERRY_TEST_SETUP_ABORT_AFTER", step)])
        .expect("start with the abort hook");
    let token = app.setup_token().expect("token");
    let r = app.post_json(
        "/api/v1/setup",
        None,
        &json!({"token": token, "admin_password": ADMIN_PASSWORD}),
    );
    assert!(
        r.is_err(),
        "setup answered although the daemon was to die after {step}: {r:?}"
    );
    let st = app
        .wait_exit(Duration::from_secs(60))
        .expect("the daemon dies");
    assert!(!st.success(), "exit status {st}");
    assert!(
        app.log_text()
            .contains(&format!("FERRY_TEST_SETUP_ABORT_AFTER={step}")),
        "it did not die where asked:\n{}",
        app.log_text()
    );

    app.set_env("FERRY_TEST_SETUP_ABORT_AFTER", None);
    app.restart().expect("restart");
    wait_for(Duration::from_secs(90), "the resumed setup", || {
        (setup_phase(&app) == "complete").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\nlog:\n{}", app.log_text()));

    let login = checked(app.login("admin", ADMIN_PASSWORD), "login").expect(200, None);
    let session = login["token"].as_str().expect("token").to_string();
    let admin_token =
        std::fs::read_to_string(app.data_dir.join("admin-token")).expect("admin-token");
    let me = get(&app, "/api/v1/session", Some(admin_token.trim())).expect(200, None);
    assert_eq!(me["user"], "admin", "{me}");
    assert!(
        !app.setup_token_path().exists(),
        "the setup token outlived the resumed setup"
    );
    // The vault exists and opens with the passphrase file, straight from the CLI.
    let points = app
        .cli(&["points", "list", "--json"])
        .unwrap_or_else(|e| panic!("{e:#}\nlog:\n{}", app.log_text()));
    let points: Vec<Value> = serde_json::from_str(&points).expect("points JSON");
    assert!(points.is_empty(), "{points:?}");
    // Committed exactly once.
    let audit = get(&app, "/api/v1/audit?limit=1000", Some(&session)).expect(200, None);
    let completed = audit["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["event"] == "setup_completed")
        .count();
    assert_eq!(completed, 1, "{audit}");
    // And the old token cannot run setup again.
    checked(
        app.post_json(
            "/api/v1/setup",
            None,
            &json!({"token": token, "admin_password": ADMIN_PASSWORD}),
        ),
        "second setup",
    )
    .expect(409, Some("setup_complete"));
}

#[test]
fn setup_resumes_after_a_crash_once_the_vault_exists() {
    setup_resumes_after_a_crash_at("vault");
}

#[test]
fn setup_resumes_after_a_crash_once_the_plan_is_stored() {
    setup_resumes_after_a_crash_at("plan");
}
