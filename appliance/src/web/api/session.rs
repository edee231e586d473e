//! `/api/v1/session`: sign in (a bearer token, and the UI's cookie), who am I, sign out.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::mgmt::auth::Role;
use crate::mgmt::{Core, MgmtError};
use crate::web::error::{ApiError, ErrorBody};
use crate::web::extract::{source, Caller, SESSION_COOKIE};

#[derive(Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LoginResponse {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    /// RFC 3339, UTC.
    pub expires_at: Option<String>,
    pub user: String,
    pub role: Role,
    /// For cookie-authenticated (browser) calls that change something: send as `X-CSRF-Token`.
    pub csrf_token: String,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WhoAmI {
    pub user: String,
    pub role: Role,
    pub token_id: String,
    pub csrf_token: String,
}

/// The session cookie of the UI: only over TLS, never to scripts, never on cross-site requests.
pub fn session_cookie(token: &str) -> Cookie<'static> {
    Cookie::build(SESSION_COOKIE, token.to_string())
        .path("/")
        .secure(true)
        .http_only(true)
        .same_site(SameSite::Strict)
        .finish()
}

/// Signs in with a user name and password; answers a 12-hour session token.
#[utoipa::path(post, path = "/api/v1/session", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, body = LoginResponse),
        (status = 401, description = "wrong user name or password", body = ErrorBody),
        (status = 409, description = "setup required", body = ErrorBody),
        (status = 429, description = "too many failed attempts", body = ErrorBody)))]
pub async fn login(
    core: web::Data<Core>,
    req: HttpRequest,
    body: web::Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    if !core.setup.is_complete() {
        return Err(MgmtError::SetupRequired.into());
    }
    let core = core.into_inner();
    let src = source(&req);
    let LoginRequest { username, password } = body.into_inner();
    // argon2 takes tens of milliseconds of CPU: keep it off the server's event loop.
    let issued = {
        let core = core.clone();
        web::block(move || core.auth.login(&username, &password, &src))
            .await
            .map_err(|e| MgmtError::Internal(format!("login worker: {e}")))??
    };
    let principal = core.auth.authenticate(&issued.token)?;
    let body = LoginResponse {
        csrf_token: core.auth.csrf_token(&principal),
        token: issued.token.clone(),
        expires_at: issued.expires_at,
        user: issued.user,
        role: issued.role,
    };
    Ok(HttpResponse::Ok()
        .cookie(session_cookie(&issued.token))
        .json(body))
}

/// Who the token belongs to, and the CSRF token of the session.
#[utoipa::path(get, path = "/api/v1/session", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)))]
pub async fn whoami(core: web::Data<Core>, caller: Caller) -> HttpResponse {
    HttpResponse::Ok().json(WhoAmI {
        csrf_token: core.auth.csrf_token(&caller.principal),
        user: caller.principal.user.clone(),
        role: caller.principal.role,
        token_id: caller.principal.token_id.clone(),
    })
}

/// Signs out: the token used stops working.
#[utoipa::path(delete, path = "/api/v1/session", tag = "auth", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = ErrorBody)))]
pub async fn logout(core: web::Data<Core>, caller: Caller) -> Result<HttpResponse, ApiError> {
    core.auth.logout(&caller.principal, &caller.source)?;
    let mut gone = session_cookie("");
    gone.make_removal();
    Ok(HttpResponse::NoContent().cookie(gone).finish())
}
