//! `/api/v1/vcenters` over an in-process app built like the real listener's, with a scripted vCenter.

use std::path::Path;
use std::sync::Arc;

use actix_web::dev::ServiceResponse;
use actix_web::http::StatusCode;
use actix_web::{test, web, App};
use serde_json::{json, Value};

use super::testkit::{self, FakeConnector, FakeVcenter, PASSWORD, RENEWED, THUMBPRINT, URL};
use super::Vcenters;
use crate::config::Config;
use crate::mgmt::auth::Role;
use crate::mgmt::setup::SetupRequest;
use crate::mgmt::Core;
use crate::state::State;
use crate::tls::ApplianceTls;
use crate::web::error;

const ADMIN_PASSWORD: &str = "Correct-Horse-42";
const VIEWER_PASSWORD: &str = "Viewer-Horse-42";

/// A set-up core whose vCenters log in to `fake`; returns it with an admin and a viewer session.
async fn ready_core(dir: &Path, fake: &Arc<FakeVcenter>) -> (Core, String, String) {
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
    let mut core = Core::new(Arc::new(cfg), state.clone(), Arc::new(tls)).unwrap();
    core.setup = core
        .setup
        .clone()
        .with_kdf(vault::KdfParams::fast_for_tests());
    core.vcenters = Vcenters::new(
        state,
        dir.to_path_buf(),
        Arc::new(FakeConnector(fake.clone())),
    )
    .unwrap()
    .with_discovery_config(testkit::quick());
    let token = core.setup.prepare_token().unwrap();
    let request = SetupRequest {
        token,
        admin_password: ADMIN_PASSWORD.into(),
        ..SetupRequest::default()
    };
    core.setup.submit(request, "local").await.unwrap();
    let admin = core
        .auth
        .login("admin", ADMIN_PASSWORD, "127.0.0.1:1")
        .unwrap();
    let principal = core.auth.authenticate(&admin.token).unwrap();
    core.auth
        .create_user(
            &principal,
            "local",
            "watcher",
            Role::Viewer,
            VIEWER_PASSWORD,
        )
        .unwrap();
    let viewer = core
        .auth
        .login("watcher", VIEWER_PASSWORD, "127.0.0.1:1")
        .unwrap();
    (core, admin.token, viewer.token)
}

macro_rules! app {
    ($core:expr) => {
        test::init_service(
            App::new()
                .app_data(web::Data::new($core.clone()))
                .app_data(error::json_config(crate::web::MAX_BODY_BYTES))
                .app_data(error::query_config())
                .app_data(error::path_config())
                .configure(crate::web::api::configure),
        )
        .await
    };
}

fn bearer(token: &str) -> (&'static str, String) {
    ("Authorization", format!("Bearer {token}"))
}

async fn json_of<B: actix_web::body::MessageBody>(resp: ServiceResponse<B>) -> Value {
    let bytes = test::read_body(resp).await;
    serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)))
}

fn new_body() -> Value {
    json!({
        "url": "https://vc.test.invalid",
        "username": "administrator@vsphere.local",
        "password": PASSWORD,
        "thumbprint": THUMBPRINT,
    })
}

#[actix_web::test]
async fn admins_add_and_everyone_signed_in_reads() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeVcenter::new();
    let (core, admin, viewer) = ready_core(dir.path(), &fake).await;
    let app = app!(core);

    let post = |token: &str, body: Value| {
        test::TestRequest::post()
            .uri("/api/v1/vcenters")
            .insert_header(bearer(token))
            .set_json(body)
            .to_request()
    };
    let resp = test::call_service(&app, post(&viewer, new_body())).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = test::call_service(
        &app,
        test::TestRequest::post()
            .uri("/api/v1/vcenters")
            .set_json(new_body())
            .to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let resp = test::call_service(&app, post(&admin, new_body())).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let created = json_of(resp).await;
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["url"], URL);
    assert_eq!(created["health"], "ok");
    assert!(created.get("password").is_none() && created.get("password_sealed").is_none());
    assert!(!created.to_string().contains(PASSWORD));

    let get = |uri: String| {
        test::TestRequest::get()
            .uri(&uri)
            .insert_header(bearer(&viewer))
            .to_request()
    };
    let list = json_of(test::call_service(&app, get("/api/v1/vcenters".into())).await).await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["items"][0]["id"], id.as_str());
    let one = json_of(test::call_service(&app, get(format!("/api/v1/vcenters/{id}"))).await).await;
    assert_eq!(one["thumbprint"], THUMBPRINT);
    let vms =
        json_of(test::call_service(&app, get(format!("/api/v1/vcenters/{id}/vms"))).await).await;
    assert_eq!(vms["total"], 0);
    assert_eq!(vms["items"], json!([]));

    // A second add of the same vCenter.
    let resp = test::call_service(&app, post(&admin, new_body())).await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    assert_eq!(json_of(resp).await["code"], "conflict");
}

#[actix_web::test]
async fn a_failed_login_names_the_field_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeVcenter::new();
    let (core, admin, _) = ready_core(dir.path(), &fake).await;
    let app = app!(core);
    let post = |body: Value| {
        test::TestRequest::post()
            .uri("/api/v1/vcenters")
            .insert_header(bearer(&admin))
            .set_json(body)
            .to_request()
    };
    let mut wrong = new_body();
    wrong["password"] = json!("nope");
    let resp = test::call_service(&app, post(wrong)).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body = json_of(resp).await;
    assert_eq!(body["code"], "invalid_field");
    assert!(
        body["message"].as_str().unwrap().starts_with("password:"),
        "{body}"
    );

    let mut other = new_body();
    other["thumbprint"] = json!(RENEWED);
    let body = json_of(test::call_service(&app, post(other)).await).await;
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with("thumbprint:") && message.contains(THUMBPRINT),
        "{body}"
    );

    fake.up.store(false, std::sync::atomic::Ordering::SeqCst);
    let body = json_of(test::call_service(&app, post(new_body())).await).await;
    assert_eq!(body["code"], "invalid_field");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("connection refused"),
        "{body}"
    );
    fake.up.store(true, std::sync::atomic::Ordering::SeqCst);

    for bad in [
        json!({"url": URL, "username": "u", "password": "p"}),
        json!({"url": URL, "username": "u", "password": "p", "thumbprint": THUMBPRINT, "extra": 1}),
        json!({"url": 5, "username": "u", "password": "p", "thumbprint": THUMBPRINT}),
    ] {
        let resp = test::call_service(&app, post(bad.clone())).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(json_of(resp).await["code"], "invalid_json", "{bad}");
    }
    let mut bad_url = new_body();
    bad_url["url"] = json!("http://vc.test.invalid/sdk");
    let body = json_of(test::call_service(&app, post(bad_url)).await).await;
    assert!(
        body["message"].as_str().unwrap().starts_with("url:"),
        "{body}"
    );
}

#[actix_web::test]
async fn update_remove_and_list_queries() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeVcenter::new();
    let (core, admin, viewer) = ready_core(dir.path(), &fake).await;
    let app = app!(core);
    let created = json_of(
        test::call_service(
            &app,
            test::TestRequest::post()
                .uri("/api/v1/vcenters")
                .insert_header(bearer(&admin))
                .set_json(new_body())
                .to_request(),
        )
        .await,
    )
    .await;
    let id = created["id"].as_str().unwrap().to_string();
    let patch = |token: &str, body: Value| {
        test::TestRequest::patch()
            .uri(&format!("/api/v1/vcenters/{id}"))
            .insert_header(bearer(token))
            .set_json(body)
            .to_request()
    };
    *fake.presents.lock().unwrap() = RENEWED.into();
    let resp = test::call_service(&app, patch(&viewer, json!({"thumbprint": RENEWED}))).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = test::call_service(&app, patch(&admin, json!({"thumbprint": RENEWED}))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(json_of(resp).await["thumbprint"], RENEWED);
    let resp = test::call_service(&app, patch(&admin, json!({"password": "wrong"}))).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = test::call_service(&app, patch(&admin, json!({}))).await;
    assert_eq!(json_of(resp).await["code"], "bad_request");

    let get = |uri: &str| {
        test::TestRequest::get()
            .uri(uri)
            .insert_header(bearer(&viewer))
            .to_request()
    };
    for (uri, status, code) in [
        (
            format!("/api/v1/vcenters/{id}/vms?power_state=on"),
            400,
            "invalid_field",
        ),
        (
            format!("/api/v1/vcenters/{id}/vms?limit=0"),
            400,
            "invalid_field",
        ),
        (
            format!("/api/v1/vcenters/{id}/vms?limit=x"),
            400,
            "bad_request",
        ),
        ("/api/v1/vcenters/unknown/vms".to_string(), 404, "not_found"),
        (
            format!("/api/v1/vcenters/{id}/vms/vm-404"),
            404,
            "not_found",
        ),
        ("/api/v1/vcenters/unknown".to_string(), 404, "not_found"),
    ] {
        let resp = test::call_service(&app, get(&uri)).await;
        assert_eq!(resp.status().as_u16(), status, "{uri}");
        assert_eq!(json_of(resp).await["code"], code, "{uri}");
    }

    let delete = |token: &str| {
        test::TestRequest::delete()
            .uri(&format!("/api/v1/vcenters/{id}"))
            .insert_header(bearer(token))
            .to_request()
    };
    assert_eq!(
        test::call_service(&app, delete(&viewer)).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        test::call_service(&app, delete(&admin)).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        test::call_service(&app, delete(&admin)).await.status(),
        StatusCode::NOT_FOUND
    );
    let list = json_of(test::call_service(&app, get("/api/v1/vcenters")).await).await;
    assert_eq!(list["total"], 0);
}

#[actix_web::test]
async fn the_openapi_document_lists_the_vcenter_calls() {
    let doc: Value = serde_json::from_str(&crate::web::api::openapi_json()).unwrap();
    let paths = &doc["paths"];
    for (path, methods) in [
        ("/api/v1/vcenters", &["get", "post"][..]),
        ("/api/v1/vcenters/{id}", &["get", "patch", "delete"][..]),
        ("/api/v1/vcenters/{id}/vms", &["get"][..]),
        ("/api/v1/vcenters/{id}/vms/{moref}", &["get"][..]),
    ] {
        for method in methods {
            assert!(paths[path][method].is_object(), "{method} {path}");
        }
    }
    let vm = &doc["components"]["schemas"]["VcenterVm"]["properties"];
    for field in [
        "name",
        "instance_uuid",
        "bios_uuid",
        "power_state",
        "guest_ips",
        "disks",
        "agent_id",
    ] {
        assert!(vm[field].is_object(), "VcenterVm.{field}");
    }
    let disk = &doc["components"]["schemas"]["VmDisk"]["properties"];
    assert!(disk["capacity_bytes"].is_object() && disk["file"].is_object());
    let params: Vec<&str> = doc["paths"]["/api/v1/vcenters/{id}/vms"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        params.contains(&"name") && params.contains(&"power_state"),
        "{params:?}"
    );
}
