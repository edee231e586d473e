use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::soap::decode_response;
use crate::task::tests::{assert_same_xml, envelope, replay_client, sample, Req, Resp};
use crate::xml::Limits;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[test]
fn datetimes_are_utc_xsd() {
    assert_eq!(xsd_datetime(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    assert_eq!(xsd_datetime(at(1795675078)), "2026-11-26T06:37:58Z");
    assert_eq!(xsd_datetime(at(1709251199)), "2024-02-29T23:59:59Z");
    assert_eq!(xsd_datetime(at(951868800)), "2000-03-01T00:00:00Z");
    assert_eq!(xsd_datetime(at(4133937600)), "2100-12-31T12:00:00Z");
    // Fractions are cut; times before 1970 become 1970.
    assert_eq!(
        xsd_datetime(at(59) + Duration::from_millis(999)),
        "1970-01-01T00:00:59Z"
    );
    assert_eq!(
        xsd_datetime(UNIX_EPOCH - Duration::from_secs(5)),
        "1970-01-01T00:00:00Z"
    );
}

fn parse(xml: &str) -> Element {
    crate::xml::parse(xml.as_bytes(), &Limits::default()).unwrap()
}

#[test]
fn the_entity_filter_matches_the_recorded_request() {
    let filter = EventFilter {
        entity: Some((MoRef::new("VirtualMachine", "vm-46"), Recursion::OnlySelf)),
        ..EventFilter::default()
    };
    let body = create_collector_request(&MoRef::new("EventManager", "EventManager"), &filter)
        .unwrap()
        .finish()
        .unwrap();
    let mut built = parse(&body);
    // The recording did not ask for full messages; everything else is the same.
    let f = &mut built.children[0].children[0].children[1];
    assert_eq!(f.name, "filter");
    let flag = f.children.remove(1);
    assert_eq!(
        (flag.name.as_str(), flag.text.as_str()),
        ("disableFullMessage", "false")
    );
    assert_same_xml(
        &built,
        &parse(&sample("24-createcollectorforevents.request.xml")),
        "",
    );
}

#[test]
fn a_full_filter_is_in_schema_order_and_bad_filters_are_refused() {
    let em = MoRef::new("EventManager", "EventManager");
    let filter = EventFilter {
        entity: Some((MoRef::new("Folder", "group-d1"), Recursion::All)),
        event_types: vec!["VmCreatedEvent".into(), "VmPoweredOnEvent".into()],
        begin_time: Some(at(1795675078)),
        end_time: Some(at(1795675079)),
    };
    let body = create_collector_request(&em, &filter)
        .unwrap()
        .finish()
        .unwrap();
    let root = parse(&body);
    let f = root.child("Body").unwrap().children[0]
        .child("filter")
        .unwrap();
    let order: Vec<&str> = f.children.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        order,
        [
            "entity",
            "time",
            "disableFullMessage",
            "eventTypeId",
            "eventTypeId"
        ]
    );
    assert_eq!(
        f.child("entity").unwrap().child_text("recursion"),
        Some("all")
    );
    let time = f.child("time").unwrap();
    assert_eq!(time.child_text("beginTime"), Some("2026-11-26T06:37:58Z"));
    assert_eq!(time.child_text("endTime"), Some("2026-11-26T06:37:59Z"));
    for bad in [
        EventFilter {
            event_types: vec![" ".into()],
            ..EventFilter::default()
        },
        EventFilter {
            begin_time: Some(at(10)),
            end_time: Some(at(9)),
            ..EventFilter::default()
        },
    ] {
        assert!(matches!(
            create_collector_request(&em, &bad),
            Err(VsphereError::InvalidInput { .. })
        ));
    }
    // No filter at all: every event.
    let body = create_collector_request(&em, &EventFilter::default())
        .unwrap()
        .finish()
        .unwrap();
    assert!(body.contains("<filter><disableFullMessage>false</disableFullMessage></filter>"));
}

fn events(xml: &str) -> Result<Vec<Event>, VsphereError> {
    parse_events(decode_response(
        200,
        xml.as_bytes(),
        "ReadNextEvents",
        &Limits::default(),
    )?)
}

#[test]
fn recorded_events_parse() {
    let list = events(&sample("26-readnextevents.response.xml")).unwrap();
    assert_eq!(
        list,
        [Event {
            key: 17,
            chain_id: Some(17),
            type_name: "VmInstanceUuidAssignedEvent".into(),
            event_type_id: None,
            created_time: "2026-11-26T06:37:58.983250291Z".into(),
            user: "user".into(),
            message: "Assign a new instance UUID (6f602618-228e-57e8-adc1-368837e471b7) to failback-web01".into(),
            vm: Some(MoRef::new("VirtualMachine", "vm-46")),
            vm_name: Some("failback-web01".into()),
            host: Some(MoRef::new("HostSystem", "host-31")),
            datacenter: Some(MoRef::new("Datacenter", "datacenter-2")),
        }]
    );
    // The end of the collector: no returnval.
    assert_eq!(
        events(&envelope(r#"<ReadNextEventsResponse xmlns="urn:vim25"/>"#)).unwrap(),
        []
    );
    // An EventEx carries its type id; an event without arguments has no VM.
    let ex = events(&envelope(
        r#"<ReadNextEventsResponse xmlns="urn:vim25" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><returnval xsi:type="EventEx"><key>5</key><createdTime>2026-01-01T00:00:00Z</createdTime><userName>u</userName><eventTypeId>com.example.thing</eventTypeId></returnval></ReadNextEventsResponse>"#,
    ))
    .unwrap();
    assert_eq!(ex[0].event_type_id.as_deref(), Some("com.example.thing"));
    assert_eq!((ex[0].vm.clone(), ex[0].chain_id), (None, None));
    for bad in [
        r#"<ReadNextEventsResponse xmlns="urn:vim25"><returnval><chainId>1</chainId></returnval></ReadNextEventsResponse>"#,
        r#"<ReadNextEventsResponse xmlns="urn:vim25"><returnval><key>x</key></returnval></ReadNextEventsResponse>"#,
    ] {
        assert!(matches!(
            events(&envelope(bad)),
            Err(VsphereError::Malformed { .. })
        ));
    }
}

#[tokio::test]
async fn collector_lifecycle_against_recorded_responses() {
    let (client, server) = replay_client(Arc::new(|req: &Req| match req.soap.as_deref() {
        Some("CreateCollectorForEvents") => {
            Resp::sample("24-createcollectorforevents.response.xml")
        }
        Some("SetCollectorPageSize") => {
            Resp::soap(r#"<SetCollectorPageSizeResponse xmlns="urn:vim25"/>"#)
        }
        Some("ReadNextEvents") => Resp::sample("26-readnextevents.response.xml"),
        Some("DestroyCollector") => Resp::soap(r#"<DestroyCollectorResponse xmlns="urn:vim25"/>"#),
        other => panic!("unexpected {other:?}"),
    }))
    .await;
    let filter = EventFilter {
        entity: Some((MoRef::new("VirtualMachine", "vm-46"), Recursion::OnlySelf)),
        ..EventFilter::default()
    };
    let collector = client.create_collector_for_events(&filter).await.unwrap();
    assert_eq!(collector.kind, "EventHistoryCollector");
    client
        .set_collector_page_size(&collector, 100)
        .await
        .unwrap();
    let list = client.read_next_events(&collector, 2).await.unwrap();
    assert_eq!(list[0].vm, Some(MoRef::new("VirtualMachine", "vm-46")));
    client.destroy_collector(&collector).await.unwrap();
    let read = &server.calls("ReadNextEvents")[0];
    assert_same_xml(
        &read.envelope(),
        &parse(&sample("26-readnextevents.request.xml")),
        "",
    );
    // Counts out of range never reach the server.
    for n in [0, -1, MAX_EVENTS_PER_READ + 1] {
        assert!(matches!(
            client.read_next_events(&collector, n).await,
            Err(VsphereError::InvalidInput { .. })
        ));
        assert!(matches!(
            client.set_collector_page_size(&collector, n).await,
            Err(VsphereError::InvalidInput { .. })
        ));
    }
    assert_eq!(server.calls("ReadNextEvents").len(), 1);
}
