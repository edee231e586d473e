//! The `appliance` binary's admin commands, run as a user would run them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use appliance::state::{AgentRecord, State};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use vault::{
    open_store, BlockRef, DiskMap, DiskPoint, KdfParams, PointKind, PointManifest, StoreOptions,
    Vault, BLOCK_SIZE,
};

/// Runs the binary in `cwd` (so no stray ./appliance.toml is read) with only the given
/// `APPLIANCE_*` variables.
fn appliance(cwd: &Path, env: &[(&str, &Path)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_appliance"));
    cmd.current_dir(cwd).args(args).env_remove("RUST_LOG");
    for (key, _) in std::env::vars() {
        if key.starts_with("APPLIANCE_") {
            cmd.env_remove(key);
        }
    }
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd.output().expect("the appliance binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    fn run(&self, args: &[&str]) -> Output {
        let data = self.data_dir();
        appliance(self.dir.path(), &[("APPLIANCE_DATA_DIR", &data)], args)
    }
}

#[test]
fn fingerprint_creates_the_ca_once_and_prints_its_sha256() {
    let s = Setup::new();
    let first = s.run(&["fingerprint"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let printed = stdout(&first);
    let ca_pem = std::fs::read(s.data_dir().join("tls/ca.pem")).unwrap();
    let der = CertificateDer::from_pem_slice(&ca_pem).unwrap();
    assert_eq!(printed, format!("{}\n", appliance::tls::fingerprint(&der)));
    let again = s.run(&["fingerprint"]);
    assert_eq!(stdout(&again), printed);
}

#[test]
fn passphrase_show_prints_the_passphrase_alone() {
    let s = Setup::new();
    let before = s.run(&["passphrase", "show"]);
    assert!(!before.status.success());
    assert!(
        stderr(&before).contains("appliance run"),
        "{}",
        stderr(&before)
    );

    // As first-boot setup writes it.
    std::fs::create_dir_all(s.data_dir()).unwrap();
    let passphrase = appliance::secrets::generate_passphrase(24);
    appliance::secrets::write_secret_file(
        &appliance::secrets::registration_passphrase_path(&s.data_dir()),
        &passphrase,
    )
    .unwrap();
    let shown = s.run(&["passphrase", "show"]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    assert_eq!(stdout(&shown), format!("{passphrase}\n"));
}

#[test]
fn unknown_config_key_fails_naming_it() {
    let s = Setup::new();
    let file = s.dir.path().join("bad.toml");
    std::fs::write(&file, "listen_dta = \"0.0.0.0:1\"\n").unwrap();
    let out = s.run(&["fingerprint", "--config", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("listen_dta"), "{}", stderr(&out));
    assert!(
        !s.data_dir().exists(),
        "nothing is created on a bad configuration"
    );
}

#[test]
fn agents_list_and_revoke() {
    let s = Setup::new();
    let none = s.run(&["agents", "list"]);
    assert!(!none.status.success());

    {
        let state = State::open(&s.data_dir()).unwrap();
        let record = AgentRecord {
            hostname: "web01".into(),
            registered_at: "2026-03-04T05:06:07Z".into(),
            revoked: false,
            last_seen: None,
            bios_uuid: None,
        };
        state.put_agent("agent-a", &record).unwrap();
        state.flush().unwrap();

        // While the state is open here, as it is in a running daemon:
        let locked = s.run(&["agents", "revoke", "agent-a"]);
        assert!(!locked.status.success());
        assert!(
            stderr(&locked).contains("the daemon is running; stop it or use the API"),
            "{}",
            stderr(&locked)
        );
    }

    let revoked = s.run(&["agents", "revoke", "agent-a"]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    let listed = s.run(&["agents", "list", "--json"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let json: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(json[0]["id"], "agent-a");
    assert_eq!(json[0]["revoked"], true);
}

/// A vault with one point of one two-block disk: block 0 data, block 1 zero.
async fn vault_with_a_point(root: &Path, passphrase: &str) -> Vec<u8> {
    let store = open_store(root.to_str().unwrap(), &StoreOptions::default()).unwrap();
    let vault = Vault::create(store, passphrase, KdfParams::fast_for_tests())
        .await
        .unwrap();
    let block: Vec<u8> = (0..BLOCK_SIZE).map(|i| (i % 251) as u8).collect();
    let id = vault.chunk_id(&block);
    let mut pack = vault.new_pack();
    pack.add(id, &vault.seal_chunk(&id, &block));
    let entries = vault.put_pack(pack.finish()).await.unwrap();
    vault.put_index(&entries).await.unwrap();
    let size = 2 * BLOCK_SIZE as u64;
    vault
        .put_point(&PointManifest {
            machine_id: "vm-1".into(),
            point_id: "p-100".into(),
            parent: None,
            kind: PointKind::Crash,
            bookmark_id: 1,
            created_unix_ms: 1_700_000_000_000,
            disks: vec![DiskPoint {
                disk_id: "disk-0".into(),
                size_bytes: size,
                seq: 7,
                map: DiskMap::Full(vec![BlockRef::Chunk(id), BlockRef::Zero]),
            }],
        })
        .await
        .unwrap();
    let mut image = block;
    image.resize(size as usize, 0);
    image
}

#[tokio::test]
async fn points_and_restore_work_from_the_vault_alone() {
    let s = Setup::new();
    let vault_dir = s.dir.path().join("vault");
    let pass_file = s.dir.path().join("vault-pass");
    std::fs::write(&pass_file, "a long vault passphrase\n").unwrap();
    let image = vault_with_a_point(&vault_dir, "a long vault passphrase").await;
    let vault_flags = [
        "--vault",
        vault_dir.to_str().unwrap(),
        "--vault-passphrase-file",
        pass_file.to_str().unwrap(),
    ];

    let mut args = vec!["points", "list", "--json"];
    args.extend(vault_flags);
    let listed = s.run(&args);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let json: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["machine"], "vm-1");
    assert_eq!(rows[0]["disk"], "disk-0");
    assert_eq!(rows[0]["point"], "p-100");
    assert_eq!(rows[0]["created"], "2023-11-14T22:13:20Z");
    assert_eq!(rows[0]["kind"], "crash");

    let mut args = vec!["points", "list"];
    args.extend(vault_flags);
    let table = stdout(&s.run(&args));
    assert!(
        table.starts_with("MACHINE") && table.contains("p-100"),
        "{table}"
    );

    let out = s.dir.path().join("disk.raw");
    let mut args = vec![
        "restore",
        "--machine",
        "vm-1",
        "--disk",
        "disk-0",
        "--point",
        "latest",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(vault_flags);
    let restored = s.run(&args);
    assert!(restored.status.success(), "{}", stderr(&restored));
    assert_eq!(std::fs::read(&out).unwrap(), image);
    let summary = stdout(&restored);
    assert!(
        summary.contains("p-100") && summary.contains(&format!("{} bytes", image.len())),
        "{summary}"
    );
    assert!(summary.contains("MB/s"), "{summary}");
    assert!(
        !stderr(&restored).contains('%'),
        "no progress line when stderr is not a terminal"
    );

    let again = s.run(&args);
    assert!(!again.status.success(), "an existing output is kept");
    assert!(stderr(&again).contains("--force"), "{}", stderr(&again));

    assert!(!s.data_dir().exists(), "no data dir was needed or created");
}

#[tokio::test]
async fn wrong_passphrase_and_missing_vault_are_explained() {
    let s = Setup::new();
    let vault_dir = s.dir.path().join("vault");
    vault_with_a_point(&vault_dir, "right").await;
    let wrong = s.dir.path().join("wrong");
    std::fs::write(&wrong, "wrong\n").unwrap();
    let out = s.run(&[
        "points",
        "list",
        "--vault",
        vault_dir.to_str().unwrap(),
        "--vault-passphrase-file",
        wrong.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("passphrase does not open"),
        "{}",
        stderr(&out)
    );

    let absent = s.dir.path().join("absent");
    let out = s.run(&[
        "points",
        "list",
        "--vault",
        absent.to_str().unwrap(),
        "--vault-passphrase-file",
        wrong.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("there is no vault"),
        "{}",
        stderr(&out)
    );
    assert!(!absent.exists());
}
