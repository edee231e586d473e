//! `/api/v1/vcenters/{id}/plugin`: registering Ferry's vSphere Client plugin with a stored vCenter,
//! showing whether it is registered, and unregistering it. Each call logs in to the vCenter with
//! its stored credential.

use actix_web::{web, HttpResponse};

use crate::mgmt::auth::Role;
use crate::mgmt::plugin::{PluginRegistration, PluginStatus};
use crate::mgmt::Core;
use crate::web::error::{ApiError, ErrorBody};
use crate::web::extract::Caller;

/// Whether the plugin is registered with the vCenter, as the vCenter's ExtensionManager reports it.
#[utoipa::path(get, path = "/api/v1/vcenters/{id}/plugin", tag = "vcenters",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "vCenter id")),
    responses((status = 200, body = PluginStatus), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "the vCenter refuses the stored credential or certificate",
            body = ErrorBody),
        (status = 503, description = "vcenter_unreachable: retry later", body = ErrorBody)))]
pub async fn status(
    core: web::Data<Core>,
    _caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(core.plugin.status(&id).await?))
}

/// Registers the plugin (admin), or updates the registration when it exists: extension
/// `io.ferry.appliance` with the manifest `<appliance_url>/plugin/plugin.json` and the appliance
/// certificate's SHA-1 thumbprint.
#[utoipa::path(post, path = "/api/v1/vcenters/{id}/plugin", tag = "vcenters",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "vCenter id")), request_body = PluginRegistration,
    responses((status = 200, body = PluginStatus), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "the vCenter refuses the stored credential or certificate",
            body = ErrorBody),
        (status = 503, description = "vcenter_unreachable: retry later", body = ErrorBody)))]
pub async fn register(
    core: web::Data<Core>,
    caller: Caller,
    id: web::Path<String>,
    body: web::Json<PluginRegistration>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let status = core
        .plugin
        .register(&caller.principal, &caller.source, &id, body.into_inner())
        .await?;
    Ok(HttpResponse::Ok().json(status))
}

/// Unregisters the plugin (admin); 404 when it is not registered.
#[utoipa::path(delete, path = "/api/v1/vcenters/{id}/plugin", tag = "vcenters",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "vCenter id")),
    responses((status = 204, description = "unregistered"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "the vCenter refuses the stored credential or certificate",
            body = ErrorBody),
        (status = 503, description = "vcenter_unreachable: retry later", body = ErrorBody)))]
pub async fn unregister(
    core: web::Data<Core>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    core.plugin
        .unregister(&caller.principal, &caller.source, &id)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
