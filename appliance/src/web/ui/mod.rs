//! The dashboard and the first-boot setup wizard: server-rendered HTML (maud), no front-end build.
//!
//! Every page is rendered by the server and works without JavaScript; the only script is the
//! optional "Test connection" button of the setup page. The listener's Content-Security-Policy
//! forbids inline scripts and styles, so the stylesheet and the script are served from
//! `/static/`.
//!
//! Rules every handler here follows:
//! - until setup is complete every page redirects to `/setup` (the [`Session`] extractor and the
//!   pre-session pages check the phase); afterwards `/setup` redirects to `/login`;
//! - authenticated pages take a [`Session`] (the `ferry_session` cookie); without one they
//!   redirect to `/login`;
//! - every POST of a signed-in user checks the form's `csrf` field first, then the role;
//! - the pre-session forms (setup, login) refuse a cross-site `Origin`.

mod admin;
mod charts;
mod inventory;
mod layout;
mod login;
mod pages;
mod push_jobs;
mod setup;
mod vcenters;

#[cfg(test)]
#[path = "ui_tests.rs"]
mod tests;

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::http::{header, StatusCode};
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};
use maud::Markup;
use serde::de::DeserializeOwned;

use crate::mgmt::auth::{Principal, Role};
use crate::mgmt::{Core, MgmtError};
use crate::web::extract::{role_name, source, SESSION_COOKIE};

const STYLE_CSS: &str = include_str!("style.css");
const SETUP_JS: &str = include_str!("setup.js");
/// The static files change only with the binary; browsers may keep them for a day.
const STATIC_CACHE: &str = "public, max-age=86400";

/// Registers the UI's pages and static files.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/static/ferry.css", web::get().to(style_css))
        .route("/static/setup.js", web::get().to(setup_js))
        .service(
            resource("/setup")
                .route(web::get().to(setup::form))
                .route(web::post().to(setup::submit)),
        )
        .service(
            resource("/login")
                .route(web::get().to(login::form))
                .route(web::post().to(login::submit)),
        )
        .service(resource("/logout").route(web::post().to(login::logout)))
        .service(resource("/").route(web::get().to(pages::dashboard)))
        .service(resource("/machines/{id}").route(web::get().to(pages::machine)))
        .service(resource("/agents").route(web::get().to(admin::agents)))
        .service(
            resource("/agents/registration-passphrase")
                .route(web::post().to(admin::rotate_passphrase)),
        )
        .service(resource("/agents/{id}/revoke").route(web::post().to(admin::revoke_agent)))
        .service(resource("/points").route(web::get().to(pages::points)))
        .service(
            resource("/restores")
                .route(web::get().to(pages::restores))
                .route(web::post().to(pages::start_restore)),
        )
        .service(resource("/restores/{id}/cancel").route(web::post().to(pages::cancel_restore)))
        .service(resource("/audit").route(web::get().to(pages::audit)))
        .service(
            resource("/vcenters")
                .route(web::get().to(vcenters::list))
                .route(web::post().to(vcenters::add)),
        )
        .service(
            resource("/vcenters/{id}/credential")
                .route(web::post().to(vcenters::update_credential)),
        )
        .service(
            resource("/vcenters/{id}/accept-thumbprint")
                .route(web::post().to(vcenters::accept_thumbprint)),
        )
        .service(resource("/vcenters/{id}/remove").route(web::post().to(vcenters::remove)))
        .service(resource("/vcenters/{id}/vms").route(web::get().to(inventory::vms)))
        .service(resource("/vcenters/{id}/vms/{moref}").route(web::get().to(inventory::vm)))
        .service(
            resource("/vcenters/{id}/vms/{moref}/protect")
                .route(web::post().to(inventory::protect)),
        )
        .service(
            resource("/vcenters/{id}/vms/{moref}/unprotect")
                .route(web::post().to(inventory::unprotect)),
        )
        .service(resource("/push-jobs").route(web::get().to(push_jobs::list)))
        .service(resource("/push-jobs/{id}").route(web::get().to(push_jobs::job)))
        .service(resource("/push-jobs/{id}/cancel").route(web::post().to(push_jobs::cancel)))
        .service(
            resource("/settings")
                .route(web::get().to(admin::settings))
                .route(web::post().to(admin::update_settings)),
        )
        .service(resource("/settings/users").route(web::post().to(admin::create_user)))
        .service(resource("/settings/users/{name}").route(web::post().to(admin::update_user)))
        .service(
            resource("/settings/users/{name}/delete").route(web::post().to(admin::delete_user)),
        )
        .service(resource("/settings/tokens").route(web::post().to(admin::create_token)))
        .service(
            resource("/settings/tokens/{id}/revoke").route(web::post().to(admin::revoke_token)),
        );
}

/// A UI resource: form bodies that do not parse answer an HTML page, not the API's JSON.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).app_data(
        web::FormConfig::default()
            .limit(crate::web::MAX_BODY_BYTES)
            .error_handler(|err, _req| {
                let status = match err {
                    actix_web::error::UrlencodedError::ContentType => {
                        StatusCode::UNSUPPORTED_MEDIA_TYPE
                    }
                    actix_web::error::UrlencodedError::Overflow { .. } => {
                        StatusCode::PAYLOAD_TOO_LARGE
                    }
                    _ => StatusCode::BAD_REQUEST,
                };
                let page = layout::message_page(
                    "The form could not be read",
                    &format!("{err}. Go back, reload the page and try again."),
                );
                actix_web::error::InternalError::from_response(err, html(status, page)).into()
            }),
    )
}

async fn style_css() -> HttpResponse {
    static_file("text/css; charset=utf-8", STYLE_CSS)
}

async fn setup_js() -> HttpResponse {
    static_file("text/javascript; charset=utf-8", SETUP_JS)
}

fn static_file(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        // Set here, so the listener's default `no-store` (added only when absent) does not apply.
        .insert_header((header::CACHE_CONTROL, STATIC_CACHE))
        .body(body)
}

/// Why a UI request did not get its page: a redirect, or an error shown as an HTML page.
#[derive(Debug)]
pub enum UiError {
    /// 303 to this location.
    Redirect(String),
    /// An error page with the error's status.
    Failed(MgmtError),
}

impl std::fmt::Display for UiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UiError::Redirect(to) => write!(f, "redirect to {to}"),
            UiError::Failed(err) => err.fmt(f),
        }
    }
}

impl From<MgmtError> for UiError {
    fn from(err: MgmtError) -> UiError {
        match err {
            MgmtError::SetupRequired => UiError::Redirect("/setup".into()),
            MgmtError::Unauthenticated(_) => UiError::Redirect("/login".into()),
            other => UiError::Failed(other),
        }
    }
}

impl ResponseError for UiError {
    fn status_code(&self) -> StatusCode {
        match self {
            UiError::Redirect(_) => StatusCode::SEE_OTHER,
            UiError::Failed(err) => status_of(err),
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            UiError::Redirect(to) => see_other(to),
            UiError::Failed(err) => {
                if status_of(err).is_server_error() {
                    tracing::warn!(code = err.code(), %err, "UI request failed");
                }
                let mut response = html(status_of(err), layout::error_page(err));
                if let MgmtError::TooManyAttempts { retry_after_secs } = err {
                    if let Ok(value) = header::HeaderValue::from_str(&retry_after_secs.to_string())
                    {
                        response.headers_mut().insert(header::RETRY_AFTER, value);
                    }
                }
                response
            }
        }
    }
}

/// What a UI handler answers.
pub type UiResult = Result<HttpResponse, UiError>;

pub fn status_of(err: &MgmtError) -> StatusCode {
    StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// 303 See Other: after a POST, the browser GETs `to`.
pub fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to))
        .finish()
}

/// An HTML answer.
pub fn html(status: StatusCode, page: Markup) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(page.into_string())
}

/// The query string as `T`; a malformed one gives the defaults (a page should not fail over it).
pub fn lenient_query<T: DeserializeOwned + Default>(req: &HttpRequest) -> T {
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default()
}

/// Runs slow, blocking core calls (argon2 hashing) off the event loop.
pub async fn blocking<T, F>(f: F) -> Result<T, MgmtError>
where
    F: FnOnce() -> Result<T, MgmtError> + Send + 'static,
    T: Send + 'static,
{
    web::block(f)
        .await
        .map_err(|e| MgmtError::Internal(format!("UI worker: {e}")))?
}

fn core_of(req: &HttpRequest) -> Result<web::Data<Core>, UiError> {
    req.app_data::<web::Data<Core>>()
        .cloned()
        .ok_or_else(|| UiError::Failed(MgmtError::Internal("management core missing".into())))
}

/// A signed-in browser: the session cookie was checked by the core.
#[derive(Debug, Clone)]
pub struct Session {
    pub principal: Principal,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
    /// The remote address, as audited.
    pub source: String,
}

impl Session {
    fn from_request_sync(req: &HttpRequest) -> Result<Session, UiError> {
        let core = core_of(req)?;
        if !core.setup.is_complete() {
            return Err(UiError::Redirect("/setup".into()));
        }
        let cookie = req
            .cookie(SESSION_COOKIE)
            .ok_or_else(|| UiError::Redirect("/login".into()))?;
        let principal = core.auth.authenticate(cookie.value())?;
        Ok(Session {
            csrf: core.auth.csrf_token(&principal),
            principal,
            source: source(req),
        })
    }

    /// Refuses a form whose `csrf` field is missing or belongs to another session.
    pub fn check_csrf(&self, core: &Core, given: &str) -> Result<(), UiError> {
        if core.auth.check_csrf(&self.principal, given) {
            Ok(())
        } else {
            Err(UiError::Failed(MgmtError::Csrf))
        }
    }

    pub fn can(&self, role: Role) -> bool {
        self.principal.role >= role
    }

    /// Refuses users below `role` with 403.
    pub fn require(&self, role: Role) -> Result<(), UiError> {
        if self.can(role) {
            Ok(())
        } else {
            Err(UiError::Failed(MgmtError::Forbidden(format!(
                "this needs the {} role; {} has the {} role",
                role_name(role),
                self.principal.user,
                role_name(self.principal.role)
            ))))
        }
    }

    pub fn user(&self) -> &str {
        &self.principal.user
    }
}

impl FromRequest for Session {
    type Error = UiError;
    type Future = Ready<Result<Session, UiError>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(Session::from_request_sync(req))
    }
}

/// A form that carries nothing but the CSRF token.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct CsrfForm {
    pub csrf: String,
}

/// The pre-session forms (setup, login) have no CSRF token; a cross-site post is recognised by
/// what the browser says about where it comes from:
/// - `Sec-Fetch-Site` (set by the browser, no page can forge it): only `same-origin`, or `none`
///   (typed or bookmarked), passes;
/// - else `Origin` must name this host and port. `Origin: null` (opaque origins such as sandboxed
///   frames, and the origin a `no-referrer` page sends) does not pass, which is why the
///   pre-session pages answer with `Referrer-Policy: same-origin` ([`PRE_SESSION_REFERRER`]);
/// - neither header (old clients, curl) passes; the session cookie's `SameSite=Strict` covers the
///   rest.
pub fn check_origin(req: &HttpRequest) -> Result<(), UiError> {
    let headers = req.headers();
    let text = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or(""));
    let same = match (text("sec-fetch-site"), text(header::ORIGIN.as_str())) {
        (Some(site), _) => matches!(site, "same-origin" | "none"),
        (None, None) => true,
        (None, Some(origin)) => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
                .or_else(|| req.uri().authority().map(|a| a.to_string()));
            host.is_some_and(|host| same_origin(origin, &host))
        }
    };
    if same {
        Ok(())
    } else {
        Err(UiError::Failed(MgmtError::Forbidden(
            "this form was posted from another site (its origin is not this appliance); \
             open the appliance's own page and submit it there"
                .into(),
        )))
    }
}

/// The referrer policy of the setup and sign-in pages: browsers then send their real `Origin` when
/// those forms are posted (under the listener's default `no-referrer` they send `Origin: null`).
/// Same-origin only, so nothing leaks to other sites.
pub const PRE_SESSION_REFERRER: &str = "same-origin";

/// An HTML answer of a pre-session page.
pub fn pre_session_html(status: StatusCode, page: Markup) -> HttpResponse {
    let mut response = html(status, page);
    response.headers_mut().insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static(PRE_SESSION_REFERRER),
    );
    response
}

/// Whether the `Origin` header names the host (and port) of the `Host` header.
pub fn same_origin(origin: &str, host: &str) -> bool {
    let Ok(url) = url::Url::parse(origin) else {
        return false;
    };
    let (Some(origin_host), Some(origin_port)) = (url.host_str(), url.port_or_known_default())
    else {
        return false;
    };
    let Ok(authority) = host.parse::<actix_web::http::uri::Authority>() else {
        return false;
    };
    let host_port = authority.port_u16().or(match url.scheme() {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    });
    origin_host.eq_ignore_ascii_case(authority.host()) && Some(origin_port) == host_port
}
