//! "Enable protection" for a discovered VM, end to end: vcsim plays the vCenter, and OpenSSH's sshd
//! on loopback stands in for the VM's guest (this machine, reached as root with a generated key).
//! vcsim reports the guest's IP once the VM's `extraConfig` sets `SET.guest.ipAddress` (vcsim's way
//! to fake what VMware Tools would report); the appliance follows that change through discovery.
//!
//! The key is stored as a guest credential; `POST /api/v1/vcenters/{id}/vms/{moref}/protect` naming
//! it installs the debug `mobility` binary from the agents folder into a temporary prefix; the VM's
//! protection goes `installing` -> `protected`, the agent replicates a disk image and the point
//! restores byte for byte; an uninstall push job with the same credential stops the agent.
//!
//! The reported address is 127.0.0.1, which the appliance never picks by itself (a guest's loopback
//! is not how the appliance reaches it), so the protect without `host` is refused and the install
//! names `host` 127.0.0.1. Also refused: an unknown credential, a powered-off VM, a second protect
//! while the first installs, and protecting a protected VM again (that is an upgrade's job). The
//! private key appears in no API answer, the audit log, the job logs or the appliance log.

use std::time::{Duration, Instant};

use ferry_tests::push_kit::{agent_alive, agents_dir, lines, seeded_image, AgentGuard};
use ferry_tests::sshd::Sshd;
use ferry_tests::vcsim::Vcsim;
use ferry_tests::web_harness as http;
use ferry_tests::{assert_point_restores, Appliance};
use serde_json::{json, Value};

fn call(
    app: &Appliance,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> http::Response {
    http::appliance_https(app, method, path, Some(token), body.as_ref())
        .unwrap_or_else(|e| panic!("{method} {path}: {e:#}"))
}

/// Asserts a 400 `invalid_field` on `field` (the message starts with the field's name).
#[track_caller]
fn refused_on(r: http::Response, field: &str) {
    let body = r.expect(400, Some("invalid_field"));
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(&format!("{field}:")),
        "not refused on {field}: {body:#}"
    );
}

/// Polls `check` every 250 ms until it gives a value; panics after `limit` with the last state.
fn poll<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) if start.elapsed() > limit => {
                panic!("{what}: not within {limit:?}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// Sets the guest address vcsim reports for `ip_vm` (its `SET.guest.ipAddress` option) and powers
/// `off_vm` off, with the project's own vSphere client.
fn prepare_vms(sim: &Vcsim, ip_vm: &str, off_vm: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = vsphere::Client::connect(
            &sim.url,
            vsphere::Credentials {
                username: sim.username.clone(),
                password: sim.password.clone(),
            },
            vsphere::TlsTrust::Thumbprint(sim.thumbprint_sha256.clone()),
        )
        .await
        .unwrap();
        let spec = vsphere::ReconfigSpec {
            extra_config: vec![("SET.guest.ipAddress".into(), "127.0.0.1".into())],
            ..Default::default()
        };
        client
            .reconfigure(&vsphere::MoRef::new("VirtualMachine", ip_vm), &spec)
            .await
            .unwrap();
        client
            .power_off(&vsphere::MoRef::new("VirtualMachine", off_vm))
            .await
            .unwrap();
        let _ = client.logout().await;
    });
}

/// Polls the VM's view until its protection is `protected` through push job `job_id`; a `failed`
/// protection fails the test with the job's log.
fn until_protected(
    app: &Appliance,
    admin: &str,
    vm_path: &str,
    job_id: &str,
    sshd: &Sshd,
) -> Value {
    let job_path = format!("/api/v1/push-jobs/{job_id}");
    poll(Duration::from_secs(240), "VM protected", || {
        let v = call(app, "GET", vm_path, admin, None).expect(200, None);
        let p = &v["protection"];
        match p["state"].as_str() {
            Some("protected") if p["push_job_id"] == job_id => Ok(p.clone()),
            Some("failed") => {
                let job = call(app, "GET", &job_path, admin, None).expect(200, None);
                panic!(
                    "protection failed: {v:#}\njob log:\n  {}\nsshd log:\n{}",
                    lines(&job).join("\n  "),
                    sshd.log_text()
                )
            }
            _ => Err(p.to_string()),
        }
    })
}

#[test]
fn protect_a_discovered_vm_installs_replicates_and_refuses_bad_requests() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("disk.img");
    seeded_image(&img, 0x6a09_e667_f3bc_c908);
    let agents = agents_dir(t.path());
    let app = Appliance::start(
        &t.path().join("data"),
        &[("APPLIANCE_AGENTS_DIR", agents.to_str().unwrap())],
    )
    .unwrap();
    let admin = app.admin_token().unwrap();
    let sim = Vcsim::start(&[]);
    let sshd = Sshd::start().unwrap();
    let key = sshd.client_key_pem().unwrap();
    let prefix = t.path().join("guest/ferry-mobility");
    let _guard = AgentGuard(prefix.join("run/ferry-mobility.pid"));
    let mut answers = Vec::new();

    // 1. The vCenter is added through the API; its powered-on VMs are discovered.
    let vc = call(
        &app,
        "POST",
        "/api/v1/vcenters",
        &admin,
        Some(
            json!({"url": sim.url, "username": sim.username, "password": sim.password,
            "thumbprint": sim.thumbprint_sha256}),
        ),
    )
    .expect(201, None);
    let vc_id = vc["id"].as_str().expect("vCenter id").to_string();
    let morefs: Vec<String> = poll(Duration::from_secs(60), "VMs discovered", || {
        let page = call(
            &app,
            "GET",
            &format!("/api/v1/vcenters/{vc_id}/vms"),
            &admin,
            None,
        )
        .expect(200, None);
        let on: Vec<String> = page["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v["power_state"] == "poweredOn")
            .filter_map(|v| v["moref"].as_str().map(str::to_string))
            .collect();
        (on.len() >= 2)
            .then_some(on)
            .ok_or_else(|| page.to_string())
    });
    let (vm, off_vm) = (morefs[0].clone(), morefs[1].clone());
    let vm_path = format!("/api/v1/vcenters/{vc_id}/vms/{vm}");
    let off_path = format!("/api/v1/vcenters/{vc_id}/vms/{off_vm}");

    // 2. vcsim reports the guest's address; discovery follows, as it does the power-off.
    prepare_vms(&sim, &vm, &off_vm);
    let view = poll(Duration::from_secs(30), "guest IP discovered", || {
        let v = call(&app, "GET", &vm_path, &admin, None).expect(200, None);
        let ips = v["guest_ips"].as_array().cloned().unwrap_or_default();
        ips.iter()
            .any(|ip| ip == "127.0.0.1")
            .then(|| v.clone())
            .ok_or_else(|| v.to_string())
    });
    assert_eq!(view["protection"]["state"], "not_protected", "{view:#}");
    poll(Duration::from_secs(30), "power-off discovered", || {
        let v = call(&app, "GET", &off_path, &admin, None).expect(200, None);
        (v["power_state"] == "poweredOff")
            .then_some(())
            .ok_or_else(|| v.to_string())
    });

    // 3. The sshd key becomes a stored guest credential; its view holds no secret.
    let r = call(
        &app,
        "POST",
        "/api/v1/guest-credentials",
        &admin,
        Some(json!({"name": "loopback-root", "username": "root",
            "auth": {"kind": "private_key", "private_key": key, "passphrase": null}})),
    );
    answers.push(r.text());
    let cred = r.expect(201, None);
    assert_eq!(cred["kind"], "private_key", "{cred:#}");
    let cred_id = cred["id"].as_str().expect("credential id").to_string();
    let protect = |host: Option<&str>, cred: &str| {
        let mut body = json!({
            "auth": {"kind": "credential", "id": cred},
            "port": sshd.port,
            "disks": [img.to_str().unwrap()],
            "prefix": prefix.to_str().unwrap(),
            "interval_secs": 2,
        });
        if let Some(host) = host {
            body["host"] = json!(host);
        }
        body
    };

    // 4. Refused before any job exists: the VM reports only a loopback address and no host is
    // given; an unknown credential; a powered-off VM.
    let post = |path: &str, body: Value| {
        call(&app, "POST", &format!("{path}/protect"), &admin, Some(body))
    };
    refused_on(post(&vm_path, protect(None, &cred_id)), "host");
    refused_on(
        post(&vm_path, protect(Some("127.0.0.1"), "00000000deadbeef")),
        "auth.id",
    );
    post(&off_path, protect(Some("127.0.0.1"), &cred_id)).expect(409, Some("conflict"));
    let jobs = call(&app, "GET", "/api/v1/push-jobs", &admin, None).expect(200, None);
    assert_eq!(jobs["total"], 0, "a refused protect queued a job: {jobs:#}");

    // 5. Enable protection: the job names the credential; a second protect while it installs is
    // refused.
    let r = post(&vm_path, protect(Some("127.0.0.1"), &cred_id));
    answers.push(r.text());
    let started = r.expect(202, None);
    assert_eq!(started["protection"]["state"], "installing", "{started:#}");
    assert_eq!(
        started["protection"]["requested_by"], "admin",
        "{started:#}"
    );
    assert_eq!(
        started["job"]["credential"],
        cred_id.as_str(),
        "{started:#}"
    );
    assert_eq!(started["job"]["username"], "root", "{started:#}");
    assert_eq!(started["job"]["vm"], format!("{vc_id}/{vm}"), "{started:#}");
    let job_id = started["job"]["id"].as_str().expect("job id").to_string();
    assert_eq!(started["protection"]["push_job_id"], job_id.as_str());
    let again = post(&vm_path, protect(Some("127.0.0.1"), &cred_id)).expect(409, Some("conflict"));
    assert!(
        again["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&job_id),
        "the refusal names the running job: {again:#}"
    );

    // The VM's protection follows the job to `protected`.
    let job_path = format!("/api/v1/push-jobs/{job_id}");
    let protection = until_protected(&app, &admin, &vm_path, &job_id, &sshd);
    let r = call(&app, "GET", &job_path, &admin, None);
    answers.push(r.text());
    let job = r.expect(200, None);
    eprintln!("protect job:\n  {}", lines(&job).join("\n  "));
    assert_eq!(job["state"], "succeeded", "{job:#}");
    assert_eq!(job["credential"], cred_id.as_str(), "{job:#}");
    assert_eq!(job["host"], "127.0.0.1", "{job:#}");
    let agent_id = job["agent_id"].as_str().expect("agent id").to_string();
    assert_eq!(protection["agent_id"], agent_id.as_str(), "{protection:#}");
    assert_eq!(protection["push_job_id"], job_id.as_str(), "{protection:#}");

    // 6. The agent replicates: a point of the image lands and restores exactly.
    let point = poll(Duration::from_secs(180), "a point from the agent", || {
        let page = call(&app, "GET", "/api/v1/points", &admin, None).expect(200, None);
        page["items"]
            .as_array()
            .and_then(|l| l.iter().find(|p| p["machine_id"] == agent_id.as_str()))
            .and_then(|p| p["point_id"].as_str().map(str::to_string))
            .ok_or_else(|| {
                format!(
                    "{page}\nagent log:\n{}",
                    std::fs::read_to_string(prefix.join("log/ferry-mobility.log"))
                        .unwrap_or_default()
                )
            })
    });
    assert_point_restores(&app, t.path(), &point, &img);
    let view = poll(Duration::from_secs(30), "the VM shows its point", || {
        let v = call(&app, "GET", &vm_path, &admin, None).expect(200, None);
        v["protection"]["last_point_at"]
            .is_string()
            .then(|| v.clone())
            .ok_or_else(|| v.to_string())
    });
    answers.push(view.to_string());

    // Protecting a protected VM again is refused: a second install would register a second agent
    // for the VM and leave the first registered. The message points at the upgrade that repairs.
    let r = post(&vm_path, protect(Some("127.0.0.1"), &cred_id));
    answers.push(r.text());
    r.expect(409, Some("conflict"));
    assert!(
        r.text().contains("already protected") && r.text().contains("upgrade"),
        "{}",
        r.text()
    );

    // 7. Uninstall with the same credential: the agent stops and nothing is left under the prefix.
    let pid: u32 = std::fs::read_to_string(prefix.join("run/ferry-mobility.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(agent_alive(pid), "the pushed agent runs");
    let r = call(
        &app,
        "POST",
        "/api/v1/push-jobs",
        &admin,
        Some(json!({
            "operation": "uninstall",
            "host": "127.0.0.1",
            "port": sshd.port,
            "auth": {"kind": "credential", "id": cred_id},
            "vm": format!("{vc_id}/{vm}"),
            "disks": [img.to_str().unwrap()],
            "prefix": prefix.to_str().unwrap(),
        })),
    );
    answers.push(r.text());
    let uninstall_id = r.expect(202, None)["id"]
        .as_str()
        .expect("job id")
        .to_string();
    let path = format!("/api/v1/push-jobs/{uninstall_id}");
    let done = poll(Duration::from_secs(120), "uninstall ended", || {
        let j = call(&app, "GET", &path, &admin, None).expect(200, None);
        (!matches!(j["state"].as_str(), Some("queued" | "running")))
            .then(|| j.clone())
            .ok_or_else(|| j.to_string())
    });
    answers.push(done.to_string());
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_eq!(done["credential"], cred_id.as_str(), "{done:#}");
    assert!(!agent_alive(pid), "the agent process is gone");
    assert!(!prefix.exists(), "nothing is left under the prefix");

    // 8. The audit log names the request; the private key appears nowhere.
    let audit = call(&app, "GET", "/api/v1/audit?limit=1000", &admin, None).expect(200, None);
    let requested: Vec<&Value> = audit["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["event"] == "vm_protection_requested")
        .collect();
    assert_eq!(requested.len(), 1, "one per accepted protect: {audit:#}");
    for (event, id) in requested.iter().zip([&job_id]) {
        assert_eq!(event["actor"], "admin", "{event:#}");
        let detail = event["detail"].as_str().unwrap_or_default();
        assert!(
            detail == format!("{vc_id}/{vm} (push job {id})"),
            "newest first, naming VM and job: {event:#}"
        );
    }
    answers.push(audit.to_string());
    answers.push(
        call(&app, "GET", "/api/v1/guest-credentials", &admin, None)
            .expect(200, None)
            .to_string(),
    );
    answers.push(app.log_text());
    let body_line = key
        .lines()
        .find(|l| !l.starts_with("-----") && l.len() > 20)
        .expect("a key body line");
    for text in &answers {
        assert!(
            !text.contains(body_line),
            "the private key leaked into: {text}"
        );
    }
}
