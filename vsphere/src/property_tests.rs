use super::*;
use crate::client::parse_moref;
use crate::soap::decode_response;
use crate::xml::Limits;

fn response(xml: &str) -> Element {
    let root = crate::xml::parse(xml.as_bytes(), &Limits::default()).unwrap();
    let method = root.child("Body").unwrap().children[0]
        .name
        .strip_suffix("Response")
        .unwrap()
        .to_string();
    decode_response(200, xml.as_bytes(), &method, &Limits::default()).unwrap()
}

fn retrieve(xml: &str) -> Result<RetrieveResult, VsphereError> {
    parse_retrieve_result(response(xml))
}

fn one(xml: &str) -> ObjectContent {
    let mut r = retrieve(xml).unwrap();
    assert_eq!(r.objects.len(), 1);
    assert_eq!(r.token, None);
    r.objects.remove(0)
}

#[test]
fn current_session_and_its_not_authenticated_shape() {
    let o = one(include_str!(
        "../tests/samples/03-currentsession-with-cookie.response.xml"
    ));
    assert_eq!(o.obj, MoRef::new("SessionManager", "SessionManager"));
    let session = o.get("currentSession").unwrap();
    assert_eq!(session.type_name(), Some("UserSession"));
    assert_eq!(
        session.field("userName").and_then(Value::as_str),
        Some("user")
    );
    assert_eq!(session.field("callCount").and_then(Value::as_i64), Some(2));
    // vcsim answers 200 with a NotAuthenticated missingSet: that is NotAuthenticated, not data.
    assert!(matches!(
        retrieve(include_str!(
            "../tests/samples/03a-nosession-notauthenticated.response.xml"
        )),
        Err(VsphereError::NotAuthenticated)
    ));
}

#[test]
fn vms_through_a_container_view() {
    let r = retrieve(include_str!(
        "../tests/samples/05-retrievepropertiesex-containerview-vms.response.xml"
    ))
    .unwrap();
    assert_eq!(r.token, None);
    let names: Vec<_> = r
        .objects
        .iter()
        .map(|o| o.get("name").and_then(Value::as_str).unwrap())
        .collect();
    assert_eq!(names, ["DC0_C0_RP0_VM0", "DC0_C0_RP0_VM1"]);
    let vm0 = &r.objects[0];
    assert_eq!(vm0.obj, MoRef::new("VirtualMachine", "vm-36"));
    assert_eq!(
        vm0.get("runtime.powerState"),
        Some(&Value::Enum {
            type_name: "VirtualMachinePowerState".into(),
            value: "poweredOn".into()
        })
    );
    let devices = vm0
        .get("config.hardware.device")
        .and_then(Value::as_array)
        .unwrap();
    assert_eq!(devices[0].type_name(), Some("VirtualDisk"));
    assert_eq!(
        devices[0].field("key").and_then(Value::as_i64),
        Some(255511522)
    );
    assert_eq!(
        devices[0].path("backing.fileName").and_then(Value::as_str),
        Some("[LocalDS_0] DC0_C0_RP0_VM0/disk1.vmdk")
    );
    assert_eq!(
        devices[0].path("backing").and_then(Value::type_name),
        Some("VirtualDiskFlatVer2BackingInfo")
    );
    assert_eq!(
        devices[0]
            .path("backing.datastore")
            .and_then(Value::as_moref),
        Some(&MoRef::new(
            "Datastore",
            "/tmp/govcsim-DC0-LocalDS_0-2116778149@folder-5"
        ))
    );
}

#[test]
fn tasks_guest_snapshot_and_event_properties() {
    let task = one(include_str!(
        "../tests/samples/07-poll-task-info-state.response.xml"
    ));
    assert_eq!(
        task.get("info.state").and_then(Value::as_str),
        Some("success")
    );
    assert_eq!(task.get("info.error"), None, "unset properties are absent");
    let guest = one(include_str!(
        "../tests/samples/08-vm-guest-after-set.response.xml"
    ));
    assert_eq!(
        guest.get("guest.ipAddress").and_then(Value::as_str),
        Some("192.0.2.10")
    );
    assert_eq!(
        guest.get("guest.hostName").and_then(Value::as_str),
        Some("web01")
    );
    let snap = one(include_str!(
        "../tests/samples/12-vm-snapshot-property.response.xml"
    ));
    let info = snap.get("snapshot").unwrap();
    assert_eq!(
        info.field("currentSnapshot").and_then(Value::as_moref),
        Some(&MoRef::new("VirtualMachineSnapshot", "snapshot-43"))
    );
    assert_eq!(
        info.path("rootSnapshotList.name").and_then(Value::as_str),
        Some("asr-repl-1")
    );
    assert_eq!(
        info.path("rootSnapshotList.quiesced")
            .and_then(Value::as_bool),
        Some(true)
    );
    let created = one(include_str!(
        "../tests/samples/20b-createvm-task-result.response.xml"
    ));
    assert_eq!(
        created.get("info.result").and_then(Value::as_moref),
        Some(&MoRef::new("VirtualMachine", "vm-46"))
    );
    // A task's error is a LocalizedMethodFault whose fault becomes the typed error.
    let failed = crate::xml::parse(
        include_str!("../tests/samples/21b-poweronvm-task-again-invalidpowerstate.response.xml")
            .as_bytes(),
        &Limits::default(),
    )
    .unwrap();
    let fault_el = find(&failed, "fault").unwrap();
    match VsphereError::from_fault(fault_el, "") {
        VsphereError::InvalidPowerState {
            requested,
            existing,
        } => {
            assert_eq!(requested.as_deref(), Some("poweredOn"));
            assert_eq!(existing.as_deref(), Some("poweredOn"));
        }
        e => panic!("{e:?}"),
    }
    let error = one(include_str!(
        "../tests/samples/21b-poweronvm-task-again-invalidpowerstate.response.xml"
    ));
    let error = error.get("info.error").unwrap();
    assert_eq!(error.type_name(), Some("LocalizedMethodFault"));
    assert_eq!(
        error.path("fault").and_then(Value::type_name),
        Some("InvalidPowerState")
    );
    let new_vm = one(include_str!(
        "../tests/samples/22-new-vm-properties.response.xml"
    ));
    assert_eq!(
        new_vm.get("name").and_then(Value::as_str),
        Some("failback-web01")
    );
    let em = one(include_str!(
        "../tests/samples/23-retrievepropertiesex-eventmanager-latestevent.response.xml"
    ));
    assert_eq!(em.get("latestEvent"), None);
    assert_eq!(em.get("maxCollector"), Some(&Value::Int(1000)));
    let page = one(include_str!(
        "../tests/samples/25-eventhistorycollector-latestpage.response.xml"
    ));
    let events = page.get("latestPage").and_then(Value::as_array).unwrap();
    assert_eq!(events[0].type_name(), Some("VmPoweredOnEvent"));
    assert_eq!(
        events[0].path("vm.vm").and_then(Value::as_moref),
        Some(&MoRef::new("VirtualMachine", "vm-46"))
    );
}

fn find<'a>(el: &'a Element, name: &str) -> Option<&'a Element> {
    if el.name == name && el.xsi_type.is_some() {
        return Some(el);
    }
    el.children.iter().find_map(|c| find(c, name))
}

#[test]
fn morefs_returned_by_methods() {
    for (xml, expected) in [
        (
            include_str!("../tests/samples/04-createcontainerview.response.xml"),
            "ContainerView",
        ),
        (
            include_str!("../tests/samples/06-reconfigvm-task-set-guest-ipaddress.response.xml"),
            "Task",
        ),
        (
            include_str!("../tests/samples/09-createsnapshot-task.response.xml"),
            "Task",
        ),
        (
            include_str!("../tests/samples/10-createfilter-on-task.response.xml"),
            "PropertyFilter",
        ),
        (
            include_str!("../tests/samples/13-removesnapshot-task.response.xml"),
            "Task",
        ),
        (
            include_str!("../tests/samples/20-createvm-task.response.xml"),
            "Task",
        ),
        (
            include_str!("../tests/samples/21-poweronvm-task.response.xml"),
            "Task",
        ),
        (
            include_str!("../tests/samples/24-createcollectorforevents.response.xml"),
            "EventHistoryCollector",
        ),
        (
            include_str!("../tests/samples/27-rename-task-specific-vm-name.response.xml"),
            "Task",
        ),
    ] {
        let m = parse_moref(response(xml)).unwrap();
        assert_eq!(m.kind, expected);
        assert!(!m.value.is_empty());
    }
    // ReadNextEvents returns several typed returnvals; Logout returns nothing.
    let events = response(include_str!(
        "../tests/samples/26-readnextevents.response.xml"
    ));
    let first = Value::from_element(events.children.into_iter().next().unwrap()).unwrap();
    assert_eq!(first.type_name(), Some("VmInstanceUuidAssignedEvent"));
    assert_eq!(first.field("key").and_then(Value::as_i64), Some(17));
    assert!(
        response(include_str!("../tests/samples/28-logout.response.xml"))
            .children
            .is_empty()
    );
}

#[test]
fn updates_enter_modify_and_timeout() {
    let set = parse_update_set(response(include_str!(
        "../tests/samples/11-waitforupdatesex-task-state.response.xml"
    )))
    .unwrap()
    .unwrap();
    assert_eq!(set.version, "-");
    assert!(!set.truncated);
    let update = &set.filters[0].objects[0];
    assert_eq!(update.kind, ObjectUpdateKind::Enter);
    assert_eq!(update.obj, MoRef::new("Task", "task-42"));
    assert_eq!(update.changes.len(), 3);
    assert_eq!(update.changes[0].op, ChangeOp::Assign);
    assert_eq!(
        update.changes[0].val.as_ref().and_then(Value::as_str),
        Some("success")
    );
    assert_eq!(
        update.changes[1].val.as_ref().and_then(Value::as_moref),
        Some(&MoRef::new("VirtualMachineSnapshot", "snapshot-43"))
    );
    assert_eq!(update.changes[2].name, "info.error");
    assert_eq!(update.changes[2].val, None, "assigned nothing: unset");

    let modify = parse_update_set(response(include_str!(
        "../tests/samples/11b-waitforupdatesex-version-dash-vm-powerstate-modify.response.xml"
    )))
    .unwrap()
    .unwrap();
    let update = &modify.filters[0].objects[0];
    assert_eq!(update.kind, ObjectUpdateKind::Modify);
    assert_eq!(update.changes[0].name, "runtime.powerState");
    assert_eq!(
        update.changes[0].val.as_ref().and_then(Value::as_str),
        Some("poweredOff")
    );

    let empty = parse_update_set(response(include_str!(
        "../tests/samples/11c-waitforupdatesex-timeout-empty.response.xml"
    )))
    .unwrap();
    assert_eq!(empty, None);
}

fn wrap(method: &str, inner: &str) -> String {
    format!(
        r#"<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/" xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><e:Body><{method}Response xmlns="urn:vim25">{inner}</{method}Response></e:Body></e:Envelope>"#
    )
}

#[test]
fn tokens_missing_sets_and_bad_shapes() {
    let page = retrieve(&wrap(
        "RetrievePropertiesEx",
        r#"<returnval><token>2</token><objects><obj type="VirtualMachine">vm-1</obj><missingSet><path>guest.net</path><fault><fault i:type="NoPermission"/></fault></missingSet></objects></returnval>"#,
    ))
    .unwrap();
    assert_eq!(page.token.as_deref(), Some("2"));
    assert_eq!(
        page.objects[0].missing,
        [MissingProperty {
            path: "guest.net".into(),
            fault_type: "NoPermission".into()
        }]
    );
    assert_eq!(
        retrieve(&wrap("RetrievePropertiesEx", "")).unwrap(),
        RetrieveResult::default()
    );
    for bad in [
        r#"<returnval><objects><propSet><name>x</name></propSet></objects></returnval>"#,
        r#"<returnval><objects><obj>no-type</obj></objects></returnval>"#,
        r#"<returnval><objects><obj type="VirtualMachine">vm-1</obj><propSet><val>1</val></propSet></objects></returnval>"#,
        r#"<returnval><objects><obj type="VirtualMachine">vm-1</obj><propSet><name>n</name><val i:type="xsd:int" xmlns:xsd="http://www.w3.org/2001/XMLSchema">x</val></propSet></objects></returnval>"#,
    ] {
        assert!(
            matches!(
                retrieve(&wrap("RetrievePropertiesEx", bad)),
                Err(VsphereError::Malformed { .. })
            ),
            "{bad}"
        );
    }
    let updates = |inner: &str| parse_update_set(response(&wrap("WaitForUpdatesEx", inner)));
    for bad in [
        "<returnval/>",
        r#"<returnval><version>1</version><filterSet><objectSet><kind>enter</kind><obj type="VirtualMachine">vm-1</obj></objectSet></filterSet></returnval>"#,
        r#"<returnval><version>1</version><filterSet><filter type="PropertyFilter">f</filter><objectSet><kind>bogus</kind><obj type="VirtualMachine">vm-1</obj></objectSet></filterSet></returnval>"#,
        r#"<returnval><version>1</version><filterSet><filter type="PropertyFilter">f</filter><objectSet><kind>modify</kind><obj type="VirtualMachine">vm-1</obj><changeSet><name>name</name><op>replace</op></changeSet></objectSet></filterSet></returnval>"#,
    ] {
        assert!(
            matches!(updates(bad), Err(VsphereError::Malformed { .. })),
            "{bad}"
        );
    }
    let truncated = updates(
        r#"<returnval><version>7</version><truncated>true</truncated><filterSet><filter type="PropertyFilter">f</filter><objectSet><kind>leave</kind><obj type="VirtualMachine">vm-1</obj></objectSet><objectSet><kind>modify</kind><obj type="VirtualMachine">vm-2</obj><changeSet><name>config.hardware.device[2000]</name><op>remove</op></changeSet><changeSet><name>datastore</name><op>indirectRemove</op></changeSet><changeSet><name>guest.net</name><op>add</op></changeSet></objectSet></filterSet></returnval>"#,
    )
    .unwrap()
    .unwrap();
    assert!(truncated.truncated);
    assert_eq!(
        truncated.filters[0].objects[0].kind,
        ObjectUpdateKind::Leave
    );
    let ops: Vec<_> = truncated.filters[0].objects[1]
        .changes
        .iter()
        .map(|c| c.op)
        .collect();
    assert_eq!(
        ops,
        [ChangeOp::Remove, ChangeOp::IndirectRemove, ChangeOp::Add]
    );
    // A NotAuthenticated missingSet in an update is the session, not the property.
    assert!(matches!(
        updates(
            r#"<returnval><version>1</version><filterSet><filter type="PropertyFilter">f</filter><objectSet><kind>enter</kind><obj type="VirtualMachine">vm-1</obj><missingSet><path>name</path><fault><fault i:type="NotAuthenticated"/></fault></missingSet></objectSet></filterSet></returnval>"#
        ),
        Err(VsphereError::NotAuthenticated)
    ));
}

#[test]
fn filter_spec_with_all_properties() {
    let mut spec = FilterSpec::object(&MoRef::new("VirtualMachine", "vm-1"), &[]);
    spec.prop_set[0].all = true;
    let req = retrieve_request(&MoRef::new("PropertyCollector", "pc"), &[spec], Some(5));
    let xml = req.finish().unwrap();
    assert!(
        xml.contains("<propSet><type>VirtualMachine</type><all>true</all></propSet>"),
        "{xml}"
    );
    assert!(
        xml.contains("<options><maxObjects>5</maxObjects></options>"),
        "{xml}"
    );
}
