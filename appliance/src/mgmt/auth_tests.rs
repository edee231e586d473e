use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::state::AuditEvent;

const ADMIN_PW: &str = "Correct-Horse-9";
const PW: &str = "Battery-Staple-7";

struct Fixture {
    dir: tempfile::TempDir,
    state: State,
    auth: Auth,
}

/// A state with user `admin` (password [`ADMIN_PW`]) written the way setup writes it.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let state = State::open(dir.path()).unwrap();
    let (key, value) = Auth::user_entry(ADMIN_USER, Role::Admin, ADMIN_PW).unwrap();
    state
        .db()
        .open_tree("users")
        .unwrap()
        .insert(key, value)
        .unwrap();
    let auth = Auth::new(state.clone());
    Fixture { dir, state, auth }
}

fn root() -> Principal {
    Principal {
        user: "root".into(),
        role: Role::Admin,
        token_id: "0000000000000000".into(),
        kind: TokenKind::Api,
    }
}

fn events(state: &State, event: &str) -> Vec<AuditEvent> {
    let all = state.recent_audit(1000).unwrap();
    all.into_iter().filter(|e| e.event == event).collect()
}

fn unauthenticated(result: Result<Principal, MgmtError>) -> String {
    match result {
        Err(MgmtError::Unauthenticated(message)) => message,
        other => panic!("expected unauthenticated, got {other:?}"),
    }
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn password_hash_round_trips_as_argon2id() {
    let hash = hash_password(PW).unwrap();
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    assert!(verify_password(PW, &hash));
    assert!(!verify_password("Battery-Staple-8", &hash));
    assert!(!verify_password("", &hash));
    assert_ne!(hash, hash_password(PW).unwrap(), "salts are random");
    for bad in [
        "",
        "plain",
        "$argon2id$garbage",
        "$2b$12$abcdefghijklmnopqrstuv",
    ] {
        assert!(!verify_password(PW, bad), "{bad}");
    }
}

#[test]
fn password_rules_are_enforced() {
    assert!(Auth::password_problems(PW).is_empty());
    assert!(Auth::password_problems("correcthorse battery").is_empty());
    assert_eq!(Auth::password_rules().len(), 4);
    let cases: [(&str, &[&str]); 6] = [
        ("", &["at least 12", "two kinds"]),
        ("Short-1", &["at least 12"]),
        ("alllowercaseletters", &["two kinds"]),
        ("ALLUPPERCASELETTERS", &["two kinds"]),
        ("123456789012345", &["two kinds"]),
        ("!@#$%^&*()_+-=", &["two kinds"]),
    ];
    for (password, expected) in cases {
        let problems = Auth::password_problems(password);
        assert_eq!(problems.len(), expected.len(), "{password:?}: {problems:?}");
        for (problem, want) in problems.iter().zip(expected) {
            assert!(problem.contains(want), "{password:?}: {problem}");
            assert!(problem.ends_with('.'), "sentences: {problem}");
        }
    }
    let long = format!("{}A", "a".repeat(MAX_PASSWORD_CHARS));
    let problems = Auth::password_problems(&long);
    assert!(
        problems.len() == 1 && problems[0].contains("at most 1024"),
        "{problems:?}"
    );
    let problems = Auth::password_problems_for("alice.smith42", "Alice.Smith42");
    assert!(
        problems.len() == 1 && problems[0].contains("user name"),
        "{problems:?}"
    );
    // Setup's entry refuses the same passwords.
    let err = Auth::user_entry(ADMIN_USER, Role::Admin, "short").unwrap_err();
    assert!(
        matches!(&err, MgmtError::InvalidField { field, .. } if field == "password"),
        "{err}"
    );
}

#[test]
fn user_names_are_validated() {
    for good in ["admin", "a", "0ps", "a.b_c-d", &"x".repeat(64)] {
        assert!(validate_user_name(good).is_ok(), "{good}");
    }
    let too_long = "x".repeat(65);
    for bad in [
        "",
        too_long.as_str(),
        "../x",
        "Admin",
        "a b",
        " a",
        ".x",
        "-x",
        "_x",
        "é",
        "a/b",
        "a\n",
    ] {
        let err = validate_user_name(bad).unwrap_err();
        assert!(
            matches!(&err, MgmtError::InvalidField { field, .. } if field == "name"),
            "{bad:?}"
        );
        assert!(Auth::user_entry(bad, Role::Viewer, PW).is_err(), "{bad:?}");
    }
    let f = fixture();
    let err = f
        .auth
        .create_user(&root(), "local", "../x", Role::Viewer, PW)
        .unwrap_err();
    assert_eq!(err.code(), "invalid_field");
    assert!(f
        .auth
        .list_users()
        .unwrap()
        .iter()
        .all(|u| u.name == ADMIN_USER));
}

#[test]
fn login_accepts_the_right_password_only() {
    let f = fixture();
    let issued = f.auth.login(ADMIN_USER, ADMIN_PW, "10.0.0.1:4000").unwrap();
    assert!(issued.token.starts_with(SESSION_PREFIX), "{}", issued.token);
    assert_eq!(
        (issued.user.as_str(), issued.role, issued.kind),
        ("admin", Role::Admin, TokenKind::Session)
    );
    let expires = parse_time(issued.expires_at.as_deref().unwrap()).unwrap();
    let left = expires - OffsetDateTime::now_utc();
    assert!(
        left > Duration::hours(11) && left <= Duration::hours(12),
        "{left}"
    );

    for (user, password) in [
        (ADMIN_USER, "Wrong-Password-1"),
        ("nobody", ADMIN_PW),
        ("Bad Name", ADMIN_PW),
    ] {
        let err = f.auth.login(user, password, "10.0.0.2:4000").unwrap_err();
        assert!(
            matches!(&err, MgmtError::Unauthenticated(m) if m == BAD_LOGIN),
            "{err}"
        );
    }
    let ok = events(&f.state, "login");
    assert_eq!(ok.len(), 1);
    assert_eq!(
        (ok[0].actor.as_str(), ok[0].source.as_str()),
        ("admin", "10.0.0.1:4000")
    );
    let failed: Vec<String> = events(&f.state, "login_failed")
        .into_iter()
        .map(|e| e.detail)
        .collect();
    assert_eq!(
        failed,
        [
            "user \"admin\": wrong password",
            "user \"nobody\": unknown user",
            "user \"Bad Name\": unknown user"
        ]
    );
}

#[test]
fn five_failures_lock_the_name_and_the_address() {
    let f = fixture();
    f.auth
        .create_user(&root(), "local", "bob", Role::Viewer, PW)
        .unwrap();
    let mut fastest_check = std::time::Duration::MAX;
    for port in 0..5 {
        let started = Instant::now();
        let err = f
            .auth
            .login(ADMIN_USER, "Wrong-Password-1", &format!("10.0.0.1:{port}"))
            .unwrap_err();
        fastest_check = fastest_check.min(started.elapsed());
        assert_eq!(err.code(), "unauthenticated");
    }
    // The sixth attempt is refused even with the right password, from anywhere.
    for source in ["10.0.0.1:9", "10.0.0.7:9"] {
        let started = Instant::now();
        match f.auth.login(ADMIN_USER, ADMIN_PW, source) {
            Err(MgmtError::TooManyAttempts { retry_after_secs }) => {
                assert!((1..=900).contains(&retry_after_secs), "{retry_after_secs}")
            }
            other => panic!("expected too_many_attempts, got {other:?}"),
        }
        // No argon2 run: much faster than a password check.
        let took = started.elapsed();
        assert!(took < fastest_check / 2, "{took:?} vs {fastest_check:?}");
    }
    // The address is locked too, for every name.
    let err = f.auth.login("bob", PW, "10.0.0.1:10").unwrap_err();
    assert_eq!(err.code(), "too_many_attempts");
    // Another user from another address is unaffected.
    f.auth.login("bob", PW, "10.0.0.2:5").unwrap();
    let limited = events(&f.state, "login_failed")
        .into_iter()
        .filter(|e| e.detail.ends_with("rate limited"))
        .count();
    assert_eq!(limited, 3);
}

#[test]
fn success_clears_the_name_counter() {
    let f = fixture();
    for i in 0..4 {
        f.auth
            .login(ADMIN_USER, "Wrong-Password-1", &format!("10.0.1.{i}:1"))
            .unwrap_err();
    }
    f.auth.login(ADMIN_USER, ADMIN_PW, "10.0.2.1:1").unwrap();
    for i in 0..4 {
        f.auth
            .login(ADMIN_USER, "Wrong-Password-1", &format!("10.0.3.{i}:1"))
            .unwrap_err();
    }
    f.auth.login(ADMIN_USER, ADMIN_PW, "10.0.2.1:1").unwrap();
}

#[test]
fn session_and_api_tokens_authenticate() {
    let f = fixture();
    let session = f.auth.login(ADMIN_USER, ADMIN_PW, "local").unwrap();
    let who = f.auth.authenticate(&session.token).unwrap();
    assert_eq!(
        who,
        Principal {
            user: "admin".into(),
            role: Role::Admin,
            token_id: session.id.clone(),
            kind: TokenKind::Session
        }
    );
    assert_eq!(who.token_id.len(), 16);
    let api = f
        .auth
        .create_api_token(&who, "local", ADMIN_USER, "backup script", None)
        .unwrap();
    assert!(api.token.starts_with(API_PREFIX));
    let left = parse_time(api.expires_at.as_deref().unwrap()).unwrap() - OffsetDateTime::now_utc();
    assert!(
        left > Duration::days(89) && left <= Duration::days(90),
        "{left}"
    );
    let by_api = f.auth.authenticate(&api.token).unwrap();
    assert_eq!(
        (by_api.kind, by_api.token_id.as_str()),
        (TokenKind::Api, api.id.as_str())
    );
    assert_ne!(api.id, session.id);
}

#[test]
fn bad_secrets_are_refused_with_the_reason() {
    let f = fixture();
    // Expired: a record with a past expiry, written directly.
    let secret = new_secret(TokenKind::Session);
    let record = TokenRecord {
        id: "00000000000000aa".into(),
        user: ADMIN_USER.into(),
        kind: TokenKind::Session,
        name: "session".into(),
        created_at: "2000-01-01T00:00:00Z".into(),
        expires_at: Some("2000-01-01T12:00:00Z".into()),
        revoked: false,
    };
    let tokens = f.state.db().open_tree("tokens").unwrap();
    tokens
        .insert(hash_secret(&secret), encode(&record).unwrap())
        .unwrap();
    // Exactly the fixed message: neither the user nor the expiry time leaks.
    assert_eq!(unauthenticated(f.auth.authenticate(&secret)), EXPIRED);

    let api = f
        .auth
        .create_api_token(&root(), "local", ADMIN_USER, "ci", Some(1))
        .unwrap();
    f.auth.revoke_token(&root(), "local", &api.id).unwrap();
    assert_eq!(unauthenticated(f.auth.authenticate(&api.token)), REVOKED);

    assert_eq!(
        unauthenticated(f.auth.authenticate(&new_secret(TokenKind::Api))),
        UNKNOWN
    );
    // A real secret with the other kind's prefix is unknown, not accepted.
    let live = f.auth.login(ADMIN_USER, ADMIN_PW, "local").unwrap();
    let swapped = live.token.replacen(SESSION_PREFIX, API_PREFIX, 1);
    assert_eq!(unauthenticated(f.auth.authenticate(&swapped)), UNKNOWN);

    let body = &live.token[SESSION_PREFIX.len()..];
    for bad in [
        String::new(),
        "fss_".into(),
        format!("Bearer {}", live.token),
        format!("{} ", live.token),
        format!("{}A", live.token),
        live.token[..live.token.len() - 1].to_string(),
        format!("xyz_{body}"),
        format!("fss_{}", "!".repeat(43)),
        format!("fss_{}", "é".repeat(43)),
        "x".repeat(100_000),
    ] {
        assert_eq!(
            unauthenticated(f.auth.authenticate(&bad)),
            MALFORMED,
            "{bad:.40}"
        );
    }
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
fn logout_revokes_the_session() {
    let f = fixture();
    let session = f.auth.login(ADMIN_USER, ADMIN_PW, "10.0.0.1:1").unwrap();
    let who = f.auth.authenticate(&session.token).unwrap();
    f.auth.logout(&who, "10.0.0.1:2").unwrap();
    assert_eq!(
        unauthenticated(f.auth.authenticate(&session.token)),
        REVOKED
    );
    f.auth.logout(&who, "10.0.0.1:2").unwrap();
    let out = events(&f.state, "logout");
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].actor.as_str(), out[0].source.as_str()),
        ("admin", "10.0.0.1:2")
    );
    let ghost = Principal {
        token_id: "ffffffffffffffff".into(),
        ..who
    };
    assert_eq!(
        f.auth.logout(&ghost, "local").unwrap_err().code(),
        "unauthenticated"
    );
}

#[test]
fn csrf_tokens_are_bound_to_one_session() {
    let f = fixture();
    let a = f
        .auth
        .authenticate(&f.auth.login(ADMIN_USER, ADMIN_PW, "local").unwrap().token)
        .unwrap();
    let b = f
        .auth
        .authenticate(&f.auth.login(ADMIN_USER, ADMIN_PW, "local").unwrap().token)
        .unwrap();
    let token_a = f.auth.csrf_token(&a);
    assert_eq!(token_a.len(), 64);
    assert!(f.auth.check_csrf(&a, &token_a));
    assert!(!f.auth.check_csrf(&b, &token_a));
    assert!(f.auth.check_csrf(&b, &f.auth.csrf_token(&b)));
    for bad in [
        String::new(),
        "0".repeat(64),
        token_a.to_uppercase(),
        token_a[..63].to_string(),
        format!("{token_a}0"),
    ] {
        assert!(!f.auth.check_csrf(&a, &bad), "{bad}");
    }
    // The key is kept in settings, so tokens survive a restart of the service.
    let stored = f.state.setting("csrf_key").unwrap().unwrap();
    assert_eq!(stored.len(), 64);
    assert!(Auth::new(f.state.clone()).check_csrf(&a, &token_a));
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

#[test]
fn corrupt_records_are_errors_not_panics() {
    let f = fixture();
    let secret = new_secret(TokenKind::Api);
    let tokens = f.state.db().open_tree("tokens").unwrap();
    tokens
        .insert(hash_secret(&secret), &b"FS\x01{not json"[..])
        .unwrap();
    let err = f.auth.authenticate(&secret).unwrap_err();
    assert_eq!(err.code(), "internal");
    assert!(f.auth.list_tokens().is_err());
    let users = f.state.db().open_tree("users").unwrap();
    users.insert("broken", &b"XX"[..]).unwrap();
    assert_eq!(f.auth.list_users().unwrap_err().code(), "internal");
    assert_eq!(
        f.auth.login("broken", PW, "local").unwrap_err().code(),
        "internal"
    );
}

#[test]
fn authenticate_is_cheap() {
    let f = fixture();
    let api = f
        .auth
        .create_api_token(&root(), "local", ADMIN_USER, "bench", None)
        .unwrap();
    for i in 0..200 {
        f.auth
            .create_api_token(&root(), "local", ADMIN_USER, &format!("t{i}"), None)
            .unwrap();
    }
    let started = Instant::now();
    for _ in 0..5_000 {
        f.auth.authenticate(&api.token).unwrap();
    }
    // The benchmark needs 5,000 authenticated requests per second; this leaves room for the rest of
    // a request even on a loaded test machine (an accidental argon2 run would take minutes).
    let took = started.elapsed();
    println!("5000 authentications: {took:?}");
    assert!(took < std::time::Duration::from_secs(2), "{took:?}");
}

#[test]
fn unknown_names_cost_as_much_as_wrong_passwords() {
    let f = fixture();
    let fastest = |user: &str| {
        (0..3)
            .map(|i| {
                let started = Instant::now();
                let source = format!("10.1.{}.{i}:1", user.len());
                f.auth.login(user, "Wrong-Password-1", &source).unwrap_err();
                started.elapsed()
            })
            .min()
            .unwrap()
    };
    let wrong_password = fastest(ADMIN_USER);
    let unknown_user = fastest("nobody");
    // Both run one argon2 verification; skipping it for unknown names would be 100 times faster.
    assert!(
        unknown_user * 3 > wrong_password,
        "{unknown_user:?} vs {wrong_password:?}"
    );
}
