//! Guest file transfers on the VM's ESXi host. Real vSphere answers InitiateFileTransfer* with a URL
//! on the ESXi host that runs the VM, which presents its own certificate; Ferry must check that
//! transfer against the thumbprint vCenter reports for the host (`summary.config.sslThumbprint`),
//! not against the vCenter's pin. vcsim's guest operations need Docker, so our launcher's stand-in
//! guest (a process on this machine, `-guest-user`) serves them; `-guest-transfer-host localhost`
//! makes its URLs name "localhost" (this same server under another name, standing in for an ESXi
//! host) and makes every host report a thumbprint.
//!
//! Because the stand-in host is the same server, the vCenter's pin would accept it too: only the
//! case where vCenter reports a wrong thumbprint for the host (`-guest-host-thumbprint`) tells that
//! the host's thumbprint is what is enforced. Uninstall jobs are used: they run commands (output
//! copied out of the guest) without needing an agent.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use ferry_tests::vcsim::Vcsim;
use ferry_tests::web_harness as http;
use ferry_tests::Appliance;
use serde_json::{json, Value};

const GUEST_USER: &str = "root";
const GUEST_PASSWORD: &str = "Guest-Tools-Passw0rd";
/// A well-formed SHA-1 thumbprint no certificate here has.
const WRONG_SHA1: &str = "00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33";

fn call(app: &Appliance, method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
    let r: Result<http::Response> =
        http::appliance_https(app, method, path, Some(token), body.as_ref());
    let r = r.unwrap_or_else(|e| panic!("{method} {path}: {e:#}"));
    assert!(r.status < 300, "{method} {path}: {} {}", r.status, r.text());
    r.json()
}

/// Adds `sim` as a vCenter and returns the id of a powered-on VM (`<vc>/<moref>`).
fn add_and_pick_vm(app: &Appliance, token: &str, sim: &Vcsim) -> String {
    let vc = call(
        app,
        "POST",
        "/api/v1/vcenters",
        token,
        Some(
            json!({"url": sim.url, "username": sim.username, "password": sim.password,
            "thumbprint": sim.thumbprint_sha256}),
        ),
    );
    let id = vc["id"].as_str().expect("vCenter id").to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let page = call(
            app,
            "GET",
            &format!("/api/v1/vcenters/{id}/vms"),
            token,
            None,
        );
        let on = page["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["power_state"] == "poweredOn")
            .and_then(|v| v["moref"].as_str());
        if let Some(moref) = on {
            return format!("{id}/{moref}");
        }
        assert!(Instant::now() < deadline, "no VM discovered: {page:#}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Runs an uninstall through VMware Tools on `vm` and returns the finished job.
fn uninstall(app: &Appliance, token: &str, vm: &str, prefix: &Path) -> Value {
    let job = call(
        app,
        "POST",
        "/api/v1/push-jobs",
        token,
        Some(
            json!({"via": "vmware_tools", "operation": "uninstall", "username": GUEST_USER,
            "auth": {"kind": "password", "password": GUEST_PASSWORD}, "vm": vm,
            "prefix": prefix.to_str().unwrap()}),
        ),
    );
    let id = job["id"].as_str().expect("job id").to_string();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let job = call(app, "GET", &format!("/api/v1/push-jobs/{id}"), token, None);
        if !matches!(job["state"].as_str(), Some("queued" | "running")) {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} did not end: {job:#}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn transfers_on_the_esxi_host_are_checked_against_the_thumbprint_vcenter_reports() {
    let t = tempfile::tempdir().unwrap();
    let app = Appliance::start(&t.path().join("data"), &[]).unwrap();
    let admin = app.admin_token().unwrap();
    let prefix = t.path().join("guest/ferry-mobility");

    // vCenter reports the host's real thumbprint: the transfers to "localhost" go through.
    let right = Vcsim::start_with_guest(
        &["-guest-transfer-host", "localhost"],
        GUEST_USER,
        GUEST_PASSWORD,
    );
    let vm = add_and_pick_vm(&app, &admin, &right);
    let job = uninstall(&app, &admin, &vm, &prefix);
    assert_eq!(job["state"], "succeeded", "{job:#}\n{}", app.log_text());

    // vCenter reports another thumbprint for the host: the first copy out of the guest is refused,
    // although the same certificate is the vCenter's pinned one.
    let wrong = Vcsim::start_with_guest(
        &[
            "-guest-transfer-host",
            "localhost",
            "-guest-host-thumbprint",
            WRONG_SHA1,
        ],
        GUEST_USER,
        GUEST_PASSWORD,
    );
    let vm = add_and_pick_vm(&app, &admin, &wrong);
    let job = uninstall(&app, &admin, &vm, &prefix);
    assert_eq!(job["state"], "failed", "{job:#}");
    assert_eq!(job["error"]["code"], "command_failed", "{job:#}");
    let message = job["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("certificate") && message.contains("ESXi host"),
        "the error names the certificate check: {job:#}"
    );
    assert_eq!(job["error"]["retryable"], false, "{job:#}");
}
