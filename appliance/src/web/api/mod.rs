//! The REST API under `/api/v1`, and its OpenAPI 3 document generated from the handlers.

mod agents;
mod guest_credentials;
mod machines;
mod plugin;
mod push;
mod restores;
mod session;
mod setup;
mod system;
mod users;
mod vcenters;

pub use session::{session_cookie, LoginRequest, LoginResponse};

use actix_web::{web, HttpResponse};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::mgmt::{Core, MgmtError};
use crate::web::error::{error_response, ErrorBody};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ferry appliance API",
        description = "Management API of the Ferry disaster-recovery appliance: first-boot setup, \
            users and tokens, agents, push installs of agents, protected machines, recovery points, \
            restores, settings and audit. Errors are always {\"code\", \"message\"}; lists take limit/offset."
    ),
    paths(
        setup::status, setup::submit, setup::vault_test,
        session::login, session::whoami, session::logout,
        system::status, system::settings, system::update_settings, system::audit,
        agents::list, agents::get, agents::revoke, agents::rotate_passphrase,
        machines::list, machines::get, machines::points, machines::point,
        restores::start, restores::list, restores::get, restores::cancel,
        users::list, users::create, users::update, users::delete,
        users::tokens, users::create_token, users::revoke_token,
        vcenters::list, vcenters::add, vcenters::get, vcenters::update, vcenters::remove,
        vcenters::vms, vcenters::vm, vcenters::protect, vcenters::unprotect,
        guest_credentials::list, guest_credentials::add, guest_credentials::get,
        guest_credentials::update, guest_credentials::remove,
        push::start, push::list, push::get, push::cancel, push::forget_host_key,
        plugin::status, plugin::register, plugin::unregister,
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth, &CommonErrors),
    tags(
        (name = "setup", description = "First-boot setup (needs the setup token)"),
        (name = "auth", description = "Sign in and out"),
        (name = "system", description = "Status, settings, audit log"),
        (name = "agents", description = "Mobility agents"),
        (name = "machines", description = "Protected machines"),
        (name = "points", description = "Recovery points"),
        (name = "restores", description = "Restore jobs"),
        (name = "users", description = "Users and API tokens"),
        (name = "vcenters", description = "vCenters, their discovered VMs and the vCenter plugin"),
        (name = "push", description = "Push installs of the mobility agent over SSH"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Answers every operation can give that the handlers do not list one by one: the body checks of the
/// JSON extractor (400/413/415) and the query checks of paged lists (400).
struct CommonErrors;

fn error_response_doc(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Response> {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
}

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                let mut add = |status: &str, description: &str| {
                    operation
                        .responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| error_response_doc(description));
                };
                let has_body = operation.request_body.is_some();
                let has_query = operation.parameters.as_ref().is_some_and(|params| {
                    params.iter().any(|p| {
                        matches!(p.parameter_in, utoipa::openapi::path::ParameterIn::Query)
                    })
                });
                if has_body {
                    add(
                        "400",
                        "the body is not valid JSON for this call, or a field is invalid",
                    );
                    add("413", "the body is larger than 64 KiB");
                    add("415", "the body is not application/json");
                }
                if has_query {
                    add("400", "a query parameter is invalid");
                }
            }
        }
    }
}

/// The OpenAPI document, rendered once.
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document always serializes")
}

async fn openapi(doc: web::Data<OpenApiText>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(doc.0.clone())
}

/// The rendered document, shared by the workers.
pub struct OpenApiText(pub String);

/// Unknown paths under /api/v1: 409 before setup (as every other call), else 404.
async fn unknown(core: web::Data<Core>) -> HttpResponse {
    if core.setup.is_complete() {
        error_response(&MgmtError::NotFound(
            "no such API path; see /api/v1/openapi.json".into(),
        ))
    } else {
        error_response(&MgmtError::SetupRequired)
    }
}

/// Registers every `/api/v1` route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::Data::new(OpenApiText(openapi_json())))
        .service(
            web::scope("/api/v1")
                .route("/openapi.json", web::get().to(openapi))
                .route("/setup", web::get().to(setup::status))
                .route("/setup", web::post().to(setup::submit))
                .route("/setup/vault-test", web::post().to(setup::vault_test))
                .route("/session", web::post().to(session::login))
                .route("/session", web::get().to(session::whoami))
                .route("/session", web::delete().to(session::logout))
                .route("/status", web::get().to(system::status))
                .route("/settings", web::get().to(system::settings))
                .route("/settings", web::patch().to(system::update_settings))
                .route("/audit", web::get().to(system::audit))
                .route("/agents", web::get().to(agents::list))
                .route(
                    "/agents/registration-passphrase",
                    web::post().to(agents::rotate_passphrase),
                )
                .route("/agents/{id}", web::get().to(agents::get))
                .route("/agents/{id}/revoke", web::post().to(agents::revoke))
                .route("/machines", web::get().to(machines::list))
                .route("/machines/{id}", web::get().to(machines::get))
                .route("/points", web::get().to(machines::points))
                .route("/points/{machine}/{point}", web::get().to(machines::point))
                .route("/restores", web::post().to(restores::start))
                .route("/restores", web::get().to(restores::list))
                .route("/restores/{id}", web::get().to(restores::get))
                .route("/restores/{id}/cancel", web::post().to(restores::cancel))
                .route("/users", web::get().to(users::list))
                .route("/users", web::post().to(users::create))
                .route("/users/{name}", web::patch().to(users::update))
                .route("/users/{name}", web::delete().to(users::delete))
                .route("/tokens", web::get().to(users::tokens))
                .route("/tokens", web::post().to(users::create_token))
                .route("/tokens/{id}", web::delete().to(users::revoke_token))
                .route("/vcenters", web::get().to(vcenters::list))
                .route("/vcenters", web::post().to(vcenters::add))
                .route("/vcenters/{id}", web::get().to(vcenters::get))
                .route("/vcenters/{id}", web::patch().to(vcenters::update))
                .route("/vcenters/{id}", web::delete().to(vcenters::remove))
                .route("/vcenters/{id}/vms", web::get().to(vcenters::vms))
                .route("/vcenters/{id}/plugin", web::get().to(plugin::status))
                .route("/vcenters/{id}/plugin", web::post().to(plugin::register))
                .route(
                    "/vcenters/{id}/plugin",
                    web::delete().to(plugin::unregister),
                )
                .route("/vcenters/{id}/vms/{moref}", web::get().to(vcenters::vm))
                .route(
                    "/vcenters/{id}/vms/{moref}/protect",
                    web::post().to(vcenters::protect),
                )
                .route(
                    "/vcenters/{id}/vms/{moref}/protect",
                    web::delete().to(vcenters::unprotect),
                )
                .route("/guest-credentials", web::get().to(guest_credentials::list))
                .route("/guest-credentials", web::post().to(guest_credentials::add))
                .route(
                    "/guest-credentials/{id}",
                    web::get().to(guest_credentials::get),
                )
                .route(
                    "/guest-credentials/{id}",
                    web::patch().to(guest_credentials::update),
                )
                .route(
                    "/guest-credentials/{id}",
                    web::delete().to(guest_credentials::remove),
                )
                .route("/push-jobs", web::post().to(push::start))
                .route("/push-jobs", web::get().to(push::list))
                .route("/push-jobs/{id}", web::get().to(push::get))
                .route("/push-jobs/{id}/cancel", web::post().to(push::cancel))
                .route(
                    "/push-host-keys/{host}/{port}",
                    web::delete().to(push::forget_host_key),
                )
                .default_service(web::to(unknown)),
        );
}
