//! Tests of the agent registry: registration (passphrase, hostname, BIOS UUID), admission, sightings,
//! passphrase rotation and revocation.

use super::*;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

const PASSPHRASE: &str = "KMNP-QRTU-VWXY-3467-9ACD-EFGH";

fn registry(dir: &std::path::Path) -> Registry {
    let tls = Arc::new(ApplianceTls::load_or_create(dir, &[]).unwrap());
    Registry::new(State::open(dir).unwrap(), tls, PASSPHRASE)
}

#[test]
fn register_issues_a_cert_for_a_new_uuid_and_records_it() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path());
    let creds = reg.register(PASSPHRASE, "db01.corp", None).unwrap();
    let id = uuid::Uuid::parse_str(&creds.agent_id).unwrap();
    assert_eq!(id.get_version_num(), 4);
    let der = CertificateDer::from_pem_slice(creds.cert_pem.as_bytes()).unwrap();
    assert_eq!(reg.identify(&der).as_deref(), Some(creds.agent_id.as_str()));
    assert_eq!(reg.identify(b"not a certificate"), None);
    assert!(creds.key_pem.contains("PRIVATE KEY"));
    assert_eq!(creds.ca_pem, reg.tls.ca_pem());
    let record = reg.state().agent(&creds.agent_id).unwrap().unwrap();
    assert_eq!(record.hostname, "db01.corp");
    assert!(!record.revoked);
    assert_eq!(
        reg.state().recent_audit(5).unwrap()[0].event,
        "agent_registered"
    );
    assert!(reg.admit(&creds.agent_id).is_ok());

    let other = reg.register(PASSPHRASE, "db02", None).unwrap();
    assert_ne!(other.agent_id, creds.agent_id);
}

#[test]
fn passphrase_is_checked_leniently_on_form_strictly_on_content() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path());
    assert!(reg
        .register("kmnp qrtu vwxy 3467 9acd efgh", "typed-by-hand", None)
        .is_ok());
    for wrong in [
        "",
        "KMNP-QRTU-VWXY-3467-9ACD-EFGG",
        "KMNP",
        "x".repeat(10_000).as_str(),
    ] {
        assert!(
            matches!(reg.register(wrong, "h", None), Err(Refusal::BadPassphrase)),
            "{wrong:.20}"
        );
    }
    assert_eq!(reg.state().agents().unwrap().len(), 1);
}

#[test]
fn admit_refuses_unknown_and_revoked_agents() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path());
    assert!(matches!(reg.admit("nobody"), Err(Refusal::Unknown(_))));
    let creds = reg.register(PASSPHRASE, "h", None).unwrap();
    reg.state().revoke_agent(&creds.agent_id).unwrap();
    assert!(matches!(
        reg.admit(&creds.agent_id),
        Err(Refusal::Revoked(id)) if id == creds.agent_id
    ));
}

#[test]
fn seen_records_last_contact_and_ignores_unknown_agents() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path());
    let creds = reg.register(PASSPHRASE, "old-name", None).unwrap();
    reg.seen(&creds.agent_id, "new-name\u{7}");
    let record = reg.state().agent(&creds.agent_id).unwrap().unwrap();
    assert_eq!(record.hostname, "new-name");
    assert!(record.last_seen.is_some());
    reg.seen("ghost", "x");
    assert!(reg.state().agent("ghost").unwrap().is_none());
}

fn rotating_registry(dir: &std::path::Path) -> (Registry, std::path::PathBuf) {
    let path = dir.join(crate::secrets::REGISTRATION_PASSPHRASE_FILE);
    std::fs::write(&path, format!("{PASSPHRASE}\n")).unwrap();
    (registry(dir).with_passphrase_file(&path), path)
}

#[test]
fn rotation_refuses_the_old_passphrase_and_accepts_the_new() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (reg, path) = rotating_registry(dir.path());
    let before = reg.register(PASSPHRASE, "registered-before", None).unwrap();

    let generated = reg.rotate_passphrase(None, "admin", "10.0.0.9").unwrap();
    assert_ne!(
        normalize_passphrase(&generated),
        normalize_passphrase(PASSPHRASE)
    );
    assert_eq!(normalize_passphrase(&generated).len(), GENERATED_SYMBOLS);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("{generated}\n")
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(matches!(
        reg.register(PASSPHRASE, "late", None),
        Err(Refusal::BadPassphrase)
    ));
    assert!(reg.register(&generated, "new", None).is_ok());
    // Agents registered before keep replicating: they present certificates, not the passphrase.
    assert!(reg.admit(&before.agent_id).is_ok());
    let audit = reg.state().recent_audit(10).unwrap();
    let audit = audit
        .iter()
        .find(|e| e.event == "registration_passphrase_rotated")
        .expect("the rotation is audited");
    assert_eq!(
        (audit.actor.as_str(), audit.source.as_str()),
        ("admin", "10.0.0.9")
    );
    assert!(!audit.detail.contains(&generated), "never audit the secret");

    let chosen = reg
        .rotate_passphrase(Some("  our own pass phrase 2026 "), "admin", "local")
        .unwrap();
    assert_eq!(chosen, "our own pass phrase 2026");
    assert!(reg
        .register("OUR-OWN-PASS-PHRASE-2026", "typed", None)
        .is_ok());
    assert!(matches!(
        reg.register(&generated, "late", None),
        Err(Refusal::BadPassphrase)
    ));
}

#[test]
fn a_failed_rotation_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (reg, path) = rotating_registry(dir.path());
    let too_long = "x".repeat(MAX_PASSPHRASE_CHARS + 1);
    for bad in [
        "",
        "short-1234",
        "-- -- -- -- -- -- -- --",
        "twelve chars\nand a line break",
        "with a tab\tinside it here",
        too_long.as_str(),
    ] {
        let err = reg
            .rotate_passphrase(Some(bad), "admin", "local")
            .unwrap_err();
        assert!(matches!(err, RotateError::Invalid(_)), "{bad:?}: {err}");
        assert_eq!(MgmtError::from(err).code(), "invalid_field");
    }
    // No file configured: refused rather than changed in memory only (a restart would undo it).
    let sibling = || Registry::new(reg.state().clone(), reg.tls.clone(), PASSPHRASE);
    let err = sibling()
        .rotate_passphrase(None, "admin", "local")
        .unwrap_err();
    assert!(matches!(err, RotateError::NoPassphraseFile), "{err}");
    // The file cannot be written: the old passphrase stays.
    let reg_missing = sibling().with_passphrase_file(dir.path().join("gone/pp"));
    let err = reg_missing
        .rotate_passphrase(None, "admin", "local")
        .unwrap_err();
    assert!(matches!(err, RotateError::Io { .. }), "{err}");
    assert_eq!(MgmtError::from(err).code(), "internal");
    assert!(reg_missing.register(PASSPHRASE, "still", None).is_ok());

    assert!(reg.register(PASSPHRASE, "still", None).is_ok());
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("{PASSPHRASE}\n")
    );
    assert!(reg
        .state()
        .recent_audit(50)
        .unwrap()
        .iter()
        .all(|e| e.event != "registration_passphrase_rotated"));
}

#[tokio::test]
async fn revoke_marks_audits_and_ends_the_live_session() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path());
    let creds = reg.register(PASSPHRASE, "db01", None).unwrap();
    let hub = actors::hub::Hub::default();
    let (_claim, mut stop) = hub.claim(&creds.agent_id).await;

    let record = reg
        .revoke(Some(&hub), &creds.agent_id, "alice", "192.0.2.7")
        .unwrap();
    assert!(record.revoked);
    tokio::time::timeout(std::time::Duration::from_secs(10), stop.changed())
        .await
        .expect("the session is told at once")
        .unwrap();
    assert_eq!(*stop.borrow(), actors::hub::StopReason::Disconnected);
    assert!(matches!(
        reg.admit(&creds.agent_id),
        Err(Refusal::Revoked(_))
    ));
    let audit = reg.state().recent_audit(1).unwrap().remove(0);
    assert_eq!(
        (
            audit.event.as_str(),
            audit.actor.as_str(),
            audit.source.as_str()
        ),
        ("agent_revoked", "alice", "192.0.2.7")
    );
    assert!(audit.detail.contains("db01"));

    // Again (and without a data path): harmless, audited once.
    reg.revoke(None, &creds.agent_id, "alice", "192.0.2.7")
        .unwrap();
    let revocations = reg
        .state()
        .recent_audit(50)
        .unwrap()
        .into_iter()
        .filter(|e| e.event == "agent_revoked")
        .count();
    assert_eq!(revocations, 1);
    assert!(matches!(
        reg.revoke(Some(&hub), "nobody", "alice", "local"),
        Err(StateError::UnknownAgent(_))
    ));
}

#[test]
fn hostnames_are_cleaned() {
    assert_eq!(clean_hostname("  a\nb\t "), "ab");
    assert_eq!(clean_hostname(""), "(unnamed)");
    assert_eq!(clean_hostname(&"h".repeat(1000)).len(), MAX_HOSTNAME_CHARS);
}

#[test]
fn a_reported_bios_uuid_is_stored_in_canonical_form() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path());
    let stored = |bios_uuid: Option<&str>| {
        let creds = reg.register(PASSPHRASE, "vm", bios_uuid).unwrap();
        reg.state()
            .agent(&creds.agent_id)
            .unwrap()
            .unwrap()
            .bios_uuid
    };
    let canonical = "42172e0b-9a4c-4c3f-8d2e-0123456789ab";
    assert_eq!(stored(Some(canonical)).as_deref(), Some(canonical));
    for spelling in [
        "42172E0B-9A4C-4C3F-8D2E-0123456789AB",
        "42172e0b9a4c4c3f8d2e0123456789ab",
        "{42172e0b-9a4c-4c3f-8d2e-0123456789ab}",
    ] {
        assert_eq!(
            stored(Some(spelling)).as_deref(),
            Some(canonical),
            "{spelling}"
        );
    }
    assert_eq!(stored(None), None, "an agent older than the field");
}

#[test]
fn a_bad_bios_uuid_is_dropped_and_the_agent_still_registers() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path());
    let long = "4".repeat(64);
    for bad in [
        "",
        "not a uuid",
        "42172e0b-9a4c-4c3f-8d2e-0123456789a",
        "42172e0b-9a4c-4c3f-8d2e-0123456789abc",
        "42172e0b-9a4c-4c3f-8d2e-0123456789ab\n",
        "42172e0b-9a4c-4c3f-8d2e-0123456789ag",
        "\u{1b}[31m42172e0b-9a4c-4c3f-8d2e-0123456789ab",
        "00000000-0000-0000-0000-000000000000",
        "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
        long.as_str(),
    ] {
        let creds = reg
            .register(PASSPHRASE, "h", Some(bad))
            .unwrap_or_else(|e| panic!("{bad:?} refused the registration: {e}"));
        let record = reg.state().agent(&creds.agent_id).unwrap().unwrap();
        assert_eq!(record.bios_uuid, None, "{bad:?}");
        assert!(reg.admit(&creds.agent_id).is_ok());
    }
    // A wrong passphrase is still refused, whatever the BIOS UUID.
    assert!(matches!(
        reg.register("wrong", "h", Some("42172e0b-9a4c-4c3f-8d2e-0123456789ab")),
        Err(Refusal::BadPassphrase)
    ));
}
