use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::super::tests::{events, fixture, root, unauthenticated, ADMIN_PW, PW};
use super::super::*;

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_disabled_user_is_refused_at_once() {
    let f = fixture();
    f.auth
        .create_user(&root(), "local", "carol", Role::Operator, PW)
        .unwrap();
    let session = f.auth.login("carol", PW, "local").unwrap();
    f.auth
        .update_user(&root(), "local", "carol", None, None, Some(true))
        .unwrap();
    assert_eq!(
        unauthenticated(f.auth.authenticate(&session.token)),
        DISABLED
    );
    let err = f.auth.login("carol", PW, "10.0.0.5:1").unwrap_err();
    assert!(err.to_string().contains("disabled"), "{err}");
    // A wrong password does not reveal that the account is disabled.
    let err = f
        .auth
        .login("carol", "Wrong-Password-1", "10.0.0.5:1")
        .unwrap_err();
    assert_eq!(err.to_string(), BAD_LOGIN);
    assert!(events(&f.state, "login_failed")
        .iter()
        .any(|e| e.detail == "user \"carol\": user disabled"));
    f.auth
        .update_user(&root(), "local", "carol", None, None, Some(false))
        .unwrap();
    assert_eq!(f.auth.authenticate(&session.token).unwrap().user, "carol");
}

#[test]
fn a_role_change_applies_to_existing_tokens() {
    let f = fixture();
    f.auth
        .create_user(&root(), "local", "dave", Role::Operator, PW)
        .unwrap();
    let api = f
        .auth
        .create_api_token(&root(), "local", "dave", "ci", None)
        .unwrap();
    assert_eq!(api.role, Role::Operator);
    assert_eq!(
        f.auth.authenticate(&api.token).unwrap().role,
        Role::Operator
    );
    let view = f
        .auth
        .update_user(&root(), "local", "dave", Some(Role::Viewer), None, None)
        .unwrap();
    assert_eq!(view.role, Role::Viewer);
    assert_eq!(f.auth.authenticate(&api.token).unwrap().role, Role::Viewer);
    let updated = events(&f.state, "user_updated");
    assert_eq!(updated[0].detail, "dave: role operator -> viewer");
}

#[test]
fn the_last_enabled_admin_is_protected() {
    let f = fixture();
    let by = root();
    let last = |err: MgmtError| {
        assert_eq!(err.code(), "conflict", "{err}");
        assert!(err.to_string().contains("last enabled admin"), "{err}");
    };
    last(f.auth.delete_user(&by, "local", ADMIN_USER).unwrap_err());
    last(
        f.auth
            .update_user(&by, "local", ADMIN_USER, None, None, Some(true))
            .unwrap_err(),
    );
    last(
        f.auth
            .update_user(&by, "local", ADMIN_USER, Some(Role::Operator), None, None)
            .unwrap_err(),
    );
    // A disabled admin does not count.
    f.auth
        .create_user(&by, "local", "eve", Role::Admin, PW)
        .unwrap();
    f.auth
        .update_user(&by, "local", "eve", None, None, Some(true))
        .unwrap();
    last(f.auth.delete_user(&by, "local", ADMIN_USER).unwrap_err());
    // With another enabled admin, the first may go; then the other is the last.
    f.auth
        .update_user(&by, "local", "eve", None, None, Some(false))
        .unwrap();
    f.auth
        .update_user(&by, "local", ADMIN_USER, Some(Role::Viewer), None, None)
        .unwrap();
    last(f.auth.delete_user(&by, "local", "eve").unwrap_err());
    // Non-admins come and go freely.
    f.auth.delete_user(&by, "local", ADMIN_USER).unwrap();
    let names: Vec<String> = f
        .auth
        .list_users()
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["eve"]);
}

#[test]
fn user_admin_refuses_duplicates_and_unknown_users() {
    let f = fixture();
    let by = root();
    f.auth
        .create_user(&by, "10.9.9.9:443", "zed", Role::Viewer, PW)
        .unwrap();
    f.auth
        .create_user(&by, "local", "amy", Role::Operator, PW)
        .unwrap();
    let err = f
        .auth
        .create_user(&by, "local", "zed", Role::Admin, PW)
        .unwrap_err();
    assert_eq!(err.code(), "conflict");
    let names: Vec<String> = f
        .auth
        .list_users()
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["admin", "amy", "zed"]);
    assert_eq!(
        f.auth
            .update_user(&by, "local", "ghost", None, None, Some(true))
            .unwrap_err()
            .code(),
        "not_found"
    );
    assert_eq!(
        f.auth
            .delete_user(&by, "local", "ghost")
            .unwrap_err()
            .code(),
        "not_found"
    );
    let err = f
        .auth
        .update_user(&by, "local", "zed", None, Some("zed"), None)
        .unwrap_err();
    assert_eq!(err.code(), "invalid_field");
    let err = f
        .auth
        .create_user(&by, "local", "weak", Role::Viewer, "weak")
        .unwrap_err();
    assert_eq!(err.code(), "invalid_field");
    // Audited with actor and source; the password never appears.
    let created = events(&f.state, "user_created");
    assert_eq!(created.len(), 2);
    assert_eq!(
        (
            created[0].actor.as_str(),
            created[0].source.as_str(),
            created[0].detail.as_str()
        ),
        ("root", "10.9.9.9:443", "zed (role viewer)")
    );
    let all = serde_json::to_string(&f.state.recent_audit(1000).unwrap()).unwrap();
    assert!(!all.contains(PW));
}

#[test]
fn a_new_password_works_and_signs_out_other_sessions() {
    let f = fixture();
    f.auth
        .create_user(&root(), "local", "fay", Role::Operator, PW)
        .unwrap();
    let first = f.auth.login("fay", PW, "local").unwrap();
    let second = f.auth.login("fay", PW, "local").unwrap();
    let api = f
        .auth
        .create_api_token(&root(), "local", "fay", "ci", None)
        .unwrap();
    let me = f.auth.authenticate(&second.token).unwrap();
    f.auth
        .update_user(&me, "local", "fay", None, Some("Another-Secret-2"), None)
        .unwrap();
    assert_eq!(unauthenticated(f.auth.authenticate(&first.token)), REVOKED);
    assert!(f.auth.authenticate(&second.token).is_ok());
    assert!(f.auth.authenticate(&api.token).is_ok());
    assert!(f.auth.login("fay", PW, "local").is_err());
    f.auth.login("fay", "Another-Secret-2", "local").unwrap();
    let detail = &events(&f.state, "user_updated")[0].detail;
    assert_eq!(detail, "fay: password changed");
}

#[test]
fn deleting_a_user_removes_their_tokens_for_good() {
    let f = fixture();
    f.auth
        .create_user(&root(), "local", "gus", Role::Viewer, PW)
        .unwrap();
    let api = f
        .auth
        .create_api_token(&root(), "local", "gus", "ci", None)
        .unwrap();
    f.auth.delete_user(&root(), "local", "gus").unwrap();
    f.auth
        .create_user(&root(), "local", "gus", Role::Admin, PW)
        .unwrap();
    assert_eq!(unauthenticated(f.auth.authenticate(&api.token)), UNKNOWN);
    assert!(f
        .auth
        .list_tokens()
        .unwrap()
        .iter()
        .all(|t| t.user != "gus"));
}

#[test]
fn api_token_requests_are_validated() {
    let f = fixture();
    let by = root();
    for days in [0, 731, u32::MAX] {
        let err = f
            .auth
            .create_api_token(&by, "local", ADMIN_USER, "ci", Some(days))
            .unwrap_err();
        assert!(
            matches!(&err, MgmtError::InvalidField { field, .. } if field == "ttl_days"),
            "{days}: {err}"
        );
    }
    let long = f
        .auth
        .create_api_token(&by, "local", ADMIN_USER, "ci", Some(730))
        .unwrap();
    let left = parse_time(long.expires_at.as_deref().unwrap()).unwrap() - OffsetDateTime::now_utc();
    assert!(left > Duration::days(729), "{left}");
    for name in ["", "   ", "a\u{0}b", &"n".repeat(65)] {
        let err = f
            .auth
            .create_api_token(&by, "local", ADMIN_USER, name, None)
            .unwrap_err();
        assert_eq!(err.code(), "invalid_field", "{name:?}");
    }
    let err = f
        .auth
        .create_api_token(&by, "local", "ghost", "ci", None)
        .unwrap_err();
    assert_eq!(err.code(), "not_found");
    let err = f
        .auth
        .revoke_token(&by, "local", "ffffffffffffffff")
        .unwrap_err();
    assert_eq!(err.code(), "not_found");
    assert_eq!(
        f.auth.revoke_token(&by, "local", "").unwrap_err().code(),
        "not_found"
    );
    // Revoking twice is harmless and audited once.
    f.auth.revoke_token(&by, "local", &long.id).unwrap();
    f.auth.revoke_token(&by, "local", &long.id).unwrap();
    let revoked = events(&f.state, "token_revoked");
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].actor, "root");
    assert_eq!(events(&f.state, "token_created").len(), 1);
}

#[test]
fn tokens_list_newest_first_without_expired_sessions_and_secrets() {
    let f = fixture();
    let old_secret = new_secret(TokenKind::Session);
    let old = TokenRecord {
        id: "00000000000000bb".into(),
        user: ADMIN_USER.into(),
        kind: TokenKind::Session,
        name: "session".into(),
        created_at: "2001-01-01T00:00:00Z".into(),
        expires_at: Some("2001-01-01T12:00:00Z".into()),
        revoked: false,
    };
    let tokens = f.state.db().open_tree("tokens").unwrap();
    tokens
        .insert(hash_secret(&old_secret), encode(&old).unwrap())
        .unwrap();
    assert!(
        f.auth.list_tokens().unwrap().is_empty(),
        "expired sessions are left out"
    );
    let a = f
        .auth
        .create_api_token(&root(), "local", ADMIN_USER, "first", None)
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let b = f.auth.login(ADMIN_USER, ADMIN_PW, "local").unwrap();
    let ids: Vec<String> = f
        .auth
        .list_tokens()
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids, [b.id.clone(), a.id.clone()]);
    // The login pruned the expired session.
    assert!(tokens.get(hash_secret(&old_secret)).unwrap().is_none());
    for entry in tokens.iter() {
        let (key, value) = entry.unwrap();
        for secret in [&a.token, &b.token] {
            let body = &secret.as_bytes()[4..];
            for bytes in [&key, &value] {
                assert!(
                    !bytes.windows(body.len()).any(|w| w == body),
                    "secret stored"
                );
            }
        }
        assert!(
            key.as_ref() == hash_secret(&a.token).as_bytes()
                || key.as_ref() == hash_secret(&b.token).as_bytes()
        );
        assert!(value.starts_with(b"FS\x01{\"id\":\""));
    }
}

#[test]
fn admin_token_file_is_private_reused_and_replaced() {
    let f = fixture();
    let path = f.dir.path().join(ADMIN_TOKEN_FILE);
    f.auth.ensure_admin_token_file(f.dir.path()).unwrap();
    assert_eq!(mode_of(&path), 0o600);
    let first = fs::read_to_string(&path).unwrap();
    let who = f.auth.authenticate(first.trim()).unwrap();
    assert_eq!(
        (who.user.as_str(), who.role, who.kind),
        ("admin", Role::Admin, TokenKind::Api)
    );
    let view = f
        .auth
        .list_tokens()
        .unwrap()
        .into_iter()
        .find(|t| t.id == who.token_id)
        .unwrap();
    assert_eq!(
        (view.name.as_str(), view.expires_at.as_deref()),
        (LOCAL_CLI_TOKEN, None)
    );

    // A working token is kept (and its mode tightened again).
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    f.auth.ensure_admin_token_file(f.dir.path()).unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), first);
    assert_eq!(mode_of(&path), 0o600);

    // A revoked one is replaced.
    f.auth
        .revoke_token(&root(), "local", &who.token_id)
        .unwrap();
    f.auth.ensure_admin_token_file(f.dir.path()).unwrap();
    let second = fs::read_to_string(&path).unwrap();
    assert_ne!(second, first);
    assert_eq!(f.auth.authenticate(second.trim()).unwrap().user, "admin");

    // A missing or garbage file too; the token it replaces stops working.
    fs::remove_file(&path).unwrap();
    f.auth.ensure_admin_token_file(f.dir.path()).unwrap();
    let third = fs::read_to_string(&path).unwrap();
    assert_eq!(unauthenticated(f.auth.authenticate(second.trim())), REVOKED);
    fs::write(&path, "garbage").unwrap();
    f.auth.ensure_admin_token_file(f.dir.path()).unwrap();
    let fourth = fs::read_to_string(&path).unwrap();
    assert!(f.auth.authenticate(fourth.trim()).is_ok());
    assert!(f.auth.authenticate(third.trim()).is_err());
    let created = events(&f.state, "token_created");
    assert_eq!(created.len(), 4);
    assert_eq!(
        (created[0].actor.as_str(), created[0].source.as_str()),
        ("system", "local")
    );
}

#[test]
fn admin_token_file_needs_an_enabled_admin_user() {
    let dir = tempfile::tempdir().unwrap();
    let auth = Auth::new(State::open(dir.path()).unwrap());
    let err = auth.ensure_admin_token_file(dir.path()).unwrap_err();
    assert_eq!(err.code(), "internal");
    assert!(!dir.path().join(ADMIN_TOKEN_FILE).exists());

    let f = fixture();
    f.auth
        .create_user(&root(), "local", "other", Role::Admin, PW)
        .unwrap();
    f.auth
        .update_user(&root(), "local", ADMIN_USER, None, None, Some(true))
        .unwrap();
    let err = f.auth.ensure_admin_token_file(f.dir.path()).unwrap_err();
    assert_eq!(err.code(), "internal");
}
