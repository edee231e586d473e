//! The signed-in pages about protection: dashboard, machine detail, recovery points (with the
//! restore form), restore jobs and the audit log.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest};
use maud::{html, Markup};
use serde::Deserialize;

use super::charts::{line_chart, Axis, Chart};
use super::layout::{
    action_button, actor_badge, badge, bytes, dash, duration, job_badge, notice, page, pager,
    percent_encode, protection_badge, rate, time, Nav, Notice,
};
use super::{html, lenient_query, see_other, status_of, CsrfForm, Session, UiResult};
use crate::mgmt::auth::Role;
use crate::mgmt::catalog::{MachineView, PointView, ProtectionState};
use crate::mgmt::restore_jobs::{JobState, RestoreFormat, RestoreJobRequest};
use crate::mgmt::{Core, MgmtError, PageRequest, MAX_PAGE};

/// Rows per page of the paged lists.
const PAGE_ROWS: usize = 50;
/// The machine page's charts cover this much history.
const HISTORY_SECS: u64 = 24 * 3600;
/// Pages that follow something live reload themselves (a meta refresh: no script needed).
const DASHBOARD_REFRESH_SECS: u32 = 30;
const RESTORES_REFRESH_SECS: u32 = 5;

pub fn everything() -> PageRequest {
    PageRequest {
        limit: Some(MAX_PAGE),
        offset: None,
    }
}

fn page_at(offset: usize) -> PageRequest {
    PageRequest {
        limit: Some(PAGE_ROWS),
        offset: Some(offset),
    }
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct ListQuery {
    offset: Option<usize>,
    machine: Option<String>,
}

pub async fn dashboard(core: web::Data<Core>, session: Session) -> UiResult {
    let status = core.status();
    let machines = core.catalog.list(everything())?.items;
    let count = |state: ProtectionState| machines.iter().filter(|m| m.state == state).count();
    let counter = |name: &str| status.counters.get(name).copied().unwrap_or(0);
    let cache_pct = if status.cache_limit_bytes > 0 {
        status.cache_used_bytes as f64 * 100.0 / status.cache_limit_bytes as f64
    } else {
        0.0
    };
    let tile = |label: &str, value: String, sub: String, tone: &str| {
        html! {
            div class=(format!("tile tile-{tone}")) {
                span.tile-label { (label) }
                span.tile-value { (value) }
                span.tile-sub { (sub) }
            }
        }
    };
    let exceeded = count(ProtectionState::RpoExceeded);
    let disconnected = count(ProtectionState::Disconnected);
    let body = html! {
        @if !status.data_path_running {
            p.notice.warn {
                "The data path is not running: agents cannot replicate right now. It starts once the "
                "vault is open; see the actor health below and the service log."
            }
        }
        section #summary.tiles aria-label="Summary" {
            (tile("Machines protected", format!("{} / {}", count(ProtectionState::Protected), machines.len()),
                format!("{} in initial sync", count(ProtectionState::InitialSync)), "ok"))
            // Subtitles stay short enough for one line in a tile of six at 1280 px.
            (tile("RPO exceeded", exceeded.to_string(), "older than target".into(),
                if exceeded > 0 { "warn" } else { "plain" }))
            (tile("Disconnected", disconnected.to_string(), "agent not connected".into(),
                if disconnected > 0 { "bad" } else { "plain" }))
            (tile("Agents connected", status.agents_connected.to_string(), "replication sessions open".into(), "plain"))
            (tile("Cache used", bytes(status.cache_used_bytes),
                format!("{:.0} % of {}", cache_pct, bytes(status.cache_limit_bytes)),
                if cache_pct >= 90.0 { "warn" } else { "plain" }))
            (tile("Uploaded", bytes(counter("bytes_uploaded")),
                format!("{} points since start", counter("points_committed")), "plain"))
        }
        h2 { "Machines" }
        (machines_table(&machines))
        h2 { "Appliance health" }
        p.muted { "Uptime " (duration(status.uptime_secs)) " · wire protocol " (status.wire_protocol) }
        @if status.actors.is_empty() {
            p.muted { "No actor is running yet." }
        } @else {
            div.table-wrap {
                table.data {
                    thead { tr { th { "Component" } th { "State" } th.num { "Restarts" } th { "Last error" } } }
                    tbody {
                        @for (name, actor) in &status.actors {
                            tr {
                                td { (name) }
                                td { (actor_badge(&actor.state)) }
                                td.num { (actor.restarts) }
                                td { @match &actor.last_error { Some(e) => span.error-text { (e) }, None => (dash()) } }
                            }
                        }
                    }
                }
            }
        }
    };
    let markup = page(
        &session,
        Nav::Dashboard,
        "Dashboard",
        Some(DASHBOARD_REFRESH_SECS),
        body,
    );
    Ok(html(StatusCode::OK, markup))
}

fn machines_table(machines: &[MachineView]) -> Markup {
    html! {
        div.table-wrap {
            table #machines-table.data {
                thead { tr {
                    th { "Name" } th { "State" } th.num { "RPO" } th { "Last point" }
                    th.num { "Throughput" } th { "Disks" }
                } }
                tbody {
                    @if machines.is_empty() {
                        tr { td.empty colspan="6" {
                            "No machine is protected yet. Install the mobility agent on a machine and "
                            "register it with the registration passphrase (Agents page)."
                        } }
                    }
                    @for m in machines {
                        tr {
                            td { a href=(format!("/machines/{}", percent_encode(&m.id))) { (m.name) } }
                            td { (protection_badge(m.state)) }
                            td.num { @match m.rpo_seconds { Some(s) => (duration(s)), None => (dash()) } }
                            td { @match &m.last_point { Some(p) => (time(&p.created_at)), None => (dash()) } }
                            td.num { (rate(m.throughput_bytes_per_sec as f64)) }
                            td { (m.disks.len()) " · " (bytes(m.disks.iter().map(|d| d.size_bytes).sum())) }
                        }
                    }
                }
            }
        }
    }
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub async fn machine(core: web::Data<Core>, session: Session, id: web::Path<String>) -> UiResult {
    let detail = core.catalog.get(&id)?;
    let recent = core.catalog.points(
        Some(&id),
        PageRequest {
            limit: Some(10),
            offset: None,
        },
    )?;
    let m = &detail.machine;
    let end = detail
        .history
        .last()
        .map_or(0, |s| s.at_unix)
        .max(now_unix());
    let start = end.saturating_sub(HISTORY_SECS);
    let rpo: Vec<(u64, Option<f64>)> = detail
        .history
        .iter()
        .map(|s| (s.at_unix, s.rpo_seconds.map(|v| v as f64)))
        .collect();
    let throughput: Vec<(u64, Option<f64>)> = detail
        .history
        .iter()
        .map(|s| (s.at_unix, Some(s.throughput_bytes_per_sec as f64)))
        .collect();
    let body = html! {
        p { a href="/" { "← All machines" } }
        dl.kv.kv-inline {
            dt { "State" } dd { (protection_badge(m.state)) }
            dt { "Machine id" } dd { code { (m.id) } }
            dt { "Agent" } dd { @if m.agent_connected { (badge("connected", "ok")) } @else { (badge("not connected", "muted")) } }
            dt { "RPO" } dd { @match m.rpo_seconds { Some(s) => (duration(s)), None => (dash()) } }
            dt { "Throughput" } dd { (rate(m.throughput_bytes_per_sec as f64)) }
            dt { "Received" } dd { (bytes(m.bytes_received)) }
            dt { "Recovery points" } dd { (m.points) }
        }
        h2 { "Last 24 hours" }
        div.charts {
            (line_chart(&Chart { title: "RPO (age of the newest point)", start, end, points: &rpo,
                axis: Axis::Duration, tone: "tone-rpo" }))
            (line_chart(&Chart { title: "Throughput from the agent", start, end, points: &throughput,
                axis: Axis::BitRate, tone: "tone-rate" }))
        }
        h2 { "Disks" }
        div.table-wrap {
            table.data {
                thead { tr { th { "Disk" } th { "Label" } th.num { "Size" } } }
                tbody {
                    @if m.disks.is_empty() { tr { td.empty colspan="3" { "No disk reported yet." } } }
                    @for d in &m.disks {
                        tr { td { code { (d.disk_id) } } td { (d.label) } td.num { (bytes(d.size_bytes)) } }
                    }
                }
            }
        }
        h2 { "Recent recovery points" }
        // The page is about one machine: a column repeating its name says nothing.
        (points_table(&session, &recent.items, &Machines::Omit(&m.name)))
        p { a href=(format!("/points?machine={}", percent_encode(&m.id))) { "All points of this machine →" } }
    };
    Ok(html(
        StatusCode::OK,
        page(&session, Nav::Dashboard, &m.name, None, body),
    ))
}

/// A file name for a restore: the machine and point, in characters any file system takes.
fn suggested_file(machine: &str, point: &PointView) -> String {
    let clean: String = format!("{machine}-{}", point.point_id)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{clean}.vmdk")
}

/// How a points table names the machine of each point.
enum Machines<'a> {
    /// A column with each point's machine (names by id; the id when a name is unknown).
    Column(&'a HashMap<String, String>),
    /// No column: every point is of this one machine.
    Omit(&'a str),
}

fn points_table(session: &Session, points: &[PointView], machines: &Machines<'_>) -> Markup {
    let operator = session.can(Role::Operator);
    let column = matches!(machines, Machines::Column(_));
    let columns = 4 + usize::from(column) + usize::from(operator);
    html! {
        div.table-wrap {
            table #points-table.data {
                thead { tr {
                    th { "Created" } @if column { th { "Machine" } } th { "Point" } th { "Kind" } th { "Disks" }
                    @if operator { th { "Restore" } }
                } }
                tbody {
                    @if points.is_empty() {
                        tr { td.empty colspan=(columns) { "No recovery point yet." } }
                    }
                    @for p in points {
                        @let name = match machines {
                            Machines::Column(names) => names.get(&p.machine_id).unwrap_or(&p.machine_id).as_str(),
                            Machines::Omit(name) => *name,
                        };
                        tr {
                            td.nowrap { (time(&p.created_at)) }
                            @if column {
                                td { a href=(format!("/machines/{}", percent_encode(&p.machine_id))) { (name) } }
                            }
                            td { code { (p.point_id) } }
                            td { @if p.kind == "app" { (badge("application-consistent", "ok")) } @else { (badge(&p.kind, "muted")) } }
                            td { (p.disks.len()) " · " (bytes(p.disks.iter().map(|d| d.size_bytes).sum())) }
                            @if operator { td { (restore_form(session, name, p)) } }
                        }
                    }
                }
            }
        }
    }
}

fn restore_form(session: &Session, machine_name: &str, p: &PointView) -> Markup {
    html! {
        details.restore {
            summary.btn.btn-small { "Restore…" }
            form.stack method="post" action="/restores" {
                input type="hidden" name="csrf" value=(session.csrf);
                input type="hidden" name="machine_id" value=(p.machine_id);
                input type="hidden" name="point_id" value=(p.point_id);
                label { "Disk"
                    select name="disk_id" required {
                        @for d in &p.disks {
                            option value=(d.disk_id) { (d.label) " (" (bytes(d.size_bytes)) ")" }
                        }
                    }
                }
                label { "File name"
                    input type="text" name="path" required value=(suggested_file(machine_name, p)) spellcheck="false";
                }
                span.help { "Written to the restores folder in the appliance's data folder." }
                label { "Format"
                    select name="format" {
                        option value="" { "From the file name (.vmdk, .vhd, else raw)" }
                        option value="vmdk" { "VMDK (VMware)" }
                        option value="vhd" { "VHD (Hyper-V, Azure)" }
                        option value="raw" { "Raw image" }
                    }
                }
                label.check { input type="checkbox" name="overwrite" value="true"; " Replace an existing file" }
                button.btn.btn-primary.btn-small type="submit" { "Start restore" }
            }
        }
    }
}

fn machine_names(core: &Core) -> Result<HashMap<String, String>, MgmtError> {
    Ok(core
        .catalog
        .list(everything())?
        .items
        .into_iter()
        .map(|m| (m.id, m.name))
        .collect())
}

pub async fn points(core: web::Data<Core>, session: Session, req: HttpRequest) -> UiResult {
    let query: ListQuery = lenient_query(&req);
    points_page(&core, &session, &query, None, StatusCode::OK)
}

fn points_page(
    core: &Core,
    session: &Session,
    query: &ListQuery,
    note: Option<Notice>,
    status: StatusCode,
) -> UiResult {
    let machine = query.machine.as_deref().filter(|m| !m.is_empty());
    let list = core
        .catalog
        .points(machine, page_at(query.offset.unwrap_or(0)))?;
    let names = machine_names(core)?;
    let base = match machine {
        Some(m) => format!("/points?machine={}", percent_encode(m)),
        None => "/points".to_string(),
    };
    let body = html! {
        (notice(note.as_ref()))
        @if let Some(m) = machine {
            p { "Points of " strong { (names.get(m).map_or(m, String::as_str)) } " · " a href="/points" { "show all machines" } }
        }
        p.muted { "Newest first. A restore writes one disk of a point to a file on the appliance; follow it on the Restores page." }
        (points_table(session, &list.items, &Machines::Column(&names)))
        (pager(&base, list.offset, list.limit, list.total))
    };
    Ok(html(
        status,
        page(session, Nav::Points, "Recovery points", None, body),
    ))
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct RestoreForm {
    csrf: String,
    machine_id: String,
    disk_id: String,
    point_id: String,
    path: String,
    format: String,
    overwrite: String,
}

fn parse_format(text: &str) -> Result<Option<RestoreFormat>, MgmtError> {
    match text {
        "" => Ok(None),
        "raw" => Ok(Some(RestoreFormat::Raw)),
        "vhd" => Ok(Some(RestoreFormat::Vhd)),
        "vmdk" => Ok(Some(RestoreFormat::Vmdk)),
        _ => Err(MgmtError::invalid("format", "must be raw, vhd or vmdk")),
    }
}

pub async fn start_restore(
    core: web::Data<Core>,
    session: Session,
    form: web::Form<RestoreForm>,
) -> UiResult {
    session.check_csrf(&core, &form.csrf)?;
    session.require(Role::Operator)?;
    let form = form.into_inner();
    let started = async {
        let request = RestoreJobRequest {
            format: parse_format(&form.format)?,
            overwrite: form.overwrite == "true",
            machine_id: form.machine_id,
            disk_id: form.disk_id,
            point_id: form.point_id,
            path: form.path.trim().to_string(),
        };
        let vault = core.require_running()?.shared.vault.clone();
        core.restores
            .start(&session.principal, &session.source, vault, request)
            .await
    }
    .await;
    match started {
        Ok(_) => Ok(see_other("/restores")),
        Err(err @ (MgmtError::Forbidden(_) | MgmtError::Internal(_))) => Err(err.into()),
        Err(err) => {
            let note = Notice::Error(format!("The restore did not start: {err}"));
            points_page(
                &core,
                &session,
                &ListQuery::default(),
                Some(note),
                status_of(&err),
            )
        }
    }
}

pub async fn restores(core: web::Data<Core>, session: Session, req: HttpRequest) -> UiResult {
    let query: ListQuery = lenient_query(&req);
    restores_page(
        &core,
        &session,
        query.offset.unwrap_or(0),
        None,
        StatusCode::OK,
    )
}

fn restores_page(
    core: &Core,
    session: &Session,
    offset: usize,
    note: Option<Notice>,
    status: StatusCode,
) -> UiResult {
    let list = core.restores.list(page_at(offset))?;
    let operator = session.can(Role::Operator);
    let any_running = list.items.iter().any(|j| j.state == JobState::Running);
    let body = html! {
        (notice(note.as_ref()))
        p.muted { "Start a restore from the Recovery points page. This page reloads itself while a job runs." }
        div.table-wrap {
            table #restores-table.data {
                thead { tr {
                    th { "Started" } th { "Machine / disk" } th { "Point" } th { "File" } th { "State" }
                    th { "Progress" } th { "By" } @if operator { th {} }
                } }
                tbody {
                    @if list.items.is_empty() { tr { td.empty colspan="8" { "No restore yet." } } }
                    @for j in &list.items {
                        tr {
                            td.nowrap { (time(&j.started_at)) }
                            td { code { (j.machine_id) } " / " code { (j.disk_id) } }
                            td { code { (j.point_id) } }
                            td { code.wrap { (j.path) } " " span.muted { (format!("{:?}", j.format).to_lowercase()) } }
                            td {
                                (job_badge(j.state, j.cancel_requested))
                                @if let Some(e) = &j.error { div.error-text { (e) } }
                            }
                            td.progress-cell {
                                @if j.bytes_total > 0 {
                                    progress value=(j.bytes_done) max=(j.bytes_total) { (percent(j.bytes_done, j.bytes_total)) }
                                    span.muted { (percent(j.bytes_done, j.bytes_total)) " of " (bytes(j.bytes_total)) }
                                } @else if j.state == JobState::Running {
                                    progress { "starting" }
                                } @else {
                                    (dash())
                                }
                            }
                            td { (j.requested_by) }
                            @if operator {
                                td {
                                    @if j.state == JobState::Running && !j.cancel_requested {
                                        (action_button(session, &format!("/restores/{}/cancel", percent_encode(&j.id)),
                                            "Cancel", "btn-danger", &[]))
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        (pager("/restores", list.offset, list.limit, list.total))
    };
    let refresh = any_running.then_some(RESTORES_REFRESH_SECS);
    Ok(html(
        status,
        page(session, Nav::Restores, "Restores", refresh, body),
    ))
}

fn percent(done: u64, total: u64) -> String {
    if total == 0 {
        return "0 %".into();
    }
    format!("{:.0} %", done.min(total) as f64 * 100.0 / total as f64)
}

pub async fn cancel_restore(
    core: web::Data<Core>,
    session: Session,
    id: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> UiResult {
    session.check_csrf(&core, &form.csrf)?;
    session.require(Role::Operator)?;
    match core
        .restores
        .cancel(&session.principal, &session.source, &id)
    {
        Ok(_) => Ok(see_other("/restores")),
        Err(err @ (MgmtError::Conflict(_) | MgmtError::NotFound(_))) => {
            let note = Notice::Error(err.to_string());
            restores_page(&core, &session, 0, Some(note), status_of(&err))
        }
        Err(err) => Err(err.into()),
    }
}

pub async fn audit(core: web::Data<Core>, session: Session, req: HttpRequest) -> UiResult {
    session.require(Role::Admin)?;
    let query: ListQuery = lenient_query(&req);
    let list = core.audit_log(page_at(query.offset.unwrap_or(0)))?;
    let body = html! {
        p.muted { "Every change to the appliance, newest first." }
        div.table-wrap {
            table #audit-table.data {
                thead { tr { th { "Time" } th { "Actor" } th { "Source" } th { "Event" } th { "Detail" } } }
                tbody {
                    @if list.items.is_empty() { tr { td.empty colspan="5" { "No event yet." } } }
                    @for e in &list.items {
                        tr {
                            td.nowrap { (time(&e.at)) }
                            td { (e.actor) }
                            td { code { (e.source) } }
                            td { (badge(&e.event, tone_of_event(&e.event))) }
                            td.wrap { (e.detail) }
                        }
                    }
                }
            }
        }
        (pager("/audit", list.offset, list.limit, list.total))
    };
    Ok(html(
        StatusCode::OK,
        page(&session, Nav::Audit, "Audit log", None, body),
    ))
}

fn tone_of_event(event: &str) -> &'static str {
    if event.contains("fail") || event.contains("revoke") || event.contains("delete") {
        "warn"
    } else {
        "muted"
    }
}
