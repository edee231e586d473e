//! `mobility register` reports the machine's BIOS UUID: `--bios-uuid` (normalized, or refused before
//! anything is sent), else what the machine shows; and an appliance older than the field still
//! registers the agent (the agent asks again without it). Runs the real binary against the stand-in.

mod support;

use std::path::Path;

use support::StandInAppliance;

const PASS: &str = "open sesame";

async fn register(app: &StandInAppliance, dir: &Path, extra: &[&str]) -> (bool, String) {
    let pass_file = dir.join("pass");
    std::fs::write(&pass_file, format!("{PASS}\n")).unwrap();
    let state = dir.join(format!("state-{}", extra.len()));
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mobility"))
        .arg("register")
        .args(["--appliance", &app.addr_string(), "--passphrase-file"])
        .arg(&pass_file)
        .args(["--ca-fingerprint", &app.ca_fingerprint, "--state-dir"])
        .arg(&state)
        .args(["--hostname", "test-vm"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_override_is_sent_in_canonical_form() {
    let app = StandInAppliance::start(PASS, 1 << 20).await;
    let dir = tempfile::tempdir().unwrap();
    let (ok, err) = register(
        &app,
        dir.path(),
        &["--bios-uuid", "4C4C4544004235108052B4C04F4B4D32"],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(
        app.lock().bios_uuids,
        [Some("4c4c4544-0042-3510-8052-b4c04f4b4d32".to_string())]
    );
}

#[tokio::test]
async fn a_bad_override_is_refused_before_anything_is_sent() {
    let app = StandInAppliance::start(PASS, 1 << 20).await;
    let dir = tempfile::tempdir().unwrap();
    for bad in ["not-a-uuid", "4c4c4544-0042-3510-8052-b4c04f4b4d3", ""] {
        let (ok, err) = register(&app, dir.path(), &["--bios-uuid", bad]).await;
        assert!(!ok, "{bad:?} accepted");
        assert!(err.contains("--bios-uuid"), "{bad:?}: {err}");
    }
    let s = app.lock();
    assert!(s.registered.is_empty());
    assert_eq!(s.accepted, 0, "nothing reached the appliance");
}

#[tokio::test]
async fn without_the_override_the_machine_uuid_is_sent_when_readable() {
    let app = StandInAppliance::start(PASS, 1 << 20).await;
    let dir = tempfile::tempdir().unwrap();
    let (ok, err) = register(&app, dir.path(), &[]).await;
    assert!(ok, "{err}");
    // Whatever this machine shows (nothing in most containers, or without root).
    assert_eq!(app.lock().bios_uuids, [mobility::bios_uuid::read_local()]);
}

#[tokio::test]
async fn an_appliance_older_than_the_field_still_registers_the_agent() {
    let app = StandInAppliance::start(PASS, 1 << 20).await;
    app.lock().predates_bios_uuid = true;
    let dir = tempfile::tempdir().unwrap();
    let (ok, err) = register(
        &app,
        dir.path(),
        &["--bios-uuid", "42172e0b-9a4c-4c3f-8d2e-0123456789ab"],
    )
    .await;
    assert!(ok, "{err}");
    assert!(err.contains("registering again without it"), "{err}");
    let s = app.lock();
    assert_eq!(s.hung_up_registers, 1);
    assert_eq!(s.bios_uuids, [None]);
    assert_eq!(s.registered, ["test-vm"]);
}
