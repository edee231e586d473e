//! `/api/v1/agents`: list, detail, revoke, and rotation of the registration passphrase.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::mgmt::agents::{AgentView, PassphraseView};
use crate::mgmt::auth::Role;
use crate::mgmt::{Core, Page, PageRequest};
use crate::web::error::{ApiError, ErrorBody};
use crate::web::extract::Caller;

#[utoipa::path(get, path = "/api/v1/agents", tag = "agents", security(("bearer" = [])),
    params(PageRequest),
    responses((status = 200, body = Page<AgentView>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub async fn list(
    core: web::Data<Core>,
    _caller: Caller,
    page: web::Query<PageRequest>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(core.agents(*page)?))
}

#[utoipa::path(get, path = "/api/v1/agents/{id}", tag = "agents", security(("bearer" = [])),
    params(("id" = String, Path, description = "agent id")),
    responses((status = 200, body = AgentView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn get(
    core: web::Data<Core>,
    _caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(core.agent(&id)?))
}

/// Revokes an agent (admin): it can no longer replicate, and a live session ends now.
#[utoipa::path(post, path = "/api/v1/agents/{id}/revoke", tag = "agents", security(("bearer" = [])),
    params(("id" = String, Path, description = "agent id")),
    responses((status = 200, body = AgentView), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke(
    core: web::Data<Core>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    Ok(HttpResponse::Ok().json(core.revoke_agent(&caller.principal, &caller.source, &id)?))
}

#[derive(Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// The new passphrase (at least 12 characters); absent: a generated one.
    pub passphrase: Option<String>,
}

/// Replaces the agent registration passphrase (admin). Registered agents keep working.
#[utoipa::path(post, path = "/api/v1/agents/registration-passphrase", tag = "agents",
    security(("bearer" = [])), request_body = RotateRequest,
    responses((status = 200, body = PassphraseView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn rotate_passphrase(
    core: web::Data<Core>,
    caller: Caller,
    body: web::Json<RotateRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let view = core.rotate_registration_passphrase(
        &caller.principal,
        &caller.source,
        body.passphrase.as_deref(),
    )?;
    Ok(HttpResponse::Ok().json(view))
}
