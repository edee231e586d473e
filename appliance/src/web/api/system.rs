//! `/api/v1/status`, `/api/v1/settings`, `/api/v1/audit`.

use actix_web::{web, HttpResponse};

use crate::mgmt::audit::AuditView;
use crate::mgmt::auth::Role;
use crate::mgmt::settings::{SettingsUpdate, SettingsView};
use crate::mgmt::status::StatusView;
use crate::mgmt::{Core, Page, PageRequest};
use crate::web::error::{ApiError, ErrorBody};
use crate::web::extract::Caller;

/// Versions, setup phase, actor health and data-path counters.
#[utoipa::path(get, path = "/api/v1/status", tag = "system", security(("bearer" = [])),
    responses((status = 200, body = StatusView), (status = 401, body = ErrorBody)))]
pub async fn status(core: web::Data<Core>, _caller: Caller) -> HttpResponse {
    HttpResponse::Ok().json(core.status())
}

#[utoipa::path(get, path = "/api/v1/settings", tag = "system", security(("bearer" = [])),
    responses((status = 200, body = SettingsView), (status = 401, body = ErrorBody)))]
pub async fn settings(core: web::Data<Core>, _caller: Caller) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(core.settings()?))
}

/// Changes runtime settings (admin).
#[utoipa::path(patch, path = "/api/v1/settings", tag = "system", security(("bearer" = [])),
    request_body = SettingsUpdate,
    responses((status = 200, body = SettingsView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn update_settings(
    core: web::Data<Core>,
    caller: Caller,
    body: web::Json<SettingsUpdate>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let view = core.update_settings(&caller.principal, &caller.source, body.into_inner())?;
    Ok(HttpResponse::Ok().json(view))
}

/// Every change, newest first (admin).
#[utoipa::path(get, path = "/api/v1/audit", tag = "system", security(("bearer" = [])),
    params(PageRequest),
    responses((status = 200, body = Page<AuditView>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn audit(
    core: web::Data<Core>,
    caller: Caller,
    page: web::Query<PageRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    Ok(HttpResponse::Ok().json(core.audit_log(*page)?))
}
