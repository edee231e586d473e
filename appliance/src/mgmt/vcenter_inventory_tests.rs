//! The inventory trees through discovery's sink, the VM lists the API serves, agents matched by BIOS
//! UUID, and discovery running against a scripted vCenter end to end.

use std::sync::atomic::Ordering;

use actors::discovery::{Change, InventorySink, VmInfo};
use vsphere::inventory::{DiskInfo, NicInfo};
use vsphere::{MoRef, PowerState};

use super::inventory::Sink;
use super::testkit::{admin, eventually, vcenters_in, FakeVcenter, PASSWORD, THUMBPRINT};
use super::*;

const BIOS: &str = "4221c7d8-0f6b-1a2b-3c4d-5e6f708192a3";
/// The same UUID as a guest on older virtual hardware reads it from SMBIOS.
const BIOS_SWAPPED: &str = "d8c72142-6b0f-2b1a-3c4d-5e6f708192a3";

fn vm(id: &str, name: &str, power: PowerState) -> VmInfo {
    let mut vm = VmInfo::new(MoRef::new("VirtualMachine", id));
    vm.name = name.into();
    vm.power_state = power;
    vm.instance_uuid = Some(format!("5021{:0>28}", id.trim_start_matches("vm-")));
    vm.bios_uuid = Some(format!(
        "4221aaaa-0000-0000-0000-{:0>12}",
        id.trim_start_matches("vm-")
    ));
    vm.guest_os = Some("Ubuntu Linux (64-bit)".into());
    vm.guest_ips = vec!["10.0.0.5".into()];
    vm.host = Some(MoRef::new("HostSystem", "host-21"));
    vm.datastores = vec![MoRef::new("Datastore", "datastore-15")];
    vm.disks = vec![DiskInfo {
        key: 2000,
        capacity_bytes: 10 << 30,
        file: format!("[LocalDS_0] {name}/{name}.vmdk"),
        datastore: Some(MoRef::new("Datastore", "datastore-15")),
        controller_key: Some(1000),
        unit_number: Some(0),
        label: Some("Hard disk 1".into()),
    }];
    vm.nics = vec![NicInfo {
        key: 4000,
        adapter: "VirtualVmxnet3".into(),
        mac_address: Some("00:50:56:aa:bb:cc".into()),
        network: Some("VM Network".into()),
        network_ref: None,
        connected: Some(true),
    }];
    vm
}

fn new_vcenter() -> NewVcenter {
    NewVcenter {
        url: "https://vc.test.invalid".into(),
        username: "administrator@vsphere.local".into(),
        password: PASSWORD.into(),
        thumbprint: THUMBPRINT.into(),
    }
}

fn query(name: Option<&str>, power: Option<&str>) -> VmQuery {
    VmQuery {
        name: name.map(str::to_string),
        power_state: power.map(str::to_string),
        limit: None,
        offset: None,
    }
}

fn names(page: &Page<VcenterVm>) -> Vec<&str> {
    page.items.iter().map(|v| v.name.as_str()).collect()
}

/// An agent registration as a future agent writes it: with the BIOS UUID it read.
fn register_agent(state: &State, id: &str, bios_uuid: Option<&str>, revoked: bool) {
    let record = serde_json::json!({
        "hostname": id, "registered_at": "2025-01-01T00:00:00Z", "revoked": revoked,
        "last_seen": null, "bios_uuid": bios_uuid,
    });
    state
        .db()
        .open_tree("agents")
        .unwrap()
        .insert(id, encode_record(record.to_string().as_bytes()))
        .unwrap();
}

#[actix_rt::test]
async fn the_sink_keeps_the_inventory_that_lists_serve() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeVcenter::new();
    let (vcenters, _state) = vcenters_in(dir.path(), &fake);
    let id = vcenters.add(&admin(), "l", new_vcenter()).await.unwrap().id;
    let sink = Sink(vcenters.clone());
    let all: Vec<VmInfo> = (1..=250)
        .map(|i| {
            let power = if i % 5 == 0 {
                PowerState::PoweredOff
            } else {
                PowerState::PoweredOn
            };
            vm(&format!("vm-{i}"), &format!("app-{i:03}"), power)
        })
        .collect();
    sink.replace_all(&id, all).unwrap();
    let view = vcenters.get(&id).unwrap();
    assert_eq!(view.vm_count, 250);
    assert!(view.last_sync.is_some());

    let first = vcenters.vms(&id, &query(None, None)).unwrap();
    assert_eq!(
        (first.total, first.items.len(), first.limit),
        (250, 100, 100)
    );
    assert_eq!(first.items[0].name, "app-001");
    let vm1 = &first.items[0];
    assert_eq!(vm1.moref, "vm-1");
    assert_eq!(vm1.vcenter_id, id);
    assert_eq!(vm1.power_state, "poweredOn");
    assert_eq!(vm1.host.as_deref(), Some("host-21"));
    assert_eq!(vm1.datastores, ["datastore-15"]);
    assert_eq!(vm1.guest_ips, ["10.0.0.5"]);
    assert_eq!(vm1.disks[0].capacity_bytes, 10 << 30);
    assert_eq!(vm1.disks[0].file, "[LocalDS_0] app-001/app-001.vmdk");
    assert_eq!(
        vm1.nics[0].mac_address.as_deref(),
        Some("00:50:56:aa:bb:cc")
    );
    assert_eq!(vm1.agent_id, None);
    let last = vcenters
        .vms(
            &id,
            &VmQuery {
                offset: Some(200),
                ..query(None, None)
            },
        )
        .unwrap();
    assert_eq!(last.items.len(), 50);
    assert_eq!(last.items[49].name, "app-250");

    let off = vcenters.vms(&id, &query(None, Some("poweredOff"))).unwrap();
    assert_eq!(off.total, 50);
    assert!(off.items.iter().all(|v| v.power_state == "poweredOff"));
    let named = vcenters.vms(&id, &query(Some("APP-10"), None)).unwrap();
    assert_eq!(
        names(&named),
        [
            "app-100", "app-101", "app-102", "app-103", "app-104", "app-105", "app-106", "app-107",
            "app-108", "app-109"
        ]
    );
    let both = vcenters
        .vms(&id, &query(Some("app-10"), Some("poweredOff")))
        .unwrap();
    assert_eq!(names(&both), ["app-100", "app-105"]);

    // Incremental changes, and a full list that drops what is gone.
    sink.upsert(&id, vm("vm-1", "renamed", PowerState::Suspended))
        .unwrap();
    sink.remove(&id, "vm-2").unwrap();
    let detail = vcenters.vm(&id, "vm-1").unwrap();
    assert_eq!(
        (detail.name.as_str(), detail.power_state.as_str()),
        ("renamed", "suspended")
    );
    assert!(matches!(
        vcenters.vm(&id, "vm-2"),
        Err(MgmtError::NotFound(_))
    ));
    sink.replace_all(&id, vec![vm("vm-7", "only", PowerState::PoweredOn)])
        .unwrap();
    let page = vcenters.vms(&id, &query(None, None)).unwrap();
    assert_eq!(names(&page), ["only"]);

    // Bad queries and unknown names.
    for bad in [
        query(None, Some("on")),
        VmQuery {
            limit: Some(0),
            ..query(None, None)
        },
    ] {
        let err = vcenters.vms(&id, &bad).unwrap_err();
        assert!(matches!(err, MgmtError::InvalidField { .. }), "{err:?}");
    }
    assert!(matches!(
        vcenters.vms("nope", &query(None, None)),
        Err(MgmtError::NotFound(_))
    ));
    assert!(matches!(
        vcenters.vm("nope", "vm-7"),
        Err(MgmtError::NotFound(_))
    ));

    // Removing the vCenter removes its inventory; late reports about it are ignored.
    vcenters.remove(&admin(), "l", &id).await.unwrap();
    sink.replace_all(&id, vec![vm("vm-8", "late", PowerState::PoweredOn)])
        .unwrap();
    sink.upsert(&id, vm("vm-9", "later", PowerState::PoweredOn))
        .unwrap();
    assert_eq!(vcenters.inner.vms.len(), 0);
}

#[actix_rt::test]
async fn registered_agents_are_matched_by_bios_uuid() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeVcenter::new();
    let (vcenters, state) = vcenters_in(dir.path(), &fake);
    let id = vcenters.add(&admin(), "l", new_vcenter()).await.unwrap().id;
    let mut db = vm("vm-1", "db", PowerState::PoweredOn);
    db.bios_uuid = Some(BIOS.to_uppercase());
    let mut web = vm("vm-2", "web", PowerState::PoweredOn);
    web.bios_uuid = Some("4221c7d8-0f6b-1a2b-3c4d-000000000002".into());
    let mut old = vm("vm-3", "old", PowerState::PoweredOn);
    old.bios_uuid = Some("4221c7d8-0f6b-1a2b-3c4d-000000000003".into());
    Sink(vcenters.clone())
        .replace_all(&id, vec![db, web, old])
        .unwrap();

    // Today's agents send no BIOS UUID: nothing matches, nothing fails.
    register_agent(&state, "agent-plain", None, false);
    register_agent(&state, "agent-garbage", Some("not a uuid"), false);
    let page = vcenters.vms(&id, &query(None, None)).unwrap();
    assert!(page.items.iter().all(|v| v.agent_id.is_none()));

    register_agent(&state, "agent-db", Some(BIOS), false);
    register_agent(
        &state,
        "agent-web",
        Some("D8C72142-6B0F-2B1A-3C4D-000000000002"),
        false,
    );
    register_agent(
        &state,
        "agent-old",
        Some("4221c7d8-0f6b-1a2b-3c4d-000000000003"),
        true,
    );
    let page = vcenters.vms(&id, &query(None, None)).unwrap();
    let agent = |name: &str| {
        page.items
            .iter()
            .find(|v| v.name == name)
            .and_then(|v| v.agent_id.clone())
    };
    assert_eq!(agent("db").as_deref(), Some("agent-db"));
    assert_eq!(
        agent("web").as_deref(),
        Some("agent-web"),
        "byte-swapped SMBIOS form"
    );
    assert_eq!(agent("old"), None, "revoked agents do not count");
    assert_eq!(
        vcenters.vm(&id, "vm-1").unwrap().agent_id.as_deref(),
        Some("agent-db")
    );
    assert_eq!(BIOS_SWAPPED.len(), BIOS.len());
}

#[actix_rt::test]
async fn discovery_follows_a_vcenter_and_waits_for_a_fixed_credential() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeVcenter::new();
    *fake.vms.lock().unwrap() = vec![
        vm("vm-1", "db", PowerState::PoweredOn),
        vm("vm-2", "web", PowerState::PoweredOn),
    ];
    let (vcenters, state) = vcenters_in(dir.path(), &fake);
    vcenters.start_discovery().unwrap();
    let id = vcenters.add(&admin(), "l", new_vcenter()).await.unwrap().id;
    let listed = |vcenters: &Vcenters| {
        names(&vcenters.vms(&id, &query(None, None)).unwrap())
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };
    eventually("the first inventory", || listed(&vcenters) == ["db", "web"]).await;
    fake.push(Change::Upsert(Box::new(vm(
        "vm-3",
        "created",
        PowerState::PoweredOff,
    ))));
    eventually("an incremental change", || {
        listed(&vcenters) == ["created", "db", "web"]
    })
    .await;

    // The vCenter's password changes while the vCenter is down.
    fake.up.store(false, Ordering::SeqCst);
    fake.changed.notify_waiters();
    eventually("unhealthy, retrying", || {
        vcenters.get(&id).unwrap().health == HealthState::Unhealthy
    })
    .await;
    *fake.password.lock().unwrap() = "rotated".into();
    fake.up.store(true, Ordering::SeqCst);
    eventually("the refused login", || {
        vcenters
            .get(&id)
            .unwrap()
            .last_error
            .is_some_and(|e| e.contains("update the credential"))
    })
    .await;
    assert!(!vcenters.record(&id).unwrap().unwrap().retrying);
    // The inventory stays readable meanwhile.
    assert_eq!(listed(&vcenters), ["created", "db", "web"]);

    fake.vms
        .lock()
        .unwrap()
        .push(vm("vm-4", "while-refused", PowerState::PoweredOn));
    let update = VcenterUpdate {
        password: Some("rotated".into()),
        ..VcenterUpdate::default()
    };
    vcenters.update(&admin(), "l", &id, update).await.unwrap();
    eventually("the sync with the new password", || {
        listed(&vcenters) == ["db", "web", "while-refused"]
    })
    .await;
    assert_eq!(vcenters.get(&id).unwrap().health, HealthState::Ok);
    let audit = state.recent_audit(100).unwrap();
    assert!(audit.iter().any(|e| e.event == "vcenter_unhealthy"));

    // A restart finds the stored vCenter and follows it again.
    vcenters.stop_discovery().await;
    let logins = fake.logins.load(Ordering::SeqCst);
    vcenters.start_discovery().unwrap();
    eventually("a login after the restart", || {
        fake.logins.load(Ordering::SeqCst) > logins
    })
    .await;

    vcenters.remove(&admin(), "l", &id).await.unwrap();
    assert_eq!(vcenters.inner.vms.len(), 0);
    vcenters.stop_discovery().await;
}
