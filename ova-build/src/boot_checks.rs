//! What the boot test asks of a booted appliance: its HTTPS API through the forwarded port (with
//! curl; the test pins nothing, it talks to its own VM on loopback), lines on the serial console,
//! and a replication by the mobility agent running on the host.

use crate::qemu::Vm;
use crate::run;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> Result<Value> {
        serde_json::from_str(&self.body)
            .with_context(|| format!("HTTP {} answer is not JSON: {}", self.status, self.body))
    }
}

/// One HTTPS request to the appliance through the forwarded port.
pub fn https(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<Response> {
    let url = format!("https://127.0.0.1:{port}{path}");
    let mut args = vec![
        "-ksS".to_string(),
        "--max-time".into(),
        "20".into(),
        "-X".into(),
        method.into(),
        "-w".into(),
        "\n%{http_code}".into(),
    ];
    if let Some(token) = token {
        args.push("-H".into());
        args.push(format!("Authorization: Bearer {token}"));
    }
    let input = body.map(|b| b.to_string());
    if input.is_some() {
        args.extend([
            "-H".into(),
            "Content-Type: application/json".into(),
            "--data-binary".into(),
            "@-".into(),
        ]);
    }
    args.push(url);
    let out = run::cmd_in(None, "curl", &args, input.as_deref().map(str::as_bytes))?;
    let (body, code) = out.rsplit_once('\n').context("curl printed no status")?;
    Ok(Response {
        status: code
            .trim()
            .parse()
            .with_context(|| format!("curl status {code:?}"))?,
        body: body.to_string(),
    })
}

/// Waits until `GET path` answers `want` over HTTPS; returns how long that took.
pub fn wait_https(
    vm: &mut Vm,
    port: u16,
    path: &str,
    want: u16,
    timeout: Duration,
) -> Result<Duration> {
    let started = Instant::now();
    let mut last = String::from("no answer yet");
    while started.elapsed() < timeout {
        vm.ensure_running()?;
        match https(port, "GET", path, None, None) {
            Ok(r) if r.status == want => return Ok(started.elapsed()),
            Ok(r) => {
                last = format!(
                    "HTTP {}: {}",
                    r.status,
                    r.body.chars().take(200).collect::<String>()
                )
            }
            Err(err) => {
                last = format!("{err:#}")
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .to_string()
            }
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    bail!(
        "{path} did not answer {want} within {timeout:?} (last: {last}); serial log {}",
        vm.serial_log.display()
    )
}

/// Waits until the serial console shows `needle`.
pub fn wait_serial(vm: &mut Vm, needle: &str, timeout: Duration) -> Result<()> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if vm.serial().contains(needle) {
            return Ok(());
        }
        vm.ensure_running()?;
        std::thread::sleep(Duration::from_secs(1));
    }
    bail!(
        "the serial console never showed {needle:?} (log {})",
        vm.serial_log.display()
    )
}

/// Polls `/api/v1/setup` until setup is complete (the unattended setup from the admin password).
pub fn wait_setup_complete(vm: &mut Vm, port: u16, timeout: Duration) -> Result<()> {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < timeout {
        vm.ensure_running()?;
        let r = https(port, "GET", "/api/v1/setup", None, None)?;
        if r.status == 200 && phase(&r)? == "complete" {
            return Ok(());
        }
        last = r.body;
        std::thread::sleep(Duration::from_secs(2));
    }
    bail!("setup did not complete within {timeout:?}: {last}")
}

pub fn phase(r: &Response) -> Result<String> {
    let v = r.json()?;
    v.get("phase")
        .and_then(Value::as_str)
        .map(str::to_string)
        .with_context(|| format!("no phase in {v}"))
}

pub fn login(port: u16, password: &str) -> Result<String> {
    let r = https(
        port,
        "POST",
        "/api/v1/session",
        None,
        Some(&serde_json::json!({"username": "admin", "password": password})),
    )?;
    if r.status != 200 {
        bail!("signing in as admin: HTTP {}: {}", r.status, r.body);
    }
    r.json()?
        .get("token")
        .and_then(Value::as_str)
        .map(str::to_string)
        .context("no token in the sign-in answer")
}

/// Registers the host's agent through the forwarded replication port, replicates `disk` once and
/// waits until the appliance lists the point the agent printed. Returns the point id.
pub fn replicate(
    vm: &mut Vm,
    api_port: u16,
    data_port: u16,
    token: &str,
    mobility: &Path,
    dir: &Path,
    disk: &Path,
) -> Result<String> {
    let r = https(
        api_port,
        "POST",
        "/api/v1/agents/registration-passphrase",
        Some(token),
        Some(&serde_json::json!({})),
    )?;
    if r.status != 200 {
        bail!(
            "rotating the registration passphrase: HTTP {}: {}",
            r.status,
            r.body
        );
    }
    let passphrase = r.json()?["passphrase"]
        .as_str()
        .context("no passphrase")?
        .to_string();
    let status = https(api_port, "GET", "/api/v1/status", Some(token), None)?.json()?;
    let fingerprint = status["ca_fingerprint"]
        .as_str()
        .context("no ca_fingerprint")?
        .to_string();
    let pass_file = dir.join("agent.pass");
    std::fs::write(&pass_file, &passphrase)?;
    let state = dir.join("agent-state");
    let mobility = mobility.display().to_string();
    run::cmd(
        &mobility,
        [
            "register".into(),
            "--appliance".into(),
            format!("127.0.0.1:{data_port}"),
            "--passphrase-file".into(),
            pass_file.display().to_string(),
            "--ca-fingerprint".into(),
            fingerprint,
            "--state-dir".into(),
            state.display().to_string(),
        ],
    )
    .context("mobility register through the forwarded 9443")?;
    let out = run::cmd(
        &mobility,
        [
            "run".into(),
            "--state-dir".into(),
            state.display().to_string(),
            "--disk".into(),
            disk.display().to_string(),
            "--once".into(),
        ],
    )
    .context("mobility run --once through the forwarded 9443")?;
    let point = out
        .split_whitespace()
        .last()
        .context("the agent printed no point")?
        .to_string();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(300) {
        vm.ensure_running()?;
        if point_listed(api_port, token, &point)? {
            return Ok(point);
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    bail!("point {point} never appeared in /api/v1/points")
}

/// Whether `/api/v1/points` lists `point`.
pub fn point_listed(port: u16, token: &str, point: &str) -> Result<bool> {
    let list = https(port, "GET", "/api/v1/points", Some(token), None)?.json()?;
    Ok(list["items"]
        .as_array()
        .is_some_and(|items| items.iter().any(|p| p["point_id"].as_str() == Some(point))))
}

/// Waits for the console banner (written after the listener answers, once setup is known) and
/// returns the serial console so far.
pub fn wait_banner(vm: &mut Vm) -> Result<String> {
    wait_serial(vm, "First boot:", Duration::from_secs(240)).context("the console banner")?;
    Ok(vm.serial())
}

/// Fails unless the serial console text shows `needle`; `what` says what that proves.
pub fn expect_on_console(vm: &Vm, serial: &str, needle: &str, what: &str) -> Result<()> {
    if !serial.contains(needle) {
        bail!(
            "the serial console does not show {needle:?} ({what}); log {}",
            vm.serial_log.display()
        );
    }
    Ok(())
}

/// A disk image of `mib` MiB of seeded pseudo-random data with zero runs, like a real disk.
pub fn seeded_disk(path: &Path, mib: usize, seed: u64) -> Result<()> {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut data = vec![0u8; mib << 20];
    for (i, chunk) in data.chunks_mut(1 << 16).enumerate() {
        if i % 3 != 2 {
            rng.fill_bytes(chunk);
        }
    }
    std::fs::write(path, data)?;
    Ok(())
}
