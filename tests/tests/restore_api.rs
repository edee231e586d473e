//! Restore jobs over the API, end to end: a real agent replicates one point of a seeded disk image, then
//! `POST /api/v1/restores` (admin token, HTTPS trusting only the appliance's CA) writes it back under
//! `<data dir>/restores` as raw and as VHD, both equal to the source; bad paths, an existing file, an
//! unknown point and a viewer are refused with the documented codes; the audit log names the start.

use anyhow::Result;
use ferry_tests::{sha256_file, Agent, Appliance};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ferry_tests::web_harness as http;

/// 28 MiB: several extents and packs, small enough for a quick run.
const DISK_BYTES: u64 = 28 << 20;
const MIB: u64 = 1 << 20;

/// Zeroed byte ranges `(offset, len)`: whole blocks the agent skips (one at the very end, so a raw
/// restore must still come out at full length) and a short run inside a block that must be kept.
const ZERO_RANGES: [(u64, u64); 4] = [
    (3 * MIB, MIB),
    (10 * MIB + 64 * 1024, 2 * MIB),
    (17 * MIB + 1000, 10_000),
    (DISK_BYTES - MIB, MIB),
];

/// Seeded xorshift bytes (nothing zero, nothing that dedups), then the zero ranges.
fn make_image(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let mut x: u64 = 0x7e57_4e57_0a91_0001;
    let mut buf = vec![0u8; MIB as usize];
    let mut at = 0u64;
    while at < DISK_BYTES {
        for b in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
        }
        for (off, len) in ZERO_RANGES {
            let (lo, hi) = (off.max(at), (off + len).min(at + MIB));
            if lo < hi {
                buf[(lo - at) as usize..(hi - at) as usize].fill(0);
            }
        }
        f.write_all(&buf).unwrap();
        at += MIB;
    }
}

/// Bytes of the image in blocks that are not all zero: what a restore writes and counts.
fn nonzero_block_bytes(path: &Path) -> u64 {
    let mut f = std::fs::File::open(path).unwrap();
    let mut block = vec![0u8; wire::BLOCK_SIZE as usize];
    let mut total = 0;
    loop {
        let mut n = 0;
        while n < block.len() {
            match f.read(&mut block[n..]).unwrap() {
                0 => break,
                k => n += k,
            }
        }
        if n == 0 {
            return total;
        }
        if block[..n].iter().any(|&b| b != 0) {
            total += n as u64;
        }
    }
}

/// One request over a fresh TLS connection that trusts only the appliance's CA.
fn https(
    app: &Appliance,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<http::Response> {
    ferry_tests::web_harness::appliance_https(app, method, path, token, body)
}

fn get(app: &Appliance, path: &str, token: &str) -> http::Response {
    https(app, "GET", path, Some(token), None).unwrap_or_else(|e| panic!("GET {path}: {e:#}"))
}

fn post(app: &Appliance, path: &str, token: &str, body: Value) -> http::Response {
    https(app, "POST", path, Some(token), Some(&body))
        .unwrap_or_else(|e| panic!("POST {path}: {e:#}"))
}

/// Polls a job until it leaves `running`; fails after 60 s with the last view and the log.
fn wait_job(app: &Appliance, token: &str, id: &str) -> Value {
    let start = Instant::now();
    loop {
        let job = get(app, &format!("/api/v1/restores/{id}"), token).expect(200, None);
        if job["state"] != "running" {
            return job;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "restore job {id} still running after 60 s: {job:#}\nlog:\n{}",
            app.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Asserts a job ended `succeeded` with full progress; returns bytes_total.
#[track_caller]
fn assert_succeeded(job: &Value, point: &str, path: &Path, format: &str) -> u64 {
    assert_eq!(job["state"], "succeeded", "{job:#}");
    assert_eq!(
        job["point_id"], point,
        "\"latest\" resolves to the point: {job:#}"
    );
    assert_eq!(job["path"], path.to_str().unwrap(), "{job:#}");
    assert_eq!(job["format"], format, "{job:#}");
    assert!(job["error"].is_null(), "{job:#}");
    assert!(job["finished_at"].is_string(), "{job:#}");
    let total = job["bytes_total"].as_u64().expect("bytes_total");
    assert!(total > 0, "{job:#}");
    assert_eq!(job["bytes_done"].as_u64(), Some(total), "{job:#}");
    total
}

fn step(since: &mut Instant, total: &mut Duration, name: &str) {
    eprintln!("step {name}: {:?}", since.elapsed());
    *total += since.elapsed();
    *since = Instant::now();
}

#[test]
fn restore_jobs_over_the_api() {
    let t = tempfile::tempdir().unwrap();
    let img: PathBuf = t.path().join("source.img");
    make_image(&img);
    let source_sha = sha256_file(&img);
    let expect_total = nonzero_block_bytes(&img);
    assert!(
        expect_total < DISK_BYTES,
        "the image has whole zero blocks to skip"
    );
    let mut total = Duration::ZERO;
    let mut since = Instant::now();
    let app = Appliance::start(&t.path().join("data"), &[]).unwrap();
    let admin = app.admin_token().unwrap();
    let restores = app.data_dir.join("restores");
    step(&mut since, &mut total, "start and unattended setup");

    let agent = Agent::register(&app, &t.path().join("agent")).unwrap();
    let point = agent
        .once(&[&img])
        .unwrap_or_else(|e| panic!("{e:#}\nlog:\n{}", app.log_text()));
    assert!(!point.is_empty(), "the agent printed no point id");
    // The catalog records a point from a broadcast, a moment after the agent heard it is durable.
    let start = Instant::now();
    let (machine, disk) = loop {
        let page = get(&app, "/api/v1/points", &admin).expect(200, None);
        let found = page["items"]
            .as_array()
            .and_then(|l| l.iter().find(|p| p["point_id"] == point.as_str()))
            .cloned();
        if let Some(p) = found {
            assert_eq!(p["disks"].as_array().map(Vec::len), Some(1), "{p:#}");
            assert_eq!(p["disks"][0]["size_bytes"], DISK_BYTES, "{p:#}");
            let m = p["machine_id"].as_str().unwrap().to_string();
            break (m, p["disks"][0]["disk_id"].as_str().unwrap().to_string());
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "point {point} not listed within 15 s: {page:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    step(&mut since, &mut total, "register and replicate one point");

    // 1. Raw, "latest", into a sub-folder that does not exist yet.
    let raw_req = json!({"machine_id": machine, "disk_id": disk, "point_id": "latest",
        "path": "r/disk.img", "format": "raw"});
    let started = post(&app, "/api/v1/restores", &admin, raw_req.clone()).expect(202, None);
    assert_eq!(started["state"], "running", "{started:#}");
    assert_eq!(started["requested_by"], "admin", "{started:#}");
    assert_eq!(started["machine_id"], machine.as_str(), "{started:#}");
    assert_eq!(started["disk_id"], disk.as_str(), "{started:#}");
    let raw_id = started["id"].as_str().expect("job id").to_string();
    let raw_out = restores.join("r").join("disk.img");
    let job = wait_job(&app, &admin, &raw_id);
    let bytes_total = assert_succeeded(&job, &point, &raw_out, "raw");
    assert_eq!(
        bytes_total, expect_total,
        "bytes_total counts the non-zero blocks: {job:#}"
    );
    assert_eq!(
        std::fs::metadata(&raw_out).unwrap().len(),
        DISK_BYTES,
        "a raw restore is the disk's full length, zero tail included"
    );
    assert_eq!(sha256_file(&raw_out), source_sha, "raw restore differs");
    assert!(
        !restores.join("r").join("disk.img.partial").exists(),
        "the partial file was left behind"
    );
    step(&mut since, &mut total, "raw restore job");

    // 2. VHD (the format named explicitly, by the point's own id).
    let vhd_req = json!({"machine_id": machine, "disk_id": disk, "point_id": point,
        "path": "disk.vhd", "format": "vhd"});
    let started = post(&app, "/api/v1/restores", &admin, vhd_req).expect(202, None);
    assert_eq!(started["state"], "running", "{started:#}");
    let vhd_id = started["id"].as_str().expect("job id").to_string();
    assert_ne!(vhd_id, raw_id);
    let vhd_out = restores.join("disk.vhd");
    let job = wait_job(&app, &admin, &vhd_id);
    assert_eq!(
        assert_succeeded(&job, &point, &vhd_out, "vhd"),
        expect_total,
        "{job:#}"
    );
    let vhd_len = std::fs::metadata(&vhd_out).unwrap().len();
    assert!(vhd_len > 512, "a VHD has at least its footer: {vhd_len}");
    if Command::new("qemu-img").arg("--version").output().is_ok() {
        let back = t.path().join("back.raw");
        let conv = Command::new("qemu-img")
            .args(["convert", "-f", "vpc", "-O", "raw"])
            .arg(&vhd_out)
            .arg(&back)
            .output()
            .unwrap();
        assert!(
            conv.status.success(),
            "qemu-img convert: {}",
            String::from_utf8_lossy(&conv.stderr)
        );
        assert_eq!(
            std::fs::metadata(&back).unwrap().len(),
            DISK_BYTES,
            "qemu sees the VHD's current size"
        );
        assert_eq!(sha256_file(&back), source_sha, "VHD restore differs");
    } else {
        eprintln!(
            "qemu-img is not installed (scripts/install-test-deps.sh): VHD content not checked"
        );
    }
    step(&mut since, &mut total, "vhd restore job");

    // 3. Bad input: each refused with its code, and none leaves a job behind.
    let mut bad = raw_req.clone();
    bad["path"] = json!("../x");
    let r = post(&app, "/api/v1/restores", &admin, bad);
    r.expect(400, Some("invalid_field"));
    assert!(r.text().contains("path"), "names the field: {}", r.text());
    assert!(!app.data_dir.join("x").exists(), "wrote outside the folder");

    let r = post(&app, "/api/v1/restores", &admin, raw_req.clone());
    r.expect(409, Some("conflict"));
    assert_eq!(
        sha256_file(&raw_out),
        source_sha,
        "a refused restore touched the existing file"
    );

    let mut unknown = raw_req.clone();
    unknown["point_id"] = json!("00000000deadbeef");
    unknown["path"] = json!("r/unknown.img");
    post(&app, "/api/v1/restores", &admin, unknown).expect(404, Some("not_found"));
    assert!(!restores.join("r").join("unknown.img").exists());

    let viewer_pass = "Viewer-Restore-Passw0rd";
    let user = post(
        &app,
        "/api/v1/users",
        &admin,
        json!({"name": "viewer1", "role": "viewer", "password": viewer_pass}),
    )
    .expect(201, None);
    assert_eq!(user["role"], "viewer", "{user:#}");
    let login = https(
        &app,
        "POST",
        "/api/v1/session",
        None,
        Some(&json!({"username": "viewer1", "password": viewer_pass})),
    )
    .unwrap()
    .expect(200, None);
    let viewer = login["token"].as_str().expect("session token").to_string();
    let mut fresh = raw_req.clone();
    fresh["path"] = json!("viewer.img");
    post(&app, "/api/v1/restores", &viewer, fresh).expect(403, Some("forbidden"));
    assert!(!restores.join("viewer.img").exists());
    // Reading jobs is a viewer's right.
    let seen = get(&app, &format!("/api/v1/restores/{raw_id}"), &viewer).expect(200, None);
    assert_eq!(seen["state"], "succeeded", "{seen:#}");

    let list = get(&app, "/api/v1/restores", &admin).expect(200, None);
    assert_eq!(list["total"], 2, "refused requests recorded jobs: {list:#}");
    assert_eq!(
        list["items"][0]["id"],
        vhd_id.as_str(),
        "newest first: {list:#}"
    );
    assert_eq!(list["items"][1]["id"], raw_id.as_str(), "{list:#}");
    step(&mut since, &mut total, "bad input");

    // 4. The audit log: who started each job, and that it finished.
    let audit = get(&app, "/api/v1/audit?limit=1000", &admin).expect(200, None);
    let events = audit["items"].as_array().expect("audit items");
    for id in [&raw_id, &vhd_id] {
        let of = |event: &str| {
            events
                .iter()
                .find(|e| {
                    e["event"] == event
                        && e["detail"]
                            .as_str()
                            .is_some_and(|d| d.contains(id.as_str()))
                })
                .unwrap_or_else(|| panic!("no {event} of job {id}: {audit:#}"))
        };
        let started = of("restore_started");
        assert_eq!(started["actor"], "admin", "{started:#}");
        let finished = of("restore_finished");
        eprintln!("restore_finished of {id} by actor {}", finished["actor"]);
    }
    // The viewer's refusal started nothing.
    assert_eq!(
        events
            .iter()
            .filter(|e| e["event"] == "restore_started")
            .count(),
        2,
        "{audit:#}"
    );
    step(&mut since, &mut total, "audit");
    eprintln!("restore_api total {total:?}");
}
