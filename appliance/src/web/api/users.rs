//! `/api/v1/users` and `/api/v1/tokens` (admin).

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::mgmt::auth::{IssuedToken, Role, TokenView, UserView};
use crate::mgmt::{Core, Page, PageRequest};
use crate::web::error::{ApiError, ErrorBody};
use crate::web::extract::Caller;

#[derive(Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub name: String,
    pub role: Role,
    pub password: String,
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    pub role: Option<Role>,
    pub password: Option<String>,
    pub disabled: Option<bool>,
}

impl std::fmt::Debug for UserUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserUpdate")
            .field("role", &self.role)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// The user the token acts as (default: the caller).
    pub user: Option<String>,
    /// What the token is for ("vcenter-plugin", "backup-script").
    pub name: String,
    /// Days until it expires (default 90, at most 730).
    pub ttl_days: Option<u32>,
}

#[utoipa::path(get, path = "/api/v1/users", tag = "users", security(("bearer" = [])),
    params(PageRequest),
    responses((status = 200, body = Page<UserView>), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn list(
    core: web::Data<Core>,
    caller: Caller,
    page: web::Query<PageRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    Ok(HttpResponse::Ok().json(page.apply(core.auth.list_users()?)?))
}

#[utoipa::path(post, path = "/api/v1/users", tag = "users", security(("bearer" = [])),
    request_body = NewUser,
    responses((status = 201, body = UserView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn create(
    core: web::Data<Core>,
    caller: Caller,
    body: web::Json<NewUser>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let user = web::block(move || {
        core.auth.create_user(
            &caller.principal,
            &caller.source,
            &body.name,
            body.role,
            &body.password,
        )
    })
    .await
    .map_err(|e| crate::mgmt::MgmtError::Internal(format!("user worker: {e}")))??;
    Ok(HttpResponse::Created().json(user))
}

#[utoipa::path(patch, path = "/api/v1/users/{name}", tag = "users", security(("bearer" = [])),
    params(("name" = String, Path, description = "user name")), request_body = UserUpdate,
    responses((status = 200, body = UserView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn update(
    core: web::Data<Core>,
    caller: Caller,
    name: web::Path<String>,
    body: web::Json<UserUpdate>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let user = web::block(move || {
        core.auth.update_user(
            &caller.principal,
            &caller.source,
            &name,
            body.role,
            body.password.as_deref(),
            body.disabled,
        )
    })
    .await
    .map_err(|e| crate::mgmt::MgmtError::Internal(format!("user worker: {e}")))??;
    Ok(HttpResponse::Ok().json(user))
}

#[utoipa::path(delete, path = "/api/v1/users/{name}", tag = "users", security(("bearer" = [])),
    params(("name" = String, Path, description = "user name")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete(
    core: web::Data<Core>,
    caller: Caller,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    core.auth
        .delete_user(&caller.principal, &caller.source, &name)?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "users", security(("bearer" = [])),
    params(PageRequest),
    responses((status = 200, body = Page<TokenView>), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn tokens(
    core: web::Data<Core>,
    caller: Caller,
    page: web::Query<PageRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    Ok(HttpResponse::Ok().json(page.apply(core.auth.list_tokens()?)?))
}

/// Creates an API token (admin). The answer is the only time its secret is shown.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "users", security(("bearer" = [])),
    request_body = NewToken,
    responses((status = 201, body = IssuedToken), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn create_token(
    core: web::Data<Core>,
    caller: Caller,
    body: web::Json<NewToken>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let user = body
        .user
        .clone()
        .unwrap_or_else(|| caller.user().to_string());
    let token = core.auth.create_api_token(
        &caller.principal,
        &caller.source,
        &user,
        &body.name,
        body.ttl_days,
    )?;
    Ok(HttpResponse::Created().json(token))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = String, Path, description = "token id")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn revoke_token(
    core: web::Data<Core>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    core.auth
        .revoke_token(&caller.principal, &caller.source, &id)?;
    Ok(HttpResponse::NoContent().finish())
}
