//! Push jobs (installs, upgrades and uninstalls of the agent in guests): the list, newest first, and
//! one job with its log and error. Administrators cancel a job that has not ended.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{
    action_button, badge, dash, notice, page, pager, percent_encode, time, Nav, Notice,
};
use super::vcenters::is_refusal;
use super::{html, lenient_query, see_other, status_of, CsrfForm, Session, UiResult};
use crate::mgmt::auth::Role;
use crate::mgmt::push_jobs::{PushJobState, PushJobView, Via};
use crate::mgmt::{Core, MgmtError, PageRequest};

/// Seconds between reloads while a job shown has not ended.
const RUNNING_REFRESH_SECS: u32 = 5;

pub fn push_badge(state: PushJobState, cancel_requested: bool) -> Markup {
    let (label, tone) = match state {
        PushJobState::Queued | PushJobState::Running if cancel_requested => ("Cancelling", "warn"),
        PushJobState::Queued => ("Queued", "muted"),
        PushJobState::Running => ("Running", "info"),
        PushJobState::Succeeded => ("Succeeded", "ok"),
        PushJobState::Failed => ("Failed", "bad"),
        PushJobState::Cancelled => ("Cancelled", "muted"),
    };
    badge(label, tone)
}

/// A job's log and error.
pub fn job_log(job: &PushJobView) -> Markup {
    html! {
        @if let Some(e) = &job.error {
            p.error { strong { (e.code) } ": " (e.message) }
        }
        @if job.log.is_empty() {
            p.muted { "Nothing logged yet." }
        } @else {
            pre.job-log { @for line in &job.log { (line) "\n" } }
        }
    }
}

/// Where the job went: the guest over SSH, or the VM through its vCenter.
fn target(job: &PushJobView) -> String {
    match job.via {
        Via::Ssh => format!("{}@{}:{}", job.username, job.host, job.port),
        Via::VmwareTools => format!("{} (VMware Tools)", job.username),
    }
}

/// A link to the VM page when the job names a discovered VM (`<vCenter id>/<moref>`).
fn vm_cell(vm: &str) -> Markup {
    match vm.split_once('/') {
        Some((vcenter, moref)) if !vcenter.is_empty() && !moref.is_empty() => html! {
            a href=(format!("/vcenters/{}/vms/{}", percent_encode(vcenter), percent_encode(moref))) { code { (vm) } }
        },
        _ => html! { code { (vm) } },
    }
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct ListQuery {
    offset: usize,
}

pub async fn list(core: web::Data<Core>, session: Session, req: HttpRequest) -> UiResult {
    let query: ListQuery = lenient_query(&req);
    list_page(&core, &session, query.offset, None, StatusCode::OK)
}

fn list_page(
    core: &Core,
    session: &Session,
    offset: usize,
    note: Option<Notice>,
    status: StatusCode,
) -> UiResult {
    let list = core.push_jobs.list(PageRequest {
        limit: Some(50),
        offset: Some(offset),
    })?;
    let any_live = list.items.iter().any(|j| !j.state.is_finished());
    let body = html! {
        (notice(note.as_ref()))
        p.muted {
            "Installs of the agent into guests, newest first. Start one with \"Enable protection\" on a "
            "VM's page (vCenters → VMs). This page reloads itself while a job runs."
        }
        div.table-wrap {
            table #push-jobs-table.data {
                thead { tr {
                    th { "Created" } th { "Operation" } th { "VM" } th { "Guest" } th { "State" }
                    th { "Agent" } th { "By" }
                } }
                tbody {
                    @if list.items.is_empty() { tr { td.empty colspan="7" { "No push job yet." } } }
                    @for j in &list.items {
                        tr {
                            td.nowrap { a href=(format!("/push-jobs/{}", percent_encode(&j.id))) { (time(&j.created_at)) } }
                            td { (format!("{:?}", j.operation).to_lowercase()) }
                            td { (vm_cell(&j.vm)) }
                            td { code.wrap { (target(j)) } }
                            td {
                                (push_badge(j.state, j.cancel_requested))
                                @if let Some(e) = &j.error { div.error-text { (e.code) ": " (e.message) } }
                            }
                            td { @match &j.agent_id { Some(a) => code { (a) }, None => (dash()) } }
                            td { (j.requested_by) }
                        }
                    }
                }
            }
        }
        (pager("/push-jobs", list.offset, list.limit, list.total))
    };
    let refresh = any_live.then_some(RUNNING_REFRESH_SECS);
    Ok(html(
        status,
        page(session, Nav::PushJobs, "Push jobs", refresh, body),
    ))
}

fn job_page(
    core: &Core,
    session: &Session,
    id: &str,
    note: Option<Notice>,
    status: StatusCode,
) -> UiResult {
    let job = core.push_jobs.get(id)?;
    let live = !job.state.is_finished();
    let body = html! {
        (notice(note.as_ref()))
        p.muted { a href="/push-jobs" { "← All push jobs" } }
        section.card.inset {
            h2 { "Job " code { (job.id) } " " (push_badge(job.state, job.cancel_requested)) }
            dl.kv {
                dt { "Operation" } dd { (format!("{:?}", job.operation).to_lowercase()) }
                dt { "VM" } dd { (vm_cell(&job.vm)) }
                dt { "Guest" } dd { code.wrap { (target(&job)) } }
                dt { "Attempts" } dd { (job.attempts) }
                dt { "Requested" } dd { (time(&job.created_at)) " by " (job.requested_by) }
                dt { "Started" } dd { @match &job.started_at { Some(t) => (time(t)), None => (dash()) } }
                dt { "Finished" } dd { @match &job.finished_at { Some(t) => (time(t)), None => (dash()) } }
                dt { "Host key" } dd { @match &job.host_key { Some(k) => code.wrap { (k) }, None => (dash()) } }
                dt { "Guest" } dd {
                    (job.os.as_deref().unwrap_or("—")) " · " (job.arch.as_deref().unwrap_or("—"))
                    @if let Some(s) = &job.service { " · runs as " (s) }
                }
                dt { "Agent" } dd { @match &job.agent_id { Some(a) => code { (a) }, None => (dash()) } }
            }
            @if live && !job.cancel_requested && session.can(Role::Admin) {
                (action_button(session, &format!("/push-jobs/{}/cancel", percent_encode(&job.id)),
                    "Cancel job", "btn-danger", &[]))
            }
        }
        section.card.inset {
            h2 { "Log" }
            (job_log(&job))
        }
    };
    let refresh = live.then_some(RUNNING_REFRESH_SECS);
    let title = format!("Push job {}", job.id);
    Ok(html(
        status,
        page(session, Nav::PushJobs, &title, refresh, body),
    ))
}

pub async fn job(core: web::Data<Core>, session: Session, id: web::Path<String>) -> UiResult {
    job_page(&core, &session, &id, None, StatusCode::OK)
}

pub async fn cancel(
    core: web::Data<Core>,
    session: Session,
    id: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> UiResult {
    session.check_csrf(&core, &form.csrf)?;
    session.require(Role::Admin)?;
    match core
        .push_jobs
        .cancel(&session.principal, &session.source, &id)
    {
        Ok(_) => Ok(see_other(&format!("/push-jobs/{}", percent_encode(&id)))),
        Err(err) if is_refusal(&err) => Err(err.into()),
        Err(err @ MgmtError::Conflict(_)) => {
            let note = Notice::Error(err.to_string());
            job_page(&core, &session, &id, Some(note), status_of(&err))
        }
        Err(err) => Err(err.into()),
    }
}
