//! "Enable protection" through the core and the REST API, with a scripted vCenter and a scripted
//! guest in place of SSH.

use std::path::Path;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{test, web, App};
use actors::discovery::VmInfo;
use actors::push::{Outcome, PushError};
use futures::future::BoxFuture;
use serde_json::{json, Value};
use vsphere::{DiskInfo, MoRef, PowerState};

use super::*;
use crate::config::Config;
use crate::mgmt::auth::TokenKind;
use crate::mgmt::push_jobs::{PushJobs, PushSettings};
use crate::mgmt::setup::SetupRequest;
use crate::mgmt::vcenters::testkit::{self, eventually, FakeConnector, FakeVcenter};
use crate::mgmt::vcenters::{NewVcenter, Vcenters};
use crate::state::State;
use crate::tls::ApplianceTls;
use crate::web::error;

const ADMIN_PASSWORD: &str = "Correct-Horse-42";
const BIOS_WEB: &str = "4221c7d8-0f6b-1a2b-3c4d-000000000001";

/// What the scripted guest does with every attempt.
#[derive(Clone, Copy)]
enum Guest {
    /// Never answers (the job stays running until cancelled).
    Hang,
    /// Refuses at once with an error that is not retried.
    Refuse,
}

/// The push runner's executor type, built without naming its private argument type.
type Exec<A> =
    Arc<dyn Fn(A) -> BoxFuture<'static, Result<Outcome, PushError>> + Send + Sync + 'static>;

fn guest<A: Send + 'static>(behaviour: Guest) -> Exec<A> {
    Arc::new(move |_attempt: A| {
        Box::pin(async move {
            match behaviour {
                Guest::Hang => std::future::pending().await,
                Guest::Refuse => Err(PushError::Invalid("the scripted guest refuses".into())),
            }
        })
    })
}

fn vm(moref: &str, name: &str, power: PowerState, ips: &[&str], bios: &str) -> VmInfo {
    let mut vm = VmInfo::new(MoRef::new("VirtualMachine", moref));
    vm.name = name.into();
    vm.power_state = power;
    vm.bios_uuid = Some(bios.into());
    vm.guest_ips = ips.iter().map(|s| s.to_string()).collect();
    vm.disks = vec![DiskInfo {
        key: 2000,
        capacity_bytes: 1 << 30,
        file: format!("[ds] {name}/{name}.vmdk"),
        datastore: None,
        controller_key: None,
        unit_number: None,
        label: Some("Hard disk 1".into()),
    }];
    vm
}

struct Fixture {
    core: Core,
    vcenter: String,
    admin_token: String,
    _dir: tempfile::TempDir,
}

fn principal(role: Role) -> Principal {
    Principal {
        user: format!("{}-user", role.as_str()),
        role,
        token_id: "t".into(),
        kind: TokenKind::Api,
    }
}

fn request() -> ProtectRequest {
    ProtectRequest {
        via: Via::Ssh,
        username: "root".into(),
        auth: PushAuth::Password {
            password: "guest pass".into(),
        },
        host: None,
        port: None,
        host_key: None,
        disks: vec!["/dev/sda".into()],
        interval_secs: None,
        prefix: None,
    }
}

/// A set-up core with one vCenter holding `web` (on, with addresses), `db` (off) and `noip` (on,
/// without an IPv4 address), whose push installs go to a scripted guest.
async fn fixture(behaviour: Guest) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path: &Path = dir.path();
    let figment = figment::Figment::new()
        .merge(figment::providers::Serialized::default(
            "data_dir",
            path.to_string_lossy().into_owned(),
        ))
        .merge(figment::providers::Serialized::default(
            "vault_url",
            path.join("vault").to_string_lossy().into_owned(),
        ));
    let cfg = Config::from_figment(figment).unwrap();
    let state = State::open(path).unwrap();
    let tls = Arc::new(ApplianceTls::load_or_create(path, &[]).unwrap());
    let mut core = Core::new(Arc::new(cfg), state.clone(), tls.clone()).unwrap();
    core.setup = core
        .setup
        .clone()
        .with_kdf(vault::KdfParams::fast_for_tests());
    let fake = FakeVcenter::new();
    *fake.vms.lock().unwrap() = vec![
        vm(
            "vm-1",
            "web",
            PowerState::PoweredOn,
            &["fe80::1", "169.254.7.7", "10.0.0.5", "10.0.0.6"],
            BIOS_WEB,
        ),
        vm(
            "vm-2",
            "db",
            PowerState::PoweredOff,
            &[],
            "4221c7d8-0f6b-1a2b-3c4d-000000000002",
        ),
        vm(
            "vm-3",
            "noip",
            PowerState::PoweredOn,
            &["fe80::3"],
            "4221c7d8-0f6b-1a2b-3c4d-000000000003",
        ),
    ];
    core.vcenters = Vcenters::new(
        state.clone(),
        path.to_path_buf(),
        Arc::new(FakeConnector(fake.clone())),
    )
    .unwrap()
    .with_discovery_config(testkit::quick());
    let agents_dir = path.join("agents");
    std::fs::create_dir_all(&agents_dir).unwrap();
    let mut settings = PushSettings::new(agents_dir, tls.ca_fingerprint());
    settings.appliance_addr = Some("127.0.0.1:9443".into());
    core.push_jobs = PushJobs::with_executor(state, settings, guest(behaviour));
    let token = core.setup.prepare_token().unwrap();
    let setup = SetupRequest {
        token,
        admin_password: ADMIN_PASSWORD.into(),
        ..SetupRequest::default()
    };
    core.setup.submit(setup, "local").await.unwrap();
    let admin_token = core
        .auth
        .login("admin", ADMIN_PASSWORD, "127.0.0.1:1")
        .unwrap()
        .token;
    core.vcenters.start_discovery().unwrap();
    let added = core
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
        .unwrap();
    let vcenter = added.id;
    eventually("the inventory", || {
        core.vcenters
            .vms(&vcenter, &VmQuery::default())
            .is_ok_and(|p| p.total == 3)
    })
    .await;
    Fixture {
        core,
        vcenter,
        admin_token,
        _dir: dir,
    }
}

fn state_of(f: &Fixture, moref: &str) -> VmProtection {
    f.core
        .vm_with_protection(&f.vcenter, moref)
        .unwrap()
        .protection
        .unwrap()
}

fn start(f: &Fixture, moref: &str, req: ProtectRequest) -> Result<ProtectStarted, MgmtError> {
    let admin = principal(Role::Admin);
    let checked = f.core.check_protect(&admin, &f.vcenter, moref, req)?;
    f.core.start_protect(&admin, "local", checked)
}

fn register_agent(state: &crate::state::State, id: &str, bios_uuid: &str) {
    let record = json!({
        "hostname": id, "registered_at": "2025-01-01T00:00:00Z", "revoked": false,
        "last_seen": null, "bios_uuid": bios_uuid,
    });
    state
        .db()
        .open_tree("agents")
        .unwrap()
        .insert(id, encode_record(record.to_string().as_bytes()))
        .unwrap();
}

#[actix_rt::test]
async fn enabling_protection_starts_an_install_that_the_vm_follows() {
    let f = fixture(Guest::Hang).await;
    assert_eq!(state_of(&f, "vm-1").state, VmProtectionState::NotProtected);

    let started = start(&f, "vm-1", request()).unwrap();
    let vm_key = format!("{}/vm-1", f.vcenter);
    assert_eq!(started.job.vm, vm_key);
    assert_eq!(
        started.job.host, "10.0.0.5",
        "the first guest IPv4 that is neither link-local nor loopback"
    );
    assert_eq!(started.job.port, 22);
    assert_eq!(started.protection.state, VmProtectionState::Installing);
    assert_eq!(
        started.protection.push_job_id.as_deref(),
        Some(started.job.id.as_str())
    );
    assert_eq!(
        started.protection.requested_by.as_deref(),
        Some("admin-user")
    );

    let page = f
        .core
        .vms_with_protection(&f.vcenter, &VmQuery::default())
        .unwrap();
    let states: Vec<(&str, VmProtectionState)> = page
        .items
        .iter()
        .map(|v| (v.moref.as_str(), v.protection.as_ref().unwrap().state))
        .collect();
    assert_eq!(
        states,
        vec![
            ("vm-2", VmProtectionState::NotProtected),
            ("vm-3", VmProtectionState::NotProtected),
            ("vm-1", VmProtectionState::Installing),
        ]
    );

    // A second request while the first runs.
    let err = start(&f, "vm-1", request()).unwrap_err();
    assert!(
        matches!(&err, MgmtError::Conflict(m) if m.contains("being installed")),
        "{err}"
    );

    let audit = f
        .core
        .audit_log(PageRequest {
            limit: Some(50),
            offset: None,
        })
        .unwrap();
    assert!(audit
        .items
        .iter()
        .any(|e| e.event == "vm_protection_requested" && e.detail.contains(&vm_key)));

    // Forgetting the request leaves the job alone but the VM unprotected.
    let admin = principal(Role::Admin);
    f.core
        .forget_protection(&admin, "local", &f.vcenter, "vm-1")
        .unwrap();
    assert_eq!(state_of(&f, "vm-1").state, VmProtectionState::NotProtected);
    let err = f
        .core
        .forget_protection(&admin, "local", &f.vcenter, "vm-1")
        .unwrap_err();
    assert!(matches!(err, MgmtError::NotFound(_)), "{err}");
    f.core
        .push_jobs
        .cancel(&admin, "local", &started.job.id)
        .unwrap();
}

#[actix_rt::test]
async fn a_failed_install_shows_its_error_until_an_agent_runs_in_the_vm() {
    let f = fixture(Guest::Refuse).await;
    let mut req = request();
    req.host = Some(" 192.0.2.10 ".into());
    req.port = Some(2222);
    let started = start(&f, "vm-3", req).unwrap();
    assert_eq!(
        (started.job.host.as_str(), started.job.port),
        ("192.0.2.10", 2222)
    );
    eventually("the job to fail", || {
        f.core
            .vm_with_protection(&f.vcenter, "vm-3")
            .is_ok_and(|v| v.protection.unwrap().state == VmProtectionState::Failed)
    })
    .await;
    let failed = state_of(&f, "vm-3");
    assert!(
        failed
            .error
            .as_deref()
            .unwrap()
            .contains("scripted guest refuses"),
        "{failed:?}"
    );
    assert_eq!(failed.agent_id, None);

    // An agent installed some other way, reporting the VM's BIOS UUID, protects it whatever the job.
    register_agent(&f.core.state, "agent-web", BIOS_WEB);
    let web = state_of(&f, "vm-1");
    assert_eq!(web.state, VmProtectionState::Protected);
    assert_eq!(web.agent_id.as_deref(), Some("agent-web"));
    assert_eq!(web.push_job_id, None);
    // A protected VM is not installed into again (a second agent would register for it).
    let err = start(&f, "vm-1", request()).unwrap_err();
    assert!(
        matches!(err, MgmtError::Conflict(ref m) if m.contains("agent-web") && m.contains("upgrade")),
        "{err}"
    );
}

#[actix_rt::test]
async fn requests_the_vm_cannot_take_are_refused_with_the_reason() {
    let f = fixture(Guest::Hang).await;
    let err = start(&f, "vm-404", request()).unwrap_err();
    assert!(matches!(err, MgmtError::NotFound(_)), "{err}");
    let err = f
        .core
        .check_protect(&principal(Role::Admin), "no-such-vc", "vm-1", request())
        .unwrap_err();
    assert!(matches!(err, MgmtError::NotFound(_)), "{err}");

    let err = start(&f, "vm-2", request()).unwrap_err();
    assert!(
        matches!(&err, MgmtError::Conflict(m) if m.contains("poweredOff")),
        "{err}"
    );

    let err = start(&f, "vm-3", request()).unwrap_err();
    assert_eq!(err.code(), "invalid_field");
    assert!(err.to_string().starts_with("host:"), "{err}");

    for role in [Role::Viewer, Role::Operator] {
        let err = f
            .core
            .check_protect(&principal(role), &f.vcenter, "vm-1", request())
            .unwrap_err();
        assert!(matches!(err, MgmtError::Forbidden(_)), "{err}");
        let err = f
            .core
            .forget_protection(&principal(role), "local", &f.vcenter, "vm-1")
            .unwrap_err();
        assert!(matches!(err, MgmtError::Forbidden(_)), "{err}");
    }

    // Through VMware Tools the VM needs no address.
    let mut tools = request();
    tools.via = Via::VmwareTools;
    let checked = f
        .core
        .check_protect(&principal(Role::Admin), &f.vcenter, "vm-3", tools)
        .unwrap();
    assert_eq!(
        (checked.push.via, checked.push.host.as_str()),
        (Via::VmwareTools, "")
    );

    // The push request's own checks apply.
    let mut no_disks = request();
    no_disks.disks.clear();
    let err = start(&f, "vm-1", no_disks).unwrap_err();
    assert!(err.to_string().starts_with("disks:"), "{err}");
    let mut bad_host = request();
    bad_host.host = Some("-oProxyCommand=x".into());
    let err = start(&f, "vm-1", bad_host).unwrap_err();
    assert!(err.to_string().starts_with("host:"), "{err}");

    // Nothing was recorded by a refusal.
    assert_eq!(state_of(&f, "vm-1").state, VmProtectionState::NotProtected);
    assert_eq!(
        f.core
            .push_jobs
            .list(PageRequest {
                limit: None,
                offset: None
            })
            .unwrap()
            .total,
        0
    );

    // A valid request while the data path is not running: the install could never finish.
    let err = f
        .core
        .protect_vm(
            &principal(Role::Admin),
            "local",
            &f.vcenter,
            "vm-1",
            request(),
        )
        .unwrap_err();
    assert_eq!(err.code(), "unavailable", "{err}");
}

/// Sends a request; answers its status and JSON body.
macro_rules! call {
    ($app:expr, $req:expr $(,)?) => {{
        let resp = test::call_service(&$app, $req.to_request()).await;
        let status = resp.status();
        let bytes = test::read_body(resp).await;
        let body: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)));
        (status, body)
    }};
}

#[actix_rt::test]
async fn the_api_shows_protection_and_refuses_bad_requests() {
    let f = fixture(Guest::Hang).await;
    let admin = principal(Role::Admin);
    f.core
        .auth
        .create_user(&admin, "local", "watcher", Role::Viewer, "Viewer-Horse-42")
        .unwrap();
    let viewer = f
        .core
        .auth
        .login("watcher", "Viewer-Horse-42", "127.0.0.1:1")
        .unwrap()
        .token;
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(f.core.clone()))
            .app_data(error::json_config(crate::web::MAX_BODY_BYTES))
            .app_data(error::query_config())
            .app_data(error::path_config())
            .configure(crate::web::api::configure),
    )
    .await;
    let bearer = |t: &str| ("Authorization", format!("Bearer {t}"));
    let base = format!("/api/v1/vcenters/{}/vms", f.vcenter);
    let body = json!({"username": "root", "auth": {"kind": "password", "password": "pw"},
        "disks": ["/dev/sda"]});

    let (status, page) = call!(
        app,
        test::TestRequest::get()
            .uri(&base)
            .insert_header(bearer(&viewer))
    );
    assert_eq!(status, StatusCode::OK);
    assert!(
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["protection"]["state"] == "not_protected"),
        "{page}"
    );

    let post = |uri: String, token: &str| {
        test::TestRequest::post()
            .uri(&uri)
            .insert_header(bearer(token))
    };
    let (status, answer) = call!(
        app,
        post(format!("{base}/vm-1/protect"), &viewer).set_json(&body)
    );
    assert_eq!(
        (status, answer["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );

    let (status, answer) = call!(
        app,
        post(format!("{base}/vm-1/protect"), &f.admin_token)
            .insert_header(("Content-Type", "application/json"))
            .set_payload("{\"username\": "),
    );
    assert_eq!(
        (status, answer["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_json"))
    );
    let mut unknown_field = body.clone();
    unknown_field["vm"] = json!("elsewhere");
    let (status, _) = call!(
        app,
        post(format!("{base}/vm-1/protect"), &f.admin_token).set_json(&unknown_field)
    );
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, answer) = call!(
        app,
        post(format!("{base}/vm-9/protect"), &f.admin_token).set_json(&body)
    );
    assert_eq!(
        (status, answer["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, answer) = call!(
        app,
        post(format!("{base}/vm-2/protect"), &f.admin_token).set_json(&body)
    );
    assert_eq!(
        (status, answer["code"].as_str()),
        (StatusCode::CONFLICT, Some("conflict"))
    );
    let (status, answer) = call!(
        app,
        post(format!("{base}/vm-3/protect"), &f.admin_token).set_json(&body)
    );
    assert_eq!(
        (status, answer["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_field"))
    );
    // Everything checked, but no data path in this app.
    let (status, answer) = call!(
        app,
        post(format!("{base}/vm-1/protect"), &f.admin_token).set_json(&body)
    );
    assert_eq!(
        (status, answer["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("unavailable"))
    );

    // Through the core (as with a running data path), then the views and the forgetting.
    start(&f, "vm-1", request()).unwrap();
    let (_, one) = call!(
        app,
        test::TestRequest::get()
            .uri(&format!("{base}/vm-1"))
            .insert_header(bearer(&viewer))
    );
    assert_eq!(one["protection"]["state"], "installing", "{one}");
    assert!(one["protection"]["push_job_id"].is_string());
    let delete = |token: &str| {
        test::TestRequest::delete()
            .uri(&format!("{base}/vm-1/protect"))
            .insert_header(bearer(token))
    };
    let (status, _) = call!(app, delete(&viewer));
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call!(app, delete(&f.admin_token));
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, answer) = call!(app, delete(&f.admin_token));
    assert_eq!(
        (status, answer["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );

    let doc = crate::web::api::openapi_json();
    assert!(doc.contains("/api/v1/vcenters/{id}/vms/{moref}/protect"));
    assert!(doc.contains("ProtectRequest") && doc.contains("VmProtection"));
    for job in f
        .core
        .push_jobs
        .list(PageRequest {
            limit: None,
            offset: None,
        })
        .unwrap()
        .items
    {
        let _ = f.core.push_jobs.cancel(&admin, "local", &job.id);
    }
}
