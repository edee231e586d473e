//! `/api/v1/restores`: restore a point's disk to a file on the appliance, follow it, cancel it.

use actix_web::{web, HttpResponse};

use crate::mgmt::auth::Role;
use crate::mgmt::restore_jobs::{RestoreJobRequest, RestoreJobView};
use crate::mgmt::{Core, Page, PageRequest};
use crate::web::error::{ApiError, ErrorBody};
use crate::web::extract::Caller;

/// Starts a restore (operator). The file lands under `<data dir>/restores`.
#[utoipa::path(post, path = "/api/v1/restores", tag = "restores", security(("bearer" = [])),
    request_body = RestoreJobRequest,
    responses((status = 202, body = RestoreJobView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn start(
    core: web::Data<Core>,
    caller: Caller,
    body: web::Json<RestoreJobRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Operator)?;
    let running = core.require_running()?;
    let job = core
        .restores
        .start(
            &caller.principal,
            &caller.source,
            running.shared.vault.clone(),
            body.into_inner(),
        )
        .await?;
    Ok(HttpResponse::Accepted().json(job))
}

/// Restore jobs, newest first.
#[utoipa::path(get, path = "/api/v1/restores", tag = "restores", security(("bearer" = [])),
    params(PageRequest),
    responses((status = 200, body = Page<RestoreJobView>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub async fn list(
    core: web::Data<Core>,
    _caller: Caller,
    page: web::Query<PageRequest>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(core.restores.list(*page)?))
}

#[utoipa::path(get, path = "/api/v1/restores/{id}", tag = "restores", security(("bearer" = [])),
    params(("id" = String, Path, description = "job id")),
    responses((status = 200, body = RestoreJobView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn get(
    core: web::Data<Core>,
    _caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(core.restores.get(&id)?))
}

/// Cancels a running restore (operator); its partial file is removed.
#[utoipa::path(post, path = "/api/v1/restores/{id}/cancel", tag = "restores",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "job id")),
    responses((status = 200, body = RestoreJobView), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn cancel(
    core: web::Data<Core>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Operator)?;
    Ok(HttpResponse::Ok().json(
        core.restores
            .cancel(&caller.principal, &caller.source, &id)?,
    ))
}
