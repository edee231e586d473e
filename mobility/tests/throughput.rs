//! Loopback throughput of a first full sync against the stand-in appliance (tests/support).
//! Ignored by default (it writes a large file); run with
//! `cargo test -p mobility --release --test throughput -- --ignored --nocapture`
//! and FERRY_THROUGHPUT_MIB to change the size (default 1024).

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use mobility::agent::{Agent, RunOptions};
use support::StandInAppliance;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn first_sync_throughput() {
    let mib: usize = std::env::var("FERRY_THROUGHPUT_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let app = StandInAppliance::start("pw", 64 << 20).await;
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let pass = tmp.path().join("pass");
    std::fs::write(&pass, "pw").unwrap();
    let st = tokio::process::Command::new(env!("CARGO_BIN_EXE_mobility"))
        .args([
            "register",
            "--appliance",
            &app.addr_string(),
            "--passphrase-file",
        ])
        .arg(&pass)
        .args(["--ca-fingerprint", &app.ca_fingerprint, "--state-dir"])
        .arg(&state)
        .status()
        .await
        .unwrap();
    assert!(st.success());
    let disk = tmp.path().join("disk.img");
    {
        // incompressible-looking, never-zero blocks: every block is sent
        let mut f = std::io::BufWriter::new(std::fs::File::create(&disk).unwrap());
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut buf = vec![0u8; 1 << 20];
        for _ in 0..mib {
            for w in buf.chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                w.copy_from_slice(&x.to_le_bytes());
            }
            f.write_all(&buf).unwrap();
        }
    }
    let mut o = RunOptions::new(vec![disk.clone()]);
    o.state_dir = Some(state.clone());
    o.once = true;
    o.timeout = Duration::from_secs(600);
    let agent = Agent::new(o.clone()).unwrap();
    let t = Instant::now();
    agent.run().await.unwrap();
    let secs = t.elapsed().as_secs_f64();
    agent.shutdown();
    println!(
        "first sync: {mib} MiB in {secs:.2} s = {:.0} MiB/s",
        mib as f64 / secs
    );
    let agent = Agent::new(o).unwrap();
    let t = Instant::now();
    agent.run().await.unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "rescan, nothing changed: {mib} MiB in {secs:.2} s = {:.0} MiB/s",
        mib as f64 / secs
    );
}
