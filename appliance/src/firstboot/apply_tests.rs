use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;

fn good_plan() -> Plan {
    let props: BTreeMap<String, String> = [
        ("ferry.hostname", "dr-1"),
        ("ferry.ip", "10.0.0.5/24"),
        ("ferry.gateway", "10.0.0.1"),
        ("ferry.dns", "10.0.0.2,10.0.0.3"),
        ("ferry.ntp", "ntp.example.com"),
        ("ferry.admin_password", "Very-Secret-42"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Plan::from_properties("guestinfo.ovfEnv", &props)
}

fn read(root: &Path, rel: &str) -> String {
    fs::read_to_string(root.join(rel)).unwrap()
}

/// Every file under `root` with its contents, to compare two runs.
fn snapshot(root: &Path) -> BTreeMap<String, (Vec<u8>, u32)> {
    let mut all = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
                all.insert(path.display().to_string(), (fs::read(&path).unwrap(), mode));
            }
        }
    }
    all
}

#[test]
fn a_static_plan_writes_every_file() {
    let root = tempfile::tempdir().unwrap();
    let written = apply(root.path(), &good_plan()).unwrap();
    assert_eq!(written.len(), 6, "{written:?}");

    assert_eq!(read(root.path(), HOSTNAME_FILE), "dr-1\n");
    let network = read(root.path(), STATIC_NETWORK_FILE);
    assert!(network.contains("Address=10.0.0.5/24\n"), "{network}");
    assert!(network.contains("Gateway=10.0.0.1\n"));
    assert!(network.contains("DNS=10.0.0.2\nDNS=10.0.0.3\n"));
    assert!(read(root.path(), TIMESYNCD_FILE).contains("NTP=ntp.example.com\n"));
    let env = read(root.path(), ENV_FILE);
    assert!(
        env.contains("APPLIANCE_AGENT_DATA_ADDRESS=10.0.0.5:9443\n"),
        "{env}"
    );
    assert!(env.contains(&format!(
        "APPLIANCE_ADMIN_PASSWORD_FILE=/{ADMIN_PASSWORD_FILE}\n"
    )));
}

#[test]
fn the_password_file_is_private_and_the_password_is_nowhere_else() {
    let root = tempfile::tempdir().unwrap();
    apply(root.path(), &good_plan()).unwrap();
    let password_file = root.path().join(ADMIN_PASSWORD_FILE);
    assert_eq!(
        fs::metadata(&password_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The file the unattended setup reads gives back exactly the password.
    assert_eq!(
        crate::mgmt::setup::read_admin_password_file(&password_file).unwrap(),
        "Very-Secret-42"
    );
    for (path, (contents, _)) in snapshot(root.path()) {
        if path != password_file.display().to_string() {
            let text = String::from_utf8_lossy(&contents);
            assert!(
                !text.contains("Very-Secret-42"),
                "{path} holds the password"
            );
        }
    }
    let done: serde_json::Value = serde_json::from_str(&read(root.path(), DONE_FILE)).unwrap();
    assert_eq!(done["admin_password_set"], true);
    assert_eq!(done["network"]["mode"], "static");
    assert_eq!(done["agent_data_address"], "10.0.0.5:9443");
}

#[test]
fn a_second_run_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let plan = good_plan();
    let first_written = apply(root.path(), &plan).unwrap();
    let first = snapshot(root.path());
    let second_written = apply(root.path(), &plan).unwrap();
    assert_eq!(first_written, second_written);
    assert_eq!(first, snapshot(root.path()));
}

#[test]
fn dhcp_removes_an_earlier_static_profile_and_records_the_reason() {
    let root = tempfile::tempdir().unwrap();
    apply(root.path(), &good_plan()).unwrap();
    fs::write(root.path().join(HOSTNAME_FILE), "image-default\n").unwrap();

    let plan = plan_for(None);
    let written = apply(root.path(), &plan).unwrap();
    assert_eq!(written, [format!("/{DONE_FILE}")]);
    for gone in [
        STATIC_NETWORK_FILE,
        TIMESYNCD_FILE,
        ADMIN_PASSWORD_FILE,
        ENV_FILE,
    ] {
        assert!(!root.path().join(gone).exists(), "{gone}");
    }
    // The image's hostname is not ours to remove.
    assert_eq!(read(root.path(), HOSTNAME_FILE), "image-default\n");
    let done: serde_json::Value = serde_json::from_str(&read(root.path(), DONE_FILE)).unwrap();
    assert_eq!(done["network"]["mode"], "dhcp");
    assert_eq!(done["network"]["reason"], "no OVF environment");
    assert_eq!(done["source"], "none");
    assert_eq!(done["admin_password_set"], false);
}

#[test]
fn a_root_that_cannot_be_written_is_a_write_error() {
    let root = tempfile::tempdir().unwrap();
    // A file where the etc folder should be.
    fs::write(root.path().join("etc"), "").unwrap();
    assert!(matches!(
        apply(root.path(), &good_plan()),
        Err(FirstbootError::Write { .. })
    ));
}

#[test]
fn the_summary_keeps_what_matters_on_the_console() {
    let root = tempfile::tempdir().unwrap();
    let lines = vec![
        "network: DHCP (bad address)".to_string(),
        "wrote /etc/hostname".to_string(),
        "data disk: /dev/sdb formatted ext4, label ferry-data (65536 MiB)".to_string(),
    ];
    write_summary(root.path(), &lines).unwrap();
    let text = std::fs::read_to_string(root.path().join(SUMMARY_FILE)).unwrap();
    assert_eq!(
        text,
        "network: DHCP (bad address)\ndata disk: /dev/sdb formatted ext4, label ferry-data (65536 MiB)\n"
    );
    write_summary(root.path(), &["wrote /x".to_string()]).unwrap();
    let text = std::fs::read_to_string(root.path().join(SUMMARY_FILE)).unwrap();
    assert_eq!(text, "nothing to report\n");
}
