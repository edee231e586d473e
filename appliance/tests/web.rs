//! The management listener of a real `appliance run`: health, readiness, metrics, 404, and a clean stop
//! on SIGTERM; the daemon's phases before first-boot setup is complete. Everything talks HTTPS to
//! 127.0.0.1, trusting only the appliance's own CA.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The daemon drains for up to 30 s after SIGTERM; an idle one takes about two.
const STOP_TIMEOUT: Duration = Duration::from_secs(45);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Passes every password rule; the daemons here set themselves up with it unattended.
const ADMIN_PASSWORD: &str = "Web-Test-Admin-Passw0rd";

/// A running `appliance run`, killed on drop if a test failed before stopping it.
struct Daemon {
    dir: tempfile::TempDir,
    child: Child,
    management: String,
    data_port: u16,
}

impl Daemon {
    /// A daemon that sets itself up at start (`admin_password_file`), as the OVF's first boot does.
    fn spawn(management_port: u16) -> Daemon {
        Daemon::spawn_in(tempfile::tempdir().unwrap(), management_port, true, &[])
    }

    /// A daemon in `dir` (a data dir of an earlier daemon is reused), unattended or waiting for
    /// the web setup.
    fn spawn_in(
        dir: tempfile::TempDir,
        management_port: u16,
        unattended: bool,
        env: &[(&str, &str)],
    ) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_appliance"));
        cmd.current_dir(dir.path())
            .arg("run")
            .env_remove("RUST_LOG");
        for (key, _) in std::env::vars() {
            if key.starts_with("APPLIANCE_") {
                cmd.env_remove(key);
            }
        }
        let management = format!("127.0.0.1:{management_port}");
        let data_port = free_port();
        let append = |name: &str| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.path().join(name))
                .unwrap()
        };
        cmd.env("APPLIANCE_DATA_DIR", dir.path().join("data"))
            .env("APPLIANCE_LISTEN_DATA", format!("127.0.0.1:{data_port}"))
            .env("APPLIANCE_LISTEN_MANAGEMENT", &management)
            .stdin(Stdio::null())
            .stdout(append("stdout.log"))
            .stderr(append("stderr.log"));
        if unattended {
            let password_file = dir.path().join("admin-password");
            std::fs::write(&password_file, ADMIN_PASSWORD).unwrap();
            cmd.env("APPLIANCE_ADMIN_PASSWORD_FILE", password_file);
        }
        for (key, value) in env {
            cmd.env(key, value);
        }
        let child = cmd.spawn().expect("the appliance binary starts");
        Daemon {
            dir,
            child,
            management,
            data_port,
        }
    }

    /// Waits for a file the daemon writes.
    async fn wait_file(&mut self, path: &std::path::Path) {
        let deadline = Instant::now() + START_TIMEOUT;
        while !path.exists() {
            assert!(self.child.try_wait().unwrap().is_none(), "{}", self.log());
            assert!(
                Instant::now() < deadline,
                "no {}: {}",
                path.display(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.management)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// A client trusting only the appliance CA, once the daemon has created it.
    async fn client(&mut self) -> reqwest::Client {
        let ca_path = self.data_dir().join("tls/ca.pem");
        let deadline = Instant::now() + START_TIMEOUT;
        while !ca_path.exists() {
            assert!(self.child.try_wait().unwrap().is_none(), "{}", self.log());
            assert!(Instant::now() < deadline, "no CA yet: {}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The CA directory is renamed into place whole, so the file is complete once it exists.
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&ca_path).unwrap()).unwrap();
        reqwest::Client::builder()
            .tls_certs_only([ca])
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    /// Polls `path` until it answers `status`, returning the body.
    async fn wait_for(&mut self, client: &reqwest::Client, path: &str, status: u16) -> String {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            assert!(self.child.try_wait().unwrap().is_none(), "{}", self.log());
            if let Ok(resp) = client.get(self.url(path)).send().await {
                if resp.status().as_u16() == status {
                    return resp.text().await.unwrap();
                }
            }
            assert!(
                Instant::now() < deadline,
                "{path} never answered {status}: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "did not exit: {}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One sample line split into its metric name and value; labels must be well formed.
fn parse_sample(line: &str) -> (String, f64) {
    let (series, value) = line
        .rsplit_once(' ')
        .unwrap_or_else(|| panic!("no value: {line:?}"));
    let value: f64 = value
        .parse()
        .unwrap_or_else(|_| panic!("bad value: {line:?}"));
    let name = match series.split_once('{') {
        Some((name, labels)) => {
            let labels = labels
                .strip_suffix('}')
                .unwrap_or_else(|| panic!("unclosed labels: {line:?}"));
            for pair in labels.split(',') {
                let (key, quoted) = pair
                    .split_once('=')
                    .unwrap_or_else(|| panic!("bad label: {line:?}"));
                assert!(valid_name(key), "bad label name: {line:?}");
                assert!(
                    quoted.len() >= 2 && quoted.starts_with('"') && quoted.ends_with('"'),
                    "unquoted label value: {line:?}"
                );
            }
            name
        }
        None => series,
    };
    assert!(valid_name(name), "bad metric name: {line:?}");
    (name.to_string(), value)
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Checks the text format and returns each sample line's full series text with its value.
fn parse_exposition(text: &str) -> HashMap<String, f64> {
    let mut help = HashMap::new();
    let mut kind = HashMap::new();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, doc) = rest.split_once(' ').expect("HELP has text");
            assert!(!doc.is_empty());
            assert!(
                help.insert(name.to_string(), ()).is_none(),
                "two HELP: {name}"
            );
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').expect("TYPE has a type");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty),
                "{line:?}"
            );
            assert!(
                kind.insert(name.to_string(), ()).is_none(),
                "two TYPE: {name}"
            );
        } else {
            assert!(!line.starts_with('#') && !line.is_empty(), "{line:?}");
            let (name, value) = parse_sample(line);
            assert!(name.starts_with("ferry_"), "{line:?}");
            assert!(help.contains_key(&name), "no HELP before {line:?}");
            assert!(kind.contains_key(&name), "no TYPE before {line:?}");
            let series = line.rsplit_once(' ').unwrap().0.to_string();
            samples.insert(series, value);
        }
    }
    samples
}

#[tokio::test]
async fn health_readiness_metrics_and_sigterm() {
    let mut daemon = Daemon::spawn(free_port());
    let client = daemon.client().await;

    let health = daemon.wait_for(&client, "/healthz", 200).await;
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health, serde_json::json!({"status": "ok"}));

    let ready = daemon.wait_for(&client, "/readyz", 200).await;
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["ready"], true);
    for actor in ["receiver", "compressor", "uploader"] {
        assert_eq!(ready["actors"][actor]["state"], "running", "{ready}");
    }

    let resp = client.get(daemon.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let samples = parse_exposition(&resp.text().await.unwrap());
    assert_eq!(samples["ferry_bytes_received_total"], 0.0);
    assert_eq!(samples["ferry_sessions_refused_total"], 0.0);
    assert_eq!(samples["ferry_cache_limit_bytes"], (8u64 << 30) as f64);
    assert_eq!(samples["ferry_upload_backlog_bytes"], 0.0);
    assert_eq!(samples["ferry_agents_connected"], 0.0);
    assert_eq!(samples["ferry_actor_up{actor=\"uploader\"}"], 1.0);
    assert_eq!(
        samples["ferry_actor_restart_count{actor=\"receiver\"}"],
        0.0
    );

    let missing = client.get(daemon.url("/nope")).send().await.unwrap();
    assert_eq!(missing.status().as_u16(), 404);

    // A vault that no longer holds its configuration is not ready, and /readyz says why.
    let config = daemon.data_dir().join("vault/config");
    let moved = daemon.data_dir().join("vault-config.aside");
    std::fs::rename(&config, &moved).unwrap();
    let not_ready = daemon.wait_for(&client, "/readyz", 503).await;
    let not_ready: serde_json::Value = serde_json::from_str(&not_ready).unwrap();
    assert_eq!(not_ready["ready"], false);
    assert!(
        not_ready["vault_error"].as_str().unwrap().contains("vault"),
        "{not_ready}"
    );
    std::fs::rename(&moved, &config).unwrap();
    daemon.wait_for(&client, "/readyz", 200).await;

    daemon.sigterm();
    let status = daemon.wait_exit().await;
    assert!(status.success(), "{status}: {}", daemon.log());
    assert!(
        client.get(daemon.url("/healthz")).send().await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn before_setup_the_daemon_waits_with_a_setup_token_and_no_data_listener() {
    let mut daemon = Daemon::spawn_in(tempfile::tempdir().unwrap(), free_port(), false, &[]);
    let token_path = daemon.data_dir().join("setup-token");
    daemon.wait_file(&token_path).await;
    let client = daemon.client().await;
    daemon.wait_for(&client, "/healthz", 200).await;
    daemon.wait_for(&client, "/readyz", 503).await;

    let token = std::fs::read_to_string(&token_path).unwrap();
    assert_eq!(token.len(), 64, "{token:?}");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{token:?}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&token_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let log = daemon.log();
    assert!(
        log.contains("setup required") && log.contains(&token),
        "{log}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", daemon.data_port)).is_err(),
        "nothing may register or replicate before setup"
    );
    for absent in [
        "vault-passphrase",
        "registration-passphrase",
        "admin-token",
        "vault",
    ] {
        assert!(!daemon.data_dir().join(absent).exists(), "{absent}");
    }

    daemon.sigterm();
    let status = daemon.wait_exit().await;
    assert!(status.success(), "{status}: {}", daemon.log());
}

/// `FERRY_TEST_SETUP_ABORT_AFTER` kills the unattended setup right after it stored its plan (or
/// created the vault); the next start resumes the plan and ends up ready, the passphrases shown.
#[tokio::test]
async fn a_setup_killed_midway_resumes_at_the_next_start() {
    for step in ["plan", "vault"] {
        let mut first = Daemon::spawn_in(
            tempfile::tempdir().unwrap(),
            free_port(),
            true,
            &[("FERRY_TEST_SETUP_ABORT_AFTER", step)],
        );
        let status = first.wait_exit().await;
        assert!(!status.success(), "{step}: {status}: {}", first.log());
        assert!(!first.data_dir().join("admin-token").exists(), "{step}");
        let vault_config = first.data_dir().join("vault/config");
        assert_eq!(vault_config.exists(), step == "vault", "{step}");

        // The same data dir for the next start (the first daemon has exited).
        let dir = std::mem::replace(&mut first.dir, tempfile::tempdir().unwrap());
        let mut second = Daemon::spawn_in(dir, free_port(), true, &[]);
        let client = second.client().await;
        second.wait_for(&client, "/readyz", 200).await;
        let passphrase =
            std::fs::read_to_string(second.data_dir().join("vault-passphrase")).unwrap();
        assert!(
            second.stdout().contains(passphrase.trim()),
            "{step}: the resumed setup shows its generated passphrase: {}",
            second.stdout()
        );
        assert!(!second.data_dir().join("setup-token").exists(), "{step}");
        second.sigterm();
        let status = second.wait_exit().await;
        assert!(status.success(), "{step}: {status}: {}", second.log());
    }
}

#[tokio::test]
async fn a_taken_management_port_fails_the_start_with_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut daemon = Daemon::spawn(taken.local_addr().unwrap().port());
    let status = daemon.wait_exit().await;
    assert!(!status.success());
    let log = daemon.log();
    assert!(log.contains("management listener"), "{log}");
    drop(taken);
}
