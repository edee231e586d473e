//! Push install through vSphere guest operations (VMware Tools), end to end, for guests the appliance
//! reaches only through their vCenter. vcsim's own guest operations need Docker-backed VMs, and no
//! Docker engine runs here, so the launcher's process-backed guest (`tests/vcsim/guestops.go`) stands
//! in for the VM's guest: a program started "in the VM" is a process on THIS machine, run as the user
//! vcsim runs as, and guest files are this machine's files.
//!
//! The appliance gets the vcsim as a vCenter through its API; `POST /api/v1/push-jobs` with
//! `via: vmware_tools` for one of its VMs copies the agent in, registers it with its one-time token
//! and starts it detached (install prefix in a temporary folder); the agent replicates a disk image
//! and the point restores byte for byte; an uninstall through the CLI stops it. A wrong guest
//! password ends a job with `authentication_failed`, a powered-off VM with `tools_not_running`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use ferry_tests::push_kit::{agent_alive, agents_dir, lines, seeded_image, AgentGuard};
use ferry_tests::vcsim::Vcsim;
use ferry_tests::web_harness as http;
use ferry_tests::{assert_point_restores, Appliance};
use serde_json::{json, Value};

const GUEST_USER: &str = "root";
const GUEST_PASSWORD: &str = "Guest-Tools-Passw0rd";

fn call(
    app: &Appliance,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> http::Response {
    let r: Result<http::Response> =
        http::appliance_https(app, method, path, Some(token), body.as_ref());
    r.unwrap_or_else(|e| panic!("{method} {path}: {e:#}"))
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

fn start_job(app: &Appliance, token: &str, body: Value) -> Value {
    let job = call(app, "POST", "/api/v1/push-jobs", token, Some(body)).expect(202, None);
    assert_eq!(job["via"], "vmware_tools", "{job:#}");
    let id = job["id"].as_str().expect("job id").to_string();
    finished(app, token, &id, Duration::from_secs(240))
}

/// The private folder the job's log names, which must be gone once the job ended.
fn temp_dir_of(job: &Value) -> PathBuf {
    let line = lines(job)
        .into_iter()
        .find(|l| l.contains("commands run with their output in "))
        .unwrap_or_else(|| panic!("no temporary folder in the log: {job:#}"));
    PathBuf::from(line.rsplit(' ').next().unwrap())
}

/// Powers a vcsim VM off with the project's own vSphere client.
fn power_off(sim: &Vcsim, moref: &str) {
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
        client
            .power_off(&vsphere::MoRef::new("VirtualMachine", moref))
            .await
            .unwrap();
        let _ = client.logout().await;
    });
}

#[test]
fn push_install_through_vmware_tools_replicates_and_names_its_failures() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("disk.img");
    seeded_image(&img, 0x2545_f491_4f6c_dd1d);
    let agents = agents_dir(t.path());
    let app = Appliance::start(
        &t.path().join("data"),
        &[("APPLIANCE_AGENTS_DIR", agents.to_str().unwrap())],
    )
    .unwrap();
    let admin = app.admin_token().unwrap();
    let sim = Vcsim::start_with_guest(&[], GUEST_USER, GUEST_PASSWORD);

    // The vCenter is added through the API; its two VMs are discovered.
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
    let deadline = Instant::now() + Duration::from_secs(60);
    let vms: Vec<String> = loop {
        let page = call(
            &app,
            "GET",
            &format!("/api/v1/vcenters/{vc_id}/vms"),
            &admin,
            None,
        )
        .expect(200, None);
        let morefs: Vec<String> = page["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v["power_state"] == "poweredOn")
            .filter_map(|v| v["moref"].as_str().map(str::to_string))
            .collect();
        if morefs.len() >= 2 {
            break morefs;
        }
        assert!(Instant::now() < deadline, "VMs not discovered: {page:#}");
        std::thread::sleep(Duration::from_millis(250));
    };
    let (vm, off_vm) = (format!("{vc_id}/{}", vms[0]), format!("{vc_id}/{}", vms[1]));
    let prefix = t.path().join("guest/ferry-mobility");
    let _guard = AgentGuard(prefix.join("run/ferry-mobility.pid"));
    let request = |vm: &str, password: &str, operation: &str| {
        json!({
            "via": "vmware_tools",
            "operation": operation,
            "username": GUEST_USER,
            "auth": {"kind": "password", "password": password},
            "vm": vm,
            "disks": [img.to_str().unwrap()],
            "prefix": prefix.to_str().unwrap(),
            "interval_secs": 2,
        })
    };

    // What does not apply through VMware Tools is refused before a job exists.
    let mut with_host = request(&vm, GUEST_PASSWORD, "install");
    with_host["host"] = json!("127.0.0.1");
    let refused = call(&app, "POST", "/api/v1/push-jobs", &admin, Some(with_host))
        .expect(400, Some("invalid_field"));
    assert!(
        refused["message"].as_str().unwrap().starts_with("host:"),
        "{refused:#}"
    );
    let refused = call(
        &app,
        "POST",
        "/api/v1/push-jobs",
        &admin,
        Some(request("no-such-vcenter/vm-1", GUEST_PASSWORD, "install")),
    )
    .expect(400, Some("invalid_field"));
    assert!(
        refused["message"].as_str().unwrap().starts_with("vm:"),
        "{refused:#}"
    );

    // 1. A wrong guest password: authentication_failed, not retried, nothing installed.
    let job = start_job(&app, &admin, request(&vm, "not-the-password", "install"));
    assert_eq!(job["state"], "failed", "{job:#}");
    assert_eq!(job["error"]["code"], "authentication_failed", "{job:#}");
    assert_eq!(job["attempts"], 1, "{job:#}");
    assert!(!prefix.exists(), "nothing was written");

    // 2. Install: binary copied in, registered with the token, started detached, registered.
    let started = Instant::now();
    let job = start_job(&app, &admin, request(&vm, GUEST_PASSWORD, "install"));
    eprintln!("install job took {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!(
        job["state"],
        "succeeded",
        "{job:#}\nappliance log:\n{}",
        app.log_text()
    );
    assert_eq!(job["service"], "detached", "no init system here: {job:#}");
    assert_eq!(
        (job["host"].as_str(), job["port"].as_u64()),
        (Some(""), Some(0))
    );
    assert!(job["host_key"].is_null(), "{job:#}");
    let text = lines(&job).join("\n");
    for expected in [
        "through VMware Tools",
        "copied over vmware tools file transfer",
        "agent is running",
    ] {
        assert!(text.contains(expected), "log lacks {expected:?}:\n{text}");
    }
    assert!(!text.contains(GUEST_PASSWORD), "the password is in the log");
    let temp = temp_dir_of(&job);
    assert!(!temp.exists(), "{} is left in the guest", temp.display());
    assert!(
        !prefix.join("etc/enrollment-token").exists(),
        "the token file is removed"
    );
    let agent_id = job["agent_id"].as_str().expect("agent id").to_string();

    // 3. The agent replicates: a point of the image lands and restores exactly.
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

    // 4. A powered-off VM: tools_not_running, not retried.
    power_off(&sim, off_vm.rsplit('/').next().unwrap());
    let job = start_job(&app, &admin, request(&off_vm, GUEST_PASSWORD, "upgrade"));
    assert_eq!(job["state"], "failed", "{job:#}");
    assert_eq!(job["error"]["code"], "tools_not_running", "{job:#}");
    assert_eq!(job["attempts"], 1, "{job:#}");

    // 5. Uninstall through the CLI: the agent stops and nothing is left under the prefix.
    let pid: u32 = std::fs::read_to_string(prefix.join("run/ferry-mobility.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(agent_alive(pid));
    let pw = t.path().join("guest-password");
    std::fs::write(&pw, format!("{GUEST_PASSWORD}\n")).unwrap();
    let out = app
        .cli(&[
            "push",
            "uninstall",
            "--via",
            "vmware-tools",
            "--vm",
            &vm,
            "--user",
            GUEST_USER,
            "--password-file",
            pw.to_str().unwrap(),
            "--prefix",
            prefix.to_str().unwrap(),
            "--wait",
        ])
        .unwrap_or_else(|e| panic!("{e:#}\nappliance log:\n{}", app.log_text()));
    assert!(out.contains("through VMware Tools"), "{out}");
    assert!(!agent_alive(pid), "the agent process is gone");
    assert!(!prefix.exists(), "nothing is left under the prefix");
}

/// The stand-in guest refuses what vSphere refuses, and its transfer URLs work once: checked with the
/// project's own vSphere client, so the client's guest calls are exercised against a server too.
#[test]
fn the_stand_in_guest_answers_bad_requests_as_vsphere_does() {
    use vsphere::guest::{GuestAuth, GuestFileAttributes, GuestProgram};
    use vsphere::VsphereError;

    // The launcher refuses half a guest login.
    let launcher = ferry_tests::vcsim::build().unwrap();
    let out = std::process::Command::new(&launcher)
        .args(["-l", "127.0.0.1:0", "-guest-user", "root"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("go together"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let sim = Vcsim::start_with_guest(&[], GUEST_USER, GUEST_PASSWORD);
    let t = tempfile::tempdir().unwrap();
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
        let vm = client
            .find_by_inventory_path("DC0/vm/DC0_C0_RP0_VM0")
            .await
            .unwrap()
            .expect("vcsim's first VM");
        let auth = GuestAuth {
            username: GUEST_USER.into(),
            password: GUEST_PASSWORD.into(),
        };
        let wrong = GuestAuth {
            password: "wrong".into(),
            ..auth.clone()
        };
        let fault = |e: VsphereError| e.fault_type().unwrap_or_default().to_string();
        assert_eq!(
            fault(
                client
                    .list_processes_in_guest(&vm, &wrong, &[])
                    .await
                    .unwrap_err()
            ),
            "InvalidGuestLogin"
        );

        // A file goes in with its mode, exactly once per URL, and only with the announced size.
        let path = t.path().join("copied");
        let guest_path = path.to_str().unwrap();
        let mode = GuestFileAttributes::Posix {
            owner_id: None,
            group_id: None,
            permissions: Some(0o640),
        };
        let url = client
            .initiate_file_transfer_to_guest(&vm, &auth, guest_path, &mode, 5, false)
            .await
            .unwrap();
        assert!(matches!(
            client.put_guest_file(&url, b"four".to_vec(), None).await,
            Err(VsphereError::Http { status: 400 })
        ));
        assert!(matches!(
            client.put_guest_file(&url, b"fives".to_vec(), None).await,
            Err(VsphereError::NotFound { .. })
        ));
        assert!(!path.exists());
        let url = client
            .initiate_file_transfer_to_guest(&vm, &auth, guest_path, &mode, 5, false)
            .await
            .unwrap();
        client
            .put_guest_file(&url, b"fives".to_vec(), None)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"fives");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        // No overwrite unless asked for; no folder that is not there.
        let exists = client
            .initiate_file_transfer_to_guest(&vm, &auth, guest_path, &mode, 1, false)
            .await
            .unwrap_err();
        assert_eq!(fault(exists), "FileAlreadyExists");
        let missing_dir = t.path().join("no/such/file");
        assert!(matches!(
            client
                .initiate_file_transfer_to_guest(
                    &vm,
                    &auth,
                    missing_dir.to_str().unwrap(),
                    &mode,
                    1,
                    true
                )
                .await,
            Err(VsphereError::NotFound { .. })
        ));

        // Out again, with its size and mode; a missing file is NotFound.
        let download = client
            .initiate_file_transfer_from_guest(&vm, &auth, guest_path)
            .await
            .unwrap();
        assert_eq!((download.size, download.permissions), (5, Some(0o640)));
        assert_eq!(
            client
                .get_guest_file(&download.url, 1024, None)
                .await
                .unwrap(),
            b"fives"
        );
        assert!(matches!(
            client.get_guest_file(&download.url, 1024, None).await,
            Err(VsphereError::NotFound { .. })
        ));
        assert!(matches!(
            client
                .initiate_file_transfer_from_guest(&vm, &auth, missing_dir.to_str().unwrap())
                .await,
            Err(VsphereError::NotFound { .. })
        ));

        // Programs: a relative path is refused; an exit status is reported once the program ended.
        let relative = GuestProgram {
            path: "bin/sh".into(),
            arguments: "-c true".into(),
            ..GuestProgram::default()
        };
        assert!(matches!(
            client.start_program_in_guest(&vm, &auth, &relative).await,
            Err(VsphereError::InvalidArgument { .. })
        ));
        let marker = t.path().join("ran");
        let program = GuestProgram {
            path: "/bin/sh".into(),
            arguments: format!("-c 'echo \"$FERRY_X\" > {}; exit 7'", marker.display()),
            working_dir: Some(t.path().to_str().unwrap().into()),
            env: vec!["FERRY_X=from the spec".into()],
        };
        let pid = client
            .start_program_in_guest(&vm, &auth, &program)
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let ended = loop {
            let list = client
                .list_processes_in_guest(&vm, &auth, &[pid])
                .await
                .unwrap();
            assert_eq!(list.len(), 1, "{list:?}");
            if list[0].end_time.is_some() {
                break list.into_iter().next().unwrap();
            }
            assert!(Instant::now() < deadline, "process {pid} did not end");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(ended.exit_code, Some(7));
        assert_eq!(ended.owner, GUEST_USER);
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), "from the spec\n");
        let _ = client.logout().await;
    });
}
