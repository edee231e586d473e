//! VM operations: snapshots, creating, powering, reconfiguring, renaming and destroying VMs, and
//! finding inventory objects by path. Every `*_Task` call waits for its task
//! ([`crate::task::DEFAULT_TASK_TIMEOUT`]); a failed task is its typed fault.
//!
//! Data objects are written in the element order of the vim25 schema: vCenter rejects a
//! `VirtualMachineConfigSpec` whose fields come out of order.

use crate::client::{returnval, Client};
use crate::error::VsphereError;
use crate::soap::Request;
use crate::task::result_moref;
use crate::types::MoRef;
use crate::xml::Element;

/// The key of the SCSI controller a new VM gets for its disks.
const SCSI_CONTROLLER_KEY: i32 = 1000;
/// Unit 7 of a SCSI bus is the controller itself.
const SCSI_CONTROLLER_UNIT: i32 = 7;
/// Disks on one SCSI controller: units 0-15 without 7.
pub const MAX_DISKS: usize = 15;
/// NICs of one VM (vSphere allows 10).
pub const MAX_NICS: usize = 10;

/// A new virtual disk: thin provisioned, on the VM's datastore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    pub capacity_kb: u64,
}

/// The adapter type of a new NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NicAdapter {
    #[default]
    Vmxnet3,
    E1000e,
    E1000,
}

impl NicAdapter {
    fn xsi_type(self) -> &'static str {
        match self {
            NicAdapter::Vmxnet3 => "VirtualVmxnet3",
            NicAdapter::E1000e => "VirtualE1000e",
            NicAdapter::E1000 => "VirtualE1000",
        }
    }
}

/// A new NIC on a standard port group (by its network name, e.g. `VM Network`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicSpec {
    pub network: String,
    pub adapter: NicAdapter,
}

/// What [`Client::create_vm`] makes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VmCreateSpec {
    pub name: String,
    /// `otherLinux64Guest`, `ubuntu64Guest`, `windows2019srv_64Guest`, ...
    pub guest_id: String,
    pub num_cpus: u32,
    pub memory_mb: u64,
    /// The datastore (by name) that holds the VM's files and disks.
    pub datastore: String,
    pub disks: Vec<DiskSpec>,
    pub nics: Vec<NicSpec>,
    /// `extraConfig` options (vcsim reads `SET.guest.ipAddress` and the like from here).
    pub extra_config: Vec<(String, String)>,
}

/// What [`Client::reconfigure`] changes; `None` and empty fields stay as they are.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReconfigSpec {
    pub name: Option<String>,
    pub annotation: Option<String>,
    pub num_cpus: Option<u32>,
    pub memory_mb: Option<u64>,
    /// Options to add or change; an empty value removes the option.
    pub extra_config: Vec<(String, String)>,
    /// Changed block tracking (`changeTrackingEnabled`).
    pub change_tracking: Option<bool>,
}

fn invalid(reason: impl Into<String>) -> VsphereError {
    VsphereError::InvalidInput {
        reason: reason.into(),
    }
}

/// A name vSphere accepts: not empty, at most 80 characters (the VM name limit), no control
/// characters.
fn check_name(what: &str, name: &str) -> Result<(), VsphereError> {
    if name.trim().is_empty() {
        return Err(invalid(format!("the {what} is empty")));
    }
    if name.chars().count() > 80 {
        return Err(invalid(format!("the {what} is longer than 80 characters")));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid(format!("the {what} contains a control character")));
    }
    Ok(())
}

fn check_positive(what: &str, value: u64, max: u64) -> Result<(), VsphereError> {
    if value == 0 || value > max {
        return Err(invalid(format!("{what} must be between 1 and {max}")));
    }
    Ok(())
}

/// `[datastore]`, the path vSphere completes with the VM's folder.
fn datastore_path(datastore: &str) -> Result<String, VsphereError> {
    check_name("datastore name", datastore)?;
    if datastore.contains(['[', ']']) {
        return Err(invalid("a datastore name cannot contain brackets"));
    }
    Ok(format!("[{datastore}]"))
}

fn write_extra_config(req: &mut Request, options: &[(String, String)]) -> Result<(), VsphereError> {
    for (key, value) in options {
        if key.trim().is_empty() {
            return Err(invalid("an extraConfig key is empty"));
        }
        req.open_typed("extraConfig", "OptionValue")
            .text("key", key)
            .typed_text("value", "xsd:string", value)
            .close();
    }
    Ok(())
}

/// `CreateVM_Task`: `config`, `pool`, `host` in schema order.
pub(crate) fn create_vm_request(
    folder: &MoRef,
    spec: &VmCreateSpec,
    pool: &MoRef,
    host: Option<&MoRef>,
) -> Result<Request, VsphereError> {
    check_name("VM name", &spec.name)?;
    check_name("guest id", &spec.guest_id)?;
    check_positive("the number of CPUs", u64::from(spec.num_cpus), 768)?;
    // 24 TiB, the largest VM memory vSphere supports.
    check_positive("the memory size in MB", spec.memory_mb, 24 << 20)?;
    let ds_path = datastore_path(&spec.datastore)?;
    if spec.disks.len() > MAX_DISKS {
        return Err(invalid(format!("at most {MAX_DISKS} disks")));
    }
    if spec.nics.len() > MAX_NICS {
        return Err(invalid(format!("at most {MAX_NICS} NICs")));
    }
    let mut req = Request::new("CreateVM_Task", folder);
    req.open("config")
        .text("name", &spec.name)
        .text("guestId", &spec.guest_id);
    req.open("files").text("vmPathName", &ds_path).close();
    req.value("numCPUs", spec.num_cpus)
        .value("memoryMB", spec.memory_mb);
    if !spec.disks.is_empty() {
        req.open("deviceChange")
            .text("operation", "add")
            .open_typed("device", "ParaVirtualSCSIController")
            .value("key", SCSI_CONTROLLER_KEY)
            .value("busNumber", 0)
            .text("sharedBus", "noSharing")
            .close()
            .close();
    }
    let units = (0..).filter(|u| *u != SCSI_CONTROLLER_UNIT);
    for ((i, disk), unit) in spec.disks.iter().enumerate().zip(units) {
        // 62 TB, the largest VMDK.
        check_positive("a disk capacity in KB", disk.capacity_kb, 62 << 30)?;
        req.open("deviceChange")
            .text("operation", "add")
            .text("fileOperation", "create")
            .open_typed("device", "VirtualDisk")
            // Negative keys are placeholders the server replaces.
            .value("key", -(i as i64) - 1)
            .open_typed("backing", "VirtualDiskFlatVer2BackingInfo")
            .text("fileName", &ds_path)
            .text("diskMode", "persistent")
            .value("thinProvisioned", true)
            .close()
            .value("controllerKey", SCSI_CONTROLLER_KEY)
            .value("unitNumber", unit)
            .value("capacityInKB", disk.capacity_kb)
            .close()
            .close();
    }
    for (i, nic) in spec.nics.iter().enumerate() {
        check_name("network name", &nic.network)?;
        req.open("deviceChange")
            .text("operation", "add")
            .open_typed("device", nic.adapter.xsi_type())
            .value("key", -(i as i64) - 100)
            .open_typed("backing", "VirtualEthernetCardNetworkBackingInfo")
            .text("deviceName", &nic.network)
            .close()
            .open("connectable")
            .value("startConnected", true)
            .value("allowGuestControl", true)
            .value("connected", true)
            .close()
            .text("addressType", "generated")
            .close()
            .close();
    }
    write_extra_config(&mut req, &spec.extra_config)?;
    req.close();
    req.moref("pool", pool);
    if let Some(host) = host {
        req.moref("host", host);
    }
    Ok(req)
}

/// `ReconfigVM_Task` with the fields of `spec` that are set, in schema order.
pub(crate) fn reconfigure_request(
    vm: &MoRef,
    spec: &ReconfigSpec,
) -> Result<Request, VsphereError> {
    let mut req = Request::new("ReconfigVM_Task", vm);
    req.open("spec");
    if let Some(name) = &spec.name {
        check_name("VM name", name)?;
        req.text("name", name);
    }
    if let Some(annotation) = &spec.annotation {
        req.text("annotation", annotation);
    }
    if let Some(cpus) = spec.num_cpus {
        check_positive("the number of CPUs", u64::from(cpus), 768)?;
        req.value("numCPUs", cpus);
    }
    if let Some(mb) = spec.memory_mb {
        check_positive("the memory size in MB", mb, 24 << 20)?;
        req.value("memoryMB", mb);
    }
    write_extra_config(&mut req, &spec.extra_config)?;
    if let Some(cbt) = spec.change_tracking {
        req.value("changeTrackingEnabled", cbt);
    }
    req.close();
    Ok(req)
}

pub(crate) fn create_snapshot_request(
    vm: &MoRef,
    name: &str,
    description: &str,
    memory: bool,
    quiesce: bool,
) -> Result<Request, VsphereError> {
    check_name("snapshot name", name)?;
    let mut req = Request::new("CreateSnapshot_Task", vm);
    req.text("name", name)
        .text("description", description)
        .value("memory", memory)
        .value("quiesce", quiesce);
    Ok(req)
}

/// The `returnval` of FindByInventoryPath: absent when nothing is at that path.
pub(crate) fn parse_optional_moref(resp: Element) -> Result<Option<MoRef>, VsphereError> {
    match resp.child("returnval") {
        Some(_) => returnval(&resp).and_then(MoRef::from_element).map(Some),
        None => Ok(None),
    }
}

impl Client {
    /// Takes a snapshot and returns it (`VirtualMachineSnapshot`). `memory` includes the
    /// VM's memory; `quiesce` asks VMware Tools to flush the guest's file systems first.
    pub async fn create_snapshot(
        &self,
        vm: &MoRef,
        name: &str,
        description: &str,
        memory: bool,
        quiesce: bool,
    ) -> Result<MoRef, VsphereError> {
        let req = create_snapshot_request(vm, name, description, memory, quiesce)?;
        result_moref(self.run_task(req).await?, "CreateSnapshot")
    }

    /// Removes a snapshot (and its children with `remove_children`); `consolidate` merges the
    /// delta disks right away.
    pub async fn remove_snapshot(
        &self,
        snapshot: &MoRef,
        remove_children: bool,
        consolidate: bool,
    ) -> Result<(), VsphereError> {
        let mut req = Request::new("RemoveSnapshot_Task", snapshot);
        req.value("removeChildren", remove_children)
            .value("consolidate", consolidate);
        self.run_task(req).await.map(drop)
    }

    /// Creates a VM in `folder` (a VM folder such as `DC0/vm`) on the resource `pool`
    /// (optionally on one `host` of it) and returns it.
    pub async fn create_vm(
        &self,
        folder: &MoRef,
        spec: &VmCreateSpec,
        pool: &MoRef,
        host: Option<&MoRef>,
    ) -> Result<MoRef, VsphereError> {
        let req = create_vm_request(folder, spec, pool, host)?;
        result_moref(self.run_task(req).await?, "CreateVM")
    }

    /// Powers a VM on; one that is on already gives `InvalidPowerState`.
    pub async fn power_on(&self, vm: &MoRef) -> Result<(), VsphereError> {
        self.run_task(Request::new("PowerOnVM_Task", vm))
            .await
            .map(drop)
    }

    /// Powers a VM off (hard, like pulling the plug); one that is off gives `InvalidPowerState`.
    pub async fn power_off(&self, vm: &MoRef) -> Result<(), VsphereError> {
        self.run_task(Request::new("PowerOffVM_Task", vm))
            .await
            .map(drop)
    }

    pub async fn reconfigure(&self, vm: &MoRef, spec: &ReconfigSpec) -> Result<(), VsphereError> {
        let req = reconfigure_request(vm, spec)?;
        self.run_task(req).await.map(drop)
    }

    /// Renames any managed entity (VM, folder, datastore, ...).
    pub async fn rename(&self, entity: &MoRef, name: &str) -> Result<(), VsphereError> {
        check_name("name", name)?;
        let mut req = Request::new("Rename_Task", entity);
        req.text("newName", name);
        self.run_task(req).await.map(drop)
    }

    /// Destroys a managed entity; for a VM that deletes its files too.
    pub async fn destroy(&self, entity: &MoRef) -> Result<(), VsphereError> {
        self.run_task(Request::new("Destroy_Task", entity))
            .await
            .map(drop)
    }

    /// The object at an inventory path (`DC0/vm`, `DC0/host/DC0_C0/Resources`,
    /// `DC0/vm/web01`), or `None`.
    pub async fn find_by_inventory_path(&self, path: &str) -> Result<Option<MoRef>, VsphereError> {
        if path.trim().is_empty() {
            return Err(invalid("the inventory path is empty"));
        }
        let index = self.service_content().search_index.clone().ok_or_else(|| {
            VsphereError::MethodNotFound {
                method: "FindByInventoryPath (the server has no SearchIndex)".into(),
            }
        })?;
        let mut req = Request::new("FindByInventoryPath", &index);
        req.text("inventoryPath", path);
        self.invoke(req, parse_optional_moref).await
    }
}

#[cfg(test)]
#[path = "vm_tests.rs"]
mod tests;
