//! The management API's guards from the outside (docs/MANAGEMENT.md): the setup phase and its token,
//! sign-in failures and their rate limit, roles, token revocation and sign-out, CSRF for
//! cookie-authenticated calls, malformed requests, and the security headers on every answer. A setup
//! interrupted by a crash is in setup_resume.rs.
//!
//! Expired tokens: the API refuses to issue a token valid for less than a day (checked below), so a
//! test cannot wait for one to expire; the expiry check itself is covered by the unit tests of
//! `mgmt::auth`. Sign-out (the same "token stops working" path, end to end) is covered here.

use ferry_tests::web_harness::{wait_for, Response, WebAppliance, ADMIN_PASSWORD};
use serde_json::{json, Value};
use std::net::TcpStream;
use std::time::Duration;

/// Every answer must carry the security headers: each call of these tests goes through here.
#[track_caller]
fn checked(r: anyhow::Result<Response>, what: &str) -> Response {
    let r = r.unwrap_or_else(|e| panic!("{what}: no answer: {e:#}"));
    r.assert_security_headers(what);
    r
}

#[track_caller]
fn get(app: &WebAppliance, path: &str, token: Option<&str>) -> Response {
    checked(app.get(path, token), &format!("GET {path}"))
}

#[track_caller]
fn send(
    app: &WebAppliance,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> Response {
    checked(
        app.send_json(method, path, token, &body),
        &format!("{method} {path}"),
    )
}

#[track_caller]
fn raw(
    app: &WebAppliance,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    checked(
        app.request(method, path, headers, Some(body)),
        &format!("{method} {path}"),
    )
}

fn started() -> WebAppliance {
    WebAppliance::start_fresh(&[]).expect("start a fresh appliance")
}

/// A fresh appliance, set up through the API; returns it with the admin's session token.
fn set_up() -> (WebAppliance, String) {
    let app = started();
    let token = app.setup(ADMIN_PASSWORD).expect("setup");
    (app, token)
}

fn setup_phase(app: &WebAppliance) -> String {
    get(app, "/api/v1/setup", None).json()["phase"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn before_setup_everything_but_setup_answers_setup_required() {
    let app = started();
    for path in [
        "/api/v1/status",
        "/api/v1/machines",
        "/api/v1/nope",
        "/api/v1/users",
    ] {
        get(&app, path, None).expect(409, Some("setup_required"));
        // A token, even a made-up one, changes nothing: there are no users yet.
        get(&app, path, Some("fat_made-up")).expect(409, Some("setup_required"));
    }
    send(
        &app,
        "POST",
        "/api/v1/session",
        None,
        json!({"username": "admin", "password": ADMIN_PASSWORD}),
    )
    .expect(409, Some("setup_required"));
    let health = get(&app, "/healthz", None);
    assert_eq!(health.status, 200, "{}", health.text());
    let status = get(&app, "/api/v1/setup", None).expect(200, None);
    assert_eq!(status["phase"], "required", "{status}");
    assert!(
        status["password_rules"]
            .as_array()
            .is_some_and(|r| !r.is_empty()),
        "{status}"
    );
    get(&app, "/api/v1/openapi.json", None).expect(200, None);
    // Nothing can register or replicate before setup: the data listener is not started.
    assert!(
        TcpStream::connect(("127.0.0.1", app.data_port)).is_err(),
        "the data listener runs before setup"
    );
}

#[test]
fn the_setup_token_guards_setup_and_setup_happens_once() {
    let mut app = started();
    let token = app.setup_token().expect("token");
    let bad = [
        json!({"admin_password": ADMIN_PASSWORD}),
        json!({"token": "", "admin_password": ADMIN_PASSWORD}),
        json!({"token": "0".repeat(token.len()), "admin_password": ADMIN_PASSWORD}),
        json!({"token": format!("{token}0"), "admin_password": ADMIN_PASSWORD}),
    ];
    for body in bad {
        send(&app, "POST", "/api/v1/setup", None, body.clone())
            .expect(403, Some("bad_setup_token"));
        send(
            &app,
            "POST",
            "/api/v1/setup/vault-test",
            None,
            json!({"token": body["token"].as_str().unwrap_or("x"), "vault_url": "/tmp/x"}),
        )
        .expect(403, Some("bad_setup_token"));
    }
    // The right token with a password the rules refuse: a field error, nothing stored.
    send(
        &app,
        "POST",
        "/api/v1/setup",
        None,
        json!({"token": token, "admin_password": "short"}),
    )
    .expect(400, Some("invalid_field"));
    assert_eq!(
        app.setup_token().expect("token"),
        token,
        "refused attempts changed the setup token"
    );
    for f in [
        "vault-passphrase",
        "registration-passphrase",
        "vault-location.json",
        "admin-token",
    ] {
        assert!(
            !app.data_dir.join(f).exists(),
            "{f} written by a refused setup"
        );
    }
    assert_eq!(setup_phase(&app), "required");

    let result = send(
        &app,
        "POST",
        "/api/v1/setup",
        None,
        json!({"token": token, "admin_password": ADMIN_PASSWORD}),
    )
    .expect(200, None);
    assert_eq!(result["admin_user"], "admin", "{result}");
    let vault_pass = result["vault_passphrase"].as_str().unwrap_or_default();
    assert!(!vault_pass.is_empty(), "{result}");
    assert!(result["registration_passphrase"]
        .as_str()
        .is_some_and(|p| !p.is_empty()));
    assert!(result["ca_fingerprint"]
        .as_str()
        .is_some_and(|p| !p.is_empty()));
    assert!(
        result["recovery_kit"]
            .as_str()
            .is_some_and(|k| k.contains(vault_pass)),
        "the recovery kit lacks the vault passphrase: {result}"
    );
    let on_disk = std::fs::read_to_string(app.data_dir.join("vault-passphrase")).expect("file");
    assert_eq!(on_disk.trim(), vault_pass);
    assert!(
        !app.setup_token_path().exists(),
        "the setup token outlived setup"
    );
    assert_eq!(setup_phase(&app), "complete");
    let admin_token =
        std::fs::read_to_string(app.data_dir.join("admin-token")).expect("admin-token");
    let me = get(&app, "/api/v1/session", Some(admin_token.trim())).expect(200, None);
    assert_eq!(
        (me["user"].as_str(), me["role"].as_str()),
        (Some("admin"), Some("admin"))
    );

    // Once is enough: the old token and the wizard's vault test are refused now.
    send(
        &app,
        "POST",
        "/api/v1/setup",
        None,
        json!({"token": token, "admin_password": ADMIN_PASSWORD}),
    )
    .expect(409, Some("setup_complete"));
    send(
        &app,
        "POST",
        "/api/v1/setup/vault-test",
        None,
        json!({"token": token, "vault_url": "/tmp/x"}),
    )
    .expect(409, Some("setup_complete"));
    // Setup complete: the data path starts.
    wait_for(
        Duration::from_secs(30),
        "the data listener after setup",
        || TcpStream::connect(("127.0.0.1", app.data_port)).ok(),
    )
    .expect("data listener");

    // A clean restart keeps it so: no new setup token, the same admin password.
    let st = app.terminate().expect("SIGTERM");
    assert!(st.success(), "exit after SIGTERM: {st}\n{}", app.log_text());
    app.restart().expect("restart");
    assert_eq!(setup_phase(&app), "complete");
    assert!(
        !app.setup_token_path().exists(),
        "a set-up appliance wrote a setup token"
    );
    checked(app.login("admin", ADMIN_PASSWORD), "login").expect(200, None);
}

#[test]
fn wrong_passwords_are_refused_then_rate_limited() {
    let (app, admin) = set_up();
    for attempt in 1..=5 {
        let r = checked(app.login("admin", "Wrong-Password-2024"), "wrong login");
        assert_eq!(r.status, 401, "attempt {attempt}: {}", r.text());
        assert_eq!(r.code(), "unauthenticated", "attempt {attempt}");
    }
    let r = checked(app.login("admin", "Wrong-Password-2024"), "6th wrong login");
    r.expect(429, Some("too_many_attempts"));
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("429 without a numeric Retry-After: {r:?}"));
    assert!((1..=15 * 60).contains(&retry), "Retry-After {retry}");
    // Locked means locked: the right password does not get through (no password oracle).
    checked(app.login("admin", ADMIN_PASSWORD), "login while locked")
        .expect(429, Some("too_many_attempts"));
    // Sessions from before keep working, and every failure is in the audit log.
    let audit = get(&app, "/api/v1/audit?limit=1000", Some(&admin)).expect(200, None);
    let failures = audit["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["event"] == "login_failed")
        .count();
    assert!(failures >= 5, "{failures} login_failed events: {audit}");
}

#[test]
fn a_viewer_can_read_but_not_change_anything() {
    let (app, admin) = set_up();
    let viewer_pass = "Viewer-Pass-2024";
    let created = send(
        &app,
        "POST",
        "/api/v1/users",
        Some(&admin),
        json!({"name": "viewer1", "role": "viewer", "password": viewer_pass}),
    )
    .expect(201, None);
    assert_eq!(created["role"], "viewer", "{created}");
    assert!(
        !created.to_string().contains(viewer_pass),
        "the password came back"
    );
    // Bad input on the same call: a weak password, an unknown role, a name that exists.
    send(
        &app,
        "POST",
        "/api/v1/users",
        Some(&admin),
        json!({"name": "weak", "role": "viewer", "password": "aaaaaaaaaaaaaaaa"}),
    )
    .expect(400, Some("invalid_field"));
    send(
        &app,
        "POST",
        "/api/v1/users",
        Some(&admin),
        json!({"name": "root", "role": "root", "password": viewer_pass}),
    )
    .expect(400, Some("invalid_json"));
    send(
        &app,
        "POST",
        "/api/v1/users",
        Some(&admin),
        json!({"name": "viewer1", "role": "admin", "password": viewer_pass}),
    )
    .expect(409, Some("conflict"));

    let login = checked(app.login("viewer1", viewer_pass), "viewer login").expect(200, None);
    assert_eq!(login["role"], "viewer");
    let viewer = login["token"].as_str().expect("token").to_string();
    get(&app, "/api/v1/status", Some(&viewer)).expect(200, None);
    get(&app, "/api/v1/machines", Some(&viewer)).expect(200, None);
    let before = get(&app, "/api/v1/settings", Some(&viewer)).expect(200, None);

    let refused: [(&str, &str, Value); 5] = [
        (
            "POST",
            "/api/v1/users",
            json!({"name": "x1", "role": "admin", "password": viewer_pass}),
        ),
        (
            "PATCH",
            "/api/v1/settings",
            json!({"upload_limit_bytes_per_sec": 1000}),
        ),
        ("POST", "/api/v1/agents/x/revoke", json!({})),
        ("POST", "/api/v1/tokens", json!({"name": "mine"})),
        ("PATCH", "/api/v1/users/admin", json!({"disabled": true})),
    ];
    for (method, path, body) in refused {
        send(&app, method, path, Some(&viewer), body).expect(403, Some("forbidden"));
    }
    get(&app, "/api/v1/users", Some(&viewer)).expect(403, Some("forbidden"));
    get(&app, "/api/v1/audit", Some(&viewer)).expect(403, Some("forbidden"));
    let after = get(&app, "/api/v1/settings", Some(&admin)).expect(200, None);
    assert_eq!(before, after, "a refused PATCH changed the settings");
    // The admin still exists and works.
    get(&app, "/api/v1/users", Some(&admin)).expect(200, None);
}

#[test]
fn revoked_tokens_and_signed_out_sessions_stop_working() {
    let (app, admin) = set_up();
    let (id, secret) = app.create_api_token(&admin, "script").expect("token");
    assert!(secret.starts_with("fat_"), "API token prefix: {secret}");
    get(&app, "/api/v1/status", Some(&secret)).expect(200, None);
    let list = get(&app, "/api/v1/tokens", Some(&admin)).expect(200, None);
    assert!(list.to_string().contains(&id), "{list}");
    assert!(
        !list.to_string().contains(&secret),
        "the token list shows a secret"
    );

    let r = checked(
        app.delete(&format!("/api/v1/tokens/{id}"), Some(&admin)),
        "revoke",
    );
    assert_eq!(r.status, 204, "{}", r.text());
    get(&app, "/api/v1/status", Some(&secret)).expect(401, Some("unauthenticated"));

    // Lifetimes: at least a day, at most two years.
    for ttl in [0, 731] {
        send(
            &app,
            "POST",
            "/api/v1/tokens",
            Some(&admin),
            json!({"name": "t", "ttl_days": ttl}),
        )
        .expect(400, Some("invalid_field"));
    }
    let short = send(
        &app,
        "POST",
        "/api/v1/tokens",
        Some(&admin),
        json!({"name": "t", "ttl_days": 1}),
    )
    .expect(201, None);
    assert!(short["expires_at"].is_string(), "{short}");

    // Signing out ends that session only.
    let login = checked(app.login("admin", ADMIN_PASSWORD), "login").expect(200, None);
    let second = login["token"].as_str().expect("token").to_string();
    assert!(second.starts_with("fss_"), "session token prefix: {second}");
    get(&app, "/api/v1/session", Some(&second)).expect(200, None);
    let r = checked(app.delete("/api/v1/session", Some(&second)), "logout");
    assert_eq!(r.status, 204, "{}", r.text());
    get(&app, "/api/v1/session", Some(&second)).expect(401, Some("unauthenticated"));
    get(&app, "/api/v1/session", Some(&admin)).expect(200, None);

    // No token, a malformed one, another scheme.
    let r = get(&app, "/api/v1/status", None);
    r.expect(401, Some("unauthenticated"));
    assert!(
        r.header("www-authenticate").is_some(),
        "401 without WWW-Authenticate"
    );
    get(&app, "/api/v1/status", Some("fss_not-a-token")).expect(401, Some("unauthenticated"));
    raw(
        &app,
        "GET",
        "/api/v1/status",
        &[("Authorization", &format!("Basic {admin}"))],
        b"",
    )
    .expect(401, Some("unauthenticated"));
}

#[test]
fn cookie_authenticated_changes_need_the_csrf_token() {
    let (app, admin) = set_up();
    let login = checked(app.login("admin", ADMIN_PASSWORD), "login");
    let session = login.expect(200, None)["token"]
        .as_str()
        .expect("token")
        .to_string();
    let cookie_header = login
        .headers_named("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("ferry_session="))
        .unwrap_or_else(|| panic!("no ferry_session cookie: {login:?}"))
        .to_string();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(
            cookie_header.contains(attr),
            "cookie lacks {attr}: {cookie_header}"
        );
    }
    let cookie = format!("ferry_session={session}");
    let patch = |csrf: Option<&str>, limit: u64| {
        let mut headers = vec![
            ("Content-Type", "application/json"),
            ("Cookie", cookie.as_str()),
        ];
        if let Some(c) = csrf {
            headers.push(("X-CSRF-Token", c));
        }
        let body = json!({"upload_limit_bytes_per_sec": limit}).to_string();
        raw(&app, "PATCH", "/api/v1/settings", &headers, body.as_bytes())
    };
    patch(None, 1000).expect(403, Some("csrf"));
    patch(Some("bogus"), 1000).expect(403, Some("csrf"));
    // Another session's CSRF token does not fit this one.
    let other = checked(app.login("admin", ADMIN_PASSWORD), "login").expect(200, None);
    let other_csrf = other["csrf_token"].as_str().expect("csrf").to_string();
    patch(Some(&other_csrf), 1000).expect(403, Some("csrf"));
    let limit = |app: &WebAppliance| {
        get(app, "/api/v1/settings", Some(&admin)).expect(200, None)["upload_limit_bytes_per_sec"]
            .as_u64()
    };
    assert_eq!(limit(&app), Some(0), "a refused PATCH changed the settings");

    // Reading with the cookie needs no CSRF token and tells it.
    let me = raw(&app, "GET", "/api/v1/session", &[("Cookie", &cookie)], b"").expect(200, None);
    let csrf = me["csrf_token"].as_str().expect("csrf_token").to_string();
    assert!(!csrf.is_empty());
    assert_eq!(
        patch(Some(&csrf), 1000).expect(200, None)["upload_limit_bytes_per_sec"],
        1000
    );
    assert_eq!(limit(&app), Some(1000));
    // Bearer calls carry no cookie and need no CSRF token.
    send(
        &app,
        "PATCH",
        "/api/v1/settings",
        Some(&admin),
        json!({"upload_limit_bytes_per_sec": 2000}),
    )
    .expect(200, None);
    assert_eq!(limit(&app), Some(2000));
}

#[test]
fn malformed_requests_get_json_errors() {
    let (app, admin) = set_up();
    let auth = format!("Bearer {admin}");
    let json_headers = [
        ("Content-Type", "application/json"),
        ("Authorization", auth.as_str()),
    ];
    // 100 KiB: over the 64 KiB limit, also where no token is needed.
    let big = json!({"name": "x".repeat(100 << 10), "role": "viewer", "password": "Big-Body-2024"})
        .to_string();
    raw(&app, "POST", "/api/v1/users", &json_headers, big.as_bytes())
        .expect(413, Some("payload_too_large"));
    raw(
        &app,
        "POST",
        "/api/v1/session",
        &[("Content-Type", "application/json")],
        big.as_bytes(),
    )
    .expect(413, Some("payload_too_large"));
    raw(
        &app,
        "POST",
        "/api/v1/users",
        &json_headers,
        b"{\"name\": \"a\",",
    )
    .expect(400, Some("invalid_json"));
    raw(&app, "POST", "/api/v1/tokens", &json_headers, b"[1, 2]").expect(400, Some("invalid_json"));
    raw(
        &app,
        "POST",
        "/api/v1/tokens",
        &json_headers,
        b"{\"name\":\"x\",\"bogus\":1}",
    )
    .expect(400, Some("invalid_json"));
    let body = br#"{"name":"x"}"#;
    raw(
        &app,
        "POST",
        "/api/v1/tokens",
        &[("Content-Type", "text/plain"), ("Authorization", &auth)],
        body,
    )
    .expect(415, Some("unsupported_media_type"));
    raw(
        &app,
        "POST",
        "/api/v1/tokens",
        &[("Authorization", &auth)],
        body,
    )
    .expect(415, Some("unsupported_media_type"));

    for query in [
        "limit=0",
        "limit=abc",
        "limit=1001",
        "limit=-1",
        "offset=-1",
        "offset=x",
    ] {
        for list in ["/api/v1/audit", "/api/v1/users", "/api/v1/machines"] {
            let r = get(&app, &format!("{list}?{query}"), Some(&admin));
            assert_eq!(r.status, 400, "{list}?{query}: {}", r.text());
            assert!(
                ["bad_request", "invalid_field"].contains(&r.code().as_str()),
                "{list}?{query}: {}",
                r.text()
            );
        }
    }
    let page = get(&app, "/api/v1/audit?limit=1&offset=0", Some(&admin)).expect(200, None);
    assert_eq!(page["limit"], 1, "{page}");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");
    assert!(
        page["total"].as_u64().is_some_and(|t| t >= 2),
        "setup and login are audited: {page}"
    );

    get(&app, "/api/v1/nope", Some(&admin)).expect(404, Some("not_found"));
    get(&app, "/api/v1/machines/no-such-machine", Some(&admin)).expect(404, Some("not_found"));
    get(&app, "/api/v1/restores/no-such-job", Some(&admin)).expect(404, Some("not_found"));
}
