//! Push install of the mobility agent over SSH, for real: OpenSSH's sshd on loopback stands in for the
//! guest (this machine, reached as root with a key), the installer copies the agent binary there,
//! registers it with a one-time enrollment token issued by a real appliance, and starts it; the agent
//! then replicates a disk image and the point restores byte for byte; the uninstall stops it. The
//! failures a job must name: a wrong key, a closed port, a full target disk, a changed host key.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actors::push::{self, Auth, Enrollment, HostKeyPolicy, InstallSpec, ServiceMode, Target};
use appliance::mgmt::auth::{Principal, Role, TokenKind};
use appliance::mgmt::push_jobs::{
    Operation, PushAuth, PushJobState, PushJobView, PushJobs, PushRequest, PushSettings,
};
use appliance::registry::{Enrollments, DEFAULT_ENROLLMENT_TTL};
use appliance::state::State;
use ferry_tests::push_kit::{agents_dir, seeded_image};
use ferry_tests::sshd::{self, Sshd};
use ferry_tests::{assert_point_restores, free_port, points, Appliance};

const CA_FINGERPRINT: &str = "abababababababababababababababababababababababababababababababab";

fn target(sshd: &Sshd, key: HostKeyPolicy) -> Target {
    Target::new(
        "127.0.0.1",
        sshd.port,
        "root",
        Auth::PrivateKey {
            pem: sshd.client_key_pem().unwrap(),
            passphrase: None,
        },
        key,
    )
}

/// A log sink that keeps the lines (and prints them, for a failing test's output).
fn collector() -> (Arc<Mutex<Vec<String>>>, impl Fn(&str) + Send + Sync) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    (lines, move |l: &str| {
        eprintln!("  push: {l}");
        sink.lock().unwrap().push(l.to_string());
    })
}

/// Whether a process that named the agent still runs (a zombie or a reused pid does not count).
fn agent_alive(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("ferry-mobility"))
        .unwrap_or(false)
}

/// The enrollment token is issued into the appliance's own state: the daemon holds the database, so
/// it is stopped for that moment (the API route that does this in a running daemon is wired apart).
fn issue_token(app: &mut Appliance, vm: &str) -> push::Enrollment {
    app.stop().unwrap();
    let issued = {
        let state = State::open(&app.data_dir).unwrap();
        Enrollments::new(state)
            .issue(vm, DEFAULT_ENROLLMENT_TTL, "test", "local")
            .unwrap()
    };
    app.restart().unwrap();
    Enrollment {
        id: issued.id,
        token: issued.token,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_agent_registers_with_its_token_replicates_and_is_uninstalled() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("disk.img");
    // The seed this test always used, so its image stays the same bytes.
    seeded_image(&img, 0x9e37_79b9_7f4a_7c15);
    let mut app = Appliance::start(&t.path().join("data"), &[]).unwrap();
    let fp = app.cli(&["fingerprint"]).unwrap().trim().to_string();
    let enrollment = issue_token(&mut app, "test-vm");
    let sshd = Sshd::start().unwrap();
    let prefix = t.path().join("guest/ferry-mobility");
    let spec = InstallSpec {
        prefix: prefix.to_str().unwrap().to_string(),
        agents_dir: agents_dir(t.path()),
        appliance_addr: app.addr(),
        ca_fingerprint: fp,
        disks: vec![img.to_str().unwrap().to_string()],
        enrollment: Some(enrollment.clone()),
        service: None,
        interval_secs: Some(2),
    };

    let started = Instant::now();
    let (lines, log) = collector();
    let outcome = push::install(&target(&sshd, HostKeyPolicy::TrustOnFirstUse), &spec, &log)
        .await
        .unwrap_or_else(|e| panic!("install failed: {e}\nsshd log:\n{}", sshd.log_text()));
    eprintln!("install took {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!(outcome.host_key, sshd.host_key_fingerprint().unwrap());
    // No systemd or SysV init as PID 1 in this test machine: the installer must say it ran detached.
    assert_eq!(outcome.service, Some(ServiceMode::Detached));
    let agent_id = outcome.agent_id.clone().expect("the agent registered");
    let text = lines.lock().unwrap().join("\n");
    for expected in [
        "copied over sftp",
        "started detached with nohup",
        "agent is running",
    ] {
        assert!(text.contains(expected), "log lacks {expected:?}:\n{text}");
    }
    assert!(
        !prefix.join("etc/enrollment-token").exists(),
        "the token file is removed after use"
    );

    // Running it again changes nothing that is right already (every step is idempotent).
    let (lines, log) = collector();
    let pinned = HostKeyPolicy::Pinned(outcome.host_key.clone());
    let again = push::install(&target(&sshd, pinned.clone()), &spec, &log)
        .await
        .unwrap();
    assert_eq!(again.agent_id.as_deref(), Some(agent_id.as_str()));
    let text = lines.lock().unwrap().join("\n");
    assert!(
        text.contains("is up to date") && text.contains("already done"),
        "{text}"
    );

    // The pushed agent replicates: a point of the image lands and restores exactly.
    let deadline = Instant::now() + Duration::from_secs(180);
    let point = loop {
        let list = points(&app).unwrap();
        if let Some(p) = list.iter().find(|p| p["machine"] == agent_id.as_str()) {
            break p["point"].as_str().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no point from agent {agent_id} within 180 s; agent log:\n{}\nappliance log:\n{}",
            std::fs::read_to_string(prefix.join("log/ferry-mobility.log")).unwrap_or_default(),
            app.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_point_restores(&app, t.path(), &point, &img);

    // Upgrade through a server without SFTP: the binary goes through `cat`, the agent restarts.
    let no_sftp = Sshd::start_with(false).unwrap();
    std::fs::remove_file(prefix.join("bin/ferry-mobility")).unwrap();
    let (lines, log) = collector();
    let upgraded = push::upgrade(
        &target(&no_sftp, HostKeyPolicy::TrustOnFirstUse),
        &spec,
        &log,
    )
    .await
    .unwrap();
    assert_eq!(upgraded.service, Some(ServiceMode::Detached));
    let text = lines.lock().unwrap().join("\n");
    assert!(text.contains("copied over cat"), "{text}");
    drop(no_sftp);

    let pid: u32 = std::fs::read_to_string(prefix.join("run/ferry-mobility.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(agent_alive(pid));
    let (lines, log) = collector();
    let removed = push::uninstall(&target(&sshd, pinned), &spec.prefix, &log)
        .await
        .unwrap();
    assert_eq!(removed.service, Some(ServiceMode::Detached));
    assert_eq!(removed.agent_id.as_deref(), Some(agent_id.as_str()));
    assert!(!agent_alive(pid), "the agent process is gone");
    assert!(!prefix.exists(), "nothing is left under the prefix");
    assert!(lines.lock().unwrap().join("\n").contains("revoke it"));

    // The appliance recorded which VM the agent is, and the token is spent.
    app.stop().unwrap();
    let state = State::open(&app.data_dir).unwrap();
    let record = Enrollments::new(state.clone())
        .get(&enrollment.id)
        .unwrap()
        .unwrap();
    assert_eq!(record.used_by.as_deref(), Some(agent_id.as_str()));
    assert_eq!(record.vm, "test-vm");
    assert!(state.agent(&agent_id).unwrap().is_some());
}

fn admin() -> Principal {
    Principal {
        user: "ada".into(),
        role: Role::Admin,
        token_id: "t".into(),
        kind: TokenKind::Api,
    }
}

/// A job runner with its own state (no appliance: these jobs fail before an agent could register).
fn runner(dir: &Path) -> PushJobs {
    let state = State::open(&dir.join("state")).unwrap();
    let mut settings = PushSettings::new(agents_dir(dir), CA_FINGERPRINT.into());
    settings.appliance_addr = Some("127.0.0.1:9".into());
    settings.backoff = Duration::from_millis(50);
    settings.connect_timeout = Duration::from_secs(5);
    PushJobs::new(state, settings)
}

fn request(port: u16, key: &str, prefix: &Path, operation: Operation) -> PushRequest {
    PushRequest {
        via: Default::default(),
        host: "127.0.0.1".into(),
        port,
        username: "root".into(),
        auth: PushAuth::PrivateKey {
            private_key: key.into(),
            passphrase: None,
        },
        host_key: None,
        agents_dir: None,
        appliance_addr: None,
        disks: vec!["/dev/null".into()],
        vm: "vm-under-test".into(),
        operation,
        prefix: Some(prefix.to_str().unwrap().into()),
        interval_secs: None,
    }
}

async fn finished(jobs: &PushJobs, id: &str) -> PushJobView {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let view = jobs.get(id).unwrap();
        if view.state != PushJobState::Queued && view.state != PushJobState::Running {
            eprintln!("job {id}:\n  {}", view.log.join("\n  "));
            return view;
        }
        assert!(Instant::now() < deadline, "job {id} did not end: {view:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_wrong_key_fails_the_job_with_authentication_failed() {
    let t = tempfile::tempdir().unwrap();
    let sshd = Sshd::start().unwrap();
    let other = t.path().join("other_key");
    sshd::keygen(&other).unwrap();
    let jobs = runner(t.path());
    let key = std::fs::read_to_string(&other).unwrap();
    let req = request(
        sshd.port,
        &key,
        &t.path().join("ferry-mobility"),
        Operation::Install,
    );
    let id = jobs.start(&admin(), "local", req).unwrap().id;
    let view = finished(&jobs, &id).await;
    assert_eq!(view.state, PushJobState::Failed);
    let error = view.error.unwrap();
    assert_eq!(error.code, "authentication_failed", "{}", error.message);
    assert_eq!(view.attempts, 1, "not retried");
    assert!(error.message.contains("root"));
}

#[tokio::test]
async fn a_closed_port_fails_the_job_with_host_unreachable_after_retries() {
    let t = tempfile::tempdir().unwrap();
    let jobs = runner(t.path());
    let key_path = t.path().join("key");
    sshd::keygen(&key_path).unwrap();
    let key = std::fs::read_to_string(&key_path).unwrap();
    let req = request(
        free_port(),
        &key,
        &t.path().join("ferry-mobility"),
        Operation::Install,
    );
    let id = jobs.start(&admin(), "local", req).unwrap().id;
    let view = finished(&jobs, &id).await;
    let error = view.error.unwrap();
    assert_eq!(error.code, "host_unreachable", "{}", error.message);
    assert!(error.retryable);
    assert_eq!(view.attempts, 3, "retried with backoff");
    assert_eq!(
        view.log
            .iter()
            .filter(|l| l.contains("retrying in"))
            .count(),
        2
    );
}

/// A 1 MiB tmpfs mounted where the prefix goes; unmounted on drop.
struct TinyDisk(PathBuf);

impl TinyDisk {
    fn mount(at: &Path) -> TinyDisk {
        std::fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mounting a tmpfs failed (the test needs root with mount rights): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TinyDisk(at.to_path_buf())
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_full_target_disk_fails_the_job_with_not_enough_space() {
    let t = tempfile::tempdir().unwrap();
    let sshd = Sshd::start().unwrap();
    let small = TinyDisk::mount(&t.path().join("small"));
    let prefix = small.0.join("ferry-mobility");
    let jobs = runner(t.path());
    let key = sshd.client_key_pem().unwrap();
    let id = jobs
        .start(
            &admin(),
            "local",
            request(sshd.port, &key, &prefix, Operation::Install),
        )
        .unwrap()
        .id;
    let view = finished(&jobs, &id).await;
    let error = view.error.unwrap();
    assert_eq!(error.code, "not_enough_space", "{}", error.message);
    assert!(error.message.contains("have 1.0 MiB"), "{}", error.message);
    assert!(error.message.contains(prefix.to_str().unwrap()));
    assert!(!prefix.exists(), "nothing was written");
    assert_eq!(view.attempts, 1);
}

#[tokio::test]
async fn a_changed_host_key_fails_the_next_job_with_host_key_changed() {
    let t = tempfile::tempdir().unwrap();
    let mut sshd = Sshd::start().unwrap();
    let jobs = runner(t.path());
    let key = sshd.client_key_pem().unwrap();
    let prefix = t.path().join("ferry-mobility");
    let first_key = sshd.host_key_fingerprint().unwrap();
    // An uninstall of nothing: reaches the guest, changes nothing, records the host key.
    let first = jobs
        .start(
            &admin(),
            "local",
            request(sshd.port, &key, &prefix, Operation::Uninstall),
        )
        .unwrap()
        .id;
    let view = finished(&jobs, &first).await;
    assert_eq!(view.state, PushJobState::Succeeded, "{:?}", view.error);
    assert_eq!(view.host_key.as_deref(), Some(first_key.as_str()));
    assert_eq!(
        jobs.known_host_key("127.0.0.1", sshd.port)
            .unwrap()
            .as_deref(),
        Some(first_key.as_str())
    );

    sshd.replace_host_key().unwrap();
    let new_key = sshd.host_key_fingerprint().unwrap();
    assert_ne!(new_key, first_key);
    let second = jobs
        .start(
            &admin(),
            "local",
            request(sshd.port, &key, &prefix, Operation::Uninstall),
        )
        .unwrap()
        .id;
    let view = finished(&jobs, &second).await;
    let error = view.error.unwrap();
    assert_eq!(error.code, "host_key_changed", "{}", error.message);
    assert!(error.message.contains(&first_key) && error.message.contains(&new_key));
    assert_eq!(view.attempts, 1);
}
