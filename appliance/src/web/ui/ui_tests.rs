//! The UI over an in-process app built like the real listener's (see `crate::web::start`).

use std::path::Path;
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::ServiceResponse;
use actix_web::http::{header, StatusCode};
use actix_web::{test, web, App};

use super::*;
use crate::config::Config;
use crate::mgmt::setup::{SetupPhase, SetupRequest};
use crate::state::State;
use crate::tls::ApplianceTls;
use crate::web::error;

const PASSWORD: &str = "Correct-Horse-42";

fn core_in(dir: &Path) -> Core {
    let figment = figment::Figment::new()
        .merge(figment::providers::Serialized::default(
            "data_dir",
            dir.to_string_lossy().into_owned(),
        ))
        .merge(figment::providers::Serialized::default(
            "vault_url",
            dir.join("vault").to_string_lossy().into_owned(),
        ));
    let cfg = Config::from_figment(figment).unwrap();
    let state = State::open(dir).unwrap();
    let tls = ApplianceTls::load_or_create(dir, &[]).unwrap();
    let mut core = Core::new(Arc::new(cfg), state, Arc::new(tls)).unwrap();
    // Vault creation with the real Argon2 costs takes seconds per test.
    core.setup = core
        .setup
        .clone()
        .with_kdf(vault::KdfParams::fast_for_tests());
    core
}

/// The app as `crate::web::start` builds it, with the UI only.
macro_rules! app {
    ($core:expr) => {
        test::init_service(
            App::new()
                .app_data(web::Data::new($core.clone()))
                .app_data(error::json_config(crate::web::MAX_BODY_BYTES))
                .app_data(error::query_config())
                .app_data(error::path_config())
                .app_data(web::PayloadConfig::new(crate::web::MAX_BODY_BYTES))
                .app_data(web::FormConfig::default().limit(crate::web::MAX_BODY_BYTES))
                .configure(configure),
        )
        .await
    };
}

async fn body_of<B: MessageBody>(resp: ServiceResponse<B>) -> String {
    let bytes = test::read_body(resp).await;
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn header_of<B>(resp: &ServiceResponse<B>, name: header::HeaderName) -> String {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

fn location<B>(resp: &ServiceResponse<B>) -> String {
    resp.headers()
        .get(header::LOCATION)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                layout::percent_encode(k),
                layout::percent_encode(v)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn post_form(path: &str, pairs: &[(&str, &str)]) -> test::TestRequest {
    test::TestRequest::post()
        .uri(path)
        .insert_header((header::CONTENT_TYPE, "application/x-www-form-urlencoded"))
        .set_payload(form(pairs))
}

/// Completes setup through the core (for tests about the signed-in pages).
async fn set_up(core: &Core) {
    let token = core.setup.prepare_token().unwrap();
    let request = SetupRequest {
        token,
        admin_password: PASSWORD.into(),
        ..SetupRequest::default()
    };
    core.setup.submit(request, "local").await.unwrap();
}

/// A session token of `user` and the CSRF token of its forms.
fn session_of(core: &Core, user: &str, password: &str) -> (String, String) {
    let issued = core.auth.login(user, password, "127.0.0.1:1").unwrap();
    let principal = core.auth.authenticate(&issued.token).unwrap();
    let csrf = core.auth.csrf_token(&principal);
    (issued.token, csrf)
}

fn cookie(token: &str) -> Cookie<'static> {
    Cookie::new(crate::web::extract::SESSION_COOKIE, token.to_string())
}

#[actix_web::test]
async fn every_page_redirects_to_setup_until_setup_is_complete() {
    let dir = tempfile::tempdir().unwrap();
    let core = core_in(dir.path());
    let app = app!(core);
    for path in [
        "/",
        "/login",
        "/agents",
        "/points",
        "/restores",
        "/audit",
        "/settings",
        "/machines/m1",
    ] {
        let resp = test::call_service(&app, test::TestRequest::get().uri(path).to_request()).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(location(&resp), "/setup", "{path}");
    }
    for path in ["/logout", "/login", "/settings", "/agents/a/revoke"] {
        let resp = test::call_service(&app, post_form(path, &[("csrf", "x")]).to_request()).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "POST {path}");
        assert_eq!(location(&resp), "/setup", "POST {path}");
    }
    // Static files are served in every phase, cacheable, with their content type.
    let resp = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/static/ferry.css")
            .to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        header_of(&resp, header::CONTENT_TYPE),
        "text/css; charset=utf-8"
    );
    assert!(header_of(&resp, header::CACHE_CONTROL).contains("max-age"));
    let resp = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/static/setup.js")
            .to_request(),
    )
    .await;
    assert_eq!(
        header_of(&resp, header::CONTENT_TYPE),
        "text/javascript; charset=utf-8"
    );
    assert!(body_of(resp).await.contains("/api/v1/setup/vault-test"));
}

#[actix_web::test]
async fn the_setup_page_prefills_the_token_and_escapes_a_hostile_one() {
    let dir = tempfile::tempdir().unwrap();
    let core = core_in(dir.path());
    let app = app!(core);
    let req = test::TestRequest::get()
        .uri("/setup?token=abc123def")
        .to_request();
    let resp = test::call_service(&app, req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        header_of(&resp, header::CONTENT_TYPE),
        "text/html; charset=utf-8"
    );
    // Browsers send a real Origin when this page's forms are posted.
    assert_eq!(header_of(&resp, header::REFERRER_POLICY), "same-origin");
    let page = body_of(resp).await;
    assert!(page.contains("id=\"setup-form\""), "{page}");
    assert!(page.contains("value=\"abc123def\""), "{page}");
    for name in [
        "token",
        "admin_password",
        "admin_password_confirm",
        "vault_url",
        "vault_passphrase",
        "registration_passphrase",
    ] {
        assert!(page.contains(&format!("name=\"{name}\"")), "{name}");
    }
    assert!(page.contains("id=\"setup-submit\""));
    // The password rules and the default vault come from the core.
    assert!(page.contains("At least 12 characters."), "{page}");
    assert!(page.contains(&dir.path().join("vault").to_string_lossy().into_owned()));
    // No inline script or style: the CSP would block them.
    assert!(!page.contains("style="));
    assert!(!page.contains("<style"));
    assert!(!page.contains("<script>"));

    let hostile = "\"><script>alert(1)</script>";
    let req = test::TestRequest::get()
        .uri(&format!("/setup?token={}", layout::percent_encode(hostile)))
        .to_request();
    let page = body_of(test::call_service(&app, req).await).await;
    assert!(!page.contains("<script>alert(1)"), "{page}");
    assert!(
        page.contains("&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
}

fn setup_fields<'a>(token: &'a str, confirm: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("token", token),
        ("admin_password", PASSWORD),
        ("admin_password_confirm", confirm),
        ("vault_url", ""),
        ("s3_region", "eu-west-1"),
        ("vault_passphrase", "typed vault passphrase 1234"),
        ("registration_passphrase", ""),
    ]
}

fn nothing_was_set_up(core: &Core, dir: &Path) {
    assert_eq!(core.setup.phase(), SetupPhase::Required);
    assert!(core.auth.list_users().unwrap().is_empty());
    assert!(!dir.join("registration-passphrase").exists());
    assert!(!dir.join("vault-passphrase").exists());
}

#[actix_web::test]
async fn a_wrong_setup_token_rerenders_the_form_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let core = core_in(dir.path());
    core.setup.prepare_token().unwrap();
    let app = app!(core);
    let req = post_form("/setup", &setup_fields("not-the-token", PASSWORD)).to_request();
    let resp = test::call_service(&app, req).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let page = body_of(resp).await;
    assert!(page.contains("id=\"setup-form\""));
    assert!(page.contains("setup token is missing or wrong"), "{page}");
    assert!(
        page.contains("field-error"),
        "the message sits next to the field"
    );
    // What was typed stays, except secrets.
    assert!(page.contains("value=\"not-the-token\""));
    assert!(page.contains("value=\"eu-west-1\""));
    assert!(!page.contains(PASSWORD));
    assert!(!page.contains("typed vault passphrase"));
    nothing_was_set_up(&core, dir.path());
}

#[actix_web::test]
async fn differing_passwords_and_cross_site_posts_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let core = core_in(dir.path());
    let token = core.setup.prepare_token().unwrap();
    let app = app!(core);
    let req = post_form("/setup", &setup_fields(&token, "Another-Password-9")).to_request();
    let resp = test::call_service(&app, req).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(body_of(resp).await.contains("the two passwords differ"));
    nothing_was_set_up(&core, dir.path());

    let cross_site: [&[(&str, &str)]; 4] = [
        &[("origin", "https://evil.example")],
        // An opaque origin (a sandboxed frame of any site).
        &[("origin", "null")],
        // The browser's own word wins over a matching Origin.
        &[
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://appliance.example:8443"),
        ],
        &[("sec-fetch-site", "same-site")],
    ];
    for headers in cross_site {
        let mut req = post_form("/setup", &setup_fields(&token, PASSWORD))
            .insert_header((header::HOST, "appliance.example:8443"));
        for (name, value) in headers {
            req = req.insert_header((*name, *value));
        }
        let resp = test::call_service(&app, req.to_request()).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{headers:?}");
        assert!(body_of(resp).await.contains("posted from another site"));
        nothing_was_set_up(&core, dir.path());
    }

    // A body that is not a form is an HTML error page, not a crash.
    let req = test::TestRequest::post()
        .uri("/setup")
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .set_payload("{}")
        .to_request();
    let resp = test::call_service(&app, req).await;
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(body_of(resp).await.contains("The form could not be read"));
    nothing_was_set_up(&core, dir.path());
}

#[::core::prelude::v1::test]
fn origins_are_compared_by_host_and_port() {
    assert!(same_origin("https://a.example:8443", "a.example:8443"));
    assert!(same_origin("https://A.example", "a.example"));
    assert!(same_origin("https://a.example", "a.example:443"));
    assert!(same_origin("https://[::1]:8443", "[::1]:8443"));
    assert!(!same_origin("https://a.example:8443", "a.example:9443"));
    assert!(!same_origin("https://b.example:8443", "a.example:8443"));
    assert!(!same_origin("null", "a.example"));
    assert!(!same_origin("https://a.example", "a.example/x y"));
}

#[::core::prelude::v1::test]
fn numbers_durations_and_times_read_well() {
    assert_eq!(layout::bytes(512), "512 B");
    assert_eq!(layout::bytes(1536), "1.5 KiB");
    assert_eq!(layout::bytes(20 << 30), "20 GiB");
    assert_eq!(layout::bytes(u64::MAX), "16384 PiB");
    assert_eq!(layout::rate(125_000.0), "1.0 Mbit/s");
    assert_eq!(layout::rate(-5.0), "0 bit/s");
    assert_eq!(layout::duration(45), "45 s");
    assert_eq!(layout::duration(900), "15 min");
    assert_eq!(layout::duration(200), "3 min 20 s");
    assert_eq!(layout::duration(7_500), "2 h 5 min");
    assert_eq!(layout::duration(3 * 86_400), "3 d");
    assert_eq!(
        layout::time("2024-05-01T12:00:03.123456Z"),
        "2024-05-01 12:00:03 UTC"
    );
    assert_eq!(layout::time("garbage"), "garbage");
    assert_eq!(layout::percent_encode("a b/ü~"), "a%20b%2F%C3%BC~");
    assert_eq!(layout::sentence("the token"), "The token");
    assert_eq!(layout::sentence(""), "");
}

#[::core::prelude::v1::test]
fn fingerprints_break_only_after_a_colon() {
    let shown = layout::fingerprint(Some("fp"), "ab:0c:ff").into_string();
    assert_eq!(
        shown,
        "<code class=\"fingerprint\" id=\"fp\">ab:<wbr>0c:<wbr>ff</code>"
    );
    let plain = layout::fingerprint(None, "ab").into_string();
    assert_eq!(plain, "<code class=\"fingerprint\">ab</code>");
    // Not a fingerprint: still escaped text, and no break without a colon.
    let hostile = layout::fingerprint(None, "<b>x</b>:y").into_string();
    assert_eq!(
        hostile,
        "<code class=\"fingerprint\">&lt;b&gt;x&lt;/b&gt;:<wbr>y</code>"
    );
    assert_eq!(
        layout::fingerprint(None, "").into_string(),
        "<code class=\"fingerprint\"></code>"
    );
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// The text between `open` (its end) and the next `close`.
fn between<'a>(page: &'a str, open: &str, close: &str) -> &'a str {
    let start = page
        .find(open)
        .unwrap_or_else(|| panic!("{open} in {page}"))
        + open.len();
    let len = page[start..].find(close).unwrap();
    &page[start..start + len]
}

#[actix_web::test]
async fn a_complete_setup_shows_the_result_once_then_sign_in_works() {
    let dir = tempfile::tempdir().unwrap();
    let core = core_in(dir.path());
    let token = core.setup.prepare_token().unwrap();
    let app = app!(core);
    // As a browser posts it from a page served under `no-referrer`: Origin null, same-origin fetch.
    let req = post_form("/setup", &setup_fields(&token, PASSWORD))
        .insert_header((header::HOST, "127.0.0.1:8443"))
        .insert_header((header::ORIGIN, "null"))
        .insert_header(("sec-fetch-site", "same-origin"))
        .to_request();
    let resp = test::call_service(&app, req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let page = body_of(resp).await;
    assert!(page.contains("id=\"setup-result\""), "{page}");
    assert_eq!(core.setup.phase(), SetupPhase::Complete);
    // The typed vault passphrase, and a generated registration passphrase.
    let vault = between(&page, "id=\"vault-passphrase\">", "<");
    assert_eq!(vault, "typed vault passphrase 1234");
    let registration = between(&page, "id=\"registration-passphrase\">", "<");
    assert!(registration.len() >= 12, "{registration}");
    let on_disk = std::fs::read_to_string(dir.path().join("registration-passphrase")).unwrap();
    assert_eq!(on_disk.trim(), registration);
    // The fingerprint wraps only after its colons; its text is unchanged.
    let shown = between(&page, "id=\"ca-fingerprint\">", "</code>");
    assert_eq!(shown.replace("<wbr>", ""), core.tls.ca_fingerprint());
    assert_eq!(shown.matches("<wbr>").count(), 31, "{shown}");
    // The kit is shown and offered as a download of the same text.
    let kit = between(&page, "id=\"recovery-kit\">", "</pre>");
    assert!(!kit.is_empty());
    // The fingerprint on a line of its own; the setup time in whole seconds.
    assert!(kit.lines().any(|l| l == core.tls.ca_fingerprint()), "{kit}");
    let at = between(kit, "Set up:", "\n").trim();
    assert!(at.len() == 20 && at.ends_with('Z'), "{at}");
    let link = between(&page, "id=\"recovery-kit-download\"", ">");
    assert!(
        link.contains("download=\"ferry-recovery-kit.txt\""),
        "{link}"
    );
    let href = between(link, "href=\"data:text/plain;charset=utf-8,", "\"");
    let decoded = percent_decode(href);
    let shown = kit
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&");
    assert_eq!(decoded, shown);
    assert!(page.contains("id=\"continue-login\""));

    // Shown once: /setup now goes to sign-in, and so does the dashboard.
    for path in ["/setup", "/"] {
        let resp = test::call_service(&app, test::TestRequest::get().uri(path).to_request()).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&resp), "/login");
    }
    let resp = test::call_service(
        &app,
        post_form("/setup", &setup_fields(&token, PASSWORD)).to_request(),
    )
    .await;
    assert_eq!(location(&resp), "/login");

    // The admin signs in with the password chosen above.
    let req = post_form("/login", &[("username", "admin"), ("password", PASSWORD)]).to_request();
    let resp = test::call_service(&app, req).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/");
}

#[actix_web::test]
async fn login_sets_a_strict_cookie_and_wrong_passwords_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let core = core_in(dir.path());
    set_up(&core).await;
    let app = app!(core);

    let resp = test::call_service(&app, test::TestRequest::get().uri("/login").to_request()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let page = body_of(resp).await;
    for id in ["login-form", "login-submit"] {
        assert!(page.contains(&format!("id=\"{id}\"")), "{id}");
    }

    let req = post_form(
        "/login",
        &[("username", "admin"), ("password", "wrong-Password-1")],
    )
    .to_request();
    let resp = test::call_service(&app, req).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.response().cookies().next().is_none());
    let page = body_of(resp).await;
    assert!(page.contains("class=\"error\""), "{page}");
    assert!(page.contains("Wrong user name or password"));
    assert!(page.contains("value=\"admin\""), "the user name stays");

    let req = post_form("/login", &[("username", "admin"), ("password", PASSWORD)])
        .insert_header((header::ORIGIN, "https://evil.example"))
        .insert_header((header::HOST, "127.0.0.1:8443"))
        .to_request();
    let resp = test::call_service(&app, req).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN, "cross-site sign-in");
    assert!(resp.response().cookies().next().is_none());

    let req = post_form("/login", &[("username", "admin"), ("password", PASSWORD)])
        .insert_header((header::ORIGIN, "https://127.0.0.1:8443"))
        .insert_header((header::HOST, "127.0.0.1:8443"))
        .to_request();
    let resp = test::call_service(&app, req).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/");
    let set = resp.response().cookies().next().unwrap().into_owned();
    assert_eq!(set.name(), "ferry_session");
    assert_eq!(set.http_only(), Some(true));
    assert_eq!(set.secure(), Some(true));
    assert_eq!(set.same_site(), Some(SameSite::Strict));
    assert_eq!(set.path(), Some("/"));

    // The cookie opens the dashboard; /login then forwards there too.
    let req = test::TestRequest::get()
        .uri("/")
        .cookie(cookie(set.value()))
        .to_request();
    let resp = test::call_service(&app, req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let page = body_of(resp).await;
    for id in [
        "summary",
        "machines-table",
        "nav-dashboard",
        "nav-agents",
        "nav-points",
        "nav-restores",
        "nav-audit",
        "nav-settings",
        "logout",
    ] {
        assert!(page.contains(&format!("id=\"{id}\"")), "{id} in {page}");
    }
    let req = test::TestRequest::get()
        .uri("/login")
        .cookie(cookie(set.value()))
        .to_request();
    assert_eq!(location(&test::call_service(&app, req).await), "/");

    // A forged or stale cookie is not a session.
    let req = test::TestRequest::get()
        .uri("/agents")
        .cookie(cookie("fss_forged"))
        .to_request();
    let resp = test::call_service(&app, req).await;
    assert_eq!(location(&resp), "/login");
}

#[actix_web::test]
async fn repeated_failures_are_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let core = core_in(dir.path());
    set_up(&core).await;
    let app = app!(core);
    let mut last = StatusCode::OK;
    let mut page = String::new();
    for _ in 0..7 {
        let req = post_form(
            "/login",
            &[("username", "admin"), ("password", "Nope-nope-123")],
        )
        .to_request();
        let resp = test::call_service(&app, req).await;
        last = resp.status();
        if last == StatusCode::TOO_MANY_REQUESTS {
            assert!(resp.headers().contains_key(header::RETRY_AFTER));
            page = body_of(resp).await;
            break;
        }
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
    assert!(page.contains("Too many failed sign-ins"), "{page}");
}

/// The signed-in pages (a sibling file, so that each stays readable).
#[path = "ui_pages_tests.rs"]
mod pages;

/// The vCenter, VM and push job pages.
#[path = "ui_vcenter_tests.rs"]
mod vcenter_pages;
