//! The management plane from the outside: an `appliance run` in a fresh data folder that has *not* been
//! set up (so the tests see the setup-token phase), a small HTTPS client that trusts the appliance's
//! own CA, and the first-boot setup through the API.
//!
//! The HTTP client is a few lines of HTTP/1.1 over rustls (one connection per request,
//! `Connection: close`) rather than a full client library: the tests need exact control over what
//! is sent (bodies with the wrong content type, malformed JSON, oversized bodies, cookies without
//! CSRF tokens) and to see a connection that drops without an answer.

use anyhow::{bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::{bin, free_port, root, signal};

#[path = "web_harness_http.rs"]
mod http;
pub use http::Response;
use http::{parse_response, read_until_close};

/// A password every rule of `auth::password_problems` accepts.
pub const ADMIN_PASSWORD: &str = "Ferry-Admin-Pass-2024";
/// How long a start may take until the management port answers and the setup token exists.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// One request, including setup (which creates the vault) and argon2 password checks.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Installs the browser and API-fuzzing tools once per test process (idempotent and fast when they
/// are there; `scripts/test.sh` has run it already), so a single test also runs on a clean clone.
pub fn ensure_test_deps() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let status = Command::new("bash")
            .arg(root().join("scripts/install-test-deps.sh"))
            .status()
            .expect("run scripts/install-test-deps.sh");
        assert!(status.success(), "scripts/install-test-deps.sh failed");
    });
}

/// The virtualenv holding schemathesis (as `scripts/install-test-deps.sh` makes it).
pub fn venv_dir() -> PathBuf {
    if let Some(v) = std::env::var_os("FERRY_TEST_VENV") {
        return PathBuf::from(v);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .expect("HOME or XDG_CACHE_HOME is set");
    cache.join("ferry-test").join("venv")
}

/// `target/test-artifacts/<name>/`, emptied and created: screenshots and reports a person can read
/// after a run.
pub fn artifacts_dir(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let dir = target.join("test-artifacts").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the artifacts folder");
    dir
}

/// A running (or stopped) `appliance run` with its own temporary data folder, management listener
/// and data listener on free loopback ports. Killed on drop.
pub struct WebAppliance {
    pub data_dir: PathBuf,
    pub mgmt_port: u16,
    pub data_port: u16,
    env: Vec<(String, String)>,
    child: Option<Child>,
    log: PathBuf,
    tls: OnceLock<Arc<rustls::ClientConfig>>,
    _tmp: tempfile::TempDir,
}

impl WebAppliance {
    /// Starts a fresh appliance that needs setup and waits for its setup token. `env` adds
    /// variables for the daemon (e.g. the setup abort hook).
    pub fn start_fresh(env: &[(&str, &str)]) -> Result<WebAppliance> {
        let tmp = tempfile::tempdir()?;
        let mut app = WebAppliance {
            data_dir: tmp.path().join("data"),
            mgmt_port: free_port(),
            data_port: free_port(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
            log: tmp.path().join("appliance.log"),
            tls: OnceLock::new(),
            _tmp: tmp,
        };
        app.spawn()?;
        app.wait_for_setup_token()?;
        Ok(app)
    }

    /// A command for the appliance binary with this appliance's configuration (data folder and
    /// ports) and environment, and nothing inherited that would configure it otherwise.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(bin("appliance"));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("APPLIANCE_") {
                cmd.env_remove(&k);
            }
        }
        cmd.env("APPLIANCE_DATA_DIR", &self.data_dir)
            .env(
                "APPLIANCE_LISTEN_DATA",
                format!("127.0.0.1:{}", self.data_port),
            )
            .env(
                "APPLIANCE_LISTEN_MANAGEMENT",
                format!("127.0.0.1:{}", self.mgmt_port),
            )
            .env_remove("RUST_LOG")
            .env_remove("FERRY_TEST_SETUP_ABORT_AFTER");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    fn spawn(&mut self) -> Result<()> {
        std::fs::create_dir_all(&self.data_dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut child = self
            .command()
            .arg("run")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start appliance run")?;
        let start = Instant::now();
        loop {
            if TcpStream::connect(("127.0.0.1", self.mgmt_port)).is_ok() {
                break;
            }
            if let Some(st) = child.try_wait()? {
                bail!(
                    "appliance exited with {st} before its management listener answered; log:\n{}",
                    self.log_text()
                );
            }
            if start.elapsed() > START_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "the management listener did not answer on {} within {START_TIMEOUT:?}; log:\n{}",
                    self.mgmt_port,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
        Ok(())
    }

    /// Waits until `<data dir>/setup-token` holds a token (the daemon writes it after binding).
    pub fn wait_for_setup_token(&mut self) -> Result<String> {
        let start = Instant::now();
        loop {
            if let Ok(t) = self.setup_token() {
                return Ok(t);
            }
            if !self.running() {
                bail!(
                    "appliance exited before writing its setup token; log:\n{}",
                    self.log_text()
                );
            }
            if start.elapsed() > START_TIMEOUT {
                bail!(
                    "no setup token in {} within {START_TIMEOUT:?}; log:\n{}",
                    self.setup_token_path().display(),
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn setup_token_path(&self) -> PathBuf {
        self.data_dir.join("setup-token")
    }

    /// The current setup token (error when the file is missing or empty).
    pub fn setup_token(&self) -> Result<String> {
        let text = std::fs::read_to_string(self.setup_token_path())?;
        let token = text.trim().to_string();
        if token.is_empty() {
            bail!("the setup-token file is empty");
        }
        Ok(token)
    }

    pub fn ca_path(&self) -> PathBuf {
        self.data_dir.join("tls").join("ca.pem")
    }

    pub fn base_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.mgmt_port)
    }

    /// Whether the daemon process still runs.
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits for the daemon to exit on its own (e.g. the setup abort hook); returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let c = self.child.as_mut().context("not running")?;
        let start = Instant::now();
        loop {
            if let Some(st) = c.try_wait()? {
                self.child = None;
                return Ok(st);
            }
            if start.elapsed() > timeout {
                bail!("the appliance did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the clean exit.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        let mut c = self.child.take().context("not running")?;
        signal(c.id(), "TERM");
        let start = Instant::now();
        loop {
            if let Some(st) = c.try_wait()? {
                return Ok(st);
            }
            if start.elapsed() > START_TIMEOUT {
                let _ = c.kill();
                let _ = c.wait();
                bail!("the appliance did not stop within {START_TIMEOUT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the daemon again on the same data folder and ports (killing it first if it runs).
    pub fn restart(&mut self) -> Result<()> {
        self.kill9();
        self.spawn()
    }

    /// Sets (`Some`) or removes (`None`) a variable of the daemon's environment for the next start.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.to_string(), v.to_string()));
        }
    }

    /// What the daemon printed, over all its starts.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs an appliance CLI command with this appliance's configuration; returns stdout.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let out = self.command().args(args).output()?;
        if !out.status.success() {
            bail!(
                "appliance {args:?} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    fn client_config(&self) -> Result<Arc<rustls::ClientConfig>> {
        if let Some(c) = self.tls.get() {
            return Ok(c.clone());
        }
        let config = client_config_for(&self.ca_path())?;
        Ok(self.tls.get_or_init(|| config).clone())
    }

    /// One request over a fresh TLS connection that verifies the server against the appliance CA.
    /// `headers` are sent as given (add `Content-Type` yourself); an error means no complete answer
    /// came (refused, dropped, timed out).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response> {
        https_request(
            self.client_config()?,
            self.mgmt_port,
            method,
            path,
            headers,
            body,
        )
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> Result<Response> {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        self.request("GET", path, &headers, None)
    }

    pub fn delete(&self, path: &str, token: Option<&str>) -> Result<Response> {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        self.request("DELETE", path, &headers, None)
    }

    /// A JSON request (`POST`, `PATCH`, ...), with a bearer token when given.
    pub fn send_json(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> Result<Response> {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(a) = auth.as_deref() {
            headers.push(("Authorization", a));
        }
        let bytes = serde_json::to_vec(body)?;
        self.request(method, path, &headers, Some(&bytes))
    }

    pub fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> Result<Response> {
        self.send_json("POST", path, token, body)
    }

    /// `POST /api/v1/session`.
    pub fn login(&self, user: &str, password: &str) -> Result<Response> {
        self.post_json(
            "/api/v1/session",
            None,
            &json!({"username": user, "password": password}),
        )
    }

    /// Completes setup through the API with the defaults (local vault, generated passphrases) and
    /// signs in as `admin`. Returns the setup answer and the admin's session token.
    pub fn setup_with_result(&self, admin_password: &str) -> Result<(Value, String)> {
        let token = self.setup_token()?;
        let r = self.post_json(
            "/api/v1/setup",
            None,
            &json!({"token": token, "admin_password": admin_password}),
        )?;
        if r.status != 200 {
            bail!(
                "POST /api/v1/setup answered {}: {}\nlog:\n{}",
                r.status,
                r.text(),
                self.log_text()
            );
        }
        let result = r.json();
        let login = self.login("admin", admin_password)?;
        if login.status != 200 {
            bail!(
                "POST /api/v1/session after setup answered {}: {}",
                login.status,
                login.text()
            );
        }
        let session = login.json()["token"]
            .as_str()
            .context("login answer without a token")?
            .to_string();
        Ok((result, session))
    }

    /// [`WebAppliance::setup_with_result`], returning only the admin's session token.
    pub fn setup(&self, admin_password: &str) -> Result<String> {
        self.setup_with_result(admin_password).map(|(_, t)| t)
    }

    /// Creates an API token (`POST /api/v1/tokens`) with `admin_token`; returns (id, secret).
    pub fn create_api_token(&self, admin_token: &str, name: &str) -> Result<(String, String)> {
        let r = self.post_json("/api/v1/tokens", Some(admin_token), &json!({"name": name}))?;
        if r.status != 201 {
            bail!("POST /api/v1/tokens answered {}: {}", r.status, r.text());
        }
        let v = r.json();
        let id = v["id"].as_str().context("token without id")?.to_string();
        let secret = v["token"]
            .as_str()
            .context("token without secret")?
            .to_string();
        Ok((id, secret))
    }
}

impl Drop for WebAppliance {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `f` every 100 ms until it returns `Some`, or fails after `timeout` naming `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            bail!("{what}: not within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A TLS client trusting only the CA in `ca_pem` (the appliance's `<data dir>/tls/ca.pem`).
pub fn client_config_for(ca_pem: &std::path::Path) -> Result<Arc<rustls::ClientConfig>> {
    let pem = std::fs::read(ca_pem).with_context(|| format!("read {}", ca_pem.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.context("parse the appliance CA")?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// One HTTP/1.1 request to the management listener on 127.0.0.1:`port` over a fresh TLS connection.
/// `headers` are sent as given; an error means no complete answer came (refused, dropped, timed out).
pub fn https_request(
    config: Arc<rustls::ClientConfig>,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response> {
    let name = ServerName::try_from("127.0.0.1")?.to_owned();
    let conn = rustls::ClientConnection::new(config, name)?;
    let sock = TcpStream::connect(("127.0.0.1", port))?;
    sock.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    sock.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        head.push_str(&format!("Content-Length: {}\r\n", b.len()));
    } else if matches!(method, "POST" | "PUT" | "PATCH") {
        head.push_str("Content-Length: 0\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.unwrap_or_default());
    // A server may answer (413) and close before it read the whole body: still read its answer.
    let write_err = tls.write_all(&out).and_then(|()| tls.flush()).err();
    let mut raw = Vec::new();
    let read_err = read_until_close(&mut tls, &mut raw);
    match parse_response(&raw) {
        Some(r) => Ok(r),
        None => bail!(
            "{method} {path}: no complete answer ({} bytes; write: {write_err:?}; read: {read_err:?})",
            raw.len()
        ),
    }
}

/// [`https_request`] to an appliance of the main harness, with an optional bearer token and JSON body.
pub fn appliance_https(
    app: &crate::Appliance,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> Result<Response> {
    let config = client_config_for(&app.data_dir.join("tls").join("ca.pem"))?;
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(a) = auth.as_deref() {
        headers.push(("Authorization", a));
    }
    let payload = body.map(|b| b.to_string());
    if payload.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    https_request(
        config,
        app.management_port,
        method,
        path,
        &headers,
        payload.as_deref().map(str::as_bytes),
    )
}
