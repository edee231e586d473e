//! Helpers of the discovery end-to-end tests: the management API over HTTPS, the inventory
//! comparison with pyvmomi, polling until the API shows a state, and a vcsim pinned to a port.

use ferry_tests::root;
use ferry_tests::vcsim::{parse_env, Vcsim};
use ferry_tests::web_harness::{client_config_for, https_request, venv_dir, Response};
use ferry_tests::Appliance;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{SMALL, SMALL_VMS, USER};

/// The API's largest page.
const PAGE: usize = 1000;

/// The management API over HTTPS, trusting only the appliance's CA, as `admin`.
pub(crate) struct Api {
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    token: String,
}

impl Api {
    pub(crate) fn new(app: &Appliance) -> Api {
        Api {
            port: app.management_port,
            tls: client_config_for(&app.data_dir.join("tls").join("ca.pem")).expect("appliance CA"),
            token: app
                .admin_token()
                .expect("admin token after unattended setup"),
        }
    }

    pub(crate) fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Response {
        let auth = format!("Bearer {}", self.token);
        let mut headers = vec![("Authorization", auth.as_str())];
        let payload = body.map(|b| b.to_string());
        if payload.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        https_request(
            self.tls.clone(),
            self.port,
            method,
            path,
            &headers,
            payload.as_deref().map(str::as_bytes),
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e:#}"))
    }

    pub(crate) fn get(&self, path: &str) -> Response {
        self.request("GET", path, None)
    }

    /// `Ok` once the VM `changed` names (by moref) has `key` = `want`.
    pub(crate) fn vm_has(
        &self,
        id: &str,
        changed: &Value,
        key: &str,
        want: &str,
    ) -> Result<(), String> {
        let moref = text(changed, "moref");
        let vm = self
            .get(&format!("/api/v1/vcenters/{id}/vms/{moref}"))
            .expect(200, None);
        (vm[key] == want)
            .then_some(())
            .ok_or_else(|| format!("{key} {}", vm[key]))
    }

    pub(crate) fn vcenter(&self, id: &str) -> Value {
        self.get(&format!("/api/v1/vcenters/{id}"))
            .expect(200, None)
    }

    /// Every discovered VM of a vCenter, in pages of 1,000.
    pub(crate) fn all_vms(&self, id: &str) -> Vec<Value> {
        let (mut all, mut total) = (Vec::new(), usize::MAX);
        while all.len() < total {
            let path = format!(
                "/api/v1/vcenters/{id}/vms?limit={PAGE}&offset={}",
                all.len()
            );
            let page = self.get(&path).expect(200, None);
            let items = page["items"].as_array().expect("items").clone();
            total = page["total"].as_u64().expect("total") as usize;
            assert!(
                !items.is_empty() || all.len() >= total,
                "an empty page before {total}"
            );
            assert!(
                items.len() <= PAGE,
                "a page larger than asked: {}",
                items.len()
            );
            all.extend(items);
        }
        assert_eq!(all.len(), total, "pages do not add up to total");
        all
    }
}

/// Polls `check` every 100 ms until it gives a value or `limit` passes; panics with the last state
/// it described. Returns the value and how long it took.
pub(crate) fn poll<T>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> (T, Duration) {
    let start = Instant::now();
    loop {
        match check() {
            Ok(v) => return (v, start.elapsed()),
            Err(last) if start.elapsed() > limit => {
                panic!("{what}: not within {limit:?}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A non-empty string field, or a panic naming the record.
pub(crate) fn text(vm: &Value, key: &str) -> String {
    match vm[key].as_str() {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => panic!("{key} missing or empty in {vm}"),
    }
}

/// What must agree between pyvmomi and Ferry for one VM (both use these field names), disks sorted.
pub(crate) fn seen(vm: &Value) -> Value {
    let mut disks: Vec<(u64, String)> = vm["disks"]
        .as_array()
        .unwrap_or_else(|| panic!("no disks list in {vm}"))
        .iter()
        .map(|d| {
            let size = d["capacity_bytes"].as_u64().filter(|n| *n > 0);
            (
                size.unwrap_or_else(|| panic!("no disk size in {vm}")),
                text(d, "file"),
            )
        })
        .collect();
    disks.sort();
    let keys = ["name", "instance_uuid", "bios_uuid", "power_state"];
    let mut out: serde_json::Map<String, Value> = keys
        .iter()
        .map(|k| (k.to_string(), text(vm, k).into()))
        .collect();
    out.insert("guest_ips".into(), vm["guest_ips"].clone());
    out.insert("disks".into(), json!(disks));
    assert!(out["guest_ips"].is_array(), "no guest_ips list in {vm}");
    Value::Object(out)
}

/// VMs by moref.
pub(crate) fn by_moref(vms: &[Value]) -> BTreeMap<String, Value> {
    let map: BTreeMap<String, Value> = vms.iter().map(|v| (text(v, "moref"), seen(v))).collect();
    assert_eq!(map.len(), vms.len(), "duplicate morefs");
    map
}

/// Asserts two inventories are equal, naming the first differences rather than dumping 1,000 VMs.
#[track_caller]
pub(crate) fn assert_same(
    ferry: &BTreeMap<String, Value>,
    pyvmomi: &BTreeMap<String, Value>,
    when: &str,
) {
    let morefs: std::collections::BTreeSet<&String> = ferry.keys().chain(pyvmomi.keys()).collect();
    let diffs: Vec<String> = morefs
        .into_iter()
        .filter(|m| ferry.get(*m) != pyvmomi.get(*m))
        .map(|m| {
            format!(
                "{m}: Ferry {:?} / pyvmomi {:?}",
                ferry.get(m),
                pyvmomi.get(m)
            )
        })
        .collect();
    assert!(
        diffs.is_empty(),
        "{when}: Ferry ({} VMs) and pyvmomi ({} VMs) differ in {} VMs, first: {:#?}",
        ferry.len(),
        pyvmomi.len(),
        diffs.len(),
        &diffs[..diffs.len().min(10)]
    );
}

/// Runs `scripts/pyvmomi_change.py ACTION ...` (split at spaces) against `sim`; returns its JSON
/// (with `done_at`).
pub(crate) fn change(sim: &Vcsim, args: &str) -> Value {
    let mut cmd = Command::new(venv_dir().join("bin/python"));
    cmd.arg(root().join("scripts/pyvmomi_change.py"))
        .args(["--host", "127.0.0.1", "--port", &sim.port.to_string()])
        .args(["--user", &sim.username, "--cafile"])
        .arg(&sim.cert)
        .args(args.split_whitespace())
        .env("VSPHERE_PASSWORD", &sim.password);
    let out = sim.run_pyvmomi(cmd).expect("run pyvmomi_change.py");
    assert!(
        out.status.success(),
        "pyvmomi_change.py {args:?} ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("pyvmomi_change.py prints JSON")
}

/// Waits (10 s) until `check` sees the change in Ferry's API; returns the latency from the moment
/// pyvmomi saw its task finish.
pub(crate) fn change_latency(
    what: &str,
    done: &Value,
    check: impl FnMut() -> Result<(), String>,
) -> f64 {
    let done_at = done["done_at"].as_f64().expect("done_at");
    poll(Duration::from_secs(10), what, check);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    let latency = now.as_secs_f64() - done_at;
    println!("{what}: in Ferry's API {latency:.2} s after the task finished");
    assert!(latency <= 10.0, "{what} took {latency:.2} s");
    latency
}

/// A vcsim started by this test with `scripts/vcsim.sh` on a given port (and, when given, with a
/// given certificate and key): the harness's `Vcsim` always takes a new port and a new certificate.
pub(crate) struct PinnedVcsim {
    dir: tempfile::TempDir,
    pub(crate) env: HashMap<String, String>,
    running: bool,
}

impl PinnedVcsim {
    pub(crate) fn start(
        port: u16,
        cert_and_key: Option<(&Path, &Path)>,
        password: &str,
    ) -> PinnedVcsim {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("password");
        std::fs::write(&pw, format!("{password}\n")).unwrap();
        let mut cmd = Command::new("bash");
        cmd.arg(root().join("scripts/vcsim.sh"))
            .arg("start")
            .arg("--dir")
            .arg(dir.path().join("state"))
            .args(SMALL)
            .args(["-username", USER, "-password-file"])
            .arg(&pw)
            .args(["-l", &format!("127.0.0.1:{port}")])
            .env_remove("VCSIM_TLS_CERT")
            .env_remove("VCSIM_TLS_KEY");
        if let Some((cert, key)) = cert_and_key {
            cmd.env("VCSIM_TLS_CERT", cert).env("VCSIM_TLS_KEY", key);
        }
        let out = cmd.output().expect("run scripts/vcsim.sh");
        assert!(
            out.status.success(),
            "vcsim on port {port} again: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env = parse_env(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(
            env.get("VCSIM_PORT").map(String::as_str),
            Some(port.to_string().as_str()),
            "{env:?}"
        );
        PinnedVcsim {
            dir,
            env,
            running: true,
        }
    }

    pub(crate) fn sha256(&self) -> &str {
        &self.env["VCSIM_THUMBPRINT_SHA256"]
    }

    /// `scripts/vcsim.sh stop`, once; whether it worked.
    pub(crate) fn try_stop(&mut self) -> bool {
        !std::mem::replace(&mut self.running, false)
            || Command::new("bash")
                .arg(root().join("scripts/vcsim.sh"))
                .arg("stop")
                .arg(self.dir.path().join("state"))
                .status()
                .is_ok_and(|st| st.success())
    }

    pub(crate) fn stop(&mut self) {
        assert!(self.try_stop(), "scripts/vcsim.sh stop failed");
    }
}

impl Drop for PinnedVcsim {
    fn drop(&mut self) {
        self.try_stop();
    }
}

/// Waits until the vCenter is unhealthy, with an error, in a way `matches` accepts; prints the
/// wait.
pub(crate) fn until_unhealthy(
    api: &Api,
    id: &str,
    secs: u64,
    what: &str,
    matches: impl Fn(&Value) -> bool,
) -> Value {
    let (v, took) = poll(Duration::from_secs(secs), what, || {
        let v = api.vcenter(id);
        let has_error = v["last_error"].as_str().is_some_and(|e| !e.is_empty());
        let bad = v["health"] == "unhealthy" && has_error && matches(&v);
        bad.then(|| v.clone()).ok_or_else(|| v.to_string())
    });
    println!(
        "{what}: unhealthy after {:.2} s: {}",
        took.as_secs_f64(),
        v["last_error"]
    );
    v
}

/// Waits until the vCenter is healthy with a full list newer than `synced_before`; prints the wait
/// and returns the new `last_sync`.
pub(crate) fn until_resynced(
    api: &Api,
    id: &str,
    secs: u64,
    what: &str,
    synced_before: &Value,
) -> Value {
    let (v, took) = poll(Duration::from_secs(secs), what, || {
        let v = api.vcenter(id);
        let ok = v["health"] == "ok" && v["last_error"].is_null();
        let fresh = v["last_sync"] != *synced_before && v["vm_count"] == SMALL_VMS;
        (ok && fresh)
            .then(|| v.clone())
            .ok_or_else(|| v.to_string())
    });
    println!(
        "{what}: healthy with a fresh list after {:.2} s",
        took.as_secs_f64()
    );
    assert_eq!(api.all_vms(id).len(), SMALL_VMS, "{v:#}");
    v["last_sync"].clone()
}

/// Asserts a 400 `invalid_field` on `field` (the message starts with the field's name).
#[track_caller]
pub(crate) fn refused_on(r: Response, field: &str) -> String {
    let body = r.expect(400, Some("invalid_field"));
    let message = body["message"].as_str().unwrap_or_default().to_string();
    assert!(
        message.starts_with(&format!("{field}:")),
        "not refused on {field}: {body:#}"
    );
    message
}

pub(crate) fn same_thumbprint(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.replace(':', "").to_ascii_lowercase();
    norm(a) == norm(b)
}
