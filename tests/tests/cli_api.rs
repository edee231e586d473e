//! The CLI against a real daemon and a real agent: `status`, `machines list`, `points list` (through the
//! daemon and straight from the vault, which must agree), `token create`, `agents list|revoke`, the
//! `/metrics` page, and what still works once the daemon is stopped.

use anyhow::Result;
use ferry_tests::{Agent, Appliance};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use ferry_tests::web_harness as http;

/// 24 MiB: several extents and packs, small enough for a quick run.
const DISK_BYTES: u64 = 24 << 20;

/// Seeded xorshift bytes: no zero blocks (the agent skips those) and nothing dedups within the disk.
fn fill(path: &Path, size: u64, seed: u64) {
    let mut f = std::fs::File::create(path).unwrap();
    let mut x = seed | 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut written = 0;
    while written < size {
        for b in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
        }
        let n = (size - written).min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).unwrap();
        written += n as u64;
    }
}

/// Runs an appliance CLI command and returns its whole output, whatever the exit status.
fn run(app: &Appliance, args: &[&str]) -> Output {
    app.command().args(args).output().expect("run appliance")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json_cli(app: &Appliance, args: &[&str]) -> Value {
    let text = app
        .cli(args)
        .unwrap_or_else(|e| panic!("{e:#}\nlog:\n{}", app.log_text()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("appliance {args:?}: {e}: {text}"))
}

/// One GET over a fresh TLS connection that trusts only the appliance's CA.
fn https_get(app: &Appliance, path: &str, token: Option<&str>) -> Result<http::Response> {
    ferry_tests::web_harness::appliance_https(app, "GET", path, token, None)
}

/// Polls `machines list --json` until the machine's last point is `point` (the catalog records points
/// from a broadcast, a moment after the agent heard its point is durable).
fn machine_with_point(app: &Appliance, id: &str, point: &str) -> Value {
    let start = Instant::now();
    loop {
        let list = json_cli(app, &["machines", "list", "--json"]);
        let found = list
            .as_array()
            .and_then(|l| l.iter().find(|m| m["id"] == id))
            .cloned();
        if let Some(m) = found.as_ref() {
            if m["last_point"]["point_id"] == point {
                return m.clone();
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the catalog did not record point {point} of {id} within 15 s: {list:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The vault the daemon uses: `vault-location.json` when setup wrote one, else the default folder.
fn vault_url(data_dir: &Path) -> String {
    match std::fs::read_to_string(data_dir.join("vault-location.json")) {
        Ok(text) => {
            let v: Value = serde_json::from_str(&text).expect("vault-location.json is JSON");
            v["url"]
                .as_str()
                .expect("vault-location.json names a url")
                .to_string()
        }
        Err(_) => data_dir.join("vault").display().to_string(),
    }
}

fn step(timings: &mut Vec<(&'static str, Duration)>, since: &mut Instant, name: &'static str) {
    timings.push((name, since.elapsed()));
    eprintln!("step {name}: {:?}", since.elapsed());
    *since = Instant::now();
}

#[test]
fn cli_commands_through_the_daemon_and_without_it() {
    let t = tempfile::tempdir().unwrap();
    let img: PathBuf = t.path().join("disk.img");
    fill(&img, DISK_BYTES, 0x5eed_f00d);
    let mut timings = Vec::new();
    let mut since = Instant::now();
    let mut app = Appliance::start(&t.path().join("data"), &[]).unwrap();
    step(&mut timings, &mut since, "start and unattended setup");

    // 1. Status, as JSON and as text.
    let status = json_cli(&app, &["status", "--json"]);
    assert_eq!(status["setup"], "complete", "{status:#}");
    assert_eq!(status["data_path_running"], true, "{status:#}");
    let text = app.cli(&["status"]).unwrap();
    for actor in ["receiver", "compressor", "uploader"] {
        assert!(text.contains(actor), "status text lacks {actor}:\n{text}");
    }
    assert!(text.contains("setup: complete"), "{text}");
    step(&mut timings, &mut since, "status");

    // 2. One point, then the machine as the catalog shows it.
    let agent = Agent::register(&app, &t.path().join("agent")).unwrap();
    let agents = json_cli(&app, &["agents", "list", "--json"]);
    let agents = agents.as_array().expect("agents list is an array");
    assert_eq!(agents.len(), 1, "{agents:?}");
    let id = agents[0]["id"].as_str().expect("agent id").to_string();
    let point = agent
        .once(&[&img])
        .unwrap_or_else(|e| panic!("{e:#}\nlog:\n{}", app.log_text()));
    assert!(!point.is_empty(), "the agent printed no point id");
    step(&mut timings, &mut since, "register and replicate one point");

    let machine = machine_with_point(&app, &id, &point);
    // The agent exited after --once, so it is not connected; its point is seconds old, well within
    // the RPO target, and the catalog's rule puts a recent point before the connection: "protected".
    // "disconnected" is only for a machine whose agent is away *and* whose last point is too old.
    assert_eq!(machine["state"], "protected", "{machine:#}");
    assert_eq!(machine["agent_connected"], false, "{machine:#}");
    let disks = machine["disks"].as_array().expect("disks");
    assert_eq!(disks.len(), 1, "{machine:#}");
    assert_eq!(disks[0]["size_bytes"], DISK_BYTES, "{machine:#}");
    assert!(machine["points"].as_u64() >= Some(1), "{machine:#}");
    step(&mut timings, &mut since, "machines list");

    // 3. Points through the daemon (the catalog) equal points read straight from the vault.
    let through_daemon = json_cli(&app, &["points", "list", "--json"]);
    let url = vault_url(&app.data_dir);
    let pass = app.data_dir.join("vault-passphrase");
    let pass = pass.to_str().unwrap();
    let from_vault = json_cli(
        &app,
        &[
            "points",
            "list",
            "--json",
            "--vault",
            &url,
            "--vault-passphrase-file",
            pass,
        ],
    );
    assert_eq!(through_daemon, from_vault, "daemon and vault disagree");
    let rows = from_vault.as_array().expect("points list is an array");
    assert_eq!(rows.len(), 1, "one point of one disk: {rows:?}");
    assert_eq!(rows[0]["machine"], id.as_str());
    assert_eq!(rows[0]["point"], point.as_str());
    assert_eq!(rows[0]["size_bytes"], DISK_BYTES);
    step(&mut timings, &mut since, "points list, daemon and vault");

    // 4. API tokens: one that works, and a clear refusal for a user that does not exist.
    let out = run(&app, &["token", "create", "--name", "ci"]);
    assert!(out.status.success(), "token create: {}", stderr(&out));
    let token = stdout(&out).trim().to_string();
    assert!(
        token.starts_with("fat_") && token.len() > 20,
        "not an API token: {token:?}"
    );
    let r = https_get(&app, "/api/v1/machines", Some(&token)).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["items"][0]["id"], id.as_str(), "{}", r.text());
    let r = https_get(&app, "/api/v1/machines", Some("fat_not-a-real-token")).unwrap();
    assert_eq!(
        r.status,
        401,
        "a made-up token must be refused: {}",
        r.text()
    );
    let out = run(
        &app,
        &["token", "create", "--name", "ci2", "--user", "nobody-here"],
    );
    assert!(
        !out.status.success(),
        "a token for no user: {}",
        stdout(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("nobody-here") && err.contains("does not exist"),
        "unclear refusal: {err}"
    );
    assert!(stdout(&out).trim().is_empty(), "printed a secret anyway");
    step(&mut timings, &mut since, "token create");

    // 5. The agent as the daemon sees it, then revoked.
    let agents = json_cli(&app, &["agents", "list", "--json"]);
    let row = &agents[0];
    assert_eq!(row["id"], id.as_str(), "{agents:#}");
    // Only the daemon knows live sessions: the field itself shows the list came through the API.
    assert_eq!(
        row["connected"], false,
        "after --once the agent is gone: {agents:#}"
    );
    assert_eq!(row["revoked"], false, "{agents:#}");
    assert!(row["last_seen"].is_string(), "{agents:#}");
    let out = app.cli(&["agents", "revoke", &id]).unwrap();
    assert!(out.contains("revoked agent"), "{out}");
    assert!(out.contains(&id), "{out}");
    let refused = agent
        .command(&[&img])
        .args(["--once", "--timeout", "20"])
        .output()
        .unwrap();
    assert!(!refused.status.success(), "a revoked agent must be refused");
    assert!(stderr(&refused).contains("revoked"), "{}", stderr(&refused));
    let start = Instant::now();
    loop {
        let list = json_cli(&app, &["machines", "list", "--json"]);
        if list[0]["state"] == "revoked" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "machine not revoked within 15 s: {list:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    step(&mut timings, &mut since, "agents list, revoke, refused run");

    // 6. /metrics: no authentication, CA-trusted, the machine's RPO and the setup state.
    let r = https_get(&app, "/metrics", None).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let metrics = r.text();
    let prefix = format!("ferry_machine_rpo_seconds{{machine=\"{id}\"}} ");
    let rpo: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no RPO of {id}:\n{metrics}"))
        .trim()
        .parse()
        .expect("RPO is a whole number of seconds");
    assert!(rpo < 300, "the point is a moment old, RPO {rpo}s");
    assert!(
        metrics.lines().any(|l| l == "ferry_setup_complete 1"),
        "{metrics}"
    );
    step(&mut timings, &mut since, "metrics");

    // 7. Without the daemon: agents from the state database, points from the vault; machines need it.
    let exit = app.stop().unwrap();
    assert!(exit.success(), "appliance stopped with {exit}");
    let agents = json_cli(&app, &["agents", "list", "--json"]);
    assert_eq!(agents[0]["id"], id.as_str(), "{agents:#}");
    assert_eq!(agents[0]["revoked"], true, "{agents:#}");
    let offline_points = json_cli(&app, &["points", "list", "--json"]);
    assert_eq!(offline_points, from_vault, "vault-direct fallback differs");
    let out = run(&app, &["machines", "list"]);
    assert!(!out.status.success(), "machines list without a daemon");
    assert!(
        stderr(&out).contains("does not answer"),
        "unclear failure: {}",
        stderr(&out)
    );
    step(&mut timings, &mut since, "stopped daemon");

    let total: Duration = timings.iter().map(|(_, d)| *d).sum();
    eprintln!("cli_api total {total:?}");
}
