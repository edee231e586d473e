use super::*;
use crate::registry::Registry;
use crate::tls::ApplianceTls;
use actors::registry::{AgentRegistry, Refusal};
use std::sync::Arc;

const PASSPHRASE: &str = "KMNP-QRTU-VWXY-3467-9ACD-EFGH";

fn registry(dir: &std::path::Path) -> Registry {
    let tls = Arc::new(ApplianceTls::load_or_create(dir, &[]).unwrap());
    Registry::new(State::open(dir).unwrap(), tls, PASSPHRASE)
}

fn events(reg: &Registry, name: &str) -> Vec<crate::state::AuditEvent> {
    reg.state()
        .recent_audit(100)
        .unwrap()
        .into_iter()
        .filter(|e| e.event == name)
        .collect()
}

#[test]
fn a_token_registers_one_agent_once_and_records_it() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path());
    let issued = reg
        .enrollments()
        .issue("vc-1/vm-42", DEFAULT_ENROLLMENT_TTL, "alice", "192.0.2.1")
        .unwrap();
    assert!(issued.token.starts_with(ENROLLMENT_TOKEN_PREFIX));
    assert!(issued.id.starts_with("enr_"));

    let creds = reg.register(&issued.token, "web01", None).unwrap();
    let record = reg.enrollments().get(&issued.id).unwrap().unwrap();
    assert_eq!(record.used_by.as_deref(), Some(creds.agent_id.as_str()));
    assert_eq!(record.vm, "vc-1/vm-42");
    assert!(record.used_at.is_some());
    assert!(reg.state().agent(&creds.agent_id).unwrap().is_some());
    let registered = events(&reg, "agent_registered");
    assert!(
        registered[0].detail.contains(&issued.id) && registered[0].detail.contains("vc-1/vm-42"),
        "{:?}",
        registered[0]
    );
    assert_eq!(
        reg.enrollments()
            .for_agent(&creds.agent_id)
            .unwrap()
            .map(|r| r.vm),
        Some("vc-1/vm-42".to_string())
    );
    assert_eq!(reg.enrollments().for_agent("other").unwrap(), None);
    let used = events(&reg, "enrollment_token_used");
    assert_eq!(used.len(), 1);
    assert!(used[0].detail.contains(&creds.agent_id) && used[0].detail.contains(&issued.id));
    let issue_event = &events(&reg, "enrollment_token_issued")[0];
    assert_eq!(
        (issue_event.actor.as_str(), issue_event.source.as_str()),
        ("alice", "192.0.2.1")
    );
    assert!(
        !issue_event.detail.contains(&issued.token),
        "never audit the secret"
    );

    // Once only, even with the newline a file adds.
    assert!(matches!(
        reg.register(&format!("{}\n", issued.token), "web01-again", None),
        Err(Refusal::BadPassphrase)
    ));
    let refused = events(&reg, "enrollment_token_refused");
    assert_eq!(refused.len(), 1);
    assert!(
        refused[0].detail.contains("already used"),
        "{:?}",
        refused[0]
    );
    assert_eq!(reg.state().agents().unwrap().len(), 1);
}

#[test]
fn expired_wrong_and_revoked_tokens_fail_and_the_passphrase_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path());
    let expired = reg
        .enrollments()
        .issue("vm-a", Duration::ZERO, "system", "local")
        .unwrap();
    assert!(matches!(
        reg.register(&expired.token, "a", None),
        Err(Refusal::BadPassphrase)
    ));
    assert!(events(&reg, "enrollment_token_refused")[0]
        .detail
        .contains("expired"));

    let live = reg
        .issue_enrollment_token("vm-b", DEFAULT_ENROLLMENT_TTL)
        .unwrap();
    let mut wrong = live.clone();
    wrong.pop();
    wrong.push(if live.ends_with('0') { '1' } else { '0' });
    for bad in [
        wrong.as_str(),
        "fen_",
        "",
        "fen_0000000000000000000000000000000000000000000000000000000000000000",
        &"x".repeat(10_000),
    ] {
        assert!(
            matches!(reg.register(bad, "b", None), Err(Refusal::BadPassphrase)),
            "{bad:.20}"
        );
    }
    // Unknown tokens are not audited (they are just wrong passphrases).
    assert_eq!(events(&reg, "enrollment_token_refused").len(), 1);

    let withdrawn = reg
        .enrollments()
        .issue("vm-c", DEFAULT_ENROLLMENT_TTL, "system", "local")
        .unwrap();
    assert!(reg.enrollments().revoke(&withdrawn.id).unwrap());
    assert!(!reg.enrollments().revoke(&withdrawn.id).unwrap(), "once");
    assert!(!reg.enrollments().revoke("enr_nope").unwrap());
    assert!(matches!(
        reg.register(&withdrawn.token, "c", None),
        Err(Refusal::BadPassphrase)
    ));

    assert!(reg.register(PASSPHRASE, "by-passphrase", None).is_ok());
    assert!(reg.register(&live, "by-token", None).is_ok());
    assert_eq!(reg.state().agents().unwrap().len(), 2);
    // A used token cannot be revoked any more: it tells which agent it made.
    let used_id = reg
        .enrollments()
        .tree()
        .unwrap()
        .iter()
        .map(|e| {
            let (k, v) = e.unwrap();
            decode(&k, &v).unwrap()
        })
        .find(|r| r.vm == "vm-b")
        .unwrap();
    assert!(!reg.enrollments().revoke(&used_id.id).unwrap());
}

#[test]
fn the_secret_is_stored_only_as_a_hash() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path());
    let issued = reg
        .enrollments()
        .issue("vm\u{7}-x", Duration::from_secs(60), "system", "local")
        .unwrap();
    let tree = reg.enrollments().tree().unwrap();
    let (key, raw) = tree.iter().next().unwrap().unwrap();
    assert_eq!(
        key.as_ref(),
        Sha256::digest(issued.token.as_bytes()).as_slice()
    );
    let hex_secret = issued.token.trim_start_matches(ENROLLMENT_TOKEN_PREFIX);
    assert!(!String::from_utf8_lossy(&raw).contains(hex_secret));
    assert!(raw.starts_with(b"FS\x01{"));
    let record = decode(&key, &raw).unwrap();
    assert_eq!(record.vm, "vm-x", "control characters are dropped");
    assert!(!format!("{issued:?}").contains(hex_secret));
}

#[test]
fn validity_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path());
    let issued = reg
        .enrollments()
        .issue(
            "vm",
            Duration::from_secs(365 * 24 * 3600),
            "system",
            "local",
        )
        .unwrap();
    let record = reg.enrollments().get(&issued.id).unwrap().unwrap();
    let created = OffsetDateTime::parse(&record.created, &Rfc3339).unwrap();
    let expires = OffsetDateTime::parse(&record.expires, &Rfc3339).unwrap();
    assert_eq!(expires - created, MAX_ENROLLMENT_TTL);
}

#[test]
fn racing_registrations_with_one_token_make_one_agent() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Arc::new(registry(dir.path()));
    let token = reg
        .issue_enrollment_token("vm", DEFAULT_ENROLLMENT_TTL)
        .unwrap();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let reg = reg.clone();
            let token = token.clone();
            std::thread::spawn(move || reg.register(&token, &format!("racer-{i}"), None).is_ok())
        })
        .collect();
    let wins = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|ok| *ok)
        .count();
    assert_eq!(wins, 1);
    assert_eq!(reg.state().agents().unwrap().len(), 1);
}

#[test]
fn a_corrupt_record_is_an_internal_refusal_and_release_frees_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path());
    let token = format!("{ENROLLMENT_TOKEN_PREFIX}corrupt");
    let tree = reg.enrollments().tree().unwrap();
    tree.insert(key_of(&token), encode_record(b"{not json"))
        .unwrap();
    assert!(matches!(
        reg.register(&token, "h", None),
        Err(Refusal::Internal(_))
    ));
    assert!(
        reg.enrollments().get("enr_x").is_err(),
        "the corrupt record is reported"
    );
    tree.clear().unwrap();

    let issued = reg
        .enrollments()
        .issue("vm", DEFAULT_ENROLLMENT_TTL, "system", "local")
        .unwrap();
    assert!(matches!(
        reg.enrollments().consume(&issued.token, "agent-1").unwrap(),
        Use::Accepted(_)
    ));
    reg.enrollments().release(&issued.token, "someone-else");
    assert!(reg
        .enrollments()
        .get(&issued.id)
        .unwrap()
        .unwrap()
        .used_by
        .is_some());
    reg.enrollments().release(&issued.token, "agent-1");
    assert_eq!(
        reg.enrollments().get(&issued.id).unwrap().unwrap().used_by,
        None
    );
    assert!(reg.register(&issued.token, "h", None).is_ok());
}
