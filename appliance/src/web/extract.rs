//! Who is calling: the bearer token (scripts, the CLI), the vCenter plugin's vCenter session
//! (`Authorization: vCenter-Session`, checked with that vCenter) or the UI's session cookie, checked by
//! the management core. A cookie-authenticated call that changes something must also carry the
//! session's CSRF token, so another site cannot ride on the browser's cookie; header-authenticated
//! calls need none.

use std::future::ready;

use actix_web::dev::Payload;
use actix_web::{http::Method, FromRequest, HttpRequest};
use futures::future::LocalBoxFuture;

use super::error::ApiError;
use crate::mgmt::auth::{Principal, Role};
use crate::mgmt::plugin_auth::{PluginCredentials, VCENTER_HEADER};
use crate::mgmt::{Core, MgmtError};

/// Name of the UI's session cookie.
pub const SESSION_COOKIE: &str = "ferry_session";
/// Header carrying the CSRF token for cookie-authenticated API calls.
pub const CSRF_HEADER: &str = "X-CSRF-Token";

/// The remote address of a request, as audited (`ip:port`).
pub fn source(req: &HttpRequest) -> String {
    req.peer_addr()
        .map_or_else(|| "unknown".to_string(), |a| a.to_string())
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub source: String,
    /// Authenticated by the session cookie (a browser), not by an `Authorization` header.
    pub by_cookie: bool,
}

impl Caller {
    /// Refuses callers below `role` with 403.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.principal.role >= role {
            Ok(())
        } else {
            Err(MgmtError::Forbidden(format!(
                "this needs the {} role; {} has {}",
                role_name(role),
                self.principal.user,
                role_name(self.principal.role)
            ))
            .into())
        }
    }

    pub fn user(&self) -> &str {
        &self.principal.user
    }
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Viewer => "viewer",
        Role::Operator => "operator",
        Role::Admin => "admin",
    }
}

/// The bearer secret of a request: `Authorization: Bearer x`, else the session cookie.
pub fn credentials(req: &HttpRequest) -> Option<(String, bool)> {
    if let Some(value) = req.headers().get(actix_web::http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, secret) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        return Some((secret.trim().to_string(), false));
    }
    req.cookie(SESSION_COOKIE)
        .map(|c| (c.value().to_string(), true))
}

fn authenticate(req: &HttpRequest) -> Result<Caller, ApiError> {
    let core = req
        .app_data::<actix_web::web::Data<Core>>()
        .ok_or_else(|| MgmtError::Internal("management core missing".into()))?;
    if !core.setup.is_complete() {
        return Err(MgmtError::SetupRequired.into());
    }
    let (secret, by_cookie) = credentials(req).ok_or_else(|| {
        MgmtError::Unauthenticated(
            "sign in: send Authorization: Bearer <token> (POST /api/v1/session gives one)".into(),
        )
    })?;
    let principal = core.auth.authenticate(&secret)?;
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if by_cookie && !safe {
        let given = req
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !core.auth.check_csrf(&principal, given) {
            return Err(MgmtError::Csrf.into());
        }
    }
    Ok(Caller {
        principal,
        source: source(req),
        by_cookie,
    })
}

/// A vCenter plugin call: the core and what it presents. `Ok(None)`: no plugin call.
fn plugin_call(req: &HttpRequest) -> Result<Option<(Core, PluginCredentials)>, ApiError> {
    let Some(authorization) = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(None);
    };
    let vcenter = req
        .headers()
        .get(VCENTER_HEADER)
        .and_then(|v| v.to_str().ok());
    let Some(creds) = PluginCredentials::parse(authorization, vcenter)? else {
        return Ok(None);
    };
    let core = req
        .app_data::<actix_web::web::Data<Core>>()
        .ok_or_else(|| MgmtError::Internal("management core missing".into()))?;
    if !core.setup.is_complete() {
        return Err(MgmtError::SetupRequired.into());
    }
    Ok(Some((core.get_ref().clone(), creds)))
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        match plugin_call(req) {
            Ok(Some((core, creds))) => {
                let source = source(req);
                Box::pin(async move {
                    let principal = core.plugin_auth.authenticate(&creds).await?;
                    Ok(Caller {
                        principal,
                        source,
                        by_cookie: false,
                    })
                })
            }
            Ok(None) => Box::pin(ready(authenticate(req))),
            Err(err) => Box::pin(ready(Err(err))),
        }
    }
}
