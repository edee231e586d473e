//! vCenters: input checks, the sealed password, add/update/remove against a scripted vCenter, health
//! reports and their audit.

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;

use actors::discovery::{InventorySink, VcenterHealth};

use super::testkit::{admin, vcenters_in, FakeVcenter, PASSWORD, RENEWED, THUMBPRINT, URL};
use super::*;

fn new_vcenter() -> NewVcenter {
    NewVcenter {
        url: "https://vc.test.invalid".into(),
        username: "administrator@vsphere.local".into(),
        password: PASSWORD.into(),
        thumbprint: THUMBPRINT.replace(':', "").to_lowercase(),
    }
}

fn field_of(err: &MgmtError) -> &str {
    match err {
        MgmtError::InvalidField { field, .. } => field,
        other => panic!("not an invalid field: {other:?}"),
    }
}

fn events(state: &State) -> Vec<(String, String, String)> {
    state
        .recent_audit(100)
        .unwrap()
        .into_iter()
        .map(|e| (e.actor, e.event, e.detail))
        .collect()
}

#[test]
fn urls_are_checked_and_normalized() {
    for (input, want) in [
        ("https://vc.example", "https://vc.example/sdk"),
        (" https://vc.example/ ", "https://vc.example/sdk"),
        ("https://VC.example:8443/sdk", "https://vc.example:8443/sdk"),
        ("https://10.0.0.5/sdk/", "https://10.0.0.5/sdk"),
        ("https://[::1]:9443", "https://[::1]:9443/sdk"),
        ("https://vc.example:443/sdk", "https://vc.example/sdk"),
    ] {
        assert_eq!(normalize_url(input).unwrap(), want, "{input}");
    }
    for bad in [
        "",
        "vc.example",
        "http://vc.example/sdk",
        "ftp://vc.example",
        "https://root:pw@vc.example/sdk",
        "https://vc.example/ui",
        "https://vc.example/sdk?x=1",
        "https://vc.example/sdk#top",
        "https:///sdk",
    ] {
        let err = normalize_url(bad).unwrap_err();
        assert_eq!(field_of(&err), "url", "{bad}");
    }
}

#[test]
fn thumbprints_are_checked_and_normalized() {
    let sha256 = THUMBPRINT.replace(':', "");
    assert_eq!(
        normalize_thumbprint(&sha256.to_lowercase()).unwrap(),
        THUMBPRINT
    );
    assert_eq!(
        normalize_thumbprint(&THUMBPRINT.to_lowercase()).unwrap(),
        THUMBPRINT
    );
    let sha1 = "0a:1b:2c:3d:4e:5f:60:71:82:93:a4:b5:c6:d7:e8:f9:0a:1b:2c:3d";
    assert_eq!(normalize_thumbprint(sha1).unwrap(), sha1.to_uppercase());
    for bad in [
        "",
        "zz",
        &sha256[..62],
        &format!("{sha256}00"),
        "0A:1B:2C",
        "0A1:B2C",
        "0A::1B",
        &THUMBPRINT.replace("4F:", "4G:"),
    ] {
        let err = normalize_thumbprint(bad).unwrap_err();
        assert_eq!(field_of(&err), "thumbprint", "{bad}");
    }
}

#[test]
fn user_names_and_passwords_are_checked() {
    assert_eq!(validate::username("  root ").unwrap(), "root");
    for bad in ["", "   ", "a\nb", &"x".repeat(300)] {
        assert_eq!(field_of(&validate::username(bad).unwrap_err()), "username");
    }
    assert!(validate::password(" spaces count ").is_ok());
    for bad in ["", "a\0b", &"p".repeat(2000)] {
        assert_eq!(field_of(&validate::password(bad).unwrap_err()), "password");
    }
}

#[test]
fn the_key_file_is_private_and_seals_per_vcenter() {
    let dir = tempfile::tempdir().unwrap();
    let key = seal::CredentialKey::load_or_create(dir.path()).unwrap();
    let path = seal::key_path(dir.path());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(std::fs::read(&path).unwrap().len(), 32);

    let sealed = key.seal("vc1", PASSWORD);
    assert!(!sealed.contains(PASSWORD));
    assert_ne!(sealed, key.seal("vc1", PASSWORD), "a fresh nonce each time");
    assert_eq!(key.open("vc1", &sealed).unwrap(), PASSWORD);
    // Bound to the vCenter id.
    let err = key.open("vc2", &sealed).unwrap_err();
    assert!(err.to_string().contains("cannot be opened"), "{err}");
    // The same file loads the same key.
    let again = seal::CredentialKey::load_or_create(dir.path()).unwrap();
    assert_eq!(again.open("vc1", &sealed).unwrap(), PASSWORD);
    for garbage in ["", "!!!", "AAAA", &sealed[..sealed.len() - 4]] {
        assert!(key.open("vc1", garbage).is_err(), "{garbage}");
    }
}

#[test]
fn a_replaced_or_damaged_key_gives_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let sealed = seal::CredentialKey::load_or_create(dir.path())
        .unwrap()
        .seal("vc1", PASSWORD);
    let path = seal::key_path(dir.path());
    std::fs::write(&path, [7u8; 32]).unwrap();
    let other = seal::CredentialKey::load_or_create(dir.path()).unwrap();
    let err = other.open("vc1", &sealed).unwrap_err().to_string();
    assert!(
        err.contains("credentials.key") && err.contains("set the password again"),
        "{err}"
    );
    std::fs::write(&path, b"short").unwrap();
    let err = seal::CredentialKey::load_or_create(dir.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a 32-byte key"), "{err}");
}

#[actix_rt::test]
async fn add_logs_in_first_and_stores_only_the_sealed_password() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeVcenter::new();
    let (vcenters, state) = vcenters_in(dir.path(), &fake);
    let view = vcenters
        .add(&admin(), "127.0.0.1:1", new_vcenter())
        .await
        .unwrap();
    assert_eq!(view.url, URL);
    assert_eq!(view.thumbprint, THUMBPRINT);
    assert_eq!(view.health, HealthState::Ok);
    assert_eq!(fake.logins.load(Ordering::SeqCst), 1);
    assert_eq!(
        fake.logouts.load(Ordering::SeqCst),
        1,
        "the check logs out again"
    );
    let json = serde_json::to_string(&vcenters.get(&view.id).unwrap()).unwrap();
    assert!(
        !json.contains(PASSWORD) && !json.contains("password"),
        "{json}"
    );
    for entry in state.db().open_tree(VCENTERS_TREE).unwrap().iter() {
        let (_, raw) = entry.unwrap();
        let text = String::from_utf8_lossy(&raw);
        assert!(!text.contains(PASSWORD), "{text}");
        assert!(text.contains("password_sealed"), "{text}");
    }
    let record = vcenters.record(&view.id).unwrap().unwrap();
    assert_eq!(
        vcenters.target(&record).unwrap().credentials.password,
        PASSWORD
    );
    let audit = events(&state);
    assert!(
        audit.iter().any(|(actor, event, detail)| actor == "admin"
            && event == "vcenter_added"
            && detail.contains(URL)
            && !detail.contains(PASSWORD)),
        "{audit:?}"
    );
    assert_eq!(
        vcenters
            .list(PageRequest {
                limit: None,
                offset: None
            })
            .unwrap()
            .total,
        1
    );

    // The same vCenter again: a conflict, even written another way.
    let mut again = new_vcenter();
    again.url = "https://VC.test.invalid:443/sdk/".into();
    let err = vcenters.add(&admin(), "l", again).await.unwrap_err();
    assert!(matches!(err, MgmtError::Conflict(_)), "{err:?}");
}

#[actix_rt::test]
async fn add_refuses_what_does_not_log_in_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeVcenter::new();
    let (vcenters, state) = vcenters_in(dir.path(), &fake);

    let mut wrong = new_vcenter();
    wrong.password = "wrong".into();
    let err = vcenters.add(&admin(), "l", wrong).await.unwrap_err();
    assert_eq!(field_of(&err), "password");

    let mut other_cert = new_vcenter();
    other_cert.thumbprint = RENEWED.into();
    let err = vcenters.add(&admin(), "l", other_cert).await.unwrap_err();
    assert_eq!(field_of(&err), "thumbprint");
    assert!(
        err.to_string().contains(THUMBPRINT),
        "names what it presents: {err}"
    );

    fake.up.store(false, Ordering::SeqCst);
    let err = vcenters
        .add(&admin(), "l", new_vcenter())
        .await
        .unwrap_err();
    assert_eq!(field_of(&err), "url");
    assert!(err.to_string().contains("connection refused"), "{err}");
    fake.up.store(true, Ordering::SeqCst);

    for (field, change) in [
        (
            "url",
            Box::new(|n: &mut NewVcenter| n.url = "http://vc/sdk".into())
                as Box<dyn Fn(&mut NewVcenter)>,
        ),
        (
            "username",
            Box::new(|n: &mut NewVcenter| n.username = " ".into()),
        ),
        (
            "password",
            Box::new(|n: &mut NewVcenter| n.password.clear()),
        ),
        (
            "thumbprint",
            Box::new(|n: &mut NewVcenter| n.thumbprint = "abc".into()),
        ),
    ] {
        let mut bad = new_vcenter();
        change(&mut bad);
        let err = vcenters.add(&admin(), "l", bad).await.unwrap_err();
        assert_eq!(field_of(&err), field);
    }
    assert_eq!(fake.logins.load(Ordering::SeqCst), 0);
    assert_eq!(state.db().open_tree(VCENTERS_TREE).unwrap().len(), 0);
    assert!(!events(&state).iter().any(|(_, e, _)| e == "vcenter_added"));
}

#[actix_rt::test]
async fn update_checks_the_new_credential_and_accepts_a_new_thumbprint() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeVcenter::new();
    let (vcenters, state) = vcenters_in(dir.path(), &fake);
    let id = vcenters.add(&admin(), "l", new_vcenter()).await.unwrap().id;

    // The vCenter's password changed; the appliance learns it.
    *fake.password.lock().unwrap() = "rotated".into();
    let wrong = VcenterUpdate {
        password: Some("still wrong".into()),
        ..VcenterUpdate::default()
    };
    let err = vcenters
        .update(&admin(), "l", &id, wrong)
        .await
        .unwrap_err();
    assert_eq!(field_of(&err), "password");
    let kept = vcenters.record(&id).unwrap().unwrap();
    assert_eq!(
        vcenters.target(&kept).unwrap().credentials.password,
        PASSWORD
    );
    let right = VcenterUpdate {
        password: Some("rotated".into()),
        ..VcenterUpdate::default()
    };
    vcenters.update(&admin(), "l", &id, right).await.unwrap();
    let record = vcenters.record(&id).unwrap().unwrap();
    assert_eq!(
        vcenters.target(&record).unwrap().credentials.password,
        "rotated"
    );

    // The certificate was renewed: the vCenter reports it, then the operator accepts it.
    *fake.presents.lock().unwrap() = RENEWED.into();
    let sink = inventory::Sink(vcenters.clone());
    sink.set_health(
        &id,
        Failure::CertificateMismatch {
            presented_sha256: RENEWED.into(),
            message: "mismatch".into(),
        }
        .health(),
    );
    let view = vcenters.get(&id).unwrap();
    assert_eq!(view.health, HealthState::Unhealthy);
    assert_eq!(view.presented_thumbprint.as_deref(), Some(RENEWED));
    let accept = VcenterUpdate {
        thumbprint: Some(RENEWED.to_lowercase()),
        ..VcenterUpdate::default()
    };
    let view = vcenters.update(&admin(), "l", &id, accept).await.unwrap();
    assert_eq!(view.thumbprint, RENEWED);
    assert_eq!(view.health, HealthState::Ok);
    assert_eq!(view.presented_thumbprint, None);
    assert_eq!(view.last_error, None);

    let audit = events(&state);
    let updates: Vec<&String> = audit
        .iter()
        .filter(|(a, e, _)| a == "admin" && e == "vcenter_updated")
        .map(|(_, _, d)| d)
        .collect();
    assert_eq!(updates.len(), 2, "{audit:?}");
    assert!(updates[0].contains("password") && !updates[0].contains("rotated"));
    assert!(updates[1].contains(RENEWED));

    let err = vcenters
        .update(&admin(), "l", &id, VcenterUpdate::default())
        .await
        .unwrap_err();
    assert!(matches!(err, MgmtError::BadRequest(_)), "{err:?}");
    let blank = VcenterUpdate {
        username: Some("".into()),
        ..VcenterUpdate::default()
    };
    let err = vcenters
        .update(&admin(), "l", &id, blank)
        .await
        .unwrap_err();
    assert_eq!(field_of(&err), "username");
    let err = vcenters
        .update(
            &admin(),
            "l",
            "nope",
            VcenterUpdate {
                password: Some("x".into()),
                ..VcenterUpdate::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, MgmtError::NotFound(_)), "{err:?}");
}

#[actix_rt::test]
async fn remove_forgets_the_vcenter_and_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeVcenter::new();
    let (vcenters, state) = vcenters_in(dir.path(), &fake);
    let id = vcenters.add(&admin(), "l", new_vcenter()).await.unwrap().id;
    vcenters.remove(&admin(), "l", &id).await.unwrap();
    assert!(matches!(vcenters.get(&id), Err(MgmtError::NotFound(_))));
    assert!(events(&state)
        .iter()
        .any(|(a, e, d)| a == "admin" && e == "vcenter_removed" && d.contains(&id)));
    let err = vcenters.remove(&admin(), "l", &id).await.unwrap_err();
    assert!(matches!(err, MgmtError::NotFound(_)), "{err:?}");
    // Reports about a removed vCenter change nothing.
    inventory::Sink(vcenters.clone()).set_health(&id, VcenterHealth::Healthy);
    assert_eq!(state.db().open_tree(VCENTERS_TREE).unwrap().len(), 0);
}

#[actix_rt::test]
async fn health_changes_are_recorded_and_alerted_once() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeVcenter::new();
    let (vcenters, state) = vcenters_in(dir.path(), &fake);
    let id = vcenters.add(&admin(), "l", new_vcenter()).await.unwrap().id;
    let sink = inventory::Sink(vcenters.clone());
    let down = Failure::other("transport: connection refused").health();
    sink.set_health(&id, down.clone());
    sink.set_health(&id, down);
    let view = vcenters.get(&id).unwrap();
    assert_eq!(view.health, HealthState::Unhealthy);
    assert!(view.last_error.unwrap().contains("connection refused"));
    assert!(vcenters.record(&id).unwrap().unwrap().retrying);
    sink.set_health(&id, Failure::InvalidLogin.health());
    let record = vcenters.record(&id).unwrap().unwrap();
    assert!(!record.retrying, "a refused login waits for the operator");
    assert!(record.last_error.unwrap().contains("update the credential"));
    sink.set_health(&id, VcenterHealth::Healthy);
    sink.set_health(&id, VcenterHealth::Healthy);
    assert_eq!(vcenters.get(&id).unwrap().health, HealthState::Ok);
    let audit = events(&state);
    let count = |name: &str| {
        audit
            .iter()
            .filter(|(a, e, _)| a == "system" && e == name)
            .count()
    };
    assert_eq!(count("vcenter_unhealthy"), 1, "{audit:?}");
    assert_eq!(count("vcenter_healthy"), 1, "{audit:?}");
}
