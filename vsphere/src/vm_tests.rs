use std::sync::Arc;

use super::*;
use crate::task::tests::{
    assert_request_matches, assert_same_xml, replay_client, sample, Req, Resp,
};
use crate::xml::Limits;

fn failback_spec() -> VmCreateSpec {
    VmCreateSpec {
        name: "failback-web01".into(),
        guest_id: "otherLinux64Guest".into(),
        num_cpus: 2,
        memory_mb: 2048,
        datastore: "LocalDS_0".into(),
        disks: vec![DiskSpec {
            capacity_kb: 10485760,
        }],
        nics: vec![],
        extra_config: vec![("SET.guest.ipAddress".into(), "192.0.2.20".into())],
    }
}

#[test]
fn create_vm_request_matches_the_recorded_one() {
    let req = create_vm_request(
        &MoRef::new("Folder", "folder-3"),
        &failback_spec(),
        &MoRef::new("ResourcePool", "resgroup-15"),
        None,
    )
    .unwrap();
    assert_request_matches(req.finish().unwrap(), "20-createvm-task.request.xml");
}

#[test]
fn create_vm_request_with_nics_host_and_many_disks() {
    let mut spec = failback_spec();
    spec.disks = vec![DiskSpec { capacity_kb: 1024 }; 9];
    spec.nics = vec![
        NicSpec {
            network: "VM Network".into(),
            adapter: NicAdapter::Vmxnet3,
        },
        NicSpec {
            network: "DR & <test>".into(),
            adapter: NicAdapter::E1000e,
        },
    ];
    let body = create_vm_request(
        &MoRef::new("Folder", "f"),
        &spec,
        &MoRef::new("ResourcePool", "p"),
        Some(&MoRef::new("HostSystem", "host-1")),
    )
    .unwrap()
    .finish()
    .unwrap();
    let root = crate::xml::parse(body.as_bytes(), &Limits::default()).unwrap();
    let call = &root.child("Body").unwrap().children[0];
    let config = call.child("config").unwrap();
    let units: Vec<&str> = config
        .children_named("deviceChange")
        .filter_map(|d| d.child("device"))
        .filter(|d| d.xsi_type() == Some("VirtualDisk"))
        .map(|d| d.child_text("unitNumber").unwrap())
        .collect();
    // Unit 7 belongs to the controller.
    assert_eq!(units, ["0", "1", "2", "3", "4", "5", "6", "8", "9"]);
    let nics: Vec<(&str, &str)> = config
        .children_named("deviceChange")
        .filter_map(|d| d.child("device"))
        .filter(|d| d.child("addressType").is_some())
        .map(|d| {
            (
                d.xsi_type().unwrap(),
                d.child("backing")
                    .unwrap()
                    .child_text("deviceName")
                    .unwrap(),
            )
        })
        .collect();
    assert_eq!(
        nics,
        [
            ("VirtualVmxnet3", "VM Network"),
            ("VirtualE1000e", "DR & <test>")
        ]
    );
    // Schema order: config, pool, host.
    let order: Vec<&str> = call.children.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(order, ["_this", "config", "pool", "host"]);
    let config_order: Vec<&str> = config.children.iter().map(|c| c.name.as_str()).collect();
    let first_extra = config_order
        .iter()
        .position(|n| *n == "extraConfig")
        .unwrap();
    let last_device = config_order
        .iter()
        .rposition(|n| *n == "deviceChange")
        .unwrap();
    assert!(last_device < first_extra, "{config_order:?}");
}

#[test]
fn create_vm_rejects_bad_specs() {
    let folder = MoRef::new("Folder", "f");
    let pool = MoRef::new("ResourcePool", "p");
    let cases: &[fn(&mut VmCreateSpec)] = &[
        |s| s.name = String::new(),
        |s| s.name = "   ".into(),
        |s| s.name = "x".repeat(81),
        |s| s.name = "a\u{1}b".into(),
        |s| s.guest_id = String::new(),
        |s| s.num_cpus = 0,
        |s| s.memory_mb = 0,
        |s| s.datastore = String::new(),
        |s| s.datastore = "ds] evil [x".into(),
        |s| s.disks = vec![DiskSpec { capacity_kb: 0 }],
        |s| s.disks = vec![DiskSpec { capacity_kb: 1 }; MAX_DISKS + 1],
        |s| {
            s.nics = vec![
                NicSpec {
                    network: "n".into(),
                    adapter: NicAdapter::E1000
                };
                MAX_NICS + 1
            ]
        },
        |s| {
            s.nics = vec![NicSpec {
                network: "".into(),
                adapter: NicAdapter::E1000,
            }]
        },
        |s| s.extra_config = vec![(" ".into(), "v".into())],
    ];
    for (i, change) in cases.iter().enumerate() {
        let mut spec = failback_spec();
        change(&mut spec);
        assert!(
            matches!(
                create_vm_request(&folder, &spec, &pool, None),
                Err(VsphereError::InvalidInput { .. })
            ),
            "case {i}: {spec:?}"
        );
    }
    // Text XML cannot carry fails when the request is finished, before anything is sent.
    let mut spec = failback_spec();
    spec.extra_config = vec![("k".into(), "a\u{0}b".into())];
    let req = create_vm_request(&folder, &spec, &pool, None).unwrap();
    assert!(matches!(
        req.finish(),
        Err(VsphereError::InvalidInput { .. })
    ));
}

#[test]
fn reconfigure_and_snapshot_requests_match_the_recorded_ones() {
    let spec = ReconfigSpec {
        extra_config: vec![
            ("SET.guest.ipAddress".into(), "192.0.2.10".into()),
            ("SET.guest.hostName".into(), "web01".into()),
        ],
        ..ReconfigSpec::default()
    };
    let vm = MoRef::new("VirtualMachine", "vm-36");
    assert_request_matches(
        reconfigure_request(&vm, &spec).unwrap().finish().unwrap(),
        "06-reconfigvm-task-set-guest-ipaddress.request.xml",
    );
    assert_request_matches(
        create_snapshot_request(&vm, "asr-repl-1", "replication point", false, true)
            .unwrap()
            .finish()
            .unwrap(),
        "09-createsnapshot-task.request.xml",
    );
    assert!(matches!(
        create_snapshot_request(&vm, "", "", false, false),
        Err(VsphereError::InvalidInput { .. })
    ));
}

#[test]
fn reconfigure_writes_fields_in_schema_order_and_checks_them() {
    let vm = MoRef::new("VirtualMachine", "vm-1");
    let spec = ReconfigSpec {
        name: Some("renamed".into()),
        annotation: Some("note".into()),
        num_cpus: Some(4),
        memory_mb: Some(4096),
        extra_config: vec![("a".into(), "b".into())],
        change_tracking: Some(true),
    };
    let body = reconfigure_request(&vm, &spec).unwrap().finish().unwrap();
    let root = crate::xml::parse(body.as_bytes(), &Limits::default()).unwrap();
    let s = root.child("Body").unwrap().children[0]
        .child("spec")
        .unwrap();
    let order: Vec<&str> = s.children.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        order,
        [
            "name",
            "annotation",
            "numCPUs",
            "memoryMB",
            "extraConfig",
            "changeTrackingEnabled"
        ]
    );
    for bad in [
        ReconfigSpec {
            name: Some(String::new()),
            ..ReconfigSpec::default()
        },
        ReconfigSpec {
            num_cpus: Some(0),
            ..ReconfigSpec::default()
        },
        ReconfigSpec {
            memory_mb: Some(0),
            ..ReconfigSpec::default()
        },
        ReconfigSpec {
            extra_config: vec![(String::new(), "x".into())],
            ..ReconfigSpec::default()
        },
    ] {
        assert!(
            matches!(
                reconfigure_request(&vm, &bad),
                Err(VsphereError::InvalidInput { .. })
            ),
            "{bad:?}"
        );
    }
}

/// A replay server answering `method` with the recorded response `response` and every task
/// poll with "success" (sample 07, or 20b when the task made a VM).
async fn task_server(
    method: &'static str,
    response: &'static str,
    poll: &'static str,
) -> (Client, crate::task::tests::Replay) {
    replay_client(Arc::new(move |req: &Req| match req.soap.as_deref() {
        Some(m) if m == method => Resp::sample(response),
        Some("RetrievePropertiesEx") => Resp::sample(poll),
        other => panic!("unexpected call {other:?}"),
    }))
    .await
}

fn sent(server: &crate::task::tests::Replay, method: &str, sample_name: &str) {
    let calls = server.calls(method);
    assert_eq!(calls.len(), 1, "{method}");
    let expected = crate::xml::parse(sample(sample_name).as_bytes(), &Limits::default()).unwrap();
    assert_same_xml(&calls[0].envelope(), &expected, "");
}

#[tokio::test]
async fn create_vm_returns_the_new_vm() {
    let (client, server) = task_server(
        "CreateVM_Task",
        "20-createvm-task.response.xml",
        "20b-createvm-task-result.response.xml",
    )
    .await;
    let vm = client
        .create_vm(
            &MoRef::new("Folder", "folder-3"),
            &failback_spec(),
            &MoRef::new("ResourcePool", "resgroup-15"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(vm, MoRef::new("VirtualMachine", "vm-46"));
    sent(&server, "CreateVM_Task", "20-createvm-task.request.xml");
    assert_eq!(server.calls("RetrievePropertiesEx").len(), 1);
}

#[tokio::test]
async fn power_rename_and_remove_snapshot_send_the_recorded_requests() {
    let (client, server) = task_server(
        "PowerOnVM_Task",
        "21-poweronvm-task.response.xml",
        "07-poll-task-info-state.response.xml",
    )
    .await;
    client
        .power_on(&MoRef::new("VirtualMachine", "vm-46"))
        .await
        .unwrap();
    sent(&server, "PowerOnVM_Task", "21-poweronvm-task.request.xml");

    let (client, server) = task_server(
        "Rename_Task",
        "27-rename-task-specific-vm-name.response.xml",
        "07-poll-task-info-state.response.xml",
    )
    .await;
    let vm39 = MoRef::new("VirtualMachine", "vm-39");
    client.rename(&vm39, "db01").await.unwrap();
    sent(
        &server,
        "Rename_Task",
        "27-rename-task-specific-vm-name.request.xml",
    );
    assert!(matches!(
        client.rename(&vm39, "").await,
        Err(VsphereError::InvalidInput { .. })
    ));

    let (client, server) = task_server(
        "RemoveSnapshot_Task",
        "13-removesnapshot-task.response.xml",
        "07-poll-task-info-state.response.xml",
    )
    .await;
    client
        .remove_snapshot(
            &MoRef::new("VirtualMachineSnapshot", "snapshot-43"),
            false,
            true,
        )
        .await
        .unwrap();
    sent(
        &server,
        "RemoveSnapshot_Task",
        "13-removesnapshot-task.request.xml",
    );
}

#[tokio::test]
async fn create_snapshot_needs_a_snapshot_back() {
    // The recorded poll of a finished task without a result: a CreateSnapshot task must
    // return the snapshot, so this is malformed.
    let (client, _server) = task_server(
        "CreateSnapshot_Task",
        "09-createsnapshot-task.response.xml",
        "07-poll-task-info-state.response.xml",
    )
    .await;
    let err = client
        .create_snapshot(
            &MoRef::new("VirtualMachine", "vm-36"),
            "asr-repl-1",
            "replication point",
            false,
            true,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, VsphereError::Malformed { .. }), "{err:?}");
}

#[test]
fn find_by_inventory_path_answers() {
    let parse = |inner: &str| {
        let xml = crate::task::tests::envelope(inner);
        let resp = crate::soap::decode_response(
            200,
            xml.as_bytes(),
            "FindByInventoryPath",
            &Limits::default(),
        )
        .unwrap();
        parse_optional_moref(resp)
    };
    assert_eq!(
        parse(r#"<FindByInventoryPathResponse xmlns="urn:vim25"><returnval type="Folder">group-4</returnval></FindByInventoryPathResponse>"#).unwrap(),
        Some(MoRef::new("Folder", "group-4"))
    );
    assert_eq!(
        parse(r#"<FindByInventoryPathResponse xmlns="urn:vim25"/>"#).unwrap(),
        None
    );
    assert!(matches!(
        parse(
            r#"<FindByInventoryPathResponse xmlns="urn:vim25"><returnval>group-4</returnval></FindByInventoryPathResponse>"#
        ),
        Err(VsphereError::Malformed { .. })
    ));
}
