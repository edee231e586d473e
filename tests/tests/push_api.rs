//! Push install through the running appliance's API, end to end: OpenSSH's sshd on loopback stands in
//! for the guest (this machine, reached as root with a key). `POST /api/v1/push-jobs` installs the debug
//! `mobility` binary from the configured agents folder; the job succeeds once the agent registered with
//! its one-time token, the agent is listed, replicates a disk image and the point restores byte for
//! byte; an uninstall job (through the CLI, `--wait`) stops it. Also: a wrong key fails the job with
//! `authentication_failed`, a viewer may read jobs but not start them, a finished job cannot be
//! cancelled, a recorded host key can be forgotten once, and the private key appears nowhere.

use anyhow::Result;
use ferry_tests::push_kit::{agent_alive, agents_dir, lines, seeded_image, AgentGuard};
use ferry_tests::sshd::{self, Sshd};
use ferry_tests::{assert_point_restores, Appliance};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

use ferry_tests::web_harness as http;

/// One request over a fresh TLS connection that trusts only the appliance's CA.
fn https(
    app: &Appliance,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<http::Response> {
    ferry_tests::web_harness::appliance_https(app, method, path, token, body)
}

fn call(
    app: &Appliance,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> http::Response {
    https(app, method, path, Some(token), body.as_ref())
        .unwrap_or_else(|e| panic!("{method} {path}: {e:#}"))
}

/// Polls a push job until it ends; fails after `limit` with the job and the appliance log.
fn finished(app: &Appliance, token: &str, id: &str, limit: Duration) -> Value {
    let start = Instant::now();
    loop {
        let job =
            call(app, "GET", &format!("/api/v1/push-jobs/{id}"), token, None).expect(200, None);
        if !matches!(job["state"].as_str(), Some("queued" | "running")) {
            eprintln!("push job {id}:\n  {}", lines(&job).join("\n  "));
            return job;
        }
        assert!(
            start.elapsed() < limit,
            "push job {id} did not end within {limit:?}: {job:#}\nappliance log:\n{}",
            app.log_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn request(sshd_port: u16, key: &str, prefix: &Path, img: &Path, operation: &str) -> Value {
    json!({
        "operation": operation,
        "host": "127.0.0.1",
        "port": sshd_port,
        "username": "root",
        "auth": {"kind": "private_key", "private_key": key},
        "vm": "vc-test/vm-7",
        "disks": [img.to_str().unwrap()],
        "prefix": prefix.to_str().unwrap(),
        "interval_secs": 2,
    })
}

/// Creates a viewer and signs it in; returns its session token.
fn viewer_token(app: &Appliance, admin: &str) -> String {
    let password = "Viewer-Push-Passw0rd";
    call(
        app,
        "POST",
        "/api/v1/users",
        admin,
        Some(json!({"name": "viewer1", "role": "viewer", "password": password})),
    )
    .expect(201, None);
    let login = https(
        app,
        "POST",
        "/api/v1/session",
        None,
        Some(&json!({"username": "viewer1", "password": password})),
    )
    .unwrap()
    .expect(200, None);
    login["token"].as_str().expect("session token").to_string()
}

#[test]
fn push_jobs_over_the_api_install_replicate_and_uninstall() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("disk.img");
    seeded_image(&img, 0x51ed_270b_27a3_3c01);
    let agents = agents_dir(t.path());
    let app = Appliance::start(
        &t.path().join("data"),
        &[("APPLIANCE_AGENTS_DIR", agents.to_str().unwrap())],
    )
    .unwrap();
    let admin = app.admin_token().unwrap();
    let sshd = Sshd::start().unwrap();
    let key = sshd.client_key_pem().unwrap();
    let prefix = t.path().join("guest/ferry-mobility");
    let _guard = AgentGuard(prefix.join("run/ferry-mobility.pid"));
    let mut secrets_seen = Vec::new();

    // 1. A viewer may not start a push job, and nothing is queued for it.
    let viewer = viewer_token(&app, &admin);
    let body = request(sshd.port, &key, &prefix, &img, "install");
    call(
        &app,
        "POST",
        "/api/v1/push-jobs",
        &viewer,
        Some(body.clone()),
    )
    .expect(403, Some("forbidden"));
    let list = call(&app, "GET", "/api/v1/push-jobs", &viewer, None).expect(200, None);
    assert_eq!(list["total"], 0, "{list:#}");

    // 2. Install: the job succeeds once the agent registered with its one-time token.
    let started = Instant::now();
    let r = call(&app, "POST", "/api/v1/push-jobs", &admin, Some(body));
    secrets_seen.push(r.text());
    let job = r.expect(202, None);
    assert_eq!(job["state"], "queued", "{job:#}");
    assert_eq!(job["requested_by"], "admin", "{job:#}");
    assert_eq!(job["operation"], "install", "{job:#}");
    let id = job["id"].as_str().expect("job id").to_string();
    let job = finished(&app, &admin, &id, Duration::from_secs(240));
    secrets_seen.push(job.to_string());
    eprintln!("install job took {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!(
        job["state"],
        "succeeded",
        "{job:#}\nsshd log:\n{}",
        sshd.log_text()
    );
    assert_eq!(job["service"], "detached", "no init system here: {job:#}");
    assert_eq!(
        job["host_key"].as_str(),
        Some(sshd.host_key_fingerprint().unwrap().as_str()),
        "{job:#}"
    );
    assert_eq!(job["attempts"], 1, "{job:#}");
    assert_eq!(
        job["enrollments"].as_array().map(Vec::len),
        Some(1),
        "{job:#}"
    );
    let agent_id = job["agent_id"].as_str().expect("agent id").to_string();
    assert!(
        lines(&job)
            .iter()
            .any(|l| l.contains(&format!("agent {agent_id} registered"))),
        "{job:#}"
    );
    // A viewer reads jobs.
    let seen = call(
        &app,
        "GET",
        &format!("/api/v1/push-jobs/{id}"),
        &viewer,
        None,
    )
    .expect(200, None);
    assert_eq!(seen["state"], "succeeded");

    // 3. The agent is registered, and its disk replicates into a point that restores exactly.
    let agents_page = call(&app, "GET", "/api/v1/agents", &admin, None).expect(200, None);
    let listed = agents_page["items"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["id"] == agent_id.as_str()))
        .unwrap_or_else(|| panic!("agent {agent_id} not listed: {agents_page:#}"));
    assert_eq!(listed["revoked"], false, "{listed:#}");
    let deadline = Instant::now() + Duration::from_secs(180);
    let point = loop {
        let page = call(&app, "GET", "/api/v1/points", &admin, None).expect(200, None);
        let found = page["items"]
            .as_array()
            .and_then(|l| l.iter().find(|p| p["machine_id"] == agent_id.as_str()))
            .and_then(|p| p["point_id"].as_str().map(str::to_string));
        if let Some(point) = found {
            break point;
        }
        assert!(
            Instant::now() < deadline,
            "no point from agent {agent_id} within 180 s; agent log:\n{}\nappliance log:\n{}",
            std::fs::read_to_string(prefix.join("log/ferry-mobility.log")).unwrap_or_default(),
            app.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_point_restores(&app, t.path(), &point, &img);

    // 4. A finished job cannot be cancelled; an unknown one is not found.
    call(
        &app,
        "POST",
        &format!("/api/v1/push-jobs/{id}/cancel"),
        &admin,
        Some(json!({})),
    )
    .expect(409, Some("conflict"));
    call(
        &app,
        "POST",
        "/api/v1/push-jobs/00000000deadbeef/cancel",
        &admin,
        Some(json!({})),
    )
    .expect(404, Some("not_found"));
    call(
        &app,
        "GET",
        "/api/v1/push-jobs/00000000deadbeef",
        &admin,
        None,
    )
    .expect(404, Some("not_found"));

    // 5. A key the guest does not accept: the job fails at once with authentication_failed.
    let other = t.path().join("other_key");
    sshd::keygen(&other).unwrap();
    let wrong = std::fs::read_to_string(&other).unwrap();
    let r = call(
        &app,
        "POST",
        "/api/v1/push-jobs",
        &admin,
        Some(request(sshd.port, &wrong, &prefix, &img, "install")),
    );
    secrets_seen.push(r.text());
    let wrong_id = r.expect(202, None)["id"].as_str().unwrap().to_string();
    let job = finished(&app, &admin, &wrong_id, Duration::from_secs(120));
    assert_eq!(job["state"], "failed", "{job:#}");
    assert_eq!(job["error"]["code"], "authentication_failed", "{job:#}");
    assert_eq!(job["error"]["retryable"], false, "{job:#}");
    assert_eq!(job["attempts"], 1, "not retried: {job:#}");
    assert!(job["agent_id"].is_null(), "{job:#}");

    // 6. Bad input is refused with the field named, and queues nothing.
    let mut bad = request(sshd.port, &key, &prefix, &img, "install");
    bad["disks"] = json!([]);
    let r = call(&app, "POST", "/api/v1/push-jobs", &admin, Some(bad));
    r.expect(400, Some("invalid_field"));
    assert!(r.text().contains("disks"), "{}", r.text());
    let mut bad = request(sshd.port, &key, &prefix, &img, "install");
    bad["auth"] = json!({"kind": "private_key", "private_key": "not a key"});
    call(&app, "POST", "/api/v1/push-jobs", &admin, Some(bad)).expect(400, Some("invalid_field"));

    // 7. Uninstall through the CLI, following the job: the agent process is gone.
    let pid: u32 = std::fs::read_to_string(prefix.join("run/ferry-mobility.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(agent_alive(pid), "the pushed agent runs");
    let key_file = sshd.client_key.to_str().unwrap().to_string();
    let port = sshd.port.to_string();
    let out = app
        .cli(&[
            "push",
            "uninstall",
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--user",
            "root",
            "--key-file",
            &key_file,
            "--vm",
            "vc-test/vm-7",
            "--prefix",
            prefix.to_str().unwrap(),
            "--wait",
        ])
        .unwrap_or_else(|e| panic!("{e:#}\nappliance log:\n{}", app.log_text()));
    eprintln!("push uninstall:\n{out}");
    assert!(out.contains("succeeded"), "{out}");
    assert!(out.contains("revoke it"), "the job log was printed: {out}");
    assert!(!agent_alive(pid), "the agent process is gone");
    assert!(!prefix.exists(), "nothing is left under the prefix");

    // The CLI's wait exits non-zero for a failed job and names why.
    let wrong_file = other.to_str().unwrap().to_string();
    let failed = app
        .command()
        .args([
            "push",
            "install",
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--user",
            "root",
            "--key-file",
            &wrong_file,
            "--vm",
            "vc-test/vm-7",
            "--disk",
            img.to_str().unwrap(),
            "--prefix",
            prefix.to_str().unwrap(),
            "--wait",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        !failed.status.success(),
        "a failed job exits non-zero: {stderr}"
    );
    assert!(stderr.contains("authentication_failed"), "{stderr}");

    let listed = app.cli(&["push", "jobs", "list", "--json"]).unwrap();
    let jobs: Vec<Value> = serde_json::from_str(&listed).unwrap();
    assert_eq!(jobs.len(), 4, "{listed}");
    assert_eq!(jobs[0]["state"], "failed", "newest first: {listed}");
    assert_eq!(jobs[1]["operation"], "uninstall", "{listed}");
    assert_eq!(jobs[3]["id"], id.as_str(), "{listed}");
    let shown = app.cli(&["push", "jobs", "show", &id]).unwrap();
    assert!(shown.contains(&format!("agent: {agent_id}")), "{shown}");
    secrets_seen.push(listed);
    secrets_seen.push(shown);

    // 8. The recorded host key is forgotten once.
    let path = format!("/api/v1/push-host-keys/127.0.0.1/{}", sshd.port);
    let r = call(&app, "DELETE", &path, &viewer, None);
    r.expect(403, Some("forbidden"));
    let r = call(&app, "DELETE", &path, &admin, None);
    assert_eq!(r.status, 204, "{}", r.text());
    call(&app, "DELETE", &path, &admin, None).expect(404, Some("not_found"));

    // 9. The audit log names who started the jobs; the private keys appear nowhere.
    let audit = call(&app, "GET", "/api/v1/audit?limit=1000", &admin, None).expect(200, None);
    let events = audit["items"].as_array().unwrap();
    let started = events
        .iter()
        .find(|e| {
            e["event"] == "push_job_started"
                && e["detail"].as_str().is_some_and(|d| d.contains(&id))
        })
        .unwrap_or_else(|| panic!("no push_job_started of {id}: {audit:#}"));
    assert_eq!(started["actor"], "admin");
    assert!(events
        .iter()
        .any(|e| e["event"] == "push_host_key_forgotten"));
    secrets_seen.push(audit.to_string());
    secrets_seen.push(app.log_text());
    for k in [&key, &wrong] {
        let body = k
            .lines()
            .find(|l| !l.starts_with("-----") && l.len() > 20)
            .expect("a key body line");
        for text in &secrets_seen {
            assert!(!text.contains(body), "a private key leaked into: {text}");
        }
    }
}
