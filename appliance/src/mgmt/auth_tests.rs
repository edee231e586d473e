use super::*;
use crate::state::AuditEvent;

pub(super) const ADMIN_PW: &str = "Correct-Horse-9";
pub(super) const PW: &str = "Battery-Staple-7";

pub(super) struct Fixture {
    pub(super) dir: tempfile::TempDir,
    pub(super) state: State,
    pub(super) auth: Auth,
}

/// A state with user `admin` (password [`ADMIN_PW`]) written the way setup writes it.
pub(super) fn fixture() -> Fixture {
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

pub(super) fn root() -> Principal {
    Principal {
        user: "root".into(),
        role: Role::Admin,
        token_id: "0000000000000000".into(),
        kind: TokenKind::Api,
    }
}

pub(super) fn events(state: &State, event: &str) -> Vec<AuditEvent> {
    let all = state.recent_audit(1000).unwrap();
    all.into_iter().filter(|e| e.event == event).collect()
}

pub(super) fn unauthenticated(result: Result<Principal, MgmtError>) -> String {
    match result {
        Err(MgmtError::Unauthenticated(message)) => message,
        other => panic!("expected unauthenticated, got {other:?}"),
    }
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
