//! The discovered VMs of each vCenter: written by discovery through [`Sink`], read by the API with filters
//! and paging, and matched to registered agents by BIOS UUID when read.

use std::collections::{BTreeSet, HashMap};

use actors::discovery::{InventorySink, VcenterHealth, VmInfo};
use serde::{Deserialize, Serialize};
use vsphere::PowerState;

use super::{decode, encode, not_found, HealthState, Vcenters, VMS_TREE};
use crate::mgmt::{MgmtError, Page};
use crate::state::now_rfc3339;

/// The power states vSphere reports (`runtime.powerState`).
const POWER_STATES: [&str; 3] = ["poweredOn", "poweredOff", "suspended"];
/// Where agent registrations live (`crate::state`); read here only for their BIOS UUID.
const AGENTS_TREE: &str = "agents";

/// A virtual disk of a discovered VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VmDisk {
    /// The device key (unique within the VM).
    pub key: i32,
    pub capacity_bytes: u64,
    /// Backing file, `[datastore] folder/name.vmdk`.
    pub file: String,
    /// `Hard disk 1`, when the vCenter says.
    pub label: Option<String>,
}

/// A network adapter of a discovered VM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VmNic {
    pub key: i32,
    /// The device type (`VirtualVmxnet3`, `VirtualE1000`, ...).
    pub adapter: String,
    pub mac_address: Option<String>,
    /// Port group name, distributed port group key, or opaque network id.
    pub network: Option<String>,
    pub connected: Option<bool>,
}

/// A VM as discovered in a vCenter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VcenterVm {
    pub vcenter_id: String,
    /// The vCenter's managed object id (`vm-42`): stable for the VM's life in this vCenter.
    pub moref: String,
    pub name: String,
    /// `config.instanceUuid`.
    pub instance_uuid: String,
    /// `config.uuid`: the SMBIOS UUID the guest sees.
    pub bios_uuid: String,
    /// `config.guestFullName` (or the configured guest id).
    pub guest_os: String,
    pub guest_ips: Vec<String>,
    /// `poweredOn`, `poweredOff`, `suspended` (or `unknown`).
    pub power_state: String,
    /// A template, not a VM that runs.
    pub template: bool,
    /// The managed object id of the host it runs on (`host-21`), when known.
    pub host: Option<String>,
    /// Managed object ids of its datastores (`datastore-15`).
    pub datastores: Vec<String>,
    pub disks: Vec<VmDisk>,
    pub nics: Vec<VmNic>,
    /// The registered agent running in this VM (matched by BIOS UUID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// Whether the appliance protects this VM (`mgmt/protect.rs`): set in every API answer, never
    /// stored with the inventory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protection: Option<crate::mgmt::protect::VmProtection>,
}

/// Filters and paging of a VM list.
#[derive(Clone, Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VmQuery {
    /// Only VMs whose name contains this (case-insensitive).
    pub name: Option<String>,
    /// Only VMs in this power state: poweredOn, poweredOff or suspended.
    pub power_state: Option<String>,
    /// Items per page, 1..=1000 (default 100).
    pub limit: Option<usize>,
    /// Items to skip (default 0).
    pub offset: Option<usize>,
}

impl VcenterVm {
    pub(crate) fn from_info(vcenter_id: &str, vm: &VmInfo) -> VcenterVm {
        VcenterVm {
            vcenter_id: vcenter_id.to_string(),
            moref: vm.moref.value.clone(),
            name: vm.name.clone(),
            instance_uuid: vm.instance_uuid.clone().unwrap_or_default(),
            bios_uuid: vm.bios_uuid.clone().unwrap_or_default(),
            guest_os: vm.guest_os.clone().unwrap_or_default(),
            guest_ips: vm.guest_ips.clone(),
            power_state: power_name(vm.power_state).to_string(),
            template: vm.template,
            host: vm.host.as_ref().map(|h| h.value.clone()),
            datastores: vm.datastores.iter().map(|d| d.value.clone()).collect(),
            disks: vm
                .disks
                .iter()
                .map(|d| VmDisk {
                    key: d.key,
                    capacity_bytes: d.capacity_bytes,
                    file: d.file.clone(),
                    label: d.label.clone(),
                })
                .collect(),
            nics: vm
                .nics
                .iter()
                .map(|n| VmNic {
                    key: n.key,
                    adapter: n.adapter.clone(),
                    mac_address: n.mac_address.clone(),
                    network: n.network.clone(),
                    connected: n.connected,
                })
                .collect(),
            agent_id: None,
            protection: None,
        }
    }
}

/// vSphere's name of a power state (`runtime.powerState`).
fn power_name(state: PowerState) -> &'static str {
    match state {
        PowerState::PoweredOn => "poweredOn",
        PowerState::PoweredOff => "poweredOff",
        PowerState::Suspended => "suspended",
        PowerState::Unknown => "unknown",
    }
}

fn vm_key(vcenter_id: &str, moref: &str) -> String {
    format!("{vcenter_id}/{moref}")
}

/// A UUID as 32 lower-case hex digits, or `None` when it is not one.
fn uuid_hex(uuid: &str) -> Option<String> {
    let hex: String = uuid
        .chars()
        .filter(|c| *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

/// The same UUID with its first three fields byte-swapped: how a guest reads vSphere's `config.uuid`
/// from SMBIOS on older virtual hardware (the fields are little-endian there).
fn uuid_swapped(hex: &str) -> String {
    let swap = |s: &str| {
        let mut pairs: Vec<&str> = (0..s.len()).step_by(2).map(|i| &s[i..i + 2]).collect();
        pairs.reverse();
        pairs.concat()
    };
    format!(
        "{}{}{}{}",
        swap(&hex[0..8]),
        swap(&hex[8..12]),
        swap(&hex[12..16]),
        &hex[16..]
    )
}

/// What discovery needs of an agent registration: the BIOS UUID the agent read from its firmware
/// (`mobility register` sends it; agents registered before it did have none and match nothing).
#[derive(Deserialize)]
struct AgentIdentity {
    #[serde(default)]
    bios_uuid: Option<String>,
    #[serde(default)]
    revoked: bool,
}

impl Vcenters {
    /// BIOS UUID (32 hex digits, both byte orders) -> id of the registered, unrevoked agent.
    fn agents_by_bios_uuid(&self) -> Result<HashMap<String, String>, MgmtError> {
        let agents = self.inner.state.db().open_tree(AGENTS_TREE)?;
        let mut out = HashMap::new();
        for entry in agents.iter() {
            let (key, raw) = entry?;
            let agent: AgentIdentity = decode(AGENTS_TREE, &key, &raw)?;
            let Some(hex) = agent.bios_uuid.as_deref().and_then(uuid_hex) else {
                continue;
            };
            if agent.revoked {
                continue;
            }
            let id = String::from_utf8_lossy(&key).into_owned();
            out.insert(uuid_swapped(&hex), id.clone());
            out.insert(hex, id);
        }
        Ok(out)
    }

    fn match_agent(vm: &mut VcenterVm, agents: &HashMap<String, String>) {
        vm.agent_id = uuid_hex(&vm.bios_uuid).and_then(|hex| agents.get(&hex).cloned());
    }

    /// The VMs of a vCenter, by name, filtered and paged.
    pub fn vms(&self, id: &str, query: &VmQuery) -> Result<Page<VcenterVm>, MgmtError> {
        if self.record(id)?.is_none() {
            return Err(not_found(id));
        }
        let page = crate::mgmt::PageRequest {
            limit: query.limit,
            offset: query.offset,
        };
        let (offset, limit) = page.resolve()?;
        if let Some(state) = &query.power_state {
            if !POWER_STATES.contains(&state.as_str()) {
                return Err(MgmtError::invalid(
                    "power_state",
                    format!("{state:?} is not one of {}", POWER_STATES.join(", ")),
                ));
            }
        }
        let name = query.name.as_deref().map(str::to_lowercase);
        let mut all = Vec::new();
        for entry in self.inner.vms.scan_prefix(format!("{id}/")) {
            let (key, raw) = entry?;
            let vm: VcenterVm = decode(VMS_TREE, &key, &raw)?;
            if name
                .as_deref()
                .is_some_and(|n| !vm.name.to_lowercase().contains(n))
            {
                continue;
            }
            if query
                .power_state
                .as_deref()
                .is_some_and(|s| vm.power_state != s)
            {
                continue;
            }
            all.push(vm);
        }
        all.sort_by(|a, b| (&a.name, &a.moref).cmp(&(&b.name, &b.moref)));
        let total = all.len();
        let agents = self.agents_by_bios_uuid()?;
        let items = all
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|mut vm| {
                Vcenters::match_agent(&mut vm, &agents);
                vm
            })
            .collect();
        Ok(Page {
            items,
            total,
            limit,
            offset,
        })
    }

    /// One VM of a vCenter.
    pub fn vm(&self, id: &str, moref: &str) -> Result<VcenterVm, MgmtError> {
        if self.record(id)?.is_none() {
            return Err(not_found(id));
        }
        let key = vm_key(id, moref);
        let raw = self
            .inner
            .vms
            .get(key.as_bytes())?
            .ok_or_else(|| MgmtError::NotFound(format!("no VM {moref} in vCenter {id}")))?;
        let mut vm: VcenterVm = decode(VMS_TREE, key.as_bytes(), &raw)?;
        Vcenters::match_agent(&mut vm, &self.agents_by_bios_uuid()?);
        Ok(vm)
    }

    /// Removes every VM of a vCenter (called with the write lock held).
    pub(super) fn clear_inventory(&self, id: &str) -> Result<(), MgmtError> {
        let mut batch = sled::Batch::default();
        for key in self.inner.vms.scan_prefix(format!("{id}/")).keys() {
            batch.remove(key?);
        }
        self.inner.vms.apply_batch(batch)?;
        Ok(())
    }

    fn replace_inventory(&self, id: &str, vms: &[VmInfo]) -> Result<(), MgmtError> {
        {
            let _write = self.inner.write.lock().expect("vcenter write lock");
            if self.record(id)?.is_none() {
                return Ok(());
            }
            let mut batch = sled::Batch::default();
            let mut keep = BTreeSet::new();
            for vm in vms {
                let key = vm_key(id, &vm.moref.value);
                batch.insert(key.as_bytes(), encode(&VcenterVm::from_info(id, vm)));
                keep.insert(key.into_bytes());
            }
            for key in self.inner.vms.scan_prefix(format!("{id}/")).keys() {
                let key = key?;
                if !keep.contains(key.as_ref()) {
                    batch.remove(key);
                }
            }
            self.inner.vms.apply_batch(batch)?;
        }
        self.touch_sync(id)
    }

    fn upsert_vm(&self, id: &str, vm: &VmInfo) -> Result<(), MgmtError> {
        let _write = self.inner.write.lock().expect("vcenter write lock");
        if self.record(id)?.is_none() {
            return Ok(());
        }
        self.inner.vms.insert(
            vm_key(id, &vm.moref.value).as_bytes(),
            encode(&VcenterVm::from_info(id, vm)),
        )?;
        Ok(())
    }

    fn remove_vm(&self, id: &str, moref: &str) -> Result<(), MgmtError> {
        let _write = self.inner.write.lock().expect("vcenter write lock");
        self.inner.vms.remove(vm_key(id, moref).as_bytes())?;
        Ok(())
    }
}

impl Vcenters {
    /// Records a health report; audits the transitions (the alert of a vCenter going bad or healing).
    pub(super) fn set_health_record(
        &self,
        id: &str,
        health: HealthState,
        error: Option<String>,
        presented: Option<String>,
        retrying: bool,
    ) -> Result<(), MgmtError> {
        let (record, was) = {
            let _write = self.inner.write.lock().expect("vcenter write lock");
            let Some(mut record) = self.record(id)? else {
                return Ok(());
            };
            let was = (record.health, record.last_error.clone());
            record.health = health;
            record.last_error = error;
            record.presented_thumbprint = presented;
            record.retrying = retrying;
            if (record.health, &record.last_error) == (was.0, &was.1) {
                return Ok(());
            }
            self.put(&record)?;
            (record, was)
        };
        match (was.0, record.health) {
            (HealthState::Ok, HealthState::Unhealthy) => {
                let why = record.last_error.clone().unwrap_or_default();
                tracing::warn!(vcenter = %id, url = %record.url, error = %why, "vCenter unhealthy");
                self.inner
                    .state
                    .audit("vcenter_unhealthy", &format!("{id} {}: {why}", record.url))?;
            }
            (HealthState::Unhealthy, HealthState::Ok) => {
                tracing::info!(vcenter = %id, url = %record.url, "vCenter healthy again");
                self.inner
                    .state
                    .audit("vcenter_healthy", &format!("{id} {}", record.url))?;
            }
            _ => {}
        }
        Ok(())
    }

    fn touch_sync(&self, id: &str) -> Result<(), MgmtError> {
        let _write = self.inner.write.lock().expect("vcenter write lock");
        if let Some(mut record) = self.record(id)? {
            record.last_sync = Some(now_rfc3339());
            self.put(&record)?;
        }
        Ok(())
    }
}

/// Discovery's sink: the inventory trees and the vCenter records' health.
pub(super) struct Sink(pub Vcenters);

impl InventorySink for Sink {
    fn replace_all(&self, vcenter_id: &str, vms: Vec<VmInfo>) -> Result<(), String> {
        self.0
            .replace_inventory(vcenter_id, &vms)
            .map_err(|e| e.to_string())
    }

    fn upsert(&self, vcenter_id: &str, vm: VmInfo) -> Result<(), String> {
        self.0.upsert_vm(vcenter_id, &vm).map_err(|e| e.to_string())
    }

    fn remove(&self, vcenter_id: &str, moref: &str) -> Result<(), String> {
        self.0
            .remove_vm(vcenter_id, moref)
            .map_err(|e| e.to_string())
    }

    fn set_health(&self, vcenter_id: &str, health: VcenterHealth) {
        let result = match health {
            VcenterHealth::Healthy => {
                self.0
                    .set_health_record(vcenter_id, HealthState::Ok, None, None, false)
            }
            VcenterHealth::Unhealthy {
                reason,
                retryable,
                presented_thumbprint,
            } => self.0.set_health_record(
                vcenter_id,
                HealthState::Unhealthy,
                Some(reason),
                presented_thumbprint,
                retryable,
            ),
        };
        if let Err(err) = result {
            tracing::warn!(vcenter = %vcenter_id, %err, "could not record the vCenter's health");
        }
    }
}

#[cfg(test)]
mod uuid_tests {
    use super::*;

    #[test]
    fn uuids_normalize_and_swap() {
        assert_eq!(
            uuid_hex("4221C7D8-0F6B-1A2B-3C4D-5E6F708192A3").as_deref(),
            Some("4221c7d80f6b1a2b3c4d5e6f708192a3")
        );
        assert_eq!(uuid_hex("not-a-uuid"), None);
        assert_eq!(uuid_hex("4221c7d80f6b1a2b3c4d5e6f708192a"), None);
        assert_eq!(
            uuid_swapped("4221c7d80f6b1a2b3c4d5e6f708192a3"),
            "d8c721426b0f2b1a3c4d5e6f708192a3"
        );
    }
}
