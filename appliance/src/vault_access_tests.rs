use super::*;

fn config_with(data_dir: &Path, url: &str) -> Config {
    let figment = figment::Figment::new()
        .merge(figment::providers::Serialized::default(
            "data_dir",
            data_dir.to_string_lossy().into_owned(),
        ))
        .merge(figment::providers::Serialized::default("vault_url", url))
        .merge(figment::providers::Serialized::default(
            "vault_passphrase",
            "pw-from-config",
        ))
        .merge(figment::providers::Serialized::default(
            "azure_access_key",
            "key-from-config",
        ));
    Config::from_figment(figment).unwrap()
}

fn local(url: &Path) -> VaultTarget {
    VaultTarget {
        url: url.to_string_lossy().into_owned(),
        ..VaultTarget::default()
    }
}

/// Argon2 with the default 64 MiB is slow in debug builds; this test creates once.
#[tokio::test]
async fn create_then_open_then_wrong_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let target = local(&dir.path().join("vault"));
    let (_, created) = open_or_create(&target, "pw", KdfParams::fast_for_tests())
        .await
        .unwrap();
    assert!(created);
    let (_, created) = open_or_create(&target, "pw", KdfParams::fast_for_tests())
        .await
        .unwrap();
    assert!(!created);

    let loc = VaultLocation {
        target: target.clone(),
        passphrase: "pw".into(),
    };
    let vault = open_vault_readonly(&loc).await.unwrap();
    assert!(vault.list_points().await.unwrap().is_empty());

    let wrong = VaultLocation {
        passphrase: "nope".into(),
        ..loc
    };
    let err = open_vault_readonly(&wrong).await.unwrap_err().to_string();
    assert!(err.contains("passphrase does not open"), "{err}");
    let err = open_or_create(&target, "nope", KdfParams::fast_for_tests()).await;
    assert!(matches!(err, Err(VaultError::WrongPassphrase)), "{err:?}");
}

#[tokio::test]
async fn readonly_open_never_creates() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent");
    let loc = VaultLocation {
        target: local(&missing),
        passphrase: "pw".into(),
    };
    let err = open_vault_readonly(&loc).await.unwrap_err().to_string();
    assert!(err.contains("there is no vault"), "{err}");
    assert!(!missing.exists());

    std::fs::create_dir(&missing).unwrap();
    let err = open_vault_readonly(&loc).await.unwrap_err().to_string();
    assert!(err.contains("there is no vault"), "{err}");
}

#[test]
fn location_file_round_trips_privately_and_pins_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(read_location_file(dir.path()).unwrap(), None);
    let target = VaultTarget {
        url: "s3://bucket".into(),
        s3_access_key_id: Some("id".into()),
        s3_secret_access_key: Some("secret".into()),
        s3_region: Some("us-east-1".into()),
        s3_endpoint: Some("http://127.0.0.1:9000".into()),
        ..VaultTarget::default()
    };
    write_location_file(dir.path(), &target).unwrap();
    let path = vault_location_path(dir.path());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(read_location_file(dir.path()).unwrap(), Some(target));

    let fixed = VaultTarget {
        url: "/v".into(),
        ..VaultTarget::default()
    };
    let text: serde_json::Value = serde_json::from_slice(&encode_location(&fixed)).unwrap();
    assert_eq!(
        text,
        serde_json::json!({"format": "ferry-vault-location", "version": 1, "url": "/v",
            "azure_access_key": null, "s3_access_key_id": null, "s3_secret_access_key": null,
            "s3_region": null, "s3_endpoint": null})
    );
}

#[test]
fn bad_location_files_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = vault_location_path(dir.path());
    for (bytes, reason) in [
        (&b"{not json"[..], "is corrupt"),
        (&b"[]"[..], "is corrupt"),
        (
            &br#"{"format":"ferry-cursor","version":1,"url":"/v"}"#[..],
            "expected \"ferry-vault-location\"",
        ),
        (
            &br#"{"format":"ferry-vault-location","version":2,"url":"/v"}"#[..],
            "version 2 is not supported",
        ),
        (
            &br#"{"format":"ferry-vault-location","version":1}"#[..],
            "is corrupt",
        ),
    ] {
        std::fs::write(&path, bytes).unwrap();
        let err = format!("{:#}", read_location_file(dir.path()).unwrap_err());
        assert!(err.contains(reason), "{bytes:?}: {err}");
    }
}

#[test]
fn flags_then_location_file_then_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let pass_file = dir.path().join("pass");
    std::fs::write(&pass_file, "from-file\n").unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let cfg = config_with(&data, "/configured");

    let loc = VaultLocation::resolve(&cfg, None, None).unwrap();
    assert_eq!(
        (loc.target.url.as_str(), loc.passphrase.as_str()),
        ("/configured", "pw-from-config")
    );
    assert_eq!(
        loc.target.azure_access_key.as_deref(),
        Some("key-from-config")
    );

    let recorded = VaultTarget {
        url: "az://acct/c".into(),
        azure_access_key: Some("key-from-setup".into()),
        ..VaultTarget::default()
    };
    write_location_file(&data, &recorded).unwrap();
    crate::secrets::write_secret_file(&crate::secrets::vault_passphrase_path(&data), "pw-setup")
        .unwrap();
    let loc = VaultLocation::resolve(&cfg, None, None).unwrap();
    assert_eq!(loc.target, recorded);
    assert_eq!(loc.passphrase, "pw-setup");
    assert_eq!(loc.target.local_dir(), None);
    assert!(!format!("{loc:?}").contains("pw-setup"));
    assert!(!format!("{loc:?}").contains("key-from-setup"));

    let loc = VaultLocation::resolve(&cfg, Some("file:///elsewhere"), Some(&pass_file)).unwrap();
    assert_eq!(loc.target.url, "file:///elsewhere");
    assert_eq!(loc.passphrase, "from-file");
    assert_eq!(loc.target.local_dir(), Some(PathBuf::from("/elsewhere")));

    std::fs::write(vault_location_path(&data), b"garbage").unwrap();
    assert!(VaultLocation::resolve(&cfg, None, None).is_err());
}

#[tokio::test]
async fn probe_of_a_local_folder_creates_it_and_detects_a_vault() {
    let dir = tempfile::tempdir().unwrap();
    let target = local(&dir.path().join("new/vault"));
    assert_eq!(probe_target(&target).await, Ok(false));
    let folder = dir.path().join("new/vault");
    assert!(folder.is_dir());
    assert_eq!(
        std::fs::read_dir(&folder).unwrap().count(),
        0,
        "no probe left"
    );

    open_or_create(&target, "pw", KdfParams::fast_for_tests())
        .await
        .unwrap();
    assert_eq!(probe_target(&target).await, Ok(true));

    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let err = probe_target(&local(&blocker.join("vault")))
        .await
        .unwrap_err();
    assert!(err.contains("is not writable"), "{err}");
    let err = probe_target(&VaultTarget {
        url: "ftp://x/y".into(),
        ..VaultTarget::default()
    })
    .await
    .unwrap_err();
    assert!(err.contains("not a usable vault URL"), "{err}");
}

#[tokio::test]
async fn probe_of_an_unreachable_azure_account_fails_quickly() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = VaultTarget {
        url: format!("az://devstoreaccount1/c?endpoint=http://127.0.0.1:{port}/devstoreaccount1"),
        azure_access_key: Some("a2V5".into()),
        ..VaultTarget::default()
    };
    let started = std::time::Instant::now();
    let err = probe_target(&target).await.unwrap_err();
    assert!(started.elapsed() <= PROBE_TIMEOUT + Duration::from_secs(2));
    assert!(err.contains("container"), "{err}");
    assert_eq!(target.kind(), StoreKind::Azure);
}
