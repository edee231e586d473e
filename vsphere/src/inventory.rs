//! The VM inventory: one listing of every VM through a container view over the root folder, and
//! incremental following through a property filter and WaitForUpdatesEx.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::client::Client;
use crate::error::VsphereError;
use crate::property::{
    ChangeOp, FilterSpec, ObjectContent, ObjectUpdate, ObjectUpdateKind, PropertyChange,
};
use crate::types::MoRef;
use crate::value::Value;

/// The VM properties Ferry reads.
pub const VM_PROPERTIES: &[&str] = &[
    "name",
    "config.uuid",
    "config.instanceUuid",
    "config.template",
    "config.guestId",
    "config.guestFullName",
    "guest.guestFamily",
    "guest.ipAddress",
    "guest.net",
    "runtime.powerState",
    "runtime.host",
    "datastore",
    "config.hardware.device",
];

/// NIC device types; any other device with a MAC address counts too.
const NIC_TYPES: &[&str] = &[
    "VirtualEthernetCard",
    "VirtualE1000",
    "VirtualE1000e",
    "VirtualPCNet32",
    "VirtualVmxnet",
    "VirtualVmxnet2",
    "VirtualVmxnet3",
    "VirtualVmxnet3Vrdma",
    "VirtualSriovEthernetCard",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PowerState {
    PoweredOn,
    PoweredOff,
    Suspended,
    #[default]
    Unknown,
}

impl PowerState {
    fn parse(text: Option<&str>) -> PowerState {
        match text {
            Some("poweredOn") => PowerState::PoweredOn,
            Some("poweredOff") => PowerState::PoweredOff,
            Some("suspended") => PowerState::Suspended,
            _ => PowerState::Unknown,
        }
    }
}

/// A virtual disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskInfo {
    /// The device key (any number: vcsim hands out keys like 255511522).
    pub key: i32,
    /// `capacityInBytes` when the server sends it, else `capacityInKB` * 1024.
    pub capacity_bytes: u64,
    /// The backing file, `[datastore] folder/disk.vmdk`.
    pub file: String,
    pub datastore: Option<MoRef>,
    pub controller_key: Option<i32>,
    pub unit_number: Option<i32>,
    pub label: Option<String>,
}

/// A virtual network adapter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicInfo {
    pub key: i32,
    /// The device type (`VirtualVmxnet3`, `VirtualE1000`, ...).
    pub adapter: String,
    pub mac_address: Option<String>,
    /// Port group name, distributed port group key, or opaque network id.
    pub network: Option<String>,
    pub network_ref: Option<MoRef>,
    pub connected: Option<bool>,
}

/// What Ferry knows of one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmInfo {
    pub moref: MoRef,
    pub name: String,
    pub instance_uuid: Option<String>,
    /// `config.uuid`, the SMBIOS UUID the guest sees (agents are matched by it).
    pub bios_uuid: Option<String>,
    pub template: bool,
    /// The guest's full name, else its id, else its family.
    pub guest_os: Option<String>,
    pub guest_id: Option<String>,
    pub guest_family: Option<String>,
    pub guest_ips: Vec<String>,
    pub power_state: PowerState,
    pub host: Option<MoRef>,
    pub datastores: Vec<MoRef>,
    pub disks: Vec<DiskInfo>,
    pub nics: Vec<NicInfo>,
    /// The sources of `guest_os` and `guest_ips`, kept so later changes can be applied to a
    /// stored VmInfo: `config.guestFullName`, `guest.ipAddress`, and the addresses of `guest.net`.
    #[serde(default)]
    pub guest_full_name: Option<String>,
    #[serde(default)]
    pub primary_ip: Option<String>,
    #[serde(default)]
    pub net_ips: Vec<String>,
}

enum Device {
    Disk(DiskInfo),
    Nic(NicInfo),
}

fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::to_string)
}

fn int(v: Option<&Value>) -> Option<i32> {
    v.and_then(Value::as_i64)
        .and_then(|n| i32::try_from(n).ok())
}

fn device(v: &Value) -> Option<Device> {
    let obj = v.as_object()?;
    let key = int(obj.field("key"))?;
    if obj.type_name == "VirtualDisk" {
        let bytes = obj
            .field("capacityInBytes")
            .and_then(Value::as_i64)
            .filter(|b| *b > 0)
            .or_else(|| {
                obj.field("capacityInKB")
                    .and_then(Value::as_i64)
                    .map(|kb| kb.saturating_mul(1024))
            })
            .unwrap_or(0);
        return Some(Device::Disk(DiskInfo {
            key,
            capacity_bytes: u64::try_from(bytes).unwrap_or(0),
            file: text(v.path("backing.fileName")).unwrap_or_default(),
            datastore: v
                .path("backing.datastore")
                .and_then(Value::as_moref)
                .cloned(),
            controller_key: int(obj.field("controllerKey")),
            unit_number: int(obj.field("unitNumber")),
            label: text(v.path("deviceInfo.label")),
        }));
    }
    let mac = text(obj.field("macAddress"));
    if !NIC_TYPES.contains(&obj.type_name.as_str()) && mac.is_none() {
        return None;
    }
    let network = text(v.path("backing.deviceName"))
        .or_else(|| text(v.path("backing.port.portgroupKey")))
        .or_else(|| text(v.path("backing.opaqueNetworkId")));
    Some(Device::Nic(NicInfo {
        key,
        adapter: obj.type_name.clone(),
        mac_address: mac,
        network,
        network_ref: v.path("backing.network").and_then(Value::as_moref).cloned(),
        connected: v.path("connectable.connected").and_then(Value::as_bool),
    }))
}

/// Index of `config.hardware.device[2000]`: the key in the brackets.
fn device_key(path: &str) -> Option<i32> {
    path.strip_prefix("config.hardware.device[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

impl VmInfo {
    pub fn new(moref: MoRef) -> Self {
        VmInfo {
            moref,
            name: String::new(),
            instance_uuid: None,
            bios_uuid: None,
            template: false,
            guest_os: None,
            guest_id: None,
            guest_family: None,
            guest_ips: Vec::new(),
            power_state: PowerState::Unknown,
            host: None,
            datastores: Vec::new(),
            disks: Vec::new(),
            nics: Vec::new(),
            guest_full_name: None,
            primary_ip: None,
            net_ips: Vec::new(),
        }
    }

    /// A VM from its RetrievePropertiesEx result.
    pub fn from_object(object: ObjectContent) -> Self {
        let mut vm = VmInfo::new(object.obj);
        for (path, value) in &object.props {
            vm.set(path, Some(value));
        }
        vm
    }

    /// Applies one WaitForUpdatesEx change. Returns false for a path this type does not follow
    /// (then re-read the VM, e.g. with [`refresh_vm`]).
    pub fn apply_change(&mut self, change: &PropertyChange) -> bool {
        let value = match change.op {
            ChangeOp::Assign | ChangeOp::Add => change.val.as_ref(),
            ChangeOp::Remove | ChangeOp::IndirectRemove => None,
        };
        self.set(&change.name, value)
    }

    fn set(&mut self, path: &str, value: Option<&Value>) -> bool {
        match path {
            "name" => self.name = text(value).unwrap_or_default(),
            "config.uuid" => self.bios_uuid = text(value),
            "config.instanceUuid" => self.instance_uuid = text(value),
            "config.template" => self.template = value.and_then(Value::as_bool).unwrap_or(false),
            "config.guestId" => self.guest_id = text(value),
            "config.guestFullName" => self.guest_full_name = text(value),
            "guest.guestFamily" => self.guest_family = text(value),
            "guest.ipAddress" => self.primary_ip = text(value),
            "guest.net" => {
                self.net_ips = value
                    .and_then(Value::as_array)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(Value::as_object)
                    .flat_map(|nic| nic.fields_named("ipAddress"))
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            }
            "runtime.powerState" => {
                self.power_state = PowerState::parse(value.and_then(Value::as_str))
            }
            "runtime.host" => self.host = value.and_then(Value::as_moref).cloned(),
            "datastore" => {
                self.datastores = value
                    .and_then(Value::as_array)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(Value::as_moref)
                    .cloned()
                    .collect()
            }
            "config.hardware.device" => {
                self.disks.clear();
                self.nics.clear();
                for d in value.and_then(Value::as_array).unwrap_or_default() {
                    self.put_device(d);
                }
            }
            p => match device_key(p) {
                Some(key) => {
                    self.disks.retain(|d| d.key != key);
                    self.nics.retain(|n| n.key != key);
                    if let Some(d) = value {
                        self.put_device(d);
                    }
                }
                None => return false,
            },
        }
        self.derive();
        true
    }

    fn put_device(&mut self, value: &Value) {
        match device(value) {
            Some(Device::Disk(d)) => self.disks.push(d),
            Some(Device::Nic(n)) => self.nics.push(n),
            None => {}
        }
    }

    fn derive(&mut self) {
        self.guest_os = self
            .guest_full_name
            .clone()
            .or_else(|| self.guest_id.clone())
            .or_else(|| self.guest_family.clone());
        let mut ips: Vec<String> = Vec::new();
        for ip in self.primary_ip.iter().chain(&self.net_ips) {
            if !ip.is_empty() && !ips.contains(ip) {
                ips.push(ip.clone());
            }
        }
        self.guest_ips = ips;
        self.disks.sort_by_key(|d| d.key);
        self.nics.sort_by_key(|n| n.key);
    }
}

/// Applies one object update of a VM filter to a map of VMs. Returns false if a change was not
/// understood (the VM should be re-read).
pub fn apply_update(vms: &mut BTreeMap<MoRef, VmInfo>, update: &ObjectUpdate) -> bool {
    if update.obj.kind != "VirtualMachine" {
        return true;
    }
    if update.kind == ObjectUpdateKind::Leave {
        vms.remove(&update.obj);
        return true;
    }
    let vm = vms
        .entry(update.obj.clone())
        .or_insert_with(|| VmInfo::new(update.obj.clone()));
    let mut understood = true;
    for change in &update.changes {
        understood &= vm.apply_change(change);
    }
    understood
}

/// Every VM of the inventory (templates included), page after page.
pub async fn list_vms(client: &Client) -> Result<Vec<VmInfo>, VsphereError> {
    let generation = client.session_generation();
    match list_once(client).await {
        // A re-login in the middle kills the view and the paging token: start over, once.
        Err(e) if client.session_generation() != generation => {
            tracing::info!(error = %e, "VM listing interrupted by a new session; listing again");
            list_once(client).await
        }
        other => other,
    }
}

async fn list_once(client: &Client) -> Result<Vec<VmInfo>, VsphereError> {
    let root = client.service_content().root_folder.clone();
    let view = client
        .create_container_view(&root, &["VirtualMachine"], true)
        .await?;
    let spec = FilterSpec::container_view(&view, "VirtualMachine", VM_PROPERTIES);
    let result = client.retrieve_all(&[spec]).await;
    if let Err(e) = client.destroy_view(&view).await {
        // The view ends with the session anyway.
        tracing::debug!(error = %e, "could not destroy the container view");
    }
    Ok(result?.into_iter().map(VmInfo::from_object).collect())
}

/// Re-reads one VM; `None` if it no longer exists.
pub async fn refresh_vm(client: &Client, vm: &MoRef) -> Result<Option<VmInfo>, VsphereError> {
    match client.retrieve_one(vm, VM_PROPERTIES).await {
        Ok(found) => Ok(found.map(VmInfo::from_object)),
        Err(VsphereError::ManagedObjectNotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Follows the inventory: a container view and a filter on it. The first [`VmWatch::poll`]
/// delivers every VM; later ones deliver changes. When the client's session was renewed (filters
/// die with the session) the watch makes a new view and filter and starts over from every VM.
#[derive(Debug)]
pub struct VmWatch {
    view: MoRef,
    filter: MoRef,
    version: String,
    generation: u64,
}

impl VmWatch {
    pub async fn start(client: &Client) -> Result<VmWatch, VsphereError> {
        let generation = client.session_generation();
        let root = client.service_content().root_folder.clone();
        let view = client
            .create_container_view(&root, &["VirtualMachine"], true)
            .await?;
        let spec = FilterSpec::container_view(&view, "VirtualMachine", VM_PROPERTIES);
        let filter = client.create_filter(&spec, false).await?;
        Ok(VmWatch {
            view,
            filter,
            version: String::new(),
            generation,
        })
    }

    /// Waits up to `max_wait_seconds` and applies what changed to `vms` (which this watch owns:
    /// after a restart it is cleared and filled again). Returns the VMs whose changes were not
    /// understood; re-read them with [`refresh_vm`].
    pub async fn poll(
        &mut self,
        client: &Client,
        vms: &mut BTreeMap<MoRef, VmInfo>,
        max_wait_seconds: u32,
    ) -> Result<Vec<MoRef>, VsphereError> {
        if client.session_generation() != self.generation {
            *self = VmWatch::start(client).await?;
            vms.clear();
        }
        let generation = self.generation;
        let update = match client
            .wait_for_updates_ex(&self.version, max_wait_seconds, None)
            .await
        {
            Ok(update) => update,
            // The client logged in again during the wait, and the old version means nothing in
            // the new session (InvalidCollectorVersion and the like): the next poll restarts.
            Err(_) if client.session_generation() != generation => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        if client.session_generation() != generation {
            // Answered in a new session, where this filter does not exist; the next poll restarts.
            return Ok(Vec::new());
        }
        let Some(set) = update else {
            return Ok(Vec::new());
        };
        self.version = set.version;
        let mut unknown = Vec::new();
        for filter in set.filters.iter().filter(|f| f.filter == self.filter) {
            for update in &filter.objects {
                if !apply_update(vms, update) {
                    unknown.push(update.obj.clone());
                }
            }
        }
        Ok(unknown)
    }

    /// Removes the filter and the view from the server.
    pub async fn stop(self, client: &Client) -> Result<(), VsphereError> {
        let filter = client.destroy_filter(&self.filter).await;
        let view = client.destroy_view(&self.view).await;
        filter.and(view)
    }
}

#[cfg(test)]
#[path = "inventory_tests.rs"]
mod tests;
