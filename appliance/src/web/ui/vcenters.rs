//! The vCenters page: the vCenters discovery follows, their health and what to do when one is
//! unhealthy; administrators add them, change their credential, accept a new certificate and remove
//! them. Every POST checks CSRF, then the role.

use actix_web::http::StatusCode;
use actix_web::web;
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{badge, dash, fingerprint, notice, page, percent_encode, time, Nav, Notice};
use super::pages::everything;
use super::{html, status_of, Session, UiResult};
use crate::mgmt::auth::Role;
use crate::mgmt::vcenters::{HealthState, NewVcenter, VcenterUpdate, VcenterView};
use crate::mgmt::{Core, MgmtError};

/// What an action's error does: refusals (CSRF, role) are error pages, everything else a notice
/// on the page the form came from.
pub(super) fn is_refusal(err: &MgmtError) -> bool {
    matches!(
        err,
        MgmtError::Csrf | MgmtError::Forbidden(_) | MgmtError::Internal(_)
    )
}

pub async fn list(core: web::Data<Core>, session: Session) -> UiResult {
    vcenters_page(&core, &session, None, StatusCode::OK)
}

/// What the operator should do about an unhealthy vCenter.
fn what_to_do(v: &VcenterView) -> &'static str {
    if v.presented_thumbprint.is_some() {
        "The vCenter presents another certificate. Check its thumbprint with the vCenter's \
         administrator; if it is the vCenter's new certificate, accept it."
    } else if v
        .last_error
        .as_deref()
        .is_some_and(|e| e.contains("password") || e.contains("login"))
    {
        "The vCenter refuses the user name or password: enter the current credential below."
    } else {
        "Discovery retries by itself; check that the vCenter is up and reachable from the appliance."
    }
}

fn vcenter_row(session: &Session, v: &VcenterView) -> Markup {
    let admin = session.can(Role::Admin);
    let id = percent_encode(&v.id);
    html! {
        tr {
            td {
                a href=(format!("/vcenters/{id}/vms")) { code.wrap { (v.url) } }
                div.muted { "id " code { (v.id) } " · user " (v.username) }
            }
            td {
                @match v.health {
                    HealthState::Ok => (badge("Healthy", "ok")),
                    HealthState::Unhealthy => (badge("Unhealthy", "bad")),
                }
                @if let Some(e) = &v.last_error {
                    div.error-text { (e) }
                }
                @if v.health == HealthState::Unhealthy {
                    div.help { (what_to_do(v)) }
                }
            }
            td.num { a href=(format!("/vcenters/{id}/vms")) { (v.vm_count) } }
            td.nowrap { @match &v.last_sync { Some(t) => (time(t)), None => (dash()) } }
            td { (fingerprint(None, &v.thumbprint)) }
            @if admin {
                td.actions-cell { (admin_actions(session, v)) }
            }
        }
    }
}

fn admin_actions(session: &Session, v: &VcenterView) -> Markup {
    let id = percent_encode(&v.id);
    html! {
        @if let Some(presented) = &v.presented_thumbprint {
            form.stack method="post" action=(format!("/vcenters/{id}/accept-thumbprint")) {
                input type="hidden" name="csrf" value=(session.csrf);
                input type="hidden" name="thumbprint" value=(presented);
                span.help { "Presented now: " (fingerprint(None, presented)) }
                button.btn.btn-small.btn-primary type="submit" { "Accept presented thumbprint" }
            }
        }
        details.restore {
            summary.btn.btn-small { "Update credential" }
            form.stack method="post" action=(format!("/vcenters/{id}/credential")) {
                input type="hidden" name="csrf" value=(session.csrf);
                label { "User name" input type="text" name="username" value=(v.username) required; }
                label { "Password" input type="password" name="password" autocomplete="off" required; }
                button.btn.btn-small.btn-primary type="submit" { "Save credential" }
            }
        }
        details.restore {
            summary.btn.btn-small.btn-danger { "Remove" }
            form.stack method="post" action=(format!("/vcenters/{id}/remove")) {
                input type="hidden" name="csrf" value=(session.csrf);
                label.check {
                    input type="checkbox" name="confirm" value="yes" required;
                    "Stop discovering " (v.url) " and forget its inventory"
                }
                button.btn.btn-small.btn-danger type="submit" { "Remove vCenter" }
            }
        }
    }
}

fn add_form(session: &Session) -> Markup {
    html! {
        section.card.inset {
            h2 { "Add a vCenter" }
            p.help {
                "The appliance logs in before it keeps anything. The thumbprint is the SHA-256 (or SHA-1) "
                "thumbprint of the vCenter's certificate, as its administrator reads it; a different "
                "certificate is refused and its thumbprint shown."
            }
            form #vcenter-add-form.row method="post" action="/vcenters" {
                input type="hidden" name="csrf" value=(session.csrf);
                label { "URL" input type="text" name="url" placeholder="https://vcenter.example/sdk" required; }
                label { "User name" input type="text" name="username" placeholder="administrator@vsphere.local" required; }
                label { "Password" input type="password" name="password" autocomplete="off" required; }
                label { "Certificate thumbprint" input type="text" name="thumbprint" placeholder="AB:CD:…" required; }
                button.btn.btn-primary type="submit" { "Add vCenter" }
            }
        }
    }
}

fn vcenters_page(
    core: &Core,
    session: &Session,
    note: Option<Notice>,
    status: StatusCode,
) -> UiResult {
    let list = core.vcenters.list(everything())?;
    let admin = session.can(Role::Admin);
    let body = html! {
        (notice(note.as_ref()))
        p.muted {
            "The appliance follows the VMs of these vCenters. Open a vCenter's VMs to enable protection "
            "of a VM: the agent is installed into it and replicates its disks here."
        }
        div.table-wrap {
            table #vcenters-table.data {
                thead { tr {
                    th { "vCenter" } th { "Health" } th { "VMs" } th { "Last inventory" }
                    th { "Thumbprint" } @if admin { th {} }
                } }
                tbody {
                    @if list.items.is_empty() {
                        tr { td.empty colspan="6" {
                            "No vCenter yet. "
                            @if admin { "Add one below to discover its VMs." }
                            @else { "An administrator can add one." }
                        } }
                    }
                    @for v in &list.items { (vcenter_row(session, v)) }
                }
            }
        }
        @if admin { (add_form(session)) }
    };
    Ok(html(
        status,
        page(session, Nav::Vcenters, "vCenters", None, body),
    ))
}

/// Answers an action: the page with a notice, or the refusal as an error page.
fn after(core: &Core, session: &Session, result: Result<String, MgmtError>) -> UiResult {
    match result {
        Ok(done) => vcenters_page(core, session, Some(Notice::Ok(done)), StatusCode::OK),
        Err(err) if is_refusal(&err) => Err(err.into()),
        Err(err) => vcenters_page(
            core,
            session,
            Some(Notice::Error(err.to_string())),
            status_of(&err),
        ),
    }
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct AddForm {
    csrf: String,
    url: String,
    username: String,
    password: String,
    thumbprint: String,
}

pub async fn add(core: web::Data<Core>, session: Session, form: web::Form<AddForm>) -> UiResult {
    session.check_csrf(&core, &form.csrf)?;
    session.require(Role::Admin)?;
    let form = form.into_inner();
    let new = NewVcenter {
        url: form.url.trim().to_string(),
        username: form.username.trim().to_string(),
        password: form.password,
        thumbprint: form.thumbprint.trim().to_string(),
    };
    let result = core
        .vcenters
        .add(&session.principal, &session.source, new)
        .await
        .map(|v| format!("vCenter {} is added; its VMs are being discovered.", v.url));
    after(&core, &session, result)
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct CredentialForm {
    csrf: String,
    username: String,
    password: String,
}

pub async fn update_credential(
    core: web::Data<Core>,
    session: Session,
    id: web::Path<String>,
    form: web::Form<CredentialForm>,
) -> UiResult {
    session.check_csrf(&core, &form.csrf)?;
    session.require(Role::Admin)?;
    let form = form.into_inner();
    let update = VcenterUpdate {
        username: Some(form.username.trim().to_string()).filter(|u| !u.is_empty()),
        password: Some(form.password).filter(|p| !p.is_empty()),
        ..VcenterUpdate::default()
    };
    let result = core
        .vcenters
        .update(&session.principal, &session.source, &id, update)
        .await
        .map(|v| format!("The credential of {} is updated; discovery resumes.", v.url));
    after(&core, &session, result)
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct ThumbprintForm {
    csrf: String,
    thumbprint: String,
}

/// Accepts the thumbprint the page showed (not whatever is presented by the time the form arrives).
pub async fn accept_thumbprint(
    core: web::Data<Core>,
    session: Session,
    id: web::Path<String>,
    form: web::Form<ThumbprintForm>,
) -> UiResult {
    session.check_csrf(&core, &form.csrf)?;
    session.require(Role::Admin)?;
    let update = VcenterUpdate {
        thumbprint: Some(form.thumbprint.trim().to_string()),
        ..VcenterUpdate::default()
    };
    let result = core
        .vcenters
        .update(&session.principal, &session.source, &id, update)
        .await
        .map(|v| {
            format!(
                "The certificate of {} is trusted now; discovery resumes.",
                v.url
            )
        });
    after(&core, &session, result)
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct RemoveForm {
    csrf: String,
    confirm: String,
}

pub async fn remove(
    core: web::Data<Core>,
    session: Session,
    id: web::Path<String>,
    form: web::Form<RemoveForm>,
) -> UiResult {
    session.check_csrf(&core, &form.csrf)?;
    session.require(Role::Admin)?;
    let result = if form.confirm != "yes" {
        Err(MgmtError::BadRequest(
            "tick the confirmation to remove the vCenter".into(),
        ))
    } else {
        core.vcenters
            .remove(&session.principal, &session.source, &id)
            .await
            .map(|()| format!("vCenter {} is removed and its inventory forgotten.", *id))
    };
    after(&core, &session, result)
}
