//! `/api/v1/guest-credentials`: named guest logins that push jobs refer to by id (the secret goes in,
//! never comes out).

use actix_web::{web, HttpResponse};

use crate::mgmt::auth::Role;
use crate::mgmt::guest_credentials::{
    GuestCredentialUpdate, GuestCredentialView, NewGuestCredential,
};
use crate::mgmt::{Core, Page, PageRequest};
use crate::web::error::{ApiError, ErrorBody};
use crate::web::extract::Caller;

/// Guest credential sets by name, without their secrets (operator).
#[utoipa::path(get, path = "/api/v1/guest-credentials", tag = "push", security(("bearer" = [])),
    params(PageRequest),
    responses((status = 200, body = Page<GuestCredentialView>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list(
    core: web::Data<Core>,
    caller: Caller,
    page: web::Query<PageRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Operator)?;
    Ok(HttpResponse::Ok().json(core.guest_credentials.list(*page)?))
}

/// Stores a guest login (admin). A private key must open (with its passphrase) to be accepted.
#[utoipa::path(post, path = "/api/v1/guest-credentials", tag = "push", security(("bearer" = [])),
    request_body = NewGuestCredential,
    responses((status = 201, body = GuestCredentialView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "the name is taken", body = ErrorBody)))]
pub async fn add(
    core: web::Data<Core>,
    caller: Caller,
    body: web::Json<NewGuestCredential>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let view = core
        .guest_credentials
        .add(&caller.principal, &caller.source, body.into_inner())?;
    Ok(HttpResponse::Created().json(view))
}

#[utoipa::path(get, path = "/api/v1/guest-credentials/{id}", tag = "push",
    security(("bearer" = [])), params(("id" = String, Path, description = "credential id")),
    responses((status = 200, body = GuestCredentialView), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(
    core: web::Data<Core>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Operator)?;
    Ok(HttpResponse::Ok().json(core.guest_credentials.get(&id)?))
}

/// Renames it, changes its user or replaces its secret (admin).
#[utoipa::path(patch, path = "/api/v1/guest-credentials/{id}", tag = "push",
    security(("bearer" = [])), params(("id" = String, Path, description = "credential id")),
    request_body = GuestCredentialUpdate,
    responses((status = 200, body = GuestCredentialView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn update(
    core: web::Data<Core>,
    caller: Caller,
    id: web::Path<String>,
    body: web::Json<GuestCredentialUpdate>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let view =
        core.guest_credentials
            .update(&caller.principal, &caller.source, &id, body.into_inner())?;
    Ok(HttpResponse::Ok().json(view))
}

/// Forgets it (admin). Jobs already running keep the login they read.
#[utoipa::path(delete, path = "/api/v1/guest-credentials/{id}", tag = "push",
    security(("bearer" = [])), params(("id" = String, Path, description = "credential id")),
    responses((status = 204, description = "removed"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn remove(
    core: web::Data<Core>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    core.guest_credentials
        .remove(&caller.principal, &caller.source, &id)?;
    Ok(HttpResponse::NoContent().finish())
}
