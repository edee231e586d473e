//! The VMs of a vCenter (paged, filtered by name and power state, with their protection) and one
//! VM's page: disks, network adapters, addresses, the matched agent, its protection and the
//! "Enable protection" form (a push install of the agent), with the install's log.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{
    action_button, badge, bytes, dash, duration, notice, page, pager, percent_encode, time, Nav,
    Notice,
};
use super::push_jobs::{job_log, push_badge};
use super::vcenters::is_refusal;
use super::{html, lenient_query, see_other, status_of, CsrfForm, Session, UiResult};
use crate::mgmt::auth::Role;
use crate::mgmt::protect::{ProtectRequest, VmProtection, VmProtectionState};
use crate::mgmt::push_jobs::{PushAuth, Via};
use crate::mgmt::vcenters::{VcenterVm, VmQuery};
use crate::mgmt::{Core, MgmtError};

/// VMs per page.
const PAGE: usize = 50;
/// Seconds between reloads of a VM page while its agent is being installed.
const INSTALLING_REFRESH_SECS: u32 = 5;

pub fn protection_badge(p: Option<&VmProtection>) -> Markup {
    let state = p.map_or(VmProtectionState::NotProtected, |p| p.state);
    let (label, tone) = match state {
        VmProtectionState::NotProtected => ("Not protected", "muted"),
        VmProtectionState::Installing => ("Installing", "info"),
        VmProtectionState::Protected => ("Protected", "ok"),
        VmProtectionState::Failed => ("Failed", "bad"),
    };
    badge(label, tone)
}

fn power_badge(state: &str) -> Markup {
    match state {
        "poweredOn" => badge("On", "ok"),
        "poweredOff" => badge("Off", "muted"),
        "suspended" => badge("Suspended", "warn"),
        other => badge(other, "muted"),
    }
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct ListQuery {
    name: String,
    power_state: String,
    offset: usize,
}

fn vm_href(vcenter: &str, moref: &str) -> String {
    format!(
        "/vcenters/{}/vms/{}",
        percent_encode(vcenter),
        percent_encode(moref)
    )
}

pub async fn vms(
    core: web::Data<Core>,
    session: Session,
    id: web::Path<String>,
    req: HttpRequest,
) -> UiResult {
    let query: ListQuery = lenient_query(&req);
    let vcenter = core.vcenters.get(&id)?;
    let power = Some(query.power_state.clone()).filter(|p| !p.is_empty());
    let name = Some(query.name.trim().to_string()).filter(|n| !n.is_empty());
    let inventory_query = VmQuery {
        name: name.clone(),
        power_state: power.clone(),
        limit: Some(PAGE),
        offset: Some(query.offset),
    };
    let core2 = core.clone();
    let vcenter_id = vcenter.id.clone();
    let list =
        super::blocking(move || core2.vms_with_protection(&vcenter_id, &inventory_query)).await?;
    let base = format!(
        "/vcenters/{}/vms?name={}&power_state={}",
        percent_encode(&vcenter.id),
        percent_encode(name.as_deref().unwrap_or("")),
        percent_encode(power.as_deref().unwrap_or(""))
    );
    let filtered = name.is_some() || power.is_some();
    let body = html! {
        p.muted {
            "VMs discovered in " code.wrap { (vcenter.url) } ". Open a VM to enable its protection. "
            a href="/vcenters" { "All vCenters" }
        }
        form #vm-filter.row method="get" action=(format!("/vcenters/{}/vms", percent_encode(&vcenter.id))) {
            label { "Name contains" input type="text" name="name" value=(name.as_deref().unwrap_or("")); }
            label { "Power"
                select name="power_state" {
                    option value="" selected[power.is_none()] { "any" }
                    @for (value, label) in [("poweredOn", "on"), ("poweredOff", "off"), ("suspended", "suspended")] {
                        option value=(value) selected[power.as_deref() == Some(value)] { (label) }
                    }
                }
            }
            button.btn type="submit" { "Filter" }
        }
        div.table-wrap {
            table #vms-table.data {
                thead { tr {
                    th { "Name" } th { "Power" } th { "Guest OS" } th { "Addresses" } th { "Disks" }
                    th { "Agent" } th { "Protection" }
                } }
                tbody {
                    @if list.items.is_empty() {
                        tr { td.empty colspan="7" {
                            @if filtered { "No VM matches this filter." }
                            @else if vcenter.last_sync.is_none() { "The inventory is not discovered yet; this takes a moment after adding a vCenter." }
                            @else { "This vCenter has no VM." }
                        } }
                    }
                    @for vm in &list.items {
                        tr {
                            td { a href=(vm_href(&vm.vcenter_id, &vm.moref)) { (vm.name) } div.muted { code { (vm.moref) } } }
                            td { (power_badge(&vm.power_state)) @if vm.template { " " (badge("template", "muted")) } }
                            td { (vm.guest_os) }
                            td.wrap { @if vm.guest_ips.is_empty() { (dash()) } @else { (vm.guest_ips.join(", ")) } }
                            td.nowrap { (vm.disks.len()) " (" (bytes(vm.disks.iter().map(|d| d.capacity_bytes).sum())) ")" }
                            td { @match &vm.agent_id { Some(a) => code { (a) }, None => (dash()) } }
                            td { (protection_badge(vm.protection.as_ref())) }
                        }
                    }
                }
            }
        }
        (pager(&base, list.offset, list.limit, list.total))
    };
    let title = format!("VMs of {}", vcenter.url);
    Ok(html(
        StatusCode::OK,
        page(&session, Nav::Vcenters, &title, None, body),
    ))
}

fn protection_section(session: &Session, vm: &VcenterVm) -> Markup {
    let p = vm.protection.as_ref();
    html! {
        section.card.inset #protection {
            h2 { "Protection " (protection_badge(p)) }
            @if p.is_none_or(|p| p.state == VmProtectionState::NotProtected) {
                p.muted { "No agent replicates this VM." }
            }
            @if let Some(p) = p {
                dl.kv {
                    @if let Some(agent) = &p.agent_id {
                        dt { "Agent" } dd { a href=(format!("/machines/{}", percent_encode(agent))) { code { (agent) } } }
                    }
                    @if let Some(last) = &p.last_point_at {
                        dt { "Last recovery point" } dd { (time(last)) }
                    }
                    @if let Some(rpo) = p.rpo_seconds {
                        dt { "RPO" } dd { (duration(rpo)) }
                    }
                    @if let Some(job) = &p.push_job_id {
                        dt { "Install" } dd {
                            a href=(format!("/push-jobs/{}", percent_encode(job))) { "push job " code { (job) } }
                            @if let (Some(by), Some(at)) = (&p.requested_by, &p.requested_at) {
                                span.muted { " by " (by) ", " (time(at)) }
                            }
                        }
                    }
                }
                @if let Some(e) = &p.error { p.error { (e) } }
                @if p.push_job_id.is_some() && session.can(Role::Admin) {
                    p.help {
                        "Forgetting the request does not uninstall the agent: an agent in the VM keeps replicating."
                    }
                    (action_button(session, &format!("{}/unprotect", vm_href(&vm.vcenter_id, &vm.moref)),
                        "Forget protection request", "btn-danger", &[]))
                }
            }
        }
    }
}

fn protect_form(
    session: &Session,
    vm: &VcenterVm,
    credentials: &[crate::mgmt::guest_credentials::GuestCredentialView],
) -> Markup {
    let default_host = vm
        .guest_ips
        .iter()
        .find(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok())
        .cloned()
        .unwrap_or_default();
    html! {
        section.card.inset {
            h2 { "Enable protection" }
            p.help {
                "Installs the agent into the running guest (over SSH, or through VMware Tools with the "
                "guest's password), registers it with a one-time token and starts it. Pick a stored "
                "login, or type one: a typed credential is used for this install only and never stored."
            }
            form #protect-form.stack method="post" action=(format!("{}/protect", vm_href(&vm.vcenter_id, &vm.moref))) {
                input type="hidden" name="csrf" value=(session.csrf);
                label { "Reach the guest"
                    select name="via" {
                        option value="ssh" selected { "over SSH" }
                        option value="vmware_tools" { "through VMware Tools (password only)" }
                    }
                }
                label { "Guest address (SSH)"
                    input type="text" name="host" value=(default_host) placeholder="the VM's first IPv4 address";
                }
                label { "SSH port" input type="number" name="port" value="22" min="1" max="65535"; }
                @if !credentials.is_empty() {
                    label { "Stored login"
                        select name="credential" {
                            option value="" selected { "none: use the login typed below" }
                            @for c in credentials {
                                option value=(c.id) { (c.name) " (" (c.username) ")" }
                            }
                        }
                    }
                }
                label { "User (root, or password-less sudo)" input type="text" name="username" value="root"; }
                label { "Password" input type="password" name="password" autocomplete="off"; }
                label { "or SSH private key (OpenSSH or PEM)" textarea name="private_key" rows="4" {} }
                label { "Key passphrase" input type="password" name="passphrase" autocomplete="off"; }
                label { "Disks to protect (one per line)" textarea name="disks" rows="2" required { "/dev/sda" } }
                label { "Pinned host key (optional)" input type="text" name="host_key" placeholder="SHA256:…"; }
                button.btn.btn-primary type="submit" { "Enable protection" }
            }
        }
    }
}

fn vm_page(
    core: &Core,
    session: &Session,
    vcenter_id: &str,
    moref: &str,
    note: Option<Notice>,
    status: StatusCode,
) -> UiResult {
    let vm = core.vm_with_protection(vcenter_id, moref)?;
    let state = vm.protection.as_ref().map(|p| p.state);
    let job = match vm
        .protection
        .as_ref()
        .and_then(|p| p.push_job_id.as_deref())
    {
        Some(id) => match core.push_jobs.get(id) {
            Ok(job) => Some(job),
            Err(MgmtError::NotFound(_)) => None,
            Err(err) => return Err(err.into()),
        },
        None => None,
    };
    let can_protect = session.can(Role::Admin)
        && vm.power_state == "poweredOn"
        && !vm.template
        && !matches!(
            state,
            Some(VmProtectionState::Installing | VmProtectionState::Protected)
        );
    let credentials = if can_protect {
        core.guest_credentials
            .list(crate::mgmt::PageRequest {
                limit: Some(crate::mgmt::MAX_PAGE),
                offset: None,
            })?
            .items
    } else {
        Vec::new()
    };
    let body = html! {
        (notice(note.as_ref()))
        p.muted { a href=(format!("/vcenters/{}/vms", percent_encode(&vm.vcenter_id))) { "← All VMs of this vCenter" } }
        section.card.inset {
            h2 { "VM" }
            dl.kv {
                dt { "Managed object" } dd { code { (vm.moref) } }
                dt { "Power" } dd { (power_badge(&vm.power_state)) @if vm.template { " " (badge("template", "muted")) } }
                dt { "Guest OS" } dd { @if vm.guest_os.is_empty() { (dash()) } @else { (vm.guest_os) } }
                dt { "Guest addresses" } dd { @if vm.guest_ips.is_empty() { "none reported (VMware Tools not running?)" } @else { (vm.guest_ips.join(", ")) } }
                dt { "BIOS UUID" } dd { code { (vm.bios_uuid) } }
                dt { "Agent" } dd { @match &vm.agent_id { Some(a) => code { (a) }, None => "no registered agent reports this VM's BIOS UUID" } }
                dt { "Host" } dd { @match &vm.host { Some(h) => code { (h) }, None => (dash()) } }
            }
        }
        (protection_section(session, &vm))
        @if can_protect { (protect_form(session, &vm, &credentials)) }
        @else if session.can(Role::Admin) && vm.power_state != "poweredOn" {
            p.help { "Power the VM on to enable its protection: the agent is installed into the running guest." }
        }
        section.card.inset {
            h2 { "Disks" }
            div.table-wrap { table #vm-disks.data {
                thead { tr { th { "Disk" } th { "Size" } th { "File" } } }
                tbody {
                    @if vm.disks.is_empty() { tr { td.empty colspan="3" { "No virtual disk." } } }
                    @for d in &vm.disks {
                        tr { td { (d.label.as_deref().unwrap_or("disk")) } td.nowrap { (bytes(d.capacity_bytes)) } td { code.wrap { (d.file) } } }
                    }
                }
            } }
            h2 { "Network adapters" }
            div.table-wrap { table #vm-nics.data {
                thead { tr { th { "Adapter" } th { "MAC" } th { "Network" } th { "Connected" } } }
                tbody {
                    @if vm.nics.is_empty() { tr { td.empty colspan="4" { "No network adapter." } } }
                    @for n in &vm.nics {
                        tr {
                            td { (n.adapter) }
                            td { @match &n.mac_address { Some(m) => code { (m) }, None => (dash()) } }
                            td { @match &n.network { Some(net) => (net), None => (dash()) } }
                            td { @match n.connected { Some(true) => "yes", Some(false) => "no", None => (dash()) } }
                        }
                    }
                }
            } }
        }
        @if let Some(job) = &job {
            section.card.inset {
                h2 { "Install log " (push_badge(job.state, job.cancel_requested)) }
                (job_log(job))
            }
        }
    };
    let refresh = (state == Some(VmProtectionState::Installing)).then_some(INSTALLING_REFRESH_SECS);
    Ok(html(
        status,
        page(session, Nav::Vcenters, &vm.name, refresh, body),
    ))
}

pub async fn vm(
    core: web::Data<Core>,
    session: Session,
    path: web::Path<(String, String)>,
) -> UiResult {
    let (vcenter, moref) = path.into_inner();
    vm_page(&core, &session, &vcenter, &moref, None, StatusCode::OK)
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub struct ProtectForm {
    csrf: String,
    via: String,
    credential: String,
    host: String,
    port: String,
    username: String,
    password: String,
    private_key: String,
    passphrase: String,
    disks: String,
    host_key: String,
}

fn non_empty(text: &str) -> Option<String> {
    Some(text.trim().to_string()).filter(|t| !t.is_empty())
}

/// The form as the core's request; what the form itself gets wrong is a field error.
fn protect_request(form: ProtectForm) -> Result<ProtectRequest, MgmtError> {
    let via = match form.via.as_str() {
        "" | "ssh" => Via::Ssh,
        "vmware_tools" => Via::VmwareTools,
        other => {
            return Err(MgmtError::invalid(
                "via",
                format!("{other:?} is not ssh or vmware_tools"),
            ))
        }
    };
    let stored = non_empty(&form.credential);
    let auth = match (non_empty(&form.private_key), form.password.is_empty()) {
        // A stored login brings its own user; the user field's default must not contradict it.
        (None, true) if stored.is_some() => PushAuth::Credential {
            id: stored.clone().unwrap_or_default(),
        },
        _ if stored.is_some() => {
            return Err(MgmtError::invalid(
                "auth",
                "choose a stored login or type a password or key, not both",
            ))
        }
        (Some(key), true) => PushAuth::PrivateKey {
            private_key: format!("{}\n", key),
            passphrase: Some(form.passphrase).filter(|p| !p.is_empty()),
        },
        (None, false) => PushAuth::Password {
            password: form.password,
        },
        _ => {
            return Err(MgmtError::invalid(
                "auth",
                "give either the guest user's password or an SSH private key",
            ))
        }
    };
    let port = match (via, non_empty(&form.port)) {
        // The form always sends the SSH port; it does not apply through VMware Tools.
        (Via::VmwareTools, _) | (_, None) => None,
        (Via::Ssh, Some(p)) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| MgmtError::invalid("port", "must be 1 to 65535"))?,
        ),
    };
    Ok(ProtectRequest {
        via,
        username: if stored.is_some() {
            String::new()
        } else {
            form.username.trim().to_string()
        },
        auth,
        host: non_empty(&form.host).filter(|_| via == Via::Ssh),
        port,
        host_key: non_empty(&form.host_key),
        disks: form.disks.split_whitespace().map(str::to_string).collect(),
        interval_secs: None,
        prefix: None,
    })
}

pub async fn protect(
    core: web::Data<Core>,
    session: Session,
    path: web::Path<(String, String)>,
    form: web::Form<ProtectForm>,
) -> UiResult {
    session.check_csrf(&core, &form.csrf)?;
    session.require(Role::Admin)?;
    let (vcenter, moref) = path.into_inner();
    let result = protect_request(form.into_inner()).and_then(|req| {
        core.protect_vm(&session.principal, &session.source, &vcenter, &moref, req)
    });
    match result {
        Ok(_) => Ok(see_other(&vm_href(&vcenter, &moref))),
        Err(err) if is_refusal(&err) => Err(err.into()),
        Err(MgmtError::NotFound(m)) => Err(MgmtError::NotFound(m).into()),
        Err(err) => {
            let note = Notice::Error(format!("Protection was not enabled: {err}"));
            vm_page(
                &core,
                &session,
                &vcenter,
                &moref,
                Some(note),
                status_of(&err),
            )
        }
    }
}

pub async fn unprotect(
    core: web::Data<Core>,
    session: Session,
    path: web::Path<(String, String)>,
    form: web::Form<CsrfForm>,
) -> UiResult {
    session.check_csrf(&core, &form.csrf)?;
    session.require(Role::Admin)?;
    let (vcenter, moref) = path.into_inner();
    match core.forget_protection(&session.principal, &session.source, &vcenter, &moref) {
        Ok(()) => {
            let note = Notice::Ok(
                "The protection request is forgotten; an installed agent keeps running.".into(),
            );
            vm_page(
                &core,
                &session,
                &vcenter,
                &moref,
                Some(note),
                StatusCode::OK,
            )
        }
        Err(err) if is_refusal(&err) => Err(err.into()),
        Err(err) => {
            let note = Notice::Error(err.to_string());
            vm_page(
                &core,
                &session,
                &vcenter,
                &moref,
                Some(note),
                status_of(&err),
            )
        }
    }
}

#[cfg(test)]
mod form_tests {
    use super::*;

    fn form(credential: &str, password: &str) -> ProtectForm {
        ProtectForm {
            credential: credential.into(),
            username: "root".into(),
            password: password.into(),
            disks: "/dev/sda".into(),
            ..ProtectForm::default()
        }
    }

    #[test]
    fn a_stored_login_replaces_the_typed_one_and_both_at_once_is_refused() {
        let req = protect_request(form("c1", "")).unwrap();
        assert!(matches!(req.auth, PushAuth::Credential { ref id } if id == "c1"));
        assert_eq!(req.username, "", "the credential's user is used");
        let req = protect_request(form("", "pw")).unwrap();
        assert!(matches!(req.auth, PushAuth::Password { .. }));
        assert_eq!(req.username, "root");
        let err = protect_request(form("c1", "pw")).unwrap_err();
        assert!(matches!(err, MgmtError::InvalidField { ref field, .. } if field == "auth"));
        let err = protect_request(form("", "")).unwrap_err();
        assert!(matches!(err, MgmtError::InvalidField { ref field, .. } if field == "auth"));
    }
}
