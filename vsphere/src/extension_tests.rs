use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::soap::decode_response;
use crate::task::tests::{
    assert_request_matches, assert_same_xml, replay_client, sample, Req, Resp,
};
use crate::xml::Limits;

const MANIFEST: &str = "https://ferry.example.com/vsphere-plugin/plugin.json";

fn ferry() -> Extension {
    Extension {
        key: "io.ferry.dr".into(),
        version: "1.2.0".into(),
        company: "Ferry".into(),
        label: "Ferry".into(),
        summary: "Disaster recovery replication for vSphere".into(),
        type_name: None,
        servers: vec![ExtensionServer {
            url: MANIFEST.into(),
            type_name: "MANIFEST_SERVER".into(),
            company: "Ferry".into(),
            label: "Ferry plugin manifest".into(),
            summary: "Remote plugin manifest served by the appliance".into(),
            admin_emails: vec!["ops@ferry.example.com".into()],
            // Any spelling; it goes out colon-separated and upper case.
            thumbprint: Some(
                "fb0c2e68bec23785530ecce49fa316a9f95379e30c3e0aae0e25ab95a5f7fedc".into(),
            ),
        }],
        clients: vec![ExtensionClient {
            version: "1.2.0".into(),
            type_name: "vsphere-client-remote".into(),
            company: "Ferry".into(),
            label: "Ferry".into(),
            summary: "Protect VMs from the vSphere Client".into(),
            url: MANIFEST.into(),
        }],
        shown_in_solution_manager: Some(false),
        last_heartbeat_time: None,
    }
}

fn manager() -> MoRef {
    MoRef::new("ExtensionManager", "ExtensionManager")
}

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1795675078)
}

#[test]
fn register_request_matches_the_reference() {
    let req = extension_request("RegisterExtension", &manager(), &ferry(), now()).unwrap();
    assert_request_matches(req.finish().unwrap(), "35-registerextension.request.xml");
}

#[test]
fn bad_extensions_are_refused() {
    for key in [
        "",
        " ",
        "io/ferry",
        "io,ferry",
        "a=b",
        "ferry\u{e9}",
        "tab\there",
        "q\"x",
    ] {
        assert!(check_extension_key(key).is_err(), "{key:?}");
        let ext = Extension {
            key: key.into(),
            ..ferry()
        };
        assert!(matches!(
            extension_request("RegisterExtension", &manager(), &ext, now()),
            Err(VsphereError::InvalidInput { .. })
        ));
    }
    check_extension_key("com.vmware.vim.sms 2-x_y").unwrap();
    let cases: &[fn(&mut Extension)] = &[
        |e| e.version = String::new(),
        |e| e.servers[0].url = "not a url".into(),
        |e| e.servers[0].url = "ftp://ferry/x".into(),
        |e| e.servers[0].admin_emails.clear(),
        |e| e.servers[0].thumbprint = Some("zz:zz".into()),
        |e| e.clients[0].url = "plugin.json".into(),
    ];
    for (i, change) in cases.iter().enumerate() {
        let mut ext = ferry();
        change(&mut ext);
        assert!(
            matches!(
                extension_request("RegisterExtension", &manager(), &ext, now()),
                Err(VsphereError::InvalidInput { .. })
            ),
            "case {i}"
        );
    }
    // A minimal extension: no servers, clients or company.
    let bare = Extension {
        key: "io.ferry.min".into(),
        version: "1".into(),
        ..Extension::default()
    };
    let body = extension_request("RegisterExtension", &manager(), &bare, now())
        .unwrap()
        .finish()
        .unwrap();
    assert!(body.contains("<extension><description><label></label><summary></summary></description><key>io.ferry.min</key><version>1</version><lastHeartbeatTime>"), "{body}");
}

fn found(xml: &str) -> Result<Option<Extension>, VsphereError> {
    parse_found(decode_response(
        200,
        xml.as_bytes(),
        "FindExtension",
        &Limits::default(),
    )?)
}

#[test]
fn find_answers_parse() {
    let ext = found(&sample("36-findextension.response.xml"))
        .unwrap()
        .unwrap();
    let mut expected = ferry();
    expected.servers[0].thumbprint = Some(
        "FB:0C:2E:68:BE:C2:37:85:53:0E:CC:E4:9F:A3:16:A9:F9:53:79:E3:0C:3E:0A:AE:0E:25:AB:95:A5:F7:FE:DC"
            .into(),
    );
    expected.last_heartbeat_time = Some("2026-11-26T06:37:58.512Z".into());
    assert_eq!(ext, expected);
    assert_eq!(
        found(&sample("36b-findextension-unknown-key.response.xml")).unwrap(),
        None
    );
    let keyless = crate::task::tests::envelope(
        r#"<FindExtensionResponse xmlns="urn:vim25"><returnval><version>1</version></returnval></FindExtensionResponse>"#,
    );
    assert!(matches!(
        found(&keyless),
        Err(VsphereError::Malformed { .. })
    ));
}

#[tokio::test]
async fn register_find_unregister_against_reference_responses() {
    let (client, server) = replay_client(Arc::new(|req: &Req| {
        let body = String::from_utf8_lossy(&req.body).to_string();
        let known = body.contains("<extensionKey>io.ferry.dr</extensionKey>");
        match req.soap.as_deref() {
            Some("RegisterExtension") => Resp::sample("35-registerextension.response.xml"),
            Some("UpdateExtension") => {
                Resp::soap(r#"<UpdateExtensionResponse xmlns="urn:vim25"/>"#)
            }
            Some("FindExtension") if known => Resp::sample("36-findextension.response.xml"),
            Some("FindExtension") => Resp::sample("36b-findextension-unknown-key.response.xml"),
            Some("UnregisterExtension") if known => {
                Resp::sample("37-unregisterextension.response.xml")
            }
            Some("UnregisterExtension") => {
                Resp::sample("37b-unregisterextension-notfound.response.xml")
            }
            other => panic!("unexpected {other:?}"),
        }
    }))
    .await;
    client.register_extension(&ferry()).await.unwrap();
    client.update_extension(&ferry()).await.unwrap();
    let ext = client.find_extension("io.ferry.dr").await.unwrap().unwrap();
    assert_eq!(ext.clients[0].url, MANIFEST);
    assert_eq!(client.find_extension("io.ferry.other").await.unwrap(), None);
    client.unregister_extension("io.ferry.dr").await.unwrap();
    match client.unregister_extension("io.ferry.other").await {
        Err(e @ VsphereError::NotFound { .. }) => {
            assert!(!e.is_retryable());
            assert_eq!(e.fault_type(), Some("NotFound"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        client.unregister_extension("bad/key").await,
        Err(VsphereError::InvalidInput { .. })
    ));
    // The request as sent, except the heartbeat time, which is the current one.
    let mut sent = server.calls("RegisterExtension")[0].envelope();
    let mut expected = crate::xml::parse(
        sample("35-registerextension.request.xml").as_bytes(),
        &Limits::default(),
    )
    .unwrap();
    for doc in [&mut sent, &mut expected] {
        let ext = doc.children[0].children[0]
            .children
            .iter_mut()
            .find(|c| c.name == "extension")
            .unwrap();
        let beat = ext
            .children
            .iter_mut()
            .find(|c| c.name == "lastHeartbeatTime")
            .unwrap();
        assert!(beat.text.ends_with('Z'), "{}", beat.text);
        beat.text.clear();
    }
    assert_same_xml(&sent, &expected, "");
}

#[tokio::test]
async fn duplicate_keys_and_vcsim_answers_are_typed() {
    let (client, _server) = replay_client(Arc::new(|req: &Req| match req.soap.as_deref() {
        Some("RegisterExtension") => {
            Resp::sample("35b-registerextension-duplicate-invalidargument.response.xml")
        }
        _ => Resp::sample("38-registerextension-methodnotfound.response.xml"),
    }))
    .await;
    assert!(matches!(
        client.register_extension(&ferry()).await,
        Err(VsphereError::InvalidArgument { name }) if name == "extension.key"
    ));
    assert!(matches!(
        client.find_extension("io.ferry.dr").await,
        Err(VsphereError::MethodNotFound { .. })
    ));
}
