use std::path::{Path, PathBuf};

use super::*;

/// Arguments with the key file `<dir>/key` (each test writes it, or not).
fn args(dir: &Path) -> PushArgs {
    PushArgs {
        via: None,
        host: Some("10.0.0.5".into()),
        port: 2222,
        login: crate::cli::GuestLoginArgs {
            user: Some("root".into()),
            credential: None,
            key_file: Some(dir.join("key")),
            key_passphrase_file: None,
            password_file: None,
        },
        vm: "vc-1/vm-42".into(),
        disks: vec!["/dev/sda".into()],
        host_key: Some("SHA256:abc".into()),
        prefix: None,
        appliance_addr: None,
        interval_secs: Some(30),
        wait: false,
        json: false,
    }
}

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

#[test]
fn a_key_request_carries_the_key_and_its_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "key",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n",
    );
    let mut a = args(dir.path());
    a.login.key_passphrase_file = Some(write(dir.path(), "pass", "key pass\n"));
    let body = push_request(&a, "install").unwrap();
    assert_eq!(body["operation"], "install");
    assert_eq!(body["host"], "10.0.0.5");
    assert_eq!(body["port"], 2222);
    assert_eq!(body["username"], "root");
    assert_eq!(body["vm"], "vc-1/vm-42");
    assert_eq!(body["disks"], json!(["/dev/sda"]));
    assert_eq!(body["host_key"], "SHA256:abc");
    assert_eq!(body["interval_secs"], 30);
    assert!(body["prefix"].is_null());
    assert_eq!(body["auth"]["kind"], "private_key");
    assert_eq!(
        body["auth"]["private_key"], "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n",
        "the key is sent as written"
    );
    assert_eq!(body["auth"]["passphrase"], "key pass");
    // The body is what the API takes.
    let parsed: crate::mgmt::push_jobs::PushRequest = serde_json::from_value(body).unwrap();
    assert_eq!(parsed.port, 2222);
}

#[test]
fn a_password_request_carries_the_password_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(dir.path());
    a.login.key_file = None;
    a.login.password_file = Some(write(dir.path(), "pw", " s3cret \n"));
    let body = push_request(&a, "uninstall").unwrap();
    assert_eq!(
        body["auth"],
        json!({"kind": "password", "password": " s3cret "})
    );
    assert_eq!(body["operation"], "uninstall");
    serde_json::from_value::<crate::mgmt::push_jobs::PushRequest>(body).unwrap();
}

#[test]
fn a_vmware_tools_request_names_the_vm_and_no_host() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(dir.path());
    a.via = Some(PushVia::VmwareTools);
    a.host = None;
    a.host_key = None;
    a.port = 22;
    a.login.key_file = None;
    a.login.password_file = Some(write(dir.path(), "pw", "guest\n"));
    let body = push_request(&a, "install").unwrap();
    assert_eq!(body["via"], "vmware_tools");
    assert!(body.get("host").is_none() && body.get("port").is_none());
    assert_eq!(body["vm"], "vc-1/vm-42");
    let parsed: crate::mgmt::push_jobs::PushRequest = serde_json::from_value(body).unwrap();
    assert_eq!(parsed.via, crate::mgmt::push_jobs::Via::VmwareTools);
    // What does not apply through the vCenter is refused, not ignored.
    for change in [
        &(|a: &mut PushArgs| a.host = Some("10.0.0.5".into())) as &dyn Fn(&mut PushArgs),
        &|a: &mut PushArgs| a.host_key = Some("SHA256:abc".into()),
        &|a: &mut PushArgs| a.port = 2222,
        &|a: &mut PushArgs| {
            a.login.password_file = None;
            a.login.key_file = Some(write(dir.path(), "key", "k"));
        },
    ] {
        let mut bad = args(dir.path());
        bad.via = Some(PushVia::VmwareTools);
        bad.host = None;
        bad.host_key = None;
        bad.port = 22;
        bad.login.key_file = None;
        bad.login.password_file = Some(dir.path().join("pw"));
        change(&mut bad);
        assert!(push_request(&bad, "install").is_err(), "{bad:?}");
    }
    // Over SSH a host is required.
    let mut no_host = args(dir.path());
    no_host.host = None;
    write(dir.path(), "key", "k");
    assert!(push_request(&no_host, "install").is_err());
}

#[test]
fn unusable_secret_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = args(dir.path());
    let err = push_request(&a, "install").unwrap_err();
    assert!(
        format!("{err:#}").contains("reading the key file"),
        "{err:#}"
    );
    write(dir.path(), "key", " \n");
    let err = push_request(&a, "install").unwrap_err();
    assert!(err.to_string().contains("is empty"), "{err:#}");
    write(dir.path(), "key", &"k".repeat(65 << 10));
    let err = push_request(&a, "install").unwrap_err();
    assert!(err.to_string().contains("larger than 64 KiB"), "{err:#}");
    let mut neither = args(dir.path());
    neither.login.key_file = None;
    assert!(push_request(&neither, "install").is_err());
    let mut both = args(dir.path());
    both.login.password_file = Some(write(dir.path(), "pw", "x"));
    assert!(push_request(&both, "install").is_err());
    let mut empty_pw = neither;
    empty_pw.login.password_file = Some(write(dir.path(), "pw2", "\n"));
    let err = push_request(&empty_pw, "install").unwrap_err();
    assert!(err.to_string().contains("is empty"), "{err:#}");
}

#[test]
fn following_prints_each_line_once() {
    let log: Vec<Value> = ["a", "b", "c"].iter().map(|l| json!(l)).collect();
    assert_eq!(new_lines(&log, None).len(), 3);
    assert_eq!(new_lines(&log, Some("a")), &log[1..]);
    assert!(new_lines(&log, Some("c")).is_empty());
    // The line last printed was dropped from a full log: everything there is new to the reader.
    assert_eq!(new_lines(&log, Some("gone")).len(), 3);
    assert!(new_lines(&[], Some("a")).is_empty());
}

fn job(state: &str, error: Value) -> Value {
    json!({
        "id": "00000000000000ab", "operation": "install", "username": "root",
        "host": "10.0.0.5", "port": 22, "vm": "vc-1/vm-42", "state": state, "attempts": 1,
        "requested_by": "admin", "created_at": "2024-01-01T00:00:00Z", "agent_id": null,
        "error": error, "log": ["2024-01-01T00:00:00Z attempt 1 of 3"],
    })
}

#[test]
fn only_a_succeeded_job_is_a_success() {
    outcome(&job("succeeded", Value::Null)).unwrap();
    let failed = job(
        "failed",
        json!({"code": "authentication_failed", "message": "authentication failed for user root",
            "retryable": false}),
    );
    let err = outcome(&failed).unwrap_err().to_string();
    assert!(
        err.contains("authentication_failed") && err.contains("00000000000000ab"),
        "{err}"
    );
    assert!(summary(&failed).contains("authentication_failed"));
    let err = outcome(&job("cancelled", Value::Null))
        .unwrap_err()
        .to_string();
    assert!(err.contains("cancelled"), "{err}");
    assert!(!is_finished(&job("running", Value::Null)));
    assert!(is_finished(&job("cancelled", Value::Null)));
}

#[test]
fn jobs_are_shown_with_target_state_and_log() {
    let failed = job(
        "failed",
        json!({"code": "host_unreachable", "message": "no route", "retryable": true}),
    );
    let rows = job_rows(std::slice::from_ref(&failed));
    assert_eq!(
        rows[0],
        [
            "00000000000000ab",
            "install",
            "root@10.0.0.5:22",
            "vc-1/vm-42",
            "failed",
            "-",
            "host_unreachable",
            "2024-01-01T00:00:00Z"
        ]
    );
    let mut shown = Vec::new();
    write_job(&failed, &mut shown).unwrap();
    let shown = String::from_utf8(shown).unwrap();
    assert!(
        shown.contains("push job 00000000000000ab: install to root@10.0.0.5:22 for vm vc-1/vm-42"),
        "{shown}"
    );
    assert!(
        shown.contains("error: no route (host_unreachable, retryable)"),
        "{shown}"
    );
    assert!(
        shown.contains("  2024-01-01T00:00:00Z attempt 1 of 3"),
        "{shown}"
    );
    assert!(!shown.contains("agent:"), "no agent yet: {shown}");
}

#[test]
fn host_segments_keep_ipv6_colons_and_escape_the_rest() {
    assert_eq!(host_segment("fe80::1"), "fe80::1");
    assert_eq!(host_segment("guest.example"), "guest.example");
    assert_eq!(host_segment("a/b"), "a%2Fb");
}

#[test]
fn a_stored_credential_replaces_user_and_secret() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(dir.path());
    a.login.key_file = None;
    a.login.user = None;
    a.login.credential = Some("c0ffee".into());
    let body = push_request(&a, "install").unwrap();
    assert_eq!(
        body["auth"],
        serde_json::json!({"kind": "credential", "id": "c0ffee"})
    );
    assert_eq!(body["username"], "");
    // A credential and a secret file at once is refused before anything is sent.
    a.login.password_file = Some(write(dir.path(), "pw", "x\n"));
    let err = push_request(&a, "install").unwrap_err().to_string();
    assert!(err.contains("--credential"), "{err}");
}
