//! `/login` and `/logout`: the session cookie of the UI.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::bare;
use super::{
    blocking, check_origin, pre_session_html, see_other, status_of, CsrfForm, Session, UiResult,
};
use crate::mgmt::{Core, MgmtError};
use crate::web::api::session_cookie;
use crate::web::extract::{source, SESSION_COOKIE};

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct LoginForm {
    pub username: String,
    pub password: String,
}

/// The sign-in form; a browser that already holds a working session goes to the dashboard.
pub async fn form(core: web::Data<Core>, req: HttpRequest) -> UiResult {
    if !core.setup.is_complete() {
        return Ok(see_other("/setup"));
    }
    if let Some(cookie) = req.cookie(SESSION_COOKIE) {
        if core.auth.authenticate(cookie.value()).is_ok() {
            return Ok(see_other("/"));
        }
    }
    Ok(pre_session_html(StatusCode::OK, render("", None)))
}

pub async fn submit(
    core: web::Data<Core>,
    req: HttpRequest,
    form: web::Form<LoginForm>,
) -> UiResult {
    if !core.setup.is_complete() {
        return Ok(see_other("/setup"));
    }
    check_origin(&req)?;
    let LoginForm { username, password } = form.into_inner();
    let username = username.trim().to_string();
    let src = source(&req);
    let login = {
        let core = core.get_ref().clone();
        let username = username.clone();
        // argon2 takes tens of milliseconds of CPU: keep it off the event loop.
        blocking(move || core.auth.login(&username, &password, &src)).await
    };
    match login {
        Ok(issued) => Ok(HttpResponse::SeeOther()
            .insert_header((header::LOCATION, "/"))
            .cookie(session_cookie(&issued.token))
            .finish()),
        Err(err) => {
            let message = match &err {
                MgmtError::TooManyAttempts { retry_after_secs } => format!(
                    "Too many failed sign-ins for this user or from this address. Try again in {} minutes.",
                    retry_after_secs.div_ceil(60).max(1)
                ),
                MgmtError::Unauthenticated(_) => {
                    "Wrong user name or password.".to_string()
                }
                other => other.to_string(),
            };
            let mut response = pre_session_html(status_of(&err), render(&username, Some(&message)));
            if let MgmtError::TooManyAttempts { retry_after_secs } = err {
                if let Ok(value) = header::HeaderValue::from_str(&retry_after_secs.to_string()) {
                    response.headers_mut().insert(header::RETRY_AFTER, value);
                }
            }
            Ok(response)
        }
    }
}

/// Ends the session (its token stops working) and drops the cookie.
pub async fn logout(
    core: web::Data<Core>,
    session: Session,
    form: web::Form<CsrfForm>,
) -> UiResult {
    session.check_csrf(&core, &form.csrf)?;
    core.auth.logout(&session.principal, &session.source)?;
    let mut gone = session_cookie("");
    gone.make_removal();
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/login"))
        .cookie(gone)
        .finish())
}

fn render(username: &str, error: Option<&str>) -> Markup {
    bare(
        "Sign in",
        &[],
        html! {
            section.card.login-card {
                h1 { "Sign in" }
                p.lead { "Ferry replicates your machines to the vault and restores them from it." }
                @if let Some(error) = error {
                    p.error role="alert" { (error) }
                }
                form #login-form method="post" action="/login" {
                    div.field {
                        label for="username" { "User name" }
                        input #username type="text" name="username" value=(username) required
                            autocomplete="username" autocapitalize="none" spellcheck="false"
                            autofocus[username.is_empty()];
                    }
                    div.field {
                        label for="password" { "Password" }
                        input #password type="password" name="password" required
                            autocomplete="current-password" autofocus[!username.is_empty()];
                    }
                    div.actions {
                        button #login-submit.btn.btn-primary type="submit" { "Sign in" }
                    }
                }
                p.help {
                    "The first user is " code { "admin" } ", with the password chosen at setup. "
                    "Sessions last 12 hours."
                }
            }
        },
    )
}
