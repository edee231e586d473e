//! Guest credential sets: input checks, the sealed secret (never in sled, bound to its record), names
//! unique, updates and removal audited.

use super::*;
use crate::mgmt::vcenters::testkit::admin;

/// A throwaway ed25519 key made for this test (it opens nothing anywhere).
const TEST_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACAWnlxwi82zPooeGv9Z3yqF13Cco2twWagjHiQjyHr1MQAAAJBDtw0eQ7cN
HgAAAAtzc2gtZWQyNTUxOQAAACAWnlxwi82zPooeGv9Z3yqF13Cco2twWagjHiQjyHr1MQ
AAAECDIqD8fMkl27umL6kniKxE8EeTHFXGJYQK3ZbUISKr4haeXHCLzbM+ih4a/1nfKoXX
cJyja3BZqCMeJCPIevUxAAAACmZlcnJ5LXRlc3QBAgM=
-----END OPENSSH PRIVATE KEY-----
";

const SECRET: &str = "correct horse battery staple";

fn store(dir: &std::path::Path) -> (GuestCredentials, State) {
    let state = State::open(dir).unwrap();
    (
        GuestCredentials::new(state.clone(), dir.to_path_buf()).unwrap(),
        state,
    )
}

fn password_set(name: &str) -> NewGuestCredential {
    NewGuestCredential {
        name: name.into(),
        username: "root".into(),
        auth: GuestSecret::Password {
            password: SECRET.into(),
        },
    }
}

fn field_of(err: MgmtError) -> String {
    match err {
        MgmtError::InvalidField { field, .. } => field,
        other => panic!("not an invalid field: {other:?}"),
    }
}

#[test]
fn add_resolve_and_the_secret_is_never_in_sled_or_the_view() {
    let dir = tempfile::tempdir().unwrap();
    let (creds, state) = store(dir.path());
    let view = creds
        .add(&admin(), "test", password_set("linux-root"))
        .unwrap();
    assert_eq!(view.kind, CredentialKind::Password);
    assert_eq!(view.username, "root");
    assert_eq!(view.created_by, "admin");
    let (user, secret) = creds.resolve(&view.id).unwrap();
    assert_eq!(user, "root");
    assert!(matches!(secret, GuestSecret::Password { password } if password == SECRET));
    assert!(!serde_json::to_string(&view).unwrap().contains(SECRET));
    assert_eq!(
        creds
            .list(PageRequest {
                limit: None,
                offset: None
            })
            .unwrap()
            .total,
        1
    );

    state.flush().unwrap();
    drop(creds);
    drop(state);
    // Every byte sled wrote: the secret must not be there in the clear.
    for entry in walkdir(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "{} holds the secret in the clear",
            entry.display()
        );
    }
}

fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walkdir(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn a_sealed_secret_moved_to_another_record_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let (creds, _state) = store(dir.path());
    let a = creds.add(&admin(), "test", password_set("a")).unwrap();
    let b = creds.add(&admin(), "test", password_set("b")).unwrap();
    let mut rec_b = creds.record(&b.id).unwrap();
    rec_b.secret_sealed = creds.record(&a.id).unwrap().secret_sealed;
    creds.put(&rec_b).unwrap();
    let err = creds.resolve(&b.id).unwrap_err();
    assert!(matches!(err, MgmtError::Internal(_)), "{err:?}");
    assert!(err.to_string().contains("cannot be opened"), "{err}");
    // The record it came from still opens.
    creds.resolve(&a.id).unwrap();
}

#[test]
fn bad_input_is_refused_with_the_field_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (creds, _state) = store(dir.path());
    let cases: Vec<(&str, NewGuestCredential)> = vec![
        (
            "name",
            NewGuestCredential {
                name: "".into(),
                ..password_set("x")
            },
        ),
        (
            "name",
            NewGuestCredential {
                name: "a/b".into(),
                ..password_set("x")
            },
        ),
        (
            "name",
            NewGuestCredential {
                name: "x".repeat(65),
                ..password_set("x")
            },
        ),
        (
            "username",
            NewGuestCredential {
                username: "".into(),
                ..password_set("x")
            },
        ),
        (
            "username",
            NewGuestCredential {
                username: "-oProxyCommand=x".into(),
                ..password_set("x")
            },
        ),
        (
            "username",
            NewGuestCredential {
                username: "root; reboot".into(),
                ..password_set("x")
            },
        ),
        (
            "auth.password",
            NewGuestCredential {
                auth: GuestSecret::Password {
                    password: "".into(),
                },
                ..password_set("x")
            },
        ),
        (
            "auth.private_key",
            NewGuestCredential {
                auth: GuestSecret::PrivateKey {
                    private_key: "-----BEGIN OPENSSH PRIVATE KEY-----\nxx\n".into(),
                    passphrase: None,
                },
                ..password_set("x")
            },
        ),
        (
            "auth.private_key",
            NewGuestCredential {
                auth: GuestSecret::PrivateKey {
                    private_key: "k".repeat(MAX_PRIVATE_KEY + 1),
                    passphrase: None,
                },
                ..password_set("x")
            },
        ),
    ];
    for (field, new) in cases {
        let err = creds.add(&admin(), "test", new).unwrap_err();
        assert_eq!(field_of(err), field);
    }
    assert_eq!(creds.tree.len(), 0);
}

#[test]
fn private_keys_are_checked_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (creds, _state) = store(dir.path());
    let view = creds
        .add(
            &admin(),
            "test",
            NewGuestCredential {
                name: "deploy key".into(),
                username: "ferry".into(),
                auth: GuestSecret::PrivateKey {
                    private_key: TEST_KEY.into(),
                    passphrase: None,
                },
            },
        )
        .unwrap();
    assert_eq!(view.kind, CredentialKind::PrivateKey);
    let (_, secret) = creds.resolve(&view.id).unwrap();
    assert!(
        matches!(secret, GuestSecret::PrivateKey { private_key, .. } if private_key == TEST_KEY)
    );
}

#[test]
fn names_are_unique_and_updates_and_removal_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let (creds, state) = store(dir.path());
    let a = creds.add(&admin(), "test", password_set("a")).unwrap();
    let b = creds.add(&admin(), "test", password_set("b")).unwrap();
    assert!(matches!(
        creds.add(&admin(), "test", password_set("a")),
        Err(MgmtError::Conflict(_))
    ));
    let rename = GuestCredentialUpdate {
        name: Some("a".into()),
        ..Default::default()
    };
    assert!(matches!(
        creds.update(&admin(), "test", &b.id, rename),
        Err(MgmtError::Conflict(_))
    ));
    assert!(matches!(
        creds.update(&admin(), "test", &b.id, GuestCredentialUpdate::default()),
        Err(MgmtError::BadRequest(_))
    ));
    let changed = creds
        .update(
            &admin(),
            "test",
            &b.id,
            GuestCredentialUpdate {
                username: Some("admin".into()),
                auth: Some(GuestSecret::Password {
                    password: "new secret".into(),
                }),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(changed.username, "admin");
    assert!(changed.updated_at.is_some());
    let (_, secret) = creds.resolve(&b.id).unwrap();
    assert!(matches!(secret, GuestSecret::Password { password } if password == "new secret"));

    creds.remove(&admin(), "test", &a.id).unwrap();
    assert!(matches!(creds.get(&a.id), Err(MgmtError::NotFound(_))));
    assert!(matches!(
        creds.remove(&admin(), "test", &a.id),
        Err(MgmtError::NotFound(_))
    ));
    let audit: Vec<String> = state
        .recent_audit(20)
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    for event in [
        "guest_credential_added",
        "guest_credential_updated",
        "guest_credential_removed",
    ] {
        assert!(audit.iter().any(|e| e == event), "{event} in {audit:?}");
    }
    // No audit line carries a secret.
    let details: String = state
        .recent_audit(20)
        .unwrap()
        .into_iter()
        .map(|e| e.detail)
        .collect();
    assert!(!details.contains(SECRET) && !details.contains("new secret"));
}

#[test]
fn a_damaged_record_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (creds, _state) = store(dir.path());
    creds
        .tree
        .insert(b"broken", b"not a record".to_vec())
        .unwrap();
    let err = creds.get("broken").unwrap_err();
    assert!(err.to_string().contains("broken"), "{err}");
    assert!(creds
        .list(PageRequest {
            limit: None,
            offset: None
        })
        .is_err());
}
