use super::*;
use crate::property::{parse_retrieve_result, parse_update_set};
use crate::soap::decode_response;
use crate::xml::Limits;

fn vms(xml: &str) -> Vec<VmInfo> {
    let resp = decode_response(
        200,
        xml.as_bytes(),
        "RetrievePropertiesEx",
        &Limits::default(),
    )
    .unwrap();
    parse_retrieve_result(resp)
        .unwrap()
        .objects
        .into_iter()
        .map(VmInfo::from_object)
        .collect()
}

fn vcsim_vms() -> Vec<VmInfo> {
    vms(include_str!(
        "../tests/samples/05-retrievepropertiesex-containerview-vms.response.xml"
    ))
}

#[test]
fn vcsim_model_vms() {
    let list = vcsim_vms();
    assert_eq!(list.len(), 2);
    let vm = &list[0];
    assert_eq!(vm.moref, MoRef::new("VirtualMachine", "vm-36"));
    assert_eq!(vm.name, "DC0_C0_RP0_VM0");
    assert_eq!(
        vm.bios_uuid.as_deref(),
        Some("cd0681bf-2f18-5c00-9b9b-8197c0095348")
    );
    assert_eq!(
        vm.instance_uuid.as_deref(),
        Some("bfff331f-7f07-572d-951e-edd3701dc061")
    );
    assert_eq!(
        vm.guest_os.as_deref(),
        Some("linuxGuest"),
        "only the family is known"
    );
    assert_eq!(vm.power_state, PowerState::PoweredOn);
    assert!(vm.guest_ips.is_empty());
    assert_eq!(
        vm.disks,
        [DiskInfo {
            key: 255511522,
            capacity_bytes: 1024 * 1024,
            file: "[LocalDS_0] DC0_C0_RP0_VM0/disk1.vmdk".into(),
            datastore: Some(MoRef::new(
                "Datastore",
                "/tmp/govcsim-DC0-LocalDS_0-2116778149@folder-5"
            )),
            controller_key: Some(202),
            unit_number: Some(0),
            label: Some("disk-202-0".into()),
        }]
    );
    assert!(vm.nics.is_empty());
    let created = vms(include_str!(
        "../tests/samples/22-new-vm-properties.response.xml"
    ));
    assert_eq!(created[0].name, "failback-web01");
    assert_eq!(created[0].guest_ips, ["192.0.2.20"]);
    assert_eq!(created[0].disks[0].capacity_bytes, 10_485_760 * 1024);
}

#[test]
fn a_full_vm_with_nics_guest_net_and_datastores() {
    let vm = vms(include_str!("../tests/samples/vm-nics.response.xml")).remove(0);
    assert_eq!(vm.name, "web01 <prod>");
    assert_eq!(vm.guest_os.as_deref(), Some("Ubuntu Linux (64-bit)"));
    assert_eq!(vm.guest_id.as_deref(), Some("ubuntu64Guest"));
    assert_eq!(vm.guest_family.as_deref(), Some("linuxGuest"));
    assert_eq!(
        vm.guest_ips,
        ["10.1.2.3", "fe80::250:56ff:fe8a:1234", "192.168.50.3"],
        "the primary address first, no duplicates"
    );
    assert!(!vm.template);
    assert_eq!(vm.host, Some(MoRef::new("HostSystem", "host-31")));
    assert_eq!(
        vm.datastores,
        [
            MoRef::new("Datastore", "datastore-11"),
            MoRef::new("Datastore", "datastore-12")
        ]
    );
    assert_eq!(vm.disks.len(), 2, "the SCSI controller is not a disk");
    assert_eq!(
        vm.disks[0].capacity_bytes, 42_949_672_960,
        "capacityInBytes wins"
    );
    assert_eq!(vm.disks[0].file, "[ds-ssd-01] web & db/web01.vmdk");
    assert_eq!(vm.disks[1].capacity_bytes, 1_048_576 * 1024);
    assert_eq!(
        vm.nics,
        [
            NicInfo {
                key: 4000,
                adapter: "VirtualVmxnet3".into(),
                mac_address: Some("00:50:56:8a:12:34".into()),
                network: Some("VM Network".into()),
                network_ref: Some(MoRef::new("Network", "network-7")),
                connected: Some(true),
            },
            NicInfo {
                key: 4001,
                adapter: "VirtualE1000e".into(),
                mac_address: Some("00:50:56:8a:56:78".into()),
                network: Some("dvportgroup-21".into()),
                network_ref: None,
                connected: Some(false),
            }
        ]
    );
    let json = serde_json::to_value(&vm).unwrap();
    assert_eq!(json["power_state"], "poweredOn");
    assert_eq!(json["disks"][0]["capacity_bytes"], 42_949_672_960u64);
    assert_eq!(json["moref"]["value"], "vm-1001");
    let back: VmInfo = serde_json::from_value(json).unwrap();
    assert_eq!(back, vm);
}

fn change(name: &str, op: ChangeOp, val: Option<Value>) -> PropertyChange {
    PropertyChange {
        name: name.into(),
        op,
        val,
    }
}

#[test]
fn changes_apply_incrementally() {
    let mut vm = vms(include_str!("../tests/samples/vm-nics.response.xml")).remove(0);
    // The recorded power-off of vm-36, applied to this VM.
    let set = parse_update_set(
        decode_response(
            200,
            include_str!("../tests/samples/11b-waitforupdatesex-version-dash-vm-powerstate-modify.response.xml").as_bytes(),
            "WaitForUpdatesEx",
            &Limits::default(),
        )
        .unwrap(),
    )
    .unwrap()
    .unwrap();
    for c in &set.filters[0].objects[0].changes {
        assert!(vm.apply_change(c));
    }
    assert_eq!(vm.power_state, PowerState::PoweredOff);

    assert!(vm.apply_change(&change(
        "name",
        ChangeOp::Assign,
        Some(Value::String("db01".into()))
    )));
    assert_eq!(vm.name, "db01");
    // Tools stopped: the primary address goes, the guest.net ones stay.
    assert!(vm.apply_change(&change("guest.ipAddress", ChangeOp::Assign, None)));
    assert_eq!(
        vm.guest_ips,
        ["10.1.2.3", "fe80::250:56ff:fe8a:1234", "192.168.50.3"]
    );
    assert!(vm.apply_change(&change("guest.net", ChangeOp::Assign, None)));
    assert!(vm.guest_ips.is_empty());
    assert!(vm.apply_change(&change("config.guestFullName", ChangeOp::Remove, None)));
    assert_eq!(vm.guest_os.as_deref(), Some("ubuntu64Guest"));
    // Partial updates name one device by key.
    assert!(vm.apply_change(&change(
        "config.hardware.device[2001]",
        ChangeOp::Remove,
        None
    )));
    assert_eq!(vm.disks.len(), 1);
    let disk = vcsim_vms().remove(0);
    let device_xml =
        include_str!("../tests/samples/05-retrievepropertiesex-containerview-vms.response.xml");
    let resp = decode_response(
        200,
        device_xml.as_bytes(),
        "RetrievePropertiesEx",
        &Limits::default(),
    )
    .unwrap();
    let mut objects = parse_retrieve_result(resp).unwrap().objects;
    let devices = objects[0].take("config.hardware.device").unwrap();
    let first = devices.as_array().unwrap()[0].clone();
    assert!(vm.apply_change(&change(
        "config.hardware.device[255511522]",
        ChangeOp::Add,
        Some(first)
    )));
    assert_eq!(vm.disks.len(), 2);
    assert_eq!(vm.disks[1], disk.disks[0]);
    assert!(vm.apply_change(&change(
        "config.hardware.device",
        ChangeOp::Assign,
        Some(devices)
    )));
    assert_eq!(vm.disks, disk.disks);
    assert!(vm.nics.is_empty());
    assert!(vm.apply_change(&change("datastore", ChangeOp::IndirectRemove, None)));
    assert!(vm.datastores.is_empty());
    // Paths this type does not follow say so.
    assert!(!vm.apply_change(&change("guest.net[0].ipAddress", ChangeOp::Assign, None)));
    assert!(!vm.apply_change(&change("config.hardware.device[x]", ChangeOp::Remove, None)));
}

#[test]
fn object_updates_enter_and_leave_the_map() {
    let mut map = BTreeMap::new();
    let vm = MoRef::new("VirtualMachine", "vm-7");
    let enter = ObjectUpdate {
        kind: ObjectUpdateKind::Enter,
        obj: vm.clone(),
        changes: vec![
            change("name", ChangeOp::Assign, Some(Value::String("a".into()))),
            change(
                "runtime.powerState",
                ChangeOp::Assign,
                Some(Value::Enum {
                    type_name: "VirtualMachinePowerState".into(),
                    value: "suspended".into(),
                }),
            ),
        ],
        missing: vec![],
    };
    assert!(apply_update(&mut map, &enter));
    assert_eq!(map[&vm].name, "a");
    assert_eq!(map[&vm].power_state, PowerState::Suspended);
    let odd = ObjectUpdate {
        kind: ObjectUpdateKind::Modify,
        changes: vec![change("summary.quickStats", ChangeOp::Assign, None)],
        ..enter.clone()
    };
    assert!(!apply_update(&mut map, &odd));
    let leave = ObjectUpdate {
        kind: ObjectUpdateKind::Leave,
        changes: vec![],
        ..enter.clone()
    };
    assert!(apply_update(&mut map, &leave));
    assert!(map.is_empty());
    // Other object types (a folder in the view) are ignored.
    let folder = ObjectUpdate {
        obj: MoRef::new("Folder", "group-v3"),
        ..enter
    };
    assert!(apply_update(&mut map, &folder));
    assert!(map.is_empty());
}
