//! The vCenter, VM and push job pages: roles, CSRF, escaping of names from vCenters, empty states,
//! and the forms' answers (with a scripted vCenter and a scripted guest that never answers).

use std::sync::atomic::Ordering;

use actors::push::{Outcome, PushError};
use futures::future::BoxFuture;
use vsphere::{MoRef, PowerState, VmInfo};

use super::*;
use crate::mgmt::auth::Role;
use crate::mgmt::protect::ProtectRequest;
use crate::mgmt::push_jobs::{PushAuth, PushJobs, PushSettings, Via};
use crate::mgmt::vcenters::testkit::{self, eventually, FakeConnector, FakeVcenter};
use crate::mgmt::vcenters::{NewVcenter, Vcenters};

const EVIL: &str = "<script>alert(1)</script>";
const VIEWER_PASSWORD: &str = "Viewer-Horse-42";

type Exec<A> =
    Arc<dyn Fn(A) -> BoxFuture<'static, Result<Outcome, PushError>> + Send + Sync + 'static>;

/// A guest that never answers: jobs stay running until cancelled.
fn hanging_guest<A: Send + 'static>() -> Exec<A> {
    Arc::new(|_attempt: A| Box::pin(std::future::pending()))
}

fn vm(moref: &str, name: &str, power: PowerState, ip: Option<&str>) -> VmInfo {
    let mut vm = VmInfo::new(MoRef::new("VirtualMachine", moref));
    vm.name = name.into();
    vm.power_state = power;
    vm.guest_ips = ip.into_iter().map(str::to_string).collect();
    vm
}

struct Fixture {
    core: Core,
    fake: Arc<FakeVcenter>,
    admin: (String, String),
    viewer: (String, String),
    _dir: tempfile::TempDir,
}

/// A set-up core with an admin and a viewer session, vCenters that log in to a scripted vCenter
/// holding `vms`, and push installs that go to a guest that never answers.
async fn fixture(vms: Vec<VmInfo>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut core = core_in(dir.path());
    let fake = FakeVcenter::new();
    *fake.vms.lock().unwrap() = vms;
    core.vcenters = Vcenters::new(
        core.state.clone(),
        dir.path().to_path_buf(),
        Arc::new(FakeConnector(fake.clone())),
    )
    .unwrap()
    .with_discovery_config(testkit::quick());
    let agents_dir = dir.path().join("agents");
    std::fs::create_dir_all(&agents_dir).unwrap();
    let mut settings = PushSettings::new(agents_dir, core.tls.ca_fingerprint());
    settings.appliance_addr = Some("127.0.0.1:9443".into());
    core.push_jobs = PushJobs::with_executor(core.state.clone(), settings, hanging_guest());
    set_up(&core).await;
    core.vcenters.start_discovery().unwrap();
    let admin = session_of(&core, "admin", PASSWORD);
    let principal = core.auth.authenticate(&admin.0).unwrap();
    core.auth
        .create_user(
            &principal,
            "local",
            "watcher",
            Role::Viewer,
            VIEWER_PASSWORD,
        )
        .unwrap();
    let viewer = session_of(&core, "watcher", VIEWER_PASSWORD);
    Fixture {
        core,
        fake,
        admin,
        viewer,
        _dir: dir,
    }
}

async fn add_vcenter(core: &Core, vm_count: usize) -> String {
    let id = core
        .vcenters
        .add(
            &testkit::admin(),
            "local",
            NewVcenter {
                url: testkit::URL.into(),
                username: "administrator@vsphere.local".into(),
                password: testkit::PASSWORD.into(),
                thumbprint: testkit::THUMBPRINT.into(),
            },
        )
        .await
        .unwrap()
        .id;
    eventually("the inventory", || {
        core.vcenters
            .get(&id)
            .is_ok_and(|v| v.vm_count == vm_count && v.last_sync.is_some())
    })
    .await;
    id
}

fn get(path: &str, token: &str) -> test::TestRequest {
    test::TestRequest::get().uri(path).cookie(cookie(token))
}

#[actix_web::test]
async fn the_pages_show_empty_states_and_unknown_things_are_404() {
    let f = fixture(Vec::new()).await;
    let app = app!(f.core);
    let page = |path: &str, token: &str| {
        test::TestRequest::get()
            .uri(path)
            .cookie(cookie(token))
            .to_request()
    };
    let resp = test::call_service(&app, page("/vcenters", &f.viewer.0)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = body_of(resp).await;
    assert!(body.contains("No vCenter yet") && body.contains("An administrator can add one"));
    assert!(
        !body.contains("vcenter-add-form"),
        "viewers get no add form"
    );
    assert!(body.contains("id=\"nav-vcenters\"") && body.contains("id=\"nav-push-jobs\""));
    let body = body_of(test::call_service(&app, page("/vcenters", &f.admin.0)).await).await;
    assert!(body.contains("vcenter-add-form"));

    let body = body_of(test::call_service(&app, page("/push-jobs", &f.viewer.0)).await).await;
    assert!(body.contains("No push job yet"), "{body}");

    for path in [
        "/push-jobs/0000",
        "/vcenters/nope/vms",
        "/vcenters/nope/vms/vm-1",
    ] {
        let resp = test::call_service(&app, page(path, &f.viewer.0)).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
    }
    // Without a session: to the sign-in page.
    let resp =
        test::call_service(&app, test::TestRequest::get().uri("/vcenters").to_request()).await;
    assert_eq!(location(&resp), "/login");

    let id = add_vcenter(&f.core, 0).await;
    let body =
        body_of(test::call_service(&app, page(&format!("/vcenters/{id}/vms"), &f.viewer.0)).await)
            .await;
    assert!(body.contains("This vCenter has no VM."), "{body}");
}

#[actix_web::test]
async fn vm_pages_escape_names_and_offer_protection_to_admins_only() {
    let f = fixture(vec![
        vm("vm-1", EVIL, PowerState::PoweredOn, Some("10.0.0.5")),
        vm("vm-2", "db", PowerState::PoweredOff, None),
    ])
    .await;
    let id = add_vcenter(&f.core, 2).await;
    let app = app!(f.core);
    let page = |path: String, token: &str| {
        test::TestRequest::get()
            .uri(&path)
            .cookie(cookie(token))
            .to_request()
    };

    let body =
        body_of(test::call_service(&app, page(format!("/vcenters/{id}/vms"), &f.viewer.0)).await)
            .await;
    assert!(!body.contains(EVIL), "names are escaped");
    assert!(body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(body.contains("Not protected") && body.contains("db"));
    let body = body_of(
        test::call_service(
            &app,
            page(
                format!("/vcenters/{id}/vms?name=DB&power_state=poweredOff"),
                &f.viewer.0,
            ),
        )
        .await,
    )
    .await;
    assert!(body.contains("vm-2") && !body.contains("vm-1"), "{body}");
    let body = body_of(
        test::call_service(
            &app,
            page(
                format!("/vcenters/{id}/vms?name=nothing-like-it"),
                &f.viewer.0,
            ),
        )
        .await,
    )
    .await;
    assert!(body.contains("No VM matches this filter."));
    let resp = test::call_service(
        &app,
        page(
            format!("/vcenters/{id}/vms?power_state=melted"),
            &f.viewer.0,
        ),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    let resp =
        test::call_service(&app, page(format!("/vcenters/{id}/vms/vm-1"), &f.viewer.0)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = body_of(resp).await;
    assert!(!body.contains(EVIL) && body.contains("10.0.0.5"));
    assert!(
        !body.contains("protect-form"),
        "viewers cannot enable protection"
    );
    let body = body_of(
        test::call_service(&app, page(format!("/vcenters/{id}/vms/vm-1"), &f.admin.0)).await,
    )
    .await;
    assert!(body.contains("protect-form"));
    let body = body_of(
        test::call_service(&app, page(format!("/vcenters/{id}/vms/vm-2"), &f.admin.0)).await,
    )
    .await;
    assert!(!body.contains("protect-form") && body.contains("Power the VM on"));

    // The protect form: CSRF first, then the role, then the request.
    let protect = format!("/vcenters/{id}/vms/vm-1/protect");
    let fields = |csrf: &str| {
        vec![
            ("csrf", csrf.to_string()),
            ("via", "ssh".into()),
            ("username", "root".into()),
            ("password", "guest pw".into()),
            ("disks", "/dev/sda\n/dev/sdb".into()),
        ]
    };
    let post = |fields: Vec<(&str, String)>, token: &str| {
        let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        post_form(&protect, &pairs)
            .cookie(cookie(token))
            .to_request()
    };
    let resp = test::call_service(&app, post(fields("bad"), &f.admin.0)).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = test::call_service(&app, post(fields(&f.viewer.1), &f.viewer.0)).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let mut no_secret = fields(&f.admin.1);
    no_secret.retain(|(k, _)| *k != "password");
    let resp = test::call_service(&app, post(no_secret, &f.admin.0)).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(body_of(resp).await.contains("give either the guest user"));
    let mut bad_via = fields(&f.admin.1);
    bad_via[1].1 = "telnet".into();
    let resp = test::call_service(&app, post(bad_via, &f.admin.0)).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // Everything right, but this app has no data path: the install could not finish.
    let resp = test::call_service(&app, post(fields(&f.admin.1), &f.admin.0)).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(body_of(resp).await.contains("Protection was not enabled"));
    assert_eq!(
        f.core
            .push_jobs
            .list(crate::mgmt::PageRequest {
                limit: None,
                offset: None
            })
            .unwrap()
            .total,
        0
    );
}

#[actix_web::test]
async fn an_install_shows_on_the_vm_and_push_job_pages() {
    let f = fixture(vec![vm(
        "vm-1",
        EVIL,
        PowerState::PoweredOn,
        Some("10.0.0.5"),
    )])
    .await;
    let id = add_vcenter(&f.core, 1).await;
    let admin = f.core.auth.authenticate(&f.admin.0).unwrap();
    let request = ProtectRequest {
        via: Via::Ssh,
        username: "root".into(),
        auth: PushAuth::Password {
            password: "pw".into(),
        },
        host: None,
        port: None,
        host_key: None,
        disks: vec!["/dev/sda".into()],
        interval_secs: None,
        prefix: None,
    };
    let checked = f.core.check_protect(&admin, &id, "vm-1", request).unwrap();
    let job = f.core.start_protect(&admin, "local", checked).unwrap().job;
    let app = app!(f.core);

    let resp = test::call_service(
        &app,
        get(&format!("/vcenters/{id}/vms/vm-1"), &f.viewer.0).to_request(),
    )
    .await;
    let refresh = resp.status();
    let body = body_of(resp).await;
    assert_eq!(refresh, StatusCode::OK);
    assert!(
        body.contains("Installing") && body.contains("Install log"),
        "{body}"
    );
    assert!(
        body.contains("http-equiv=\"refresh\""),
        "the page follows the install"
    );
    assert!(body.contains(&format!("/push-jobs/{}", job.id)));

    let body =
        body_of(test::call_service(&app, get("/push-jobs", &f.viewer.0).to_request()).await).await;
    assert!(
        body.contains("root@10.0.0.5:22") && body.contains(&format!("{id}/vm-1")),
        "{body}"
    );
    let path = format!("/push-jobs/{}", job.id);
    let body = body_of(test::call_service(&app, get(&path, &f.viewer.0).to_request()).await).await;
    assert!(!body.contains("Cancel job"), "viewers cannot cancel");
    let body = body_of(test::call_service(&app, get(&path, &f.admin.0).to_request()).await).await;
    assert!(body.contains("Cancel job"));

    let cancel = format!("{path}/cancel");
    let resp = test::call_service(
        &app,
        post_form(&cancel, &[])
            .cookie(cookie(&f.admin.0))
            .to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = test::call_service(
        &app,
        post_form(&cancel, &[("csrf", &f.viewer.1)])
            .cookie(cookie(&f.viewer.0))
            .to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = test::call_service(
        &app,
        post_form(&cancel, &[("csrf", &f.admin.1)])
            .cookie(cookie(&f.admin.0))
            .to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    eventually("the job to end", || {
        f.core
            .push_jobs
            .get(&job.id)
            .is_ok_and(|j| j.state.is_finished())
    })
    .await;
    let body = body_of(
        test::call_service(
            &app,
            get(&format!("/vcenters/{id}/vms/vm-1"), &f.admin.0).to_request(),
        )
        .await,
    )
    .await;
    assert!(
        body.contains("Failed") && body.contains("cancelled"),
        "{body}"
    );

    let unprotect = format!("/vcenters/{id}/vms/vm-1/unprotect");
    let resp = test::call_service(
        &app,
        post_form(&unprotect, &[("csrf", &f.viewer.1)])
            .cookie(cookie(&f.viewer.0))
            .to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = test::call_service(
        &app,
        post_form(&unprotect, &[("csrf", &f.admin.1)])
            .cookie(cookie(&f.admin.0))
            .to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = body_of(resp).await;
    assert!(body.contains("request is forgotten") && body.contains("Not protected"));
    let resp = test::call_service(
        &app,
        post_form(&unprotect, &[("csrf", &f.admin.1)])
            .cookie(cookie(&f.admin.0))
            .to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[actix_web::test]
async fn vcenter_forms_add_update_accept_and_remove() {
    let f = fixture(vec![vm("vm-1", "web", PowerState::PoweredOn, None)]).await;
    let app = app!(f.core);
    let admin = |path: &str, fields: &[(&str, &str)]| {
        let mut all = vec![("csrf", f.admin.1.as_str())];
        all.extend_from_slice(fields);
        post_form(path, &all)
            .cookie(cookie(&f.admin.0))
            .to_request()
    };
    let add = [
        ("url", "https://vc.test.invalid"),
        ("username", "administrator@vsphere.local"),
        ("password", "wrong"),
        ("thumbprint", testkit::THUMBPRINT),
    ];
    // Viewers and forms without the token are refused before any login.
    let resp = test::call_service(
        &app,
        post_form(
            "/vcenters",
            &[&[("csrf", f.viewer.1.as_str())][..], &add[..]].concat(),
        )
        .cookie(cookie(&f.viewer.0))
        .to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = test::call_service(
        &app,
        post_form("/vcenters", &add)
            .cookie(cookie(&f.admin.0))
            .to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(f.fake.logins.load(Ordering::SeqCst), 0);

    let resp = test::call_service(&app, admin("/vcenters", &add)).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(body_of(resp)
        .await
        .contains("rejected this user name and password"));
    let mut right = add;
    right[2].1 = testkit::PASSWORD;
    let resp = test::call_service(&app, admin("/vcenters", &right)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(body_of(resp).await.contains("is added"));
    let id = f
        .core
        .vcenters
        .list(crate::mgmt::PageRequest {
            limit: None,
            offset: None,
        })
        .unwrap()
        .items[0]
        .id
        .clone();

    let credential = format!("/vcenters/{id}/credential");
    let resp = test::call_service(
        &app,
        admin(&credential, &[("username", "other"), ("password", "nope")]),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = test::call_service(
        &app,
        admin(
            &credential,
            &[("username", "other"), ("password", testkit::PASSWORD)],
        ),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(f.core.vcenters.get(&id).unwrap().username, "other");

    // The certificate changes: the page shows the presented thumbprint with a button to accept it.
    *f.fake.presents.lock().unwrap() = testkit::RENEWED.into();
    f.fake.up.store(false, Ordering::SeqCst);
    eventually("discovery to see the outage", || {
        f.core
            .vcenters
            .get(&id)
            .is_ok_and(|v| v.health == crate::mgmt::vcenters::HealthState::Unhealthy)
    })
    .await;
    f.fake.up.store(true, Ordering::SeqCst);
    eventually("the presented thumbprint", || {
        f.core
            .vcenters
            .get(&id)
            .is_ok_and(|v| v.presented_thumbprint.is_some())
    })
    .await;
    let body =
        body_of(test::call_service(&app, get("/vcenters", &f.admin.0).to_request()).await).await;
    assert!(
        body.contains("Accept presented thumbprint") && body.contains("Unhealthy"),
        "{body}"
    );
    let accept = format!("/vcenters/{id}/accept-thumbprint");
    let resp = test::call_service(&app, admin(&accept, &[("thumbprint", "00:11")])).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = test::call_service(&app, admin(&accept, &[("thumbprint", testkit::RENEWED)])).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        f.core.vcenters.get(&id).unwrap().thumbprint,
        testkit::RENEWED
    );

    let remove = format!("/vcenters/{id}/remove");
    let resp = test::call_service(&app, admin(&remove, &[])).await;
    assert_eq!(
        resp.status(),
        StatusCode::BAD_REQUEST,
        "the confirmation is required"
    );
    assert!(f.core.vcenters.get(&id).is_ok());
    let resp = test::call_service(&app, admin(&remove, &[("confirm", "yes")])).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(body_of(resp).await.contains("No vCenter yet"));
}
