//! Plugin sign-in: header parsing with bad input, the role table, and the session cache, against a
//! scripted session checker and a vCenter stored through the real `Vcenters` service.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::mgmt::vcenters::testkit::{admin, vcenters_in, FakeVcenter, PASSWORD, THUMBPRINT};
use crate::mgmt::vcenters::{NewVcenter, VcenterUpdate};

const SESSION: &str = "52b5ec3a-5f0e-4e4b-9a8c-1d0c4e2f6a11";
const USER: &str = "VSPHERE.LOCAL\\Administrator";

fn auth_header(id: &str) -> String {
    format!("vCenter-Session {id}")
}

#[test]
fn headers_of_other_schemes_are_no_plugin_call() {
    for header in [
        "Bearer fat_abc",
        "Basic dXNlcjpwdw==",
        "vCenterSession x",
        "",
    ] {
        assert_eq!(
            PluginCredentials::parse(header, Some("vc")).unwrap(),
            None,
            "{header:?}"
        );
    }
}

#[test]
fn plugin_headers_are_parsed_and_bad_ones_refused() {
    let creds = PluginCredentials::parse(&auth_header(SESSION), Some(" vc-1 "))
        .unwrap()
        .unwrap();
    assert_eq!(creds.vcenter, "vc-1");
    assert_eq!(creds.session_id, SESSION);
    // The scheme is case-insensitive; a quoted vCenter cookie value is a session id too.
    let quoted = PluginCredentials::parse("VCENTER-SESSION \"abc\"", Some("vc"))
        .unwrap()
        .unwrap();
    assert_eq!(quoted.session_id, "\"abc\"");
    // The session id never shows in debug output.
    assert!(!format!("{creds:?}").contains(SESSION));

    let oversized = "a".repeat(MAX_SESSION_ID_BYTES + 1);
    let long_vcenter = "v".repeat(MAX_VCENTER_REF_BYTES + 1);
    let refused: Vec<(String, Option<&str>)> = vec![
        ("vCenter-Session".into(), Some("vc")),
        ("vCenter-Session    ".into(), Some("vc")),
        (auth_header(&oversized), Some("vc")),
        (auth_header("a;b"), Some("vc")),
        (auth_header("a,b"), Some("vc")),
        (auth_header("é"), Some("vc")),
        (auth_header("a\u{7f}"), Some("vc")),
        (auth_header(SESSION), None),
        (auth_header(SESSION), Some("")),
        (auth_header(SESSION), Some("   ")),
        (auth_header(SESSION), Some("vc 1")),
        (auth_header(SESSION), Some(long_vcenter.as_str())),
    ];
    for (authorization, vcenter) in refused {
        let err = PluginCredentials::parse(&authorization, vcenter).unwrap_err();
        assert!(
            matches!(err, MgmtError::BadRequest(_)),
            "{authorization:.40} / {vcenter:?}: {err:?}"
        );
    }
}

fn table(entries: &[(&str, Role)]) -> BTreeMap<String, Role> {
    entries
        .iter()
        .map(|(user, role)| (user.to_string(), *role))
        .collect()
}

#[test]
fn roles_map_exact_names_then_case_insensitive_then_the_wildcard() {
    let roles = table(&[
        (USER, Role::Admin),
        ("VSPHERE.LOCAL\\ops", Role::Operator),
        ("*", Role::Viewer),
    ]);
    assert_eq!(role_for(&roles, USER), Some(Role::Admin));
    assert_eq!(
        role_for(&roles, "vsphere.local\\administrator"),
        Some(Role::Admin)
    );
    assert_eq!(role_for(&roles, "VSPHERE.LOCAL\\ops"), Some(Role::Operator));
    assert_eq!(role_for(&roles, "CORP\\someone"), Some(Role::Viewer));
    // Without a wildcard an unknown user has no role; "*" is no user name to match literally.
    let strict = table(&[(USER, Role::Admin)]);
    assert_eq!(role_for(&strict, "CORP\\someone"), None);
    assert_eq!(role_for(&strict, "*"), None);
    assert_eq!(role_for(&BTreeMap::new(), USER), None);
}

/// Answers from a script: which session ids are live (and whose), or that the vCenter is down.
struct ScriptedVerifier {
    live: Mutex<HashMap<String, String>>,
    down: std::sync::atomic::AtomicBool,
    calls: AtomicUsize,
}

impl ScriptedVerifier {
    fn new() -> Arc<ScriptedVerifier> {
        Arc::new(ScriptedVerifier {
            live: Mutex::new(HashMap::from([(SESSION.to_string(), USER.to_string())])),
            down: false.into(),
            calls: AtomicUsize::new(0),
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl SessionVerifier for ScriptedVerifier {
    fn session_user<'a>(
        &'a self,
        _target: &'a PluginTarget,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, VerifyError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let answer = if self.down.load(Ordering::SeqCst) {
            Err(VerifyError::Unreachable("connection refused".into()))
        } else {
            Ok(self.live.lock().unwrap().get(session_id).cloned())
        };
        Box::pin(async move { answer })
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    vcenters: Vcenters,
    id: String,
    verifier: Arc<ScriptedVerifier>,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeVcenter::new();
    let (vcenters, _state) = vcenters_in(dir.path(), &fake);
    let new = NewVcenter {
        url: "https://vc.test.invalid".into(),
        username: "administrator@vsphere.local".into(),
        password: PASSWORD.into(),
        thumbprint: THUMBPRINT.into(),
    };
    let id = vcenters.add(&admin(), "l", new).await.unwrap().id;
    Setup {
        _dir: dir,
        vcenters,
        id,
        verifier: ScriptedVerifier::new(),
    }
}

impl Setup {
    fn auth(&self, ttl: Duration) -> PluginAuth {
        PluginAuth::new(self.vcenters.clone(), self.verifier.clone(), ttl)
    }

    fn creds(&self, session: &str) -> PluginCredentials {
        PluginCredentials::parse(&auth_header(session), Some(&self.id))
            .unwrap()
            .unwrap()
    }

    async fn map(&self, roles: &[(&str, Role)]) {
        let update = VcenterUpdate {
            plugin_roles: Some(table(roles)),
            ..VcenterUpdate::default()
        };
        self.vcenters
            .update(&admin(), "l", &self.id, update)
            .await
            .unwrap();
    }
}

#[actix_rt::test]
async fn a_live_session_of_a_mapped_user_signs_in_with_its_role() {
    let s = setup().await;
    let auth = s.auth(DEFAULT_TTL);
    // Live session, but nobody mapped yet.
    let err = auth.authenticate(&s.creds(SESSION)).await.unwrap_err();
    assert!(matches!(err, MgmtError::PluginUserNotMapped(_)), "{err:?}");
    assert_eq!(err.status(), 403);
    assert_eq!(err.code(), "plugin_user_not_mapped");

    s.map(&[(USER, Role::Operator), ("*", Role::Viewer)]).await;
    let principal = auth.authenticate(&s.creds(SESSION)).await.unwrap();
    assert_eq!(principal.user, format!("vcenter:{}:{USER}", s.id));
    assert_eq!(principal.role, Role::Operator);
    assert!(!principal.token_id.contains(SESSION));

    // By the vCenter's origin instead of its id.
    let by_origin =
        PluginCredentials::parse(&auth_header(SESSION), Some("https://vc.test.invalid"))
            .unwrap()
            .unwrap();
    assert_eq!(auth.authenticate(&by_origin).await.unwrap(), principal);

    // A table change applies to a remembered session at once.
    s.map(&[("*", Role::Viewer)]).await;
    assert_eq!(
        auth.authenticate(&s.creds(SESSION)).await.unwrap().role,
        Role::Viewer
    );
}

#[actix_rt::test]
async fn unknown_sessions_vcenters_and_outages_are_refused_with_their_codes() {
    let s = setup().await;
    s.map(&[("*", Role::Viewer)]).await;
    let auth = s.auth(DEFAULT_TTL);

    let err = auth.authenticate(&s.creds("garbage")).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (401, "vcenter_session_invalid"));

    for vcenter in ["no-such-id", "https://other.test.invalid", "https://"] {
        let creds = PluginCredentials::parse(&auth_header(SESSION), Some(vcenter))
            .unwrap()
            .unwrap();
        let err = auth.authenticate(&creds).await.unwrap_err();
        assert_eq!(
            (err.status(), err.code()),
            (401, "unauthenticated"),
            "{vcenter}"
        );
    }

    s.verifier.down.store(true, Ordering::SeqCst);
    let err = auth.authenticate(&s.creds(SESSION)).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (503, "vcenter_unreachable"));
    assert!(err.retryable());
    // Failures are not remembered.
    assert_eq!(auth.cached_sessions(), 0);
}

#[actix_rt::test]
async fn a_checked_session_is_remembered_until_its_ttl_ends() {
    let s = setup().await;
    s.map(&[(USER, Role::Admin)]).await;
    let ttl = Duration::from_secs(60);
    let auth = s.auth(ttl);
    let t0 = Instant::now();
    let creds = s.creds(SESSION);

    auth.authenticate_at(&creds, t0).await.unwrap();
    auth.authenticate_at(&creds, t0 + Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        s.verifier.calls(),
        1,
        "the second call is answered from the cache"
    );

    // The user logged out: the remembered answer holds until the TTL ends, then the vCenter says no.
    s.verifier.live.lock().unwrap().clear();
    auth.authenticate_at(&creds, t0 + ttl - Duration::from_millis(1))
        .await
        .unwrap();
    assert_eq!(s.verifier.calls(), 1);
    let err = auth.authenticate_at(&creds, t0 + ttl).await.unwrap_err();
    assert!(
        matches!(err, MgmtError::VcenterSessionInvalid(_)),
        "{err:?}"
    );
    assert_eq!(s.verifier.calls(), 2);

    // The cache holds digests, never the session id.
    let cache = auth.inner.cache.lock().unwrap();
    for (key, entry) in cache.iter() {
        assert_ne!(&key[..], SESSION.as_bytes());
        assert!(!entry.user.contains(SESSION));
    }
}

#[actix_rt::test]
async fn a_zero_ttl_asks_the_vcenter_every_time() {
    let s = setup().await;
    s.map(&[("*", Role::Viewer)]).await;
    let auth = s.auth(Duration::ZERO);
    for _ in 0..3 {
        auth.authenticate(&s.creds(SESSION)).await.unwrap();
    }
    assert_eq!(s.verifier.calls(), 3);
    assert_eq!(auth.cached_sessions(), 0);
}

#[actix_rt::test]
async fn the_cache_is_bounded() {
    let s = setup().await;
    let auth = s.auth(DEFAULT_TTL);
    let t0 = Instant::now();
    for i in 0..MAX_CACHE_ENTRIES + 10 {
        let key = cache_key(&s.id, &format!("session-{i}"));
        auth.remember(key, &s.id, USER, t0 + Duration::from_millis(i as u64));
    }
    assert_eq!(auth.cached_sessions(), MAX_CACHE_ENTRIES);
    // The oldest went first; the newest is there.
    let newest = cache_key(&s.id, &format!("session-{}", MAX_CACHE_ENTRIES + 9));
    let oldest = cache_key(&s.id, "session-0");
    let late = t0 + Duration::from_secs(1);
    assert_eq!(auth.cached(&newest, &s.id, late).as_deref(), Some(USER));
    assert_eq!(auth.cached(&oldest, &s.id, late), None);
    // An entry only answers for the vCenter it was checked with.
    assert_eq!(auth.cached(&newest, "another-vcenter", late), None);
}

#[actix_rt::test]
async fn role_tables_are_checked_when_set() {
    let s = setup().await;
    for roles in [
        table(&[("", Role::Admin)]),
        table(&[("  ", Role::Admin)]),
        table(&[("a\u{0}b", Role::Admin)]),
        table(&[("x".repeat(257).as_str(), Role::Admin)]),
        table(&[("user", Role::Admin), (" user ", Role::Viewer)]),
    ] {
        let update = VcenterUpdate {
            plugin_roles: Some(roles.clone()),
            ..VcenterUpdate::default()
        };
        let err = s
            .vcenters
            .update(&admin(), "l", &s.id, update)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, MgmtError::InvalidField { field, .. } if field == "plugin_roles"),
            "{roles:?}: {err:?}"
        );
    }
    let too_many: BTreeMap<String, Role> =
        (0..201).map(|i| (format!("u{i}"), Role::Viewer)).collect();
    let update = VcenterUpdate {
        plugin_roles: Some(too_many),
        ..VcenterUpdate::default()
    };
    assert!(s
        .vcenters
        .update(&admin(), "l", &s.id, update)
        .await
        .is_err());
    // A valid table is stored trimmed and shown in the view.
    s.map(&[(" VSPHERE.LOCAL\\Administrator ", Role::Admin)])
        .await;
    let view = s.vcenters.get(&s.id).unwrap();
    assert_eq!(view.plugin_roles, table(&[(USER, Role::Admin)]));
}
