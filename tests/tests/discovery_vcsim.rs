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

use ferry_tests::vcsim::Vcsim;
use ferry_tests::Appliance;
use serde_json::{json, Value};
use std::sync::Mutex;
use std::time::{Duration, Instant};

// The HTTPS client, the inventory comparison and the polling helpers, kept apart so this file holds
// the tests themselves.
#[path = "discovery_vcsim/support.rs"]
mod support;

use support::{
    assert_same, by_moref, change, change_latency, poll, refused_on, same_thumbprint, seen, text,
    until_resynced, until_unhealthy, Api, PinnedVcsim,
};

const USER: &str = "ferry-discovery";
const PASSWORD: &str = "vcsim-Passw0rd-1";
/// 4 clusters x 250 VMs.
const VMS_1000: &[&str] = &["-cluster", "4", "-vm", "250"];
/// The outage test needs a login, not volume.
const SMALL: &[&str] = &["-cluster", "1", "-vm", "8"];
const SMALL_VMS: usize = 8;

/// One test at a time: both start vcsim and an appliance, and the latencies they print and bound
/// mean little when the other test competes for the same two cores.
static SERIAL: Mutex<()> = Mutex::new(());

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
