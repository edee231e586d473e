//! The test vCenter itself: vcsim built from Debian's govmomi with the project's launcher
//! (`scripts/vcsim.sh`), and pyvmomi's reference inventory of it. Later vCenter tests rely on
//! what is checked here: a 1,000-VM inventory comes up in seconds and pyvmomi sees every VM with
//! a name, a BIOS UUID and a disk; a login is enforced; bad launcher flags are refused; stop and
//! drop leave no process and no folder behind. Timings are printed (run with --nocapture).

use ferry_tests::vcsim::{build, process_alive, Vcsim};
use serde_json::Value;
use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

/// 4 clusters × 250 VMs in each cluster's root pool (hosts per cluster do not multiply VMs).
const VMS_1000: &[&str] = &["-cluster", "4", "-vm", "250"];
const VMS_2000: &[&str] = &["-cluster", "4", "-vm", "500"];

fn vms(inv: &Value) -> &Vec<Value> {
    inv["vms"].as_array().expect("inventory has a vms list")
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Checks every VM of a pyvmomi inventory and returns the retrieval time it reported.
fn check_inventory(inv: &Value, want: usize) -> f64 {
    let list = vms(inv);
    assert_eq!(list.len(), want, "VMs listed");
    assert_eq!(inv["count"], want, "count field");
    let mut names = HashSet::new();
    let mut bios = HashSet::new();
    for vm in list {
        let name = vm["name"].as_str().unwrap_or_default();
        assert!(!name.is_empty(), "VM without a name: {vm}");
        let uuid = vm["bios_uuid"].as_str().unwrap_or_default();
        assert!(is_uuid(uuid), "VM {name} has no BIOS uuid: {vm}");
        assert!(
            is_uuid(vm["instance_uuid"].as_str().unwrap_or_default()),
            "VM {name} has no instance uuid: {vm}"
        );
        assert_eq!(vm["power_state"], "poweredOn", "VM {name}");
        let disks = vm["disks"].as_array().expect("disks list");
        assert!(!disks.is_empty(), "VM {name} has no disk: {vm}");
        for d in disks {
            assert!(
                d["capacity_bytes"].as_u64().unwrap_or(0) > 0,
                "VM {name}: disk without a size: {d}"
            );
            let file = d["file"].as_str().unwrap_or_default();
            assert!(
                file.starts_with("[LocalDS_0] ") && file.ends_with(".vmdk"),
                "VM {name}: disk backing {file:?}"
            );
        }
        assert!(names.insert(name.to_string()), "duplicate name {name}");
        assert!(bios.insert(uuid.to_string()), "duplicate BIOS uuid {uuid}");
    }
    inv["retrieval_seconds"]
        .as_f64()
        .expect("--time reports retrieval_seconds")
}

#[test]
fn vcsim_with_1000_vms_lists_every_vm_through_pyvmomi() {
    let mut sim = Vcsim::start(VMS_1000);
    assert!(sim.url.starts_with("https://127.0.0.1:"), "{}", sim.url);
    assert_eq!(
        sim.thumbprint.len(),
        59,
        "SHA-1 colon hex: {}",
        sim.thumbprint
    );
    assert_eq!(sim.thumbprint_sha256.len(), 95, "{}", sim.thumbprint_sha256);
    assert!(sim.cert.is_file());
    assert!(
        sim.log_text().contains("inventory: 1000 VMs"),
        "{}",
        sim.log_text()
    );
    let inv = sim.pyvmomi_inventory();
    let took = check_inventory(&inv, 1000);
    assert_eq!(inv["about"]["apiVersion"], "6.5");
    println!(
        "vcsim 1000 VMs: start {:.2} s, pyvmomi retrieval {took:.3} s",
        secs(sim.start_time)
    );

    let (pid, dir) = (sim.pid, sim.dir.clone());
    sim.stop().expect("stop");
    assert!(!process_alive(pid), "vcsim still runs");
    assert!(!dir.exists(), "{} left behind", dir.display());
}

/// SOAP Login with curl (certificate verified against the vcsim's own): the raw fault body, so
/// the check does not depend on any one client library.
fn soap_login(sim: &Vcsim, user: &str, password: &str) -> String {
    let body = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:vim25="urn:vim25"><soapenv:Body><vim25:Login><vim25:_this type="SessionManager">SessionManager</vim25:_this><vim25:userName>{user}</vim25:userName><vim25:password>{password}</vim25:password></vim25:Login></soapenv:Body></soapenv:Envelope>"#
    );
    let out = Command::new("curl")
        .args(["-s", "--max-time", "30", "--cacert"])
        .arg(&sim.cert)
        .args(["-H", "Content-Type: text/xml; charset=utf-8"])
        .args(["-H", "SOAPAction: \"urn:vim25/6.5\""])
        .args(["--data-binary", &body, &sim.url])
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn vcsim_with_a_login_refuses_a_wrong_password() {
    let sim = Vcsim::start_with_login(&["-vm", "1"], "ferry", "Right-Pass-1");

    let wrong = sim
        .run_pyvmomi(sim.pyvmomi_command("ferry", "Wrong-Pass-1"))
        .expect("run pyvmomi");
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert_eq!(wrong.status.code(), Some(3), "pyvmomi: {err}");
    assert!(err.contains("InvalidLogin"), "{err}");

    let other_user = sim
        .run_pyvmomi(sim.pyvmomi_command("root", "Right-Pass-1"))
        .expect("run pyvmomi");
    assert_eq!(other_user.status.code(), Some(3), "another user name");

    let fault = soap_login(&sim, "ferry", "Wrong-Pass-1");
    assert!(
        fault.contains("InvalidLogin") && fault.contains("Fault"),
        "{fault}"
    );
    let ok = soap_login(&sim, "ferry", "Right-Pass-1");
    assert!(
        ok.contains("LoginResponse") && !ok.contains("Fault"),
        "{ok}"
    );

    // The right login lists the VM.
    check_inventory(&sim.pyvmomi_inventory(), 1);
}

#[test]
fn vcsim_refuses_bad_flags_with_a_reason() {
    for (flags, reason) in [
        (&["-l", "0.0.0.0:0"][..], "only loopback"),
        (&["-l", "localhost:0"][..], "loopback IP"),
        (&["-l", "127.0.0.1"][..], "missing port"),
        (&["-vm", "-1"][..], "between 0 and"),
        (&["-dc", "0"][..], "at least one datacenter"),
        (&["-ds", "0"][..], "at least one datastore"),
        (&["-cluster", "1000", "-vm", "1000"][..], "at most 100000"),
        (&["-vm", "many"][..], "invalid value"),
        (&["-username", "ferry"][..], "non-empty password"),
        (&["-password", "x"][..], "needs -username"),
        (&["-tlscert", "/nonexistent.pem"][..], "load certificate"),
        (&["-pidfile", "/tmp/x.pid"][..], "set by this script"),
        (&["stray"][..], "unexpected arguments"),
    ] {
        let err = match Vcsim::try_start(flags) {
            Ok(_) => panic!("vcsim started with {flags:?}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(reason), "{flags:?}: {err}");
    }
    let err = Vcsim::try_start_with_login(&[], "ferry", "")
        .err()
        .expect("an empty password is refused");
    assert!(format!("{err}").contains("non-empty"), "{err}");
}

#[test]
fn vcsim_stops_on_drop_and_a_wrong_thumbprint_is_refused() {
    let (pid, dir) = {
        let sim = Vcsim::start(&[]);
        assert!(process_alive(sim.pid));
        check_inventory(&sim.pyvmomi_inventory(), 2);
        // pyvmomi pinned to the right SHA-256 thumbprint connects, a changed one does not.
        let pinned = |thumb: &str| {
            let mut cmd = Command::new(ferry_tests::web_harness::venv_dir().join("bin/python"));
            cmd.arg(ferry_tests::root().join("scripts/pyvmomi_inventory.py"))
                .args(["--host", "127.0.0.1", "--port", &sim.port.to_string()])
                .args(["--thumbprint", thumb])
                .env("VSPHERE_PASSWORD", "pass");
            sim.run_pyvmomi(cmd).expect("run pyvmomi")
        };
        assert!(pinned(&sim.thumbprint_sha256).status.success());
        assert!(pinned(&sim.thumbprint).status.success());
        let mut changed = sim.thumbprint_sha256.clone();
        changed.replace_range(
            0..2,
            if changed.starts_with("00") {
                "11"
            } else {
                "00"
            },
        );
        let refused = pinned(&changed);
        assert_eq!(refused.status.code(), Some(4), "{refused:?}");
        (sim.pid, sim.dir.clone())
    };
    assert!(!process_alive(pid), "vcsim survived the drop");
    assert!(!dir.exists(), "{} left behind", dir.display());
}

/// Start times for 2 and 2,000 VMs and pyvmomi's retrieval time for 2,000 VMs (best of three):
/// the baseline issue 4's discovery benchmark compares against.
#[test]
fn vcsim_start_and_pyvmomi_retrieval_times() {
    let small = Vcsim::start(&[]);
    let small_start = small.start_time;
    drop(small);

    let big = Vcsim::start(VMS_2000);
    check_inventory(&big.pyvmomi_inventory(), 2000);
    let out = big
        .run_pyvmomi({
            let mut c = big.pyvmomi_command(&big.username, &big.password);
            c.args(["--repeat", "3"]);
            c
        })
        .expect("run pyvmomi");
    assert!(out.status.success(), "{out:?}");
    let inv: Value = serde_json::from_slice(&out.stdout).expect("json");
    let rounds: Vec<f64> = inv["retrieval_seconds"]
        .as_array()
        .expect("three timings")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert_eq!(rounds.len(), 3);
    let best = rounds.iter().cloned().fold(f64::INFINITY, f64::min);
    println!(
        "vcsim start: 2 VMs {:.2} s, 2000 VMs {:.2} s ({}); pyvmomi retrieval of 2000 VMs: best {best:.3} s of {rounds:?}",
        secs(small_start),
        secs(big.start_time),
        big.log_text().lines().next().unwrap_or_default(),
    );
    // Generous bounds: a regression to minutes (e.g. a per-VM call) must fail, noise must not.
    assert!(big.start_time < Duration::from_secs(60), "2000-VM start");
    assert!(best < 60.0, "pyvmomi retrieval");
}

/// A build from an empty Go cache into an empty build folder: what a fresh machine pays once.
/// It keeps 2 cores busy for a while, so it runs only when asked for.
#[test]
#[ignore = "rebuilds vcsim from an empty Go cache; run with --ignored to measure"]
fn vcsim_builds_from_a_clean_go_cache() {
    build().expect("dependencies and the cached build");
    let gocache = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(ferry_tests::root().join("scripts/vcsim.sh"))
        .arg("build")
        .env("GOCACHE", gocache.path())
        .env("VCSIM_HOME", home.path())
        .output()
        .expect("run vcsim.sh build");
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(bin.starts_with(&home.path().to_string_lossy().into_owned()));
    let selftest = Command::new(&bin).arg("selftest").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&selftest.stdout).trim(), "ok");
    println!(
        "vcsim build from a clean Go cache: {:.1} s, {} bytes",
        secs(took),
        std::fs::metadata(&bin).unwrap().len()
    );
}
