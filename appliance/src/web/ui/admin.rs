//! The administration pages: agents (revoke, passphrase rotation) and settings (upload limit,
//! users, API tokens). Everyone signed in sees them; only administrators get the forms, and every
//! POST checks CSRF, then the role.

use actix_web::http::StatusCode;
use actix_web::web;
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{
    action_button, badge, bytes, dash, duration, fingerprint, notice, page, percent_encode, time,
    Nav, Notice,
};
use super::pages::everything;
use super::{blocking, html, see_other, status_of, CsrfForm, Session, UiResult};
use crate::mgmt::auth::Role;
use crate::mgmt::settings::SettingsUpdate;
use crate::mgmt::{Core, MgmtError};

/// Bytes per second in one Mbit/s.
const BYTES_PER_MBIT: f64 = 125_000.0;

/// What an action's error does: refusals (CSRF, role) are error pages, everything else a notice
/// on the page the form came from.
fn is_refusal(err: &MgmtError) -> bool {
    matches!(
        err,
        MgmtError::Csrf | MgmtError::Forbidden(_) | MgmtError::Internal(_)
    )
}

pub async fn agents(core: web::Data<Core>, session: Session) -> UiResult {
    agents_page(&core, &session, None, StatusCode::OK)
}

fn agents_page(
    core: &Core,
    session: &Session,
    note: Option<Notice>,
    status: StatusCode,
) -> UiResult {
    let agents = core.agents(everything())?;
    let admin = session.can(Role::Admin);
    let body = html! {
        (notice(note.as_ref()))
        p.muted {
            "An agent runs on each protected machine and replicates its disks here over mutual TLS. "
            "A revoked agent can no longer connect; its recovery points stay in the vault."
        }
        div.table-wrap {
            table #agents-table.data {
                thead { tr {
                    th { "Agent id" } th { "Host name" } th { "Status" } th { "Registered" }
                    th { "Last seen" } @if admin { th {} }
                } }
                tbody {
                    @if agents.items.is_empty() {
                        tr { td.empty colspan="6" {
                            "No agent has registered yet. Install the agent on a machine and give it this "
                            "appliance's address and the registration passphrase."
                        } }
                    }
                    @for a in &agents.items {
                        tr {
                            td { code { (a.id) } }
                            td { (a.hostname) }
                            td {
                                @if a.revoked { (badge("Revoked", "muted")) }
                                @else if a.connected { (badge("Connected", "ok")) }
                                @else { (badge("Not connected", "bad")) }
                            }
                            td.nowrap { (time(&a.registered_at)) }
                            td.nowrap { @match &a.last_seen { Some(t) => (time(t)), None => (dash()) } }
                            @if admin {
                                td { @if !a.revoked {
                                    (action_button(session, &format!("/agents/{}/revoke", percent_encode(&a.id)),
                                        "Revoke", "btn-danger", &[]))
                                } }
                            }
                        }
                    }
                }
            }
        }
        @if admin {
            section.card.inset {
                h2 { "Rotate the registration passphrase" }
                p.help {
                    "New agents register with the new passphrase; registered agents keep working. "
                    "The new passphrase is shown once."
                }
                form #rotate-form.row method="post" action="/agents/registration-passphrase" {
                    input type="hidden" name="csrf" value=(session.csrf);
                    label { "New passphrase (optional)"
                        input type="password" name="passphrase" autocomplete="new-password"
                            placeholder="leave empty to generate one";
                    }
                    button.btn.btn-primary type="submit" { "Rotate registration passphrase" }
                }
            }
        }
    };
    Ok(html(
        status,
        page(session, Nav::Agents, "Agents", None, body),
    ))
}

pub async fn revoke_agent(
    core: web::Data<Core>,
    session: Session,
    id: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> UiResult {
    session.check_csrf(&core, &form.csrf)?;
    session.require(Role::Admin)?;
    match core.revoke_agent(&session.principal, &session.source, &id) {
        Ok(agent) => {
            let note = Notice::Ok(format!(
                "Agent {} ({}) is revoked.",
                agent.id, agent.hostname
            ));
            agents_page(&core, &session, Some(note), StatusCode::OK)
        }
        Err(err) if is_refusal(&err) => Err(err.into()),
        Err(err) => agents_page(
            &core,
            &session,
            Some(Notice::Error(err.to_string())),
            status_of(&err),
        ),
    }
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct RotateForm {
    csrf: String,
    passphrase: String,
}

pub async fn rotate_passphrase(
    core: web::Data<Core>,
    session: Session,
    form: web::Form<RotateForm>,
) -> UiResult {
    session.check_csrf(&core, &form.csrf)?;
    session.require(Role::Admin)?;
    let given = Some(form.passphrase.trim()).filter(|p| !p.is_empty());
    match core.rotate_registration_passphrase(&session.principal, &session.source, given) {
        Ok(view) => {
            let note = Notice::Secret {
                title: "New registration passphrase".into(),
                value: view.passphrase,
                note: "Shown once. Give it to whoever installs new agents.".into(),
            };
            agents_page(&core, &session, Some(note), StatusCode::OK)
        }
        Err(err) if is_refusal(&err) => Err(err.into()),
        Err(err) => agents_page(
            &core,
            &session,
            Some(Notice::Error(err.to_string())),
            status_of(&err),
        ),
    }
}

pub async fn settings(core: web::Data<Core>, session: Session) -> UiResult {
    settings_page(&core, &session, None, StatusCode::OK)
}

fn role_select(name: &str, selected: crate::mgmt::auth::Role) -> Markup {
    html! {
        select name=(name) {
            @for role in [Role::Viewer, Role::Operator, Role::Admin] {
                option value=(role.as_str()) selected[role == selected] { (role.as_str()) }
            }
        }
    }
}

fn settings_page(
    core: &Core,
    session: &Session,
    note: Option<Notice>,
    status: StatusCode,
) -> UiResult {
    let view = core.settings()?;
    let admin = session.can(Role::Admin);
    let limit = view.upload_limit_bytes_per_sec;
    let body = html! {
        (notice(note.as_ref()))
        section.card.inset {
            h2 { "Appliance" }
            dl.kv {
                dt { "Vault" } dd { code.wrap { (view.vault_url) } }
                dt { "Upload limit" } dd {
                    @if limit == 0 { "unlimited" } @else {
                        (format!("{} Mbit/s", trim_mbit(limit))) " (" (bytes(limit)) "/s)"
                    }
                }
                dt { "RPO target" } dd { (duration(view.rpo_target_secs)) }
                dt { "Agents connect to" } dd { code { (view.listen_data) } }
                dt { "Console and API" } dd { code { (view.listen_management) } }
                dt { "CA fingerprint (SHA-256)" } dd { (fingerprint(None, &view.ca_fingerprint)) }
            }
            @if admin {
                form #upload-limit-form.row method="post" action="/settings" {
                    input type="hidden" name="csrf" value=(session.csrf);
                    label { "Upload limit in Mbit/s"
                        input type="number" name="upload_limit_mbit" min="0" step="any"
                            value=(trim_mbit(limit)) required;
                    }
                    span.help { "Caps the bandwidth to the vault so replication does not fill the uplink; 0 = unlimited." }
                    button.btn.btn-primary type="submit" { "Save" }
                }
            }
        }
        @if admin { (users_section(core, session)?) (tokens_section(core, session)?) }
    };
    Ok(html(
        status,
        page(session, Nav::Settings, "Settings", None, body),
    ))
}

fn trim_mbit(bytes_per_sec: u64) -> String {
    let text = format!("{:.3}", bytes_per_sec as f64 / BYTES_PER_MBIT);
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn users_section(core: &Core, session: &Session) -> Result<Markup, MgmtError> {
    let users = core.auth.list_users()?;
    Ok(html! {
        section.card.inset {
            h2 { "Users" }
            p.help { "viewer: sees everything · operator: also starts and cancels restores · admin: also users, tokens, agents and settings." }
            div.table-wrap {
                table #users-table.data {
                    thead { tr { th { "Name" } th { "Role" } th { "Created" } th { "Status" } th { "Actions" } } }
                    tbody {
                        @for u in &users {
                            @let action = format!("/settings/users/{}", percent_encode(&u.name));
                            tr {
                                td { (u.name) @if u.name == session.user() { " " span.muted { "(you)" } } }
                                td {
                                    form.inline method="post" action=(action) {
                                        input type="hidden" name="csrf" value=(session.csrf);
                                        input type="hidden" name="action" value="role";
                                        (role_select("role", u.role))
                                        button.btn.btn-small type="submit" { "Change role" }
                                    }
                                }
                                td.nowrap { (time(&u.created_at)) }
                                td { @if u.disabled { (badge("Disabled", "muted")) } @else { (badge("Active", "ok")) } }
                                td.actions-cell {
                                    @if u.disabled {
                                        (action_button(session, &action, "Enable", "", &[("action", "enable")]))
                                    } @else {
                                        (action_button(session, &action, "Disable", "", &[("action", "disable")]))
                                    }
                                    (action_button(session, &format!("{action}/delete"), "Delete", "btn-danger", &[]))
                                }
                            }
                        }
                    }
                }
            }
            h3 { "Add a user" }
            form #new-user-form.row method="post" action="/settings/users" {
                input type="hidden" name="csrf" value=(session.csrf);
                label { "Name" input type="text" name="name" required autocomplete="off" spellcheck="false"
                    placeholder="lower-case letters, digits, . _ -"; }
                label { "Role" (role_select("role", Role::Viewer)) }
                label { "Password" input type="password" name="password" required autocomplete="new-password"; }
                button.btn.btn-primary type="submit" { "Add user" }
            }
        }
    })
}

fn tokens_section(core: &Core, session: &Session) -> Result<Markup, MgmtError> {
    let tokens = core.auth.list_tokens()?;
    let users = core.auth.list_users()?;
    Ok(html! {
        section.card.inset {
            h2 { "API tokens" }
            p.help { "For scripts and the vCenter plug-in: sent as Authorization: Bearer <token>. A token acts with its user's role." }
            div.table-wrap {
                table #tokens-table.data {
                    thead { tr { th { "Name" } th { "User" } th { "Kind" } th { "Created" } th { "Expires" } th { "Status" } th {} } }
                    tbody {
                        @if tokens.is_empty() { tr { td.empty colspan="7" { "No token." } } }
                        @for t in &tokens {
                            tr {
                                td { (t.name) }
                                td { (t.user) }
                                td { (badge(&format!("{:?}", t.kind).to_lowercase(), "muted")) }
                                td.nowrap { (time(&t.created_at)) }
                                td.nowrap { @match &t.expires_at { Some(e) => (time(e)), None => "never" } }
                                td { @if t.revoked { (badge("Revoked", "muted")) } @else { (badge("Active", "ok")) } }
                                td { @if !t.revoked {
                                    (action_button(session, &format!("/settings/tokens/{}/revoke", percent_encode(&t.id)),
                                        "Revoke", "btn-danger", &[]))
                                } }
                            }
                        }
                    }
                }
            }
            h3 { "Create an API token" }
            form #new-token-form.row method="post" action="/settings/tokens" {
                input type="hidden" name="csrf" value=(session.csrf);
                label { "Name" input type="text" name="name" required placeholder="vcenter-plugin"; }
                label { "User"
                    select name="user" {
                        @for u in &users {
                            option value=(u.name) selected[u.name == session.user()] { (u.name) " (" (u.role.as_str()) ")" }
                        }
                    }
                }
                label { "Valid for (days)" input type="number" name="ttl_days" min="1" max="730" value="90"; }
                button.btn.btn-primary type="submit" { "Create token" }
            }
        }
    })
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct LimitForm {
    csrf: String,
    upload_limit_mbit: String,
}

pub async fn update_settings(
    core: web::Data<Core>,
    session: Session,
    form: web::Form<LimitForm>,
) -> UiResult {
    session.check_csrf(&core, &form.csrf)?;
    session.require(Role::Admin)?;
    let result = parse_mbit(&form.upload_limit_mbit).and_then(|limit| {
        core.update_settings(
            &session.principal,
            &session.source,
            SettingsUpdate {
                upload_limit_bytes_per_sec: Some(limit),
            },
        )
    });
    respond(
        &core,
        &session,
        result.map(|_| "The upload limit is saved.".to_string()),
    )
}

/// Mbit/s as typed (a decimal number, 0 = unlimited) to bytes per second.
fn parse_mbit(text: &str) -> Result<u64, MgmtError> {
    let invalid = || {
        MgmtError::invalid(
            "upload_limit",
            "enter a number of Mbit/s, for example 100 or 2.5; 0 means unlimited",
        )
    };
    let mbit: f64 = text.trim().parse().map_err(|_| invalid())?;
    if !mbit.is_finite() || !(0.0..=1e6).contains(&mbit) {
        return Err(invalid());
    }
    Ok((mbit * BYTES_PER_MBIT).round() as u64)
}

/// The settings page after an action: a notice on success, the error otherwise.
fn respond(core: &Core, session: &Session, result: Result<String, MgmtError>) -> UiResult {
    match result {
        Ok(message) => settings_page(core, session, Some(Notice::Ok(message)), StatusCode::OK),
        Err(err) if is_refusal(&err) => Err(err.into()),
        Err(err) => settings_page(
            core,
            session,
            Some(Notice::Error(err.to_string())),
            status_of(&err),
        ),
    }
}

fn parse_role(text: &str) -> Result<Role, MgmtError> {
    match text {
        "viewer" => Ok(Role::Viewer),
        "operator" => Ok(Role::Operator),
        "admin" => Ok(Role::Admin),
        _ => Err(MgmtError::invalid(
            "role",
            "must be viewer, operator or admin",
        )),
    }
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct NewUserForm {
    csrf: String,
    name: String,
    role: String,
    password: String,
}

pub async fn create_user(
    core: web::Data<Core>,
    session: Session,
    form: web::Form<NewUserForm>,
) -> UiResult {
    session.check_csrf(&core, &form.csrf)?;
    session.require(Role::Admin)?;
    let form = form.into_inner();
    let result = match parse_role(&form.role) {
        Ok(role) => {
            let (core2, by, source) = (
                core.get_ref().clone(),
                session.principal.clone(),
                session.source.clone(),
            );
            let name = form.name.trim().to_string();
            blocking(move || {
                core2
                    .auth
                    .create_user(&by, &source, &name, role, &form.password)
            })
            .await
            .map(|u| format!("User {} ({}) is created.", u.name, u.role.as_str()))
        }
        Err(err) => Err(err),
    };
    respond(&core, &session, result)
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct UserActionForm {
    csrf: String,
    action: String,
    role: String,
}

pub async fn update_user(
    core: web::Data<Core>,
    session: Session,
    name: web::Path<String>,
    form: web::Form<UserActionForm>,
) -> UiResult {
    session.check_csrf(&core, &form.csrf)?;
    session.require(Role::Admin)?;
    let (role, disabled) = match form.action.as_str() {
        "role" => match parse_role(&form.role) {
            Ok(role) => (Some(role), None),
            Err(err) => return respond(&core, &session, Err(err)),
        },
        "disable" => (None, Some(true)),
        "enable" => (None, Some(false)),
        _ => {
            let err = MgmtError::invalid("action", "must be role, disable or enable");
            return respond(&core, &session, Err(err));
        }
    };
    let (core2, by, source) = (
        core.get_ref().clone(),
        session.principal.clone(),
        session.source.clone(),
    );
    let name = name.into_inner();
    let result = blocking(move || {
        core2
            .auth
            .update_user(&by, &source, &name, role, None, disabled)
    })
    .await
    .map(|u| {
        let state = if u.disabled { "disabled" } else { "active" };
        format!("User {} is now {} and {state}.", u.name, u.role.as_str())
    });
    respond(&core, &session, result)
}

pub async fn delete_user(
    core: web::Data<Core>,
    session: Session,
    name: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> UiResult {
    session.check_csrf(&core, &form.csrf)?;
    session.require(Role::Admin)?;
    let result = core
        .auth
        .delete_user(&session.principal, &session.source, &name)
        .map(|()| format!("User {name} is deleted; their tokens no longer work."));
    if result.is_ok() && name.as_str() == session.user() {
        // Deleting yourself ends your session: the next page is the sign-in page.
        return Ok(see_other("/login"));
    }
    respond(&core, &session, result)
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct NewTokenForm {
    csrf: String,
    name: String,
    user: String,
    ttl_days: String,
}

pub async fn create_token(
    core: web::Data<Core>,
    session: Session,
    form: web::Form<NewTokenForm>,
) -> UiResult {
    session.check_csrf(&core, &form.csrf)?;
    session.require(Role::Admin)?;
    let ttl = match form.ttl_days.trim() {
        "" => Ok(None),
        text => text.parse::<u32>().map(Some).map_err(|_| {
            MgmtError::invalid("ttl_days", "enter a number of days between 1 and 730")
        }),
    };
    let user = Some(form.user.trim())
        .filter(|u| !u.is_empty())
        .unwrap_or(session.user())
        .to_string();
    let issued = ttl.and_then(|ttl| {
        core.auth.create_api_token(
            &session.principal,
            &session.source,
            &user,
            form.name.trim(),
            ttl,
        )
    });
    match issued {
        Ok(token) => {
            let note = Notice::Secret {
                title: format!("API token \"{}\" for {}", form.name.trim(), token.user),
                value: token.token,
                note: "Shown once: copy it now. Revoke it below when it is no longer needed."
                    .into(),
            };
            settings_page(&core, &session, Some(note), StatusCode::CREATED)
        }
        Err(err) => respond(&core, &session, Err(err)),
    }
}

pub async fn revoke_token(
    core: web::Data<Core>,
    session: Session,
    id: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> UiResult {
    session.check_csrf(&core, &form.csrf)?;
    session.require(Role::Admin)?;
    let result = core
        .auth
        .revoke_token(&session.principal, &session.source, &id)
        .map(|()| "The token is revoked.".to_string());
    if result.is_ok() && id.as_str() == session.principal.token_id {
        return Ok(see_other("/login"));
    }
    respond(&core, &session, result)
}
