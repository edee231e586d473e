//! "Enable protection" for a discovered VM: one action that starts a push install of the agent into
//! the VM (`push_jobs`) and remembers that it was asked for, so the VM views can say how far it got.
//!
//! sled tree `vm_protection`: key `<vCenter id>/<moref>`, value a [`ProtectionRecord`] (the push job,
//! who asked and when) in the `crate::state` record envelope. The state shown is derived when read,
//! never stored: an agent matched to the VM (BIOS UUID) makes it `protected`, else the recorded job
//! decides (`installing` while queued or running, `failed` once it failed or was cancelled).
//! Forgetting a request removes only the record: the agent stays installed and keeps replicating.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::auth::{Principal, Role};
use super::catalog::ProtectionState;
use super::push_jobs::{Operation, PushAuth, PushJobState, PushJobView, PushRequest, Via};
use super::vcenters::{VcenterVm, VmQuery};
use super::{Core, MgmtError, Page, PageRequest, MAX_PAGE};
use crate::state::{decode_record, encode_record, now_rfc3339};

pub const TREE: &str = "vm_protection";

/// `POST /api/v1/vcenters/{id}/vms/{moref}/protect`: how to reach the guest to install the agent.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProtectRequest {
    /// `ssh` (default) or `vmware_tools` (through the VM's vCenter: no host, port or host key).
    #[serde(default)]
    pub via: Via,
    /// Guest user (root, or a user with password-less sudo); taken from the credential when `auth`
    /// names a stored one (`{"kind": "credential", "id"}`).
    #[serde(default)]
    pub username: String,
    pub auth: PushAuth,
    /// SSH only: the guest address as the appliance reaches it. Default: the VM's first guest IPv4
    /// address that is not loopback or link-local, as VMware Tools reports it.
    pub host: Option<String>,
    /// SSH port (default 22).
    pub port: Option<u16>,
    /// Pinned host key fingerprint (`SHA256:...`); see push jobs.
    pub host_key: Option<String>,
    /// Disks on the guest to protect (at least one).
    #[serde(default)]
    pub disks: Vec<String>,
    /// Seconds between the agent's replication passes (default: the agent's).
    pub interval_secs: Option<u64>,
    /// Install folder on the guest (default `/opt/ferry-mobility`).
    pub prefix: Option<String>,
}

/// How far protection of a VM got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VmProtectionState {
    /// No agent in the VM and no install asked for (or the request was forgotten).
    NotProtected,
    /// The push install is queued or running.
    Installing,
    /// A registered agent runs in the VM.
    Protected,
    /// The push install failed or was cancelled, and no agent runs in the VM.
    Failed,
}

impl VmProtectionState {
    pub fn as_str(self) -> &'static str {
        match self {
            VmProtectionState::NotProtected => "not_protected",
            VmProtectionState::Installing => "installing",
            VmProtectionState::Protected => "protected",
            VmProtectionState::Failed => "failed",
        }
    }
}

/// A VM's protection as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VmProtection {
    pub state: VmProtectionState,
    /// The push job of the last "enable protection" (its log is at `/api/v1/push-jobs/{id}`).
    pub push_job_id: Option<String>,
    pub requested_by: Option<String>,
    /// RFC 3339, UTC.
    pub requested_at: Option<String>,
    /// Why the install failed (`failed`).
    pub error: Option<String>,
    /// The agent replicating this VM (`protected`).
    pub agent_id: Option<String>,
    /// The replication state of the agent's machine, once it sent data.
    pub machine_state: Option<ProtectionState>,
    /// RFC 3339, UTC: the newest recovery point.
    pub last_point_at: Option<String>,
    /// Age of the newest recovery point, in seconds.
    pub rpo_seconds: Option<u64>,
}

/// `POST .../protect` answers the job it started and the VM's protection.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProtectStarted {
    pub protection: VmProtection,
    pub job: PushJobView,
}

/// What the `vm_protection` tree keeps per VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct ProtectionRecord {
    push_job_id: String,
    requested_by: String,
    at: String,
}

/// A request that passed every check of the VM: what the push job is started with.
#[derive(Debug)]
pub(crate) struct CheckedProtect {
    key: String,
    push: PushRequest,
}

fn key_of(vcenter_id: &str, moref: &str) -> String {
    format!("{vcenter_id}/{moref}")
}

/// The guest address to use when the request names none.
fn default_host(vm: &VcenterVm) -> Option<String> {
    vm.guest_ips
        .iter()
        .filter_map(|ip| ip.parse::<Ipv4Addr>().ok())
        .find(|ip| !(ip.is_loopback() || ip.is_link_local() || ip.is_unspecified()))
        .map(|ip| ip.to_string())
}

/// What the catalog says about one agent's machine.
#[derive(Clone, Debug, Default)]
struct MachineFacts {
    state: Option<ProtectionState>,
    last_point_at: Option<String>,
    rpo_seconds: Option<u64>,
}

impl Core {
    fn protection_tree(&self) -> Result<sled::Tree, MgmtError> {
        Ok(self.state.db().open_tree(TREE)?)
    }

    fn protection_record(&self, key: &str) -> Result<Option<ProtectionRecord>, MgmtError> {
        let Some(raw) = self.protection_tree()?.get(key.as_bytes())? else {
            return Ok(None);
        };
        let corrupt = |reason: String| crate::state::StateError::Corrupt {
            tree: TREE,
            key: key.to_string(),
            reason,
        };
        let body = decode_record(&raw).map_err(corrupt)?;
        Ok(Some(
            serde_json::from_slice(body).map_err(|e| corrupt(e.to_string()))?,
        ))
    }

    /// Checks the VM and the request: it exists, runs, is not being installed already, and has an
    /// address to reach it at. Admin only, like every push install (credentials and software go to
    /// a guest).
    pub(crate) fn check_protect(
        &self,
        by: &Principal,
        vcenter_id: &str,
        moref: &str,
        req: ProtectRequest,
    ) -> Result<CheckedProtect, MgmtError> {
        if by.role < Role::Admin {
            return Err(MgmtError::Forbidden(
                "enabling protection installs the agent over SSH and needs the admin role".into(),
            ));
        }
        let vm = self.vm_with_protection(vcenter_id, moref)?;
        if vm.template {
            return Err(MgmtError::Conflict(format!(
                "{} is a template; templates do not run and cannot be protected",
                vm.name
            )));
        }
        if vm.power_state != "poweredOn" {
            return Err(MgmtError::Conflict(format!(
                "{} is {}: power it on first (the agent is installed into the running guest)",
                vm.name, vm.power_state
            )));
        }
        if let Some(p) = &vm.protection {
            if p.state == VmProtectionState::Installing {
                return Err(MgmtError::Conflict(format!(
                    "the agent is being installed into {} (push job {}); wait for it or cancel it",
                    vm.name,
                    p.push_job_id.as_deref().unwrap_or("?")
                )));
            }
            // A second install would register a second agent for the same VM and leave the first
            // one registered; repairing an agent in place is what an upgrade does.
            if p.state == VmProtectionState::Protected {
                return Err(MgmtError::Conflict(format!(
                    "{} is already protected by agent {}; to repair the agent run a push upgrade                      (POST /api/v1/push-jobs with operation upgrade), to start over revoke the agent                      and forget the protection request first",
                    vm.name,
                    p.agent_id.as_deref().unwrap_or("?")
                )));
            }
        }
        let host = match req.host.map(|h| h.trim().to_string()) {
            Some(h) if !h.is_empty() => h,
            // Through VMware Tools no address is needed (the push checks refuse one given).
            _ if req.via == Via::VmwareTools => String::new(),
            _ => default_host(&vm).ok_or_else(|| {
                MgmtError::invalid(
                    "host",
                    format!(
                        "{} reports no guest IPv4 address (VMware Tools reports them while it runs); \
                         give the guest's address in `host`",
                        vm.name
                    ),
                )
            })?,
        };
        Ok(CheckedProtect {
            key: key_of(vcenter_id, moref),
            push: PushRequest {
                via: req.via,
                host,
                port: req.port.unwrap_or(22),
                username: req.username,
                auth: req.auth,
                host_key: req.host_key,
                agents_dir: None,
                appliance_addr: None,
                disks: req.disks,
                vm: key_of(vcenter_id, moref),
                operation: Operation::Install,
                prefix: req.prefix,
                interval_secs: req.interval_secs,
            },
        })
    }

    /// Starts the push install of a checked request and records it for the VM. Audited.
    pub(crate) fn start_protect(
        &self,
        by: &Principal,
        source: &str,
        checked: CheckedProtect,
    ) -> Result<ProtectStarted, MgmtError> {
        let job = self.push_jobs.start(by, source, checked.push)?;
        let record = ProtectionRecord {
            push_job_id: job.id.clone(),
            requested_by: by.user.clone(),
            at: now_rfc3339(),
        };
        let json = serde_json::to_vec(&record).expect("protection records always serialize");
        self.protection_tree()?
            .insert(checked.key.as_bytes(), encode_record(&json))?;
        self.state.audit_as(
            &by.user,
            source,
            "vm_protection_requested",
            &format!("{} (push job {})", checked.key, job.id),
        )?;
        self.state.flush()?;
        let protection = self.protection_of(&checked.key, None, &HashMap::new())?;
        Ok(ProtectStarted { protection, job })
    }

    /// Enables protection of a discovered VM: checks it, then starts the push install (which needs
    /// the data path running, since it succeeds only once the agent registered).
    pub fn protect_vm(
        &self,
        by: &Principal,
        source: &str,
        vcenter_id: &str,
        moref: &str,
        req: ProtectRequest,
    ) -> Result<ProtectStarted, MgmtError> {
        let checked = self.check_protect(by, vcenter_id, moref, req)?;
        self.require_running()?;
        self.start_protect(by, source, checked)
    }

    /// Forgets that protection was asked for (admin). The agent is not uninstalled: a VM with a
    /// registered agent stays `protected`. 404 when nothing was asked for this VM.
    pub fn forget_protection(
        &self,
        by: &Principal,
        source: &str,
        vcenter_id: &str,
        moref: &str,
    ) -> Result<(), MgmtError> {
        if by.role < Role::Admin {
            return Err(MgmtError::Forbidden(
                "changing a VM's protection needs the admin role".into(),
            ));
        }
        let key = key_of(vcenter_id, moref);
        if self.protection_tree()?.remove(key.as_bytes())?.is_none() {
            return Err(MgmtError::NotFound(format!(
                "protection of {moref} in vCenter {vcenter_id} was never enabled here"
            )));
        }
        self.state
            .audit_as(&by.user, source, "vm_protection_forgotten", &key)?;
        self.state.flush()?;
        Ok(())
    }

    /// The catalog's facts per machine id (= agent id).
    fn machine_facts(&self) -> Result<HashMap<String, MachineFacts>, MgmtError> {
        let mut facts = HashMap::new();
        let mut offset = 0;
        loop {
            let page = self.catalog.list(PageRequest {
                limit: Some(MAX_PAGE),
                offset: Some(offset),
            })?;
            for m in &page.items {
                facts.insert(
                    m.id.clone(),
                    MachineFacts {
                        state: Some(m.state),
                        last_point_at: m.last_point.as_ref().map(|p| p.created_at.clone()),
                        rpo_seconds: m.rpo_seconds,
                    },
                );
            }
            offset += page.items.len();
            if page.items.is_empty() || offset >= page.total {
                return Ok(facts);
            }
        }
    }

    /// The protection of the VM stored under `key`, matched to `agent_id` (the agent in the VM).
    fn protection_of(
        &self,
        key: &str,
        agent_id: Option<&str>,
        machines: &HashMap<String, MachineFacts>,
    ) -> Result<VmProtection, MgmtError> {
        let record = self.protection_record(key)?;
        let job = match &record {
            Some(r) => match self.push_jobs.get(&r.push_job_id) {
                Ok(job) => Some(job),
                Err(MgmtError::NotFound(_)) => None,
                Err(err) => return Err(err),
            },
            None => None,
        };
        let (state, error) = match (agent_id, &record, &job) {
            (Some(_), _, _) => (VmProtectionState::Protected, None),
            (None, None, _) => (VmProtectionState::NotProtected, None),
            (None, Some(r), None) => (
                VmProtectionState::Failed,
                Some(format!(
                    "push job {} is no longer recorded (old jobs are pruned); enable protection again",
                    r.push_job_id
                )),
            ),
            (None, Some(_), Some(job)) => match job.state {
                PushJobState::Queued | PushJobState::Running => {
                    (VmProtectionState::Installing, None)
                }
                // The agent registered, but it reported no BIOS UUID that matches this VM.
                PushJobState::Succeeded if job.agent_id.is_some() => {
                    (VmProtectionState::Protected, None)
                }
                PushJobState::Succeeded => (
                    VmProtectionState::Failed,
                    Some("the install ended without a registered agent".into()),
                ),
                PushJobState::Failed => (
                    VmProtectionState::Failed,
                    Some(job.error.as_ref().map_or_else(
                        || "the push install failed".to_string(),
                        |e| format!("{}: {}", e.code, e.message),
                    )),
                ),
                PushJobState::Cancelled => (
                    VmProtectionState::Failed,
                    Some("the push install was cancelled".into()),
                ),
            },
        };
        let agent_id = agent_id
            .map(str::to_string)
            .or_else(|| job.as_ref().and_then(|j| j.agent_id.clone()))
            .filter(|_| state == VmProtectionState::Protected);
        let facts = agent_id
            .as_ref()
            .and_then(|id| machines.get(id).cloned())
            .unwrap_or_default();
        Ok(VmProtection {
            state,
            push_job_id: record.as_ref().map(|r| r.push_job_id.clone()),
            requested_by: record.as_ref().map(|r| r.requested_by.clone()),
            requested_at: record.map(|r| r.at),
            error,
            agent_id,
            machine_state: facts.state,
            last_point_at: facts.last_point_at,
            rpo_seconds: facts.rpo_seconds,
        })
    }

    /// One VM with its protection.
    pub fn vm_with_protection(
        &self,
        vcenter_id: &str,
        moref: &str,
    ) -> Result<VcenterVm, MgmtError> {
        let mut vm = self.vcenters.vm(vcenter_id, moref)?;
        let machines = self.machine_facts()?;
        vm.protection = Some(self.protection_of(
            &key_of(vcenter_id, moref),
            vm.agent_id.as_deref(),
            &machines,
        )?);
        Ok(vm)
    }

    /// A page of a vCenter's VMs with their protection.
    pub fn vms_with_protection(
        &self,
        vcenter_id: &str,
        query: &VmQuery,
    ) -> Result<Page<VcenterVm>, MgmtError> {
        let mut page = self.vcenters.vms(vcenter_id, query)?;
        let machines = self.machine_facts()?;
        for vm in &mut page.items {
            vm.protection = Some(self.protection_of(
                &key_of(vcenter_id, &vm.moref),
                vm.agent_id.as_deref(),
                &machines,
            )?);
        }
        Ok(page)
    }
}

#[cfg(test)]
#[path = "protect_tests.rs"]
mod tests;
