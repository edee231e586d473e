//! A real agent registered with `--bios-uuid` is stored with that UUID (lower case, 8-4-4-4-12), the
//! field discovery matches vCenter VMs on; an agent without it is stored without one. Checked in the
//! state database through `appliance agents list --json` with the daemon stopped (its offline path
//! prints the stored records); the daemon's API view of agents does not carry the field.

use std::path::Path;
use std::process::Command;

use ferry_tests::{bin, Appliance};
use serde_json::Value;

const REPORTED: &str = "4C4C4544-0042-3510-8052-B4C04F4B4D32";
const STORED: &str = "4c4c4544-0042-3510-8052-b4c04f4b4d32";
const PRODUCT_UUID: &str = "/sys/class/dmi/id/product_uuid";

/// `mobility register` with the appliance's passphrase and CA fingerprint, plus `extra`.
fn register(app: &Appliance, state_dir: &Path, hostname: &str, extra: &[&str]) {
    let pass = app.cli(&["passphrase", "show"]).unwrap();
    let fp = app.cli(&["fingerprint"]).unwrap();
    let pass_file = state_dir.with_extension("pass");
    std::fs::write(&pass_file, pass.trim()).unwrap();
    let out = Command::new(bin("mobility"))
        .args(["register", "--appliance", &app.addr(), "--passphrase-file"])
        .arg(&pass_file)
        .args(["--ca-fingerprint", fp.trim(), "--state-dir"])
        .arg(state_dir)
        .args(["--hostname", hostname])
        .args(extra)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mobility register failed: {}\nappliance log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        app.log_text()
    );
}

fn agents(app: &Appliance) -> Vec<Value> {
    let text = app
        .cli(&["agents", "list", "--json"])
        .unwrap_or_else(|e| panic!("{e:#}\nlog:\n{}", app.log_text()));
    let list: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    list.as_array().expect("agents list is an array").clone()
}

fn by_hostname<'a>(agents: &'a [Value], hostname: &str) -> &'a Value {
    agents
        .iter()
        .find(|a| a["hostname"] == hostname)
        .unwrap_or_else(|| panic!("no agent {hostname}: {agents:#?}"))
}

#[test]
fn the_bios_uuid_an_agent_reports_is_stored_with_its_registration() {
    let t = tempfile::tempdir().unwrap();
    let mut app = Appliance::start(&t.path().join("appliance"), &[]).unwrap();
    register(
        &app,
        &t.path().join("with"),
        "vm-with-uuid",
        &["--bios-uuid", REPORTED],
    );
    register(&app, &t.path().join("without"), "vm-without-uuid", &[]);
    // An override that is not a UUID is refused by the agent before it connects.
    let out = Command::new(bin("mobility"))
        .args(["register", "--appliance", &app.addr()])
        .args(["--passphrase-file", "unused", "--ca-fingerprint", "00"])
        .args(["--bios-uuid", "not-a-uuid"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--bios-uuid"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Through the daemon: both agents, and no third one from the refused override.
    assert_eq!(agents(&app).len(), 2);

    let exit = app.stop().unwrap();
    assert!(exit.success(), "appliance stopped with {exit}");
    let stored = agents(&app);
    assert_eq!(stored.len(), 2, "{stored:#?}");
    assert_eq!(
        by_hostname(&stored, "vm-with-uuid")["bios_uuid"],
        STORED,
        "{stored:#?}"
    );
    // Without the flag the agent sends what this machine shows, if it may read it.
    let local = std::fs::read_to_string(PRODUCT_UUID)
        .ok()
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|u| !is_placeholder(u));
    let without = &by_hostname(&stored, "vm-without-uuid")["bios_uuid"];
    match local {
        None => assert_eq!(*without, Value::Null, "{stored:#?}"),
        Some(uuid) => assert_eq!(*without, uuid.as_str(), "{stored:#?}"),
    }
}

/// All zeros or all ones: what firmware shows when a machine has no UUID (the agent sends none).
fn is_placeholder(uuid: &str) -> bool {
    let hex = uuid.replace('-', "");
    hex.bytes().all(|b| b == b'0') || hex.bytes().all(|b| b == b'f')
}
