//! The vault against Azurite (Azure Blob emulator), started through scripts/azurite.sh.
//! Needs node and npm (the script installs azurite@3.35.0 into a cache folder on first use).

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use common::*;
use vault::{
    ensure_azure_container, open_store, DiskMap, KdfParams, RestoreFormat, StoreOptions, Vault,
    VaultError,
};

/// A running Azurite; stopped (by its pidfile) when dropped, even if the test fails.
struct Azurite {
    script: PathBuf,
    pidfile: String,
    env: HashMap<String, String>,
    _state: tempfile::TempDir,
}

impl Azurite {
    fn start() -> Self {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/azurite.sh");
        let state = tempfile::tempdir().unwrap();
        let out = Command::new("bash")
            .arg(&script)
            .args(["start", "--dir"])
            .arg(state.path())
            .output()
            .expect("bash runs scripts/azurite.sh");
        assert!(
            out.status.success(),
            "azurite.sh start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env: HashMap<String, String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
            .collect();
        let pidfile = env["AZURITE_PIDFILE"].clone();
        Azurite {
            script,
            pidfile,
            env,
            _state: state,
        }
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .arg(&self.pidfile)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_upload_and_restore_through_azurite() {
    let az = Azurite::start();
    let blob_url = &az.env["AZURITE_BLOB_URL"];
    assert!(blob_url.starts_with("http://127.0.0.1:"), "{blob_url}");
    let url = format!("az://devstoreaccount1/ferry-vault-test?endpoint={blob_url}");
    let opts = StoreOptions {
        azure_access_key: Some(az.env["AZURITE_KEY"].clone()),
        allow_http: true,
        ..StoreOptions::default()
    };
    ensure_azure_container(&url, &opts).await.unwrap();
    ensure_azure_container(&url, &opts).await.unwrap(); // 409: already there, fine

    let store = open_store(&url, &opts).unwrap();
    assert!(!Vault::is_initialized(&store).await.unwrap());
    let vault = Vault::create(store.clone(), PASS, KdfParams::fast_for_tests())
        .await
        .unwrap();
    assert!(matches!(
        Vault::create(store.clone(), PASS, KdfParams::fast_for_tests()).await,
        Err(VaultError::AlreadyInitialized)
    ));

    let mut up = Uploader::new(&vault).await;
    up.max_pack = 512 * 1024;
    let v0 = make_disk(21, 30 * BS + 1024);
    let v1 = mutate(&v0, 22, 30 * BS + 1024);
    let m0 = up.upload(&vault, &v0).await;
    let m1 = up.upload(&vault, &v1).await;
    vault
        .put_point(&point(
            "vm-7",
            "p0",
            None,
            1,
            vec![disk_point("d", v0.len(), DiskMap::Full(m0.clone()))],
        ))
        .await
        .unwrap();
    vault
        .put_point(&point(
            "vm-7",
            "p1",
            Some("p0"),
            2,
            vec![disk_point("d", v1.len(), DiskMap::Delta(delta(&m0, &m1)))],
        ))
        .await
        .unwrap();

    // A fresh handle with only the passphrase sees and restores everything.
    let reopened = Vault::open(open_store(&url, &opts).unwrap(), PASS)
        .await
        .unwrap();
    assert!(matches!(
        Vault::open(store.clone(), "nope").await,
        Err(VaultError::WrongPassphrase)
    ));
    assert_eq!(reopened.list_points().await.unwrap().len(), 2);
    let dir = tempfile::tempdir().unwrap();
    for (id, image) in [("p0", &v0), ("p1", &v1)] {
        let out = dir.path().join(format!("{id}.raw"));
        let stats = restore(&reopened, "vm-7", "d", id, RestoreFormat::Raw, &out, 8)
            .await
            .unwrap();
        assert!(read_file(&out) == *image, "{id} differs");
        assert!(stats.fetched_bytes > 0);
    }
}
