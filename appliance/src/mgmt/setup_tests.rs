use super::*;
use crate::mgmt::auth::Role;
use crate::vault_access::{open_or_create, open_vault_readonly, VaultLocation};
use std::time::Instant;

/// The setup and users trees and the data dir's top-level names.
type Snapshot = (
    Vec<(Vec<u8>, Vec<u8>)>,
    Vec<(Vec<u8>, Vec<u8>)>,
    Vec<String>,
);

const PASSWORD: &str = "Correct-Horse-Battery-9";

struct Fixture {
    dir: tempfile::TempDir,
    cfg: Arc<Config>,
    state: State,
    tls: Arc<ApplianceTls>,
    setup: Setup,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let figment = figment::Figment::new().merge(figment::providers::Serialized::default(
            "data_dir",
            data.to_string_lossy().into_owned(),
        ));
        let cfg = Arc::new(Config::from_figment(figment).unwrap());
        files::create_dir_all(&data, PRIVATE_DIR_MODE).unwrap();
        let tls = Arc::new(ApplianceTls::load_or_create(&data, &[]).unwrap());
        let state = State::open(&data).unwrap();
        let setup = Self::setup_over(&cfg, &state, &tls);
        Fixture {
            dir,
            cfg,
            state,
            tls,
            setup,
        }
    }

    /// A new service over the same state, as after a restart.
    fn setup_over(cfg: &Arc<Config>, state: &State, tls: &Arc<ApplianceTls>) -> Setup {
        let auth = Auth::new(state.clone());
        Setup::new(cfg.clone(), state.clone(), tls.clone(), auth)
            .unwrap()
            .with_kdf(KdfParams::fast_for_tests())
    }

    fn restart(&mut self) {
        self.setup = Self::setup_over(&self.cfg, &self.state, &self.tls);
    }

    fn data(&self) -> &Path {
        &self.cfg.data_dir
    }

    fn default_vault(&self) -> PathBuf {
        self.data().join("vault")
    }

    fn tree(&self, name: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.state
            .db()
            .open_tree(name)
            .unwrap()
            .iter()
            .map(|e| {
                let (k, v) = e.unwrap();
                (k.to_vec(), v.to_vec())
            })
            .collect()
    }

    /// The setup and users trees and the data dir's top-level names.
    fn snapshot(&self) -> Snapshot {
        let mut names: Vec<String> = std::fs::read_dir(self.data())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        (self.tree(SETUP_TREE), self.tree(USERS_TREE), names)
    }

    /// A plan accepted but not run, as `kill -9` right after storing it leaves it.
    async fn store_plan(&self, req: &SetupRequest) -> Plan {
        let plan = Plan::validate(&self.cfg, req, "127.0.0.1", Carry::default())
            .await
            .unwrap();
        self.setup
            .write_record(&Record::Pending {
                plan: Box::new(plan.clone()),
            })
            .unwrap();
        plan
    }
}

fn request(token: &str) -> SetupRequest {
    SetupRequest {
        token: token.to_string(),
        admin_password: PASSWORD.to_string(),
        ..SetupRequest::default()
    }
}

fn invalid_field(err: &MgmtError) -> (&str, &str) {
    match err {
        MgmtError::InvalidField { field, message } => (field.as_str(), message.as_str()),
        other => panic!("expected invalid_field, got {other:?}"),
    }
}

async fn assert_not_complete_within(setup: &Setup, wait: Duration) {
    let waited = tokio::time::timeout(wait, setup.wait_complete()).await;
    assert!(
        waited.is_err(),
        "wait_complete resolved before setup was complete"
    );
}

#[tokio::test]
async fn wrong_or_missing_token_writes_nothing() {
    let f = Fixture::new();
    let before = f.snapshot();
    let err = f.setup.submit(request("anything"), "10.0.0.1").await;
    assert!(
        matches!(err, Err(MgmtError::BadSetupToken)),
        "no token file yet: {err:?}"
    );

    let token = f.setup.prepare_token().unwrap();
    assert_eq!(token.len(), 64);
    let path = f.setup.token_path();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), token);
    let before_with_token = f.snapshot();
    assert_eq!(before.0, before_with_token.0);

    let mut wrong = token.clone().into_bytes();
    wrong[0] = if wrong[0] == b'a' { b'b' } else { b'a' };
    let wrong = String::from_utf8(wrong).unwrap();
    for given in [
        "",
        "   ",
        wrong.as_str(),
        &token[..63],
        &format!("{token}0"),
    ] {
        let err = f.setup.submit(request(given), "10.0.0.1").await;
        assert!(
            matches!(err, Err(MgmtError::BadSetupToken)),
            "{given:?}: {err:?}"
        );
        let probe = VaultTestRequest {
            token: given.to_string(),
            vault_url: f.default_vault().to_string_lossy().into_owned(),
            ..VaultTestRequest::default()
        };
        let err = f.setup.test_vault(probe).await;
        assert!(
            matches!(err, Err(MgmtError::BadSetupToken)),
            "{given:?}: {err:?}"
        );
    }
    assert_eq!(f.snapshot(), before_with_token);
    assert!(!f.default_vault().exists(), "no vault folder was created");
    assert_eq!(f.setup.phase(), SetupPhase::Required);
    // The token is compared without surrounding whitespace, as it is pasted.
    assert_eq!(
        f.setup
            .check_token(&format!(" {token}\n"))
            .map_err(|e| e.code()),
        Ok(())
    );
    // A fresh token replaces the old one.
    let second = f.setup.prepare_token().unwrap();
    assert_ne!(second, token);
    assert!(matches!(
        f.setup.check_token(&token),
        Err(MgmtError::BadSetupToken)
    ));
}

#[tokio::test]
async fn weak_password_and_bad_fields_are_invalid_fields_and_write_nothing() {
    let f = Fixture::new();
    let token = f.setup.prepare_token().unwrap();
    let before = f.snapshot();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cases: Vec<(SetupRequest, &str)> = vec![
        (
            SetupRequest {
                admin_password: "short".into(),
                ..request(&token)
            },
            "admin_password",
        ),
        (
            SetupRequest {
                vault_passphrase: Some("ab-cd ef-gh ij".into()),
                ..request(&token)
            },
            "vault_passphrase",
        ),
        (
            SetupRequest {
                registration_passphrase: Some("only-ten-ch".into()),
                ..request(&token)
            },
            "registration_passphrase",
        ),
        (
            SetupRequest {
                vault_url: Some("ftp://host/dir".into()),
                ..request(&token)
            },
            "vault_url",
        ),
        (
            SetupRequest {
                vault_url: Some("file://relative/dir".into()),
                ..request(&token)
            },
            "vault_url",
        ),
        (
            SetupRequest {
                vault_url: Some("az://account/container".into()),
                ..request(&token)
            },
            "azure_access_key",
        ),
        (
            SetupRequest {
                vault_url: Some("az://account".into()),
                azure_access_key: Some("a2V5".into()),
                ..request(&token)
            },
            "vault_url",
        ),
        (
            SetupRequest {
                vault_url: Some("s3://bucket".into()),
                s3_secret_access_key: Some("secret".into()),
                ..request(&token)
            },
            "s3_access_key_id",
        ),
        (
            SetupRequest {
                vault_url: Some("s3://bucket".into()),
                s3_access_key_id: Some("id".into()),
                ..request(&token)
            },
            "s3_secret_access_key",
        ),
        (
            SetupRequest {
                vault_url: Some("s3://bucket".into()),
                s3_access_key_id: Some("id".into()),
                s3_secret_access_key: Some("secret".into()),
                s3_endpoint: Some("minio:9000".into()),
                ..request(&token)
            },
            "s3_endpoint",
        ),
        (
            SetupRequest {
                vault_url: Some(format!("{}/a\u{1}b", f.default_vault().display())),
                ..request(&token)
            },
            "vault_url",
        ),
    ];
    for (req, field) in cases {
        let shown = format!("{req:?}");
        let err = f.setup.submit(req, "10.0.0.1").await.unwrap_err();
        assert_eq!(invalid_field(&err).0, field, "{shown}: {err}");
        assert_eq!(err.status(), 400);
    }
    let err = f
        .setup
        .submit(
            SetupRequest {
                vault_url: Some(format!(
                    "az://devstoreaccount1/c?endpoint=http://127.0.0.1:{closed}/x"
                )),
                azure_access_key: Some("a2V5".into()),
                ..request(&token)
            },
            "10.0.0.1",
        )
        .await
        .unwrap_err();
    assert_eq!(invalid_field(&err).0, "vault_url", "{err}");
    let (setup_tree, users, _) = f.snapshot();
    assert_eq!((setup_tree, users), (before.0, before.1));
    assert_eq!(f.setup.phase(), SetupPhase::Required);
    assert!(!secrets::vault_passphrase_path(f.data()).exists());
}

#[tokio::test]
async fn minimal_request_completes_with_defaults() {
    let f = Fixture::new();
    let token = f.setup.prepare_token().unwrap();
    let result = f.setup.submit(request(&token), "10.0.0.7").await.unwrap();
    assert_eq!(f.setup.phase(), SetupPhase::Complete);
    assert!(f.setup.is_complete());
    tokio::time::timeout(Duration::from_secs(1), f.setup.wait_complete())
        .await
        .expect("waiters are woken");

    assert_eq!(result.admin_user, "admin");
    assert_eq!(result.vault_url, f.cfg.vault_url);
    assert_eq!(result.ca_fingerprint, f.tls.ca_fingerprint());
    assert_eq!(
        secrets::read_registration_passphrase(f.data()).unwrap(),
        result.registration_passphrase
    );
    assert_eq!(
        secrets::read_vault_passphrase(&f.cfg).unwrap(),
        result.vault_passphrase
    );
    for needle in [
        &result.vault_url,
        &result.vault_passphrase,
        &result.ca_fingerprint,
        &"appliance restore --vault".to_string(),
        &"--vault-passphrase-file".to_string(),
    ] {
        assert!(
            result.recovery_kit.contains(needle.as_str()),
            "{needle}: {}",
            result.recovery_kit
        );
    }

    // The vault opens with the returned passphrase, found through vault-location.json.
    let loc = VaultLocation::resolve(&f.cfg, None, None).unwrap();
    assert_eq!(loc.target.url, result.vault_url);
    assert_eq!(loc.passphrase, result.vault_passphrase);
    open_vault_readonly(&loc).await.unwrap();

    let users = f.tree(USERS_TREE);
    assert_eq!(users.len(), 1);
    let (expected_key, _) = Auth::user_entry(ADMIN_USER, Role::Admin, PASSWORD).unwrap();
    assert_eq!(users[0].0, expected_key);
    let login = f.setup.auth.login(ADMIN_USER, PASSWORD, "test").unwrap();
    assert_eq!(
        f.setup.auth.authenticate(&login.token).unwrap().role,
        Role::Admin
    );

    assert!(!f.setup.token_path().exists(), "the setup token is gone");
    assert!(
        f.data().join("admin-token").exists(),
        "the admin token file exists"
    );
    let audit = f.state.recent_audit(10).unwrap();
    let event = audit.iter().find(|e| e.event == "setup_completed").unwrap();
    assert_eq!(
        (event.actor.as_str(), event.source.as_str()),
        ("system", "10.0.0.7")
    );

    let again = f.setup.submit(request(&token), "10.0.0.7").await;
    assert!(matches!(again, Err(MgmtError::SetupComplete)), "{again:?}");
    assert!(matches!(
        f.setup.prepare_token(),
        Err(MgmtError::SetupComplete)
    ));
    assert!(f.setup.resume().await.unwrap().is_none());
    let restarted = Fixture::setup_over(&f.cfg, &f.state, &f.tls);
    assert_eq!(restarted.phase(), SetupPhase::Complete);
    restarted.wait_complete().await;
}

#[tokio::test]
async fn concurrent_submits_run_one_plan() {
    let f = Fixture::new();
    let token = f.setup.prepare_token().unwrap();
    let (a, b) = tokio::join!(
        f.setup.submit(request(&token), "10.0.0.1"),
        f.setup.submit(request(&token), "10.0.0.2")
    );
    let outcomes = [
        a.map(|_| ()).map_err(|e| e.code()),
        b.map(|_| ()).map_err(|e| e.code()),
    ];
    assert!(outcomes.contains(&Ok(())), "{outcomes:?}");
    assert!(outcomes.contains(&Err("setup_complete")), "{outcomes:?}");
    assert_eq!(f.tree(USERS_TREE).len(), 1);
    let completed = f
        .state
        .recent_audit(10)
        .unwrap()
        .into_iter()
        .filter(|e| e.event == "setup_completed")
        .count();
    assert_eq!(completed, 1);
}

#[tokio::test]
async fn a_stored_pending_plan_resumes_after_a_restart() {
    let mut f = Fixture::new();
    let token = f.setup.prepare_token().unwrap();
    let plan = f.store_plan(&request(&token)).await;
    f.restart();
    assert_eq!(f.setup.phase(), SetupPhase::Pending);
    assert!(f.tree(USERS_TREE).is_empty(), "no user before the commit");
    assert_not_complete_within(&f.setup, Duration::from_millis(100)).await;

    let result = f.setup.resume().await.unwrap().expect("a plan to resume");
    assert_eq!(f.setup.phase(), SetupPhase::Complete);
    assert_eq!(result.vault_passphrase, plan.vault_passphrase);
    assert_eq!(result.registration_passphrase, plan.registration_passphrase);
    assert_eq!(f.tree(USERS_TREE).len(), 1);
    assert!(f.setup.resume().await.unwrap().is_none());
}

#[tokio::test]
async fn resume_is_idempotent_when_the_vault_already_exists() {
    let mut f = Fixture::new();
    let token = f.setup.prepare_token().unwrap();
    let plan = f.store_plan(&request(&token)).await;
    // As if the process died right after creating the vault (abort hook `vault`).
    let (_, created) = open_or_create(
        &plan.target,
        &plan.vault_passphrase,
        KdfParams::fast_for_tests(),
    )
    .await
    .unwrap();
    assert!(created);
    f.restart();
    assert_eq!(f.setup.phase(), SetupPhase::Pending);
    let result = f.setup.resume().await.unwrap().unwrap();
    assert_eq!(result.vault_passphrase, plan.vault_passphrase);
    assert!(f.setup.is_complete());
    open_vault_readonly(&VaultLocation::resolve(&f.cfg, None, None).unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_new_submit_over_a_pending_plan_keeps_its_vault_passphrase() {
    let mut f = Fixture::new();
    let token = f.setup.prepare_token().unwrap();
    let plan = f.store_plan(&request(&token)).await;
    open_or_create(
        &plan.target,
        &plan.vault_passphrase,
        KdfParams::fast_for_tests(),
    )
    .await
    .unwrap();
    f.restart();
    let result = f.setup.submit(request(&token), "10.0.0.1").await.unwrap();
    assert_eq!(result.vault_passphrase, plan.vault_passphrase);
    assert_eq!(result.registration_passphrase, plan.registration_passphrase);
}

#[tokio::test]
async fn an_existing_vault_needs_its_passphrase() {
    let f = Fixture::new();
    let token = f.setup.prepare_token().unwrap();
    let target = VaultTarget {
        url: f.cfg.vault_url.clone(),
        ..VaultTarget::default()
    };
    let right = "the right vault passphrase";
    open_or_create(&target, right, KdfParams::fast_for_tests())
        .await
        .unwrap();
    let before = f.snapshot();

    let err = f
        .setup
        .submit(request(&token), "10.0.0.1")
        .await
        .unwrap_err();
    let (field, message) = invalid_field(&err);
    assert_eq!(field, "vault_passphrase");
    assert!(message.contains("already holds a Ferry vault"), "{message}");

    let wrong = SetupRequest {
        vault_passphrase: Some("a wrong vault passphrase".into()),
        ..request(&token)
    };
    let err = f.setup.submit(wrong, "10.0.0.1").await.unwrap_err();
    let (field, message) = invalid_field(&err);
    assert_eq!(field, "vault_passphrase");
    assert!(
        message.contains("does not open the existing vault at"),
        "{message}"
    );
    assert_eq!(f.snapshot(), before, "nothing completed or written");
    assert_eq!(f.setup.phase(), SetupPhase::Required);

    let given = SetupRequest {
        vault_passphrase: Some(right.into()),
        ..request(&token)
    };
    let result = f.setup.submit(given, "10.0.0.1").await.unwrap();
    assert_eq!(result.vault_passphrase, right);
}

#[tokio::test]
async fn unreachable_azure_is_an_invalid_vault_url_within_the_timeout() {
    let f = Fixture::new();
    let token = f.setup.prepare_token().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url =
        format!("az://devstoreaccount1/ferry?endpoint=http://127.0.0.1:{port}/devstoreaccount1");
    let started = Instant::now();
    let probe = VaultTestRequest {
        token: token.clone(),
        vault_url: url.clone(),
        azure_access_key: Some("a2V5".into()),
        ..VaultTestRequest::default()
    };
    let err = f.setup.test_vault(probe).await.unwrap_err();
    assert_eq!(invalid_field(&err).0, "vault_url", "{err}");
    let req = SetupRequest {
        vault_url: Some(url),
        azure_access_key: Some("a2V5".into()),
        ..request(&token)
    };
    let err = f.setup.submit(req, "10.0.0.1").await.unwrap_err();
    assert_eq!(invalid_field(&err).0, "vault_url", "{err}");
    assert!(started.elapsed() < 2 * vault_access::PROBE_TIMEOUT + Duration::from_secs(2));
    assert_eq!(f.setup.phase(), SetupPhase::Required);
}

#[tokio::test]
async fn test_vault_accepts_a_writable_folder_and_changes_no_state() {
    let f = Fixture::new();
    let token = f.setup.prepare_token().unwrap();
    let folder = f.dir.path().join("elsewhere/vault");
    let probe = VaultTestRequest {
        token,
        vault_url: folder.to_string_lossy().into_owned(),
        ..VaultTestRequest::default()
    };
    f.setup.test_vault(probe).await.unwrap();
    assert!(folder.is_dir());
    assert_eq!(f.setup.phase(), SetupPhase::Required);
    assert!(f.tree(SETUP_TREE).is_empty());
}

#[tokio::test]
async fn unattended_setup_reuses_an_older_data_dirs_passphrases() {
    let f = Fixture::new();
    let registration = "OLD4-REG7-PASS-PHRA";
    let vault_pass = "OLD9-VAULT-PASS-PHRASE";
    secrets::write_secret_file(
        &secrets::registration_passphrase_path(f.data()),
        registration,
    )
    .unwrap();
    secrets::write_secret_file(&secrets::vault_passphrase_path(f.data()), vault_pass).unwrap();
    let target = VaultTarget {
        url: f.cfg.vault_url.clone(),
        ..VaultTarget::default()
    };
    open_or_create(&target, vault_pass, KdfParams::fast_for_tests())
        .await
        .unwrap();

    let done = f.setup.run_unattended(PASSWORD).await.unwrap().unwrap();
    assert_eq!(done.result.registration_passphrase, registration);
    assert_eq!(done.result.vault_passphrase, vault_pass);
    assert!(!done.registration_passphrase_generated && !done.vault_passphrase_generated);
    let mut out = Vec::new();
    done.announce(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        !text.contains(vault_pass) && !text.contains(registration),
        "{text}"
    );
    assert!(text.contains(&f.tls.ca_fingerprint()), "{text}");
    assert!(f.setup.is_complete());
    assert!(f.setup.run_unattended(PASSWORD).await.unwrap().is_none());
}

#[tokio::test]
async fn unattended_setup_generates_and_announces_new_passphrases() {
    let f = Fixture::new();
    let err = f.setup.run_unattended("weak").await.unwrap_err();
    assert_eq!(invalid_field(&err).0, "admin_password");
    assert_eq!(f.setup.phase(), SetupPhase::Required);

    let done = f.setup.run_unattended(PASSWORD).await.unwrap().unwrap();
    assert!(done.registration_passphrase_generated && done.vault_passphrase_generated);
    let mut out = Vec::new();
    done.announce(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains(&done.result.vault_passphrase), "{text}");
    assert!(
        text.contains(&done.result.registration_passphrase),
        "{text}"
    );
    assert!(text.contains("FERRY RECOVERY KIT"), "{text}");
}

#[tokio::test]
async fn a_corrupt_record_refuses_setup_rather_than_overwriting_it() {
    let f = Fixture::new();
    let token = f.setup.prepare_token().unwrap();
    f.setup
        .tree
        .insert(RECORD_KEY, &b"FS\x01{not json"[..])
        .unwrap();
    assert_eq!(f.setup.phase(), SetupPhase::Pending);
    let err = f
        .setup
        .submit(request(&token), "10.0.0.1")
        .await
        .unwrap_err();
    assert_eq!(err.code(), "internal", "{err}");
    assert!(err.to_string().contains("corrupt"), "{err}");
    assert!(f.setup.resume().await.is_err());
    assert_eq!(f.tree(SETUP_TREE)[0].1, b"FS\x01{not json");
    assert!(f.tree(USERS_TREE).is_empty());
}

#[test]
fn stored_records_have_a_pinned_shape() {
    let complete = Record::Complete {
        completed_at: "2026-01-02T03:04:05Z".into(),
        vault_url: "/v".into(),
    };
    assert_eq!(
        serde_json::to_string(&complete).unwrap(),
        r#"{"phase":"complete","completed_at":"2026-01-02T03:04:05Z","vault_url":"/v"}"#
    );
    let plan: serde_json::Value = serde_json::json!({"phase": "pending", "plan": {
        "admin_user": "admin", "admin_key": "61", "admin_value": "62",
        "target": {"url": "/v", "azure_access_key": null, "s3_access_key_id": null,
            "s3_secret_access_key": null, "s3_region": null, "s3_endpoint": null},
        "vault_passphrase": "V", "registration_passphrase": "R",
        "vault_passphrase_generated": true, "registration_passphrase_generated": false,
        "source": "local", "accepted_at": "t"}});
    let record: Record = serde_json::from_value(plan.clone()).unwrap();
    assert_eq!(serde_json::to_value(&record).unwrap(), plan);
    let Record::Pending { plan } = record else {
        panic!("not pending")
    };
    assert_eq!(plan.admin_entry().unwrap(), (b"a".to_vec(), b"b".to_vec()));
    assert!(!format!("{plan:?}").contains("\"V\""));
    let bad = Plan {
        admin_key: "zz".into(),
        ..*plan
    };
    assert!(bad.admin_entry().is_err());
}
