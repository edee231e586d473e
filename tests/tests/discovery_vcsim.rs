//! Discovery end to end: a real appliance (set up unattended) follows a real vcsim through the
//! API and the CLI. The discovered inventory of 1,000 VMs must equal what pyvmomi reports for the
//! same vcsim, VM by VM; a rename, a power-off and a new VM made with pyvmomi
//! (`scripts/pyvmomi_change.py`) must reach `GET /api/v1/vcenters/{id}/vms` within 10 s; a wrong
//! password, a wrong thumbprint and an unreachable URL are refused when the vCenter is added; vcsim
//! stopping marks the vCenter unhealthy, and discovery recovers when vcsim is back, after a
//! password rotation (fixed by PATCHing the password) and after a certificate change (fixed by
//! PATCHing the thumbprint it presents).
//!
//! vcsim is restarted on the port it had before (`-l`), because the vCenter's URL cannot be changed
//! through the API. Timings are printed (run with --nocapture).

use ferry_tests::vcsim::{parse_env, Vcsim};
use ferry_tests::web_harness::venv_dir;
use ferry_tests::{root, Appliance};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// The harness's HTTP/1.1 answer parser (its client is tied to `WebAppliance`, which sets itself up
// through the API; these tests use the unattended `Appliance`).
#[allow(dead_code)]
#[path = "../src/web_harness_http.rs"]
mod http;

const USER: &str = "ferry-discovery";
const PASSWORD: &str = "vcsim-Passw0rd-1";
/// 4 clusters x 250 VMs.
const VMS_1000: &[&str] = &["-cluster", "4", "-vm", "250"];
/// The outage test needs a login, not volume.
const SMALL: &[&str] = &["-cluster", "1", "-vm", "8"];
const SMALL_VMS: usize = 8;
/// The API's largest page.
const PAGE: usize = 1000;

/// One test at a time: both start vcsim and an appliance, and the latencies they print and bound
/// mean little when the other test competes for the same two cores.
static SERIAL: Mutex<()> = Mutex::new(());

/// The management API over HTTPS, trusting only the appliance's CA, as `admin`.
struct Api {
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    token: String,
}

impl Api {
    fn new(app: &Appliance) -> Api {
        let pem = std::fs::read(app.data_dir.join("tls").join("ca.pem")).expect("appliance CA");
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.expect("parse the CA")).expect("add the CA");
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        Api {
            port: app.management_port,
            tls: Arc::new(tls),
            token: app
                .admin_token()
                .expect("admin token after unattended setup"),
        }
    }

    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> http::Response {
        let what = format!("{method} {path}");
        let conn = rustls::ClientConnection::new(
            self.tls.clone(),
            ServerName::try_from("127.0.0.1")
                .expect("IP name")
                .to_owned(),
        )
        .expect("TLS client");
        let sock = TcpStream::connect(("127.0.0.1", self.port))
            .unwrap_or_else(|e| panic!("{what}: connect: {e}"));
        sock.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        let mut tls = rustls::StreamOwned::new(conn, sock);
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\
             Authorization: Bearer {}\r\n",
            self.port, self.token
        );
        if !body.is_empty() {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        tls.write_all(head.as_bytes())
            .and_then(|()| tls.write_all(body.as_bytes()))
            .and_then(|()| tls.flush())
            .unwrap_or_else(|e| panic!("{what}: send: {e}"));
        let mut raw = Vec::new();
        let read_err = http::read_until_close(&mut tls, &mut raw);
        http::parse_response(&raw)
            .unwrap_or_else(|| panic!("{what}: no complete answer (read: {read_err:?})"))
    }

    fn get(&self, path: &str) -> http::Response {
        self.request("GET", path, None)
    }

    /// `Ok` once the VM `changed` names (by moref) has `key` = `want`.
    fn vm_has(&self, id: &str, changed: &Value, key: &str, want: &str) -> Result<(), String> {
        let moref = text(changed, "moref");
        let vm = self
            .get(&format!("/api/v1/vcenters/{id}/vms/{moref}"))
            .expect(200, None);
        (vm[key] == want)
            .then_some(())
            .ok_or_else(|| format!("{key} {}", vm[key]))
    }

    fn vcenter(&self, id: &str) -> Value {
        self.get(&format!("/api/v1/vcenters/{id}"))
            .expect(200, None)
    }

    /// Every discovered VM of a vCenter, in pages of 1,000.
    fn all_vms(&self, id: &str) -> Vec<Value> {
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
fn poll<T>(
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
fn text(vm: &Value, key: &str) -> String {
    match vm[key].as_str() {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => panic!("{key} missing or empty in {vm}"),
    }
}

/// What must agree between pyvmomi and Ferry for one VM (both use these field names), disks sorted.
fn seen(vm: &Value) -> Value {
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
fn by_moref(vms: &[Value]) -> BTreeMap<String, Value> {
    let map: BTreeMap<String, Value> = vms.iter().map(|v| (text(v, "moref"), seen(v))).collect();
    assert_eq!(map.len(), vms.len(), "duplicate morefs");
    map
}

/// Asserts two inventories are equal, naming the first differences rather than dumping 1,000 VMs.
#[track_caller]
fn assert_same(ferry: &BTreeMap<String, Value>, pyvmomi: &BTreeMap<String, Value>, when: &str) {
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
fn change(sim: &Vcsim, args: &str) -> Value {
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
fn change_latency(what: &str, done: &Value, check: impl FnMut() -> Result<(), String>) -> f64 {
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

#[test]
fn discovery_of_1000_vms_equals_pyvmomi_and_follows_changes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let app = Appliance::start(&t.path().join("data"), &[]).expect("appliance");
    let sim = Vcsim::start_with_login(VMS_1000, USER, PASSWORD);
    println!(
        "appliance and vcsim (1000 VMs) up in {:.1} s (vcsim {:.1} s)",
        started.elapsed().as_secs_f64(),
        sim.start_time.as_secs_f64()
    );
    let api = Api::new(&app);

    // 1. Added through the CLI; discovery lists every VM.
    let pw = t.path().join("vcenter-password");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let added_at = Instant::now();
    let add = format!(
        "vcenter add --url {} --username {USER} --password-file {} --thumbprint {} --json",
        sim.url,
        pw.display(),
        sim.thumbprint_sha256
    );
    let out = app
        .cli(&add.split_whitespace().collect::<Vec<_>>())
        .unwrap_or_else(|e| panic!("{e:#}\nlog:\n{}", app.log_text()));
    let add_took = added_at.elapsed();
    let view: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let id = text(&view, "id");
    assert_eq!(view["health"], "ok", "{view:#}");
    assert_eq!(view["username"], USER, "{view:#}");
    assert!(
        view.get("password").is_none(),
        "the password came back: {view:#}"
    );
    let (_, discovered_in) = poll(Duration::from_secs(60), "1000 VMs discovered", || {
        let page = api
            .get(&format!("/api/v1/vcenters/{id}/vms?limit=1"))
            .expect(200, None);
        match page["total"].as_u64() {
            Some(1000) => Ok(()),
            other => Err(format!("total {other:?}")),
        }
    });
    println!(
        "discovery: vcenter add {:.2} s (login check), then 1000 VMs in the API {:.2} s later",
        add_took.as_secs_f64(),
        discovered_in.as_secs_f64()
    );
    let vcenter = api.vcenter(&id);
    assert_eq!(vcenter["health"], "ok", "{vcenter:#}");
    assert_eq!(vcenter["vm_count"], 1000, "{vcenter:#}");
    assert!(vcenter["last_sync"].is_string(), "{vcenter:#}");
    assert!(vcenter["last_error"].is_null(), "{vcenter:#}");

    // Equal to pyvmomi's view of the same vcsim, VM by VM.
    let ferry = api.all_vms(&id);
    assert_eq!(ferry.len(), 1000);
    assert!(ferry.iter().all(|v| v["vcenter_id"] == id.as_str()));
    let reference = sim.pyvmomi_inventory();
    let pyvmomi = reference["vms"].as_array().expect("pyvmomi vms");
    assert_eq!(pyvmomi.len(), 1000, "pyvmomi sees {} VMs", pyvmomi.len());
    assert_same(&by_moref(&ferry), &by_moref(pyvmomi), "after discovery");
    println!(
        "inventory equals pyvmomi's for 1000 VMs (pyvmomi retrieval {:.3} s)",
        reference["retrieval_seconds"].as_f64().unwrap_or(f64::NAN)
    );

    // The CLI lists the same VMs.
    let cli: Value = serde_json::from_str(&app.cli(&["vms", "list", "--json"]).unwrap()).unwrap();
    let cli = cli.as_array().expect("vms list --json is an array");
    assert_eq!(cli.len(), 1000, "appliance vms list --json");
    assert_same(&by_moref(cli), &by_moref(&ferry), "CLI against the API");
    let listed: Value =
        serde_json::from_str(&app.cli(&["vcenter", "list", "--json"]).unwrap()).unwrap();
    assert_eq!(listed[0]["id"], id.as_str(), "{listed:#}");
    assert_eq!(listed[0]["vm_count"], 1000, "{listed:#}");

    // Paging outside 1..=1000 and an unknown power state are refused; an unknown vCenter is 404.
    for bad in ["limit=1001", "limit=0", "power_state=onFire"] {
        api.get(&format!("/api/v1/vcenters/{id}/vms?{bad}"))
            .expect(400, Some("invalid_field"));
    }
    api.get("/api/v1/vcenters/no-such-vcenter/vms")
        .expect(404, Some("not_found"));

    // 2. Changes made with pyvmomi arrive incrementally.
    let names: Vec<String> = pyvmomi.iter().map(|v| text(v, "name")).collect();
    let renamed = change(
        &sim,
        &format!("rename --vm {} --to ferry-renamed-vm", names[0]),
    );
    change_latency("rename", &renamed, || {
        api.vm_has(&id, &renamed, "name", "ferry-renamed-vm")
    });
    let off = change(&sim, &format!("power-off --vm {}", names[1]));
    change_latency("power off", &off, || {
        api.vm_has(&id, &off, "power_state", "poweredOff")
    });
    let create = format!(
        "create --name ferry-created-vm --like {} --disk-mb 96",
        names[2]
    );
    let created = change(&sim, &create);
    let moref = text(&created, "moref");
    assert_eq!(created["disks"][0]["capacity_bytes"], 96 << 20, "{created}");
    change_latency("create", &created, || {
        let r = api.get(&format!("/api/v1/vcenters/{id}/vms/{moref}"));
        if r.status != 200 {
            return Err(format!("{} {}", r.status, r.text()));
        }
        let vm = r.json();
        (seen(&vm) == seen(&created))
            .then_some(())
            .ok_or_else(|| format!("Ferry {} / pyvmomi {}", seen(&vm), seen(&created)))
    });

    // After the changes the whole inventory still equals pyvmomi's.
    let ferry = api.all_vms(&id);
    assert_eq!(ferry.len(), 1001, "1000 + the created VM");
    let reference = sim.pyvmomi_inventory();
    let pyvmomi = reference["vms"].as_array().expect("pyvmomi vms");
    assert_same(&by_moref(&ferry), &by_moref(pyvmomi), "after the changes");
    println!(
        "discovery_of_1000_vms total {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// A vcsim started by this test with `scripts/vcsim.sh` on a given port (and, when given, with a
/// given certificate and key): the harness's `Vcsim` always takes a new port and a new certificate.
struct PinnedVcsim {
    dir: tempfile::TempDir,
    env: HashMap<String, String>,
    running: bool,
}

impl PinnedVcsim {
    fn start(port: u16, cert_and_key: Option<(&Path, &Path)>, password: &str) -> PinnedVcsim {
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

    fn sha256(&self) -> &str {
        &self.env["VCSIM_THUMBPRINT_SHA256"]
    }

    /// `scripts/vcsim.sh stop`, once; whether it worked.
    fn try_stop(&mut self) -> bool {
        !std::mem::replace(&mut self.running, false)
            || Command::new("bash")
                .arg(root().join("scripts/vcsim.sh"))
                .arg("stop")
                .arg(self.dir.path().join("state"))
                .status()
                .is_ok_and(|st| st.success())
    }

    fn stop(&mut self) {
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
fn until_unhealthy(
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
fn until_resynced(api: &Api, id: &str, secs: u64, what: &str, synced_before: &Value) -> Value {
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
fn refused_on(r: http::Response, field: &str) -> String {
    let body = r.expect(400, Some("invalid_field"));
    let message = body["message"].as_str().unwrap_or_default().to_string();
    assert!(
        message.starts_with(&format!("{field}:")),
        "not refused on {field}: {body:#}"
    );
    message
}

fn same_thumbprint(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.replace(':', "").to_ascii_lowercase();
    norm(a) == norm(b)
}

#[test]
fn bad_logins_an_outage_a_rotation_and_a_new_certificate() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t = tempfile::tempdir().unwrap();
    let app = Appliance::start(&t.path().join("data"), &[]).expect("appliance");
    let mut sim = Vcsim::start_with_login(SMALL, USER, PASSWORD);
    let api = Api::new(&app);
    let add = |password: &str, thumbprint: &str, url: &str| {
        api.request(
            "POST",
            "/api/v1/vcenters",
            Some(&json!({"url": url, "username": USER, "password": password,
                "thumbprint": thumbprint})),
        )
    };
    let nothing_stored = || {
        let list = api.get("/api/v1/vcenters").expect(200, None);
        assert_eq!(list["total"], 0, "a refused vCenter was stored: {list:#}");
    };

    // Refused at add: wrong password, wrong thumbprint (naming the real one), nobody listening.
    let message = refused_on(
        add("not-the-password", &sim.thumbprint_sha256, &sim.url),
        "password",
    );
    assert!(
        !message.contains("not-the-password"),
        "echoes the password: {message}"
    );
    nothing_stored();
    let real = sim.thumbprint_sha256.clone();
    let flipped = format!(
        "{}{}",
        if real.starts_with("00") { "11" } else { "00" },
        &real[2..]
    );
    let message = refused_on(add(PASSWORD, &flipped, &sim.url), "thumbprint");
    assert!(
        message
            .to_ascii_uppercase()
            .contains(&real.to_ascii_uppercase()),
        "the message does not name vcsim's SHA-256 thumbprint {real}: {message}"
    );
    nothing_stored();
    let nobody = format!("https://127.0.0.1:{}/sdk", ferry_tests::free_port());
    refused_on(add(PASSWORD, &real, &nobody), "url");
    nothing_stored();

    // Added; discovered.
    let view = add(PASSWORD, &real, &sim.url).expect(201, None);
    let id = text(&view, "id");
    let synced = until_resynced(&api, &id, 30, "first list", &Value::Null);
    assert_eq!(add(PASSWORD, &real, &sim.url).status, 409, "added twice");

    // vcsim stops: unhealthy within 15 s, and the inventory is kept meanwhile. `sim.stop` returns
    // once the process is gone (vcsim may take up to 10 s of it, SIGKILL included, while Ferry's
    // long poll is open): the 15 s count from there.
    let port = sim.port;
    let (cert, key) = (t.path().join("vcsim.crt"), t.path().join("vcsim.key"));
    std::fs::copy(&sim.cert, &cert).unwrap();
    std::fs::copy(sim.dir.join("vcsim.key"), &key).unwrap();
    let stopping = Instant::now();
    sim.stop().expect("stop vcsim");
    println!(
        "vcsim.sh stop took {:.2} s",
        stopping.elapsed().as_secs_f64()
    );
    let down = until_unhealthy(&api, &id, 15, "vcsim stopped", |_| true);
    assert_eq!(
        down["vm_count"], SMALL_VMS,
        "inventory dropped during the outage: {down:#}"
    );

    // Back on the same port with the same certificate and password: discovery recovers by itself.
    let mut back = PinnedVcsim::start(port, Some((&cert, &key)), PASSWORD);
    assert!(same_thumbprint(back.sha256(), &real), "{:?}", back.env);
    let synced = until_resynced(&api, &id, 90, "vcsim back", &synced);

    // The password is rotated in the vCenter: unhealthy, waiting for a new credential.
    back.stop();
    let rotated = "vcsim-Rotated-2";
    let mut back = PinnedVcsim::start(port, Some((&cert, &key)), rotated);
    until_unhealthy(&api, &id, 90, "password rotated", |v| {
        v["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("password")
    });
    let patch = |body: Value| api.request("PATCH", &format!("/api/v1/vcenters/{id}"), Some(&body));
    refused_on(patch(json!({"password": PASSWORD})), "password");
    assert_eq!(
        api.vcenter(&id)["health"],
        "unhealthy",
        "a refused PATCH healed it"
    );
    patch(json!({})).expect(400, None);
    let fixed = patch(json!({"password": rotated})).expect(200, None);
    assert_eq!(fixed["health"], "ok", "{fixed:#}");
    let synced = until_resynced(&api, &id, 15, "new password PATCHed", &synced);

    // A new certificate: unhealthy with the thumbprint it presents; accepting that one fixes it.
    back.stop();
    let back = PinnedVcsim::start(port, None, rotated);
    let new_sha = back.sha256().to_string();
    assert!(
        !same_thumbprint(&new_sha, &real),
        "vcsim kept its certificate"
    );
    let bad = until_unhealthy(&api, &id, 90, "new certificate", |v| {
        v["presented_thumbprint"]
            .as_str()
            .is_some_and(|p| same_thumbprint(p, &new_sha))
    });
    refused_on(patch(json!({"thumbprint": flipped})), "thumbprint");
    let fixed = patch(json!({"thumbprint": text(&bad, "presented_thumbprint")})).expect(200, None);
    assert_eq!(fixed["health"], "ok", "{fixed:#}");
    assert!(
        same_thumbprint(&text(&fixed, "thumbprint"), &new_sha),
        "{fixed:#}"
    );
    until_resynced(&api, &id, 15, "new thumbprint PATCHed", &synced);
}
