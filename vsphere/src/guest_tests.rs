use std::sync::{Arc, Mutex};

use super::*;
use crate::soap::decode_response;
use crate::task::tests::{assert_request_matches, envelope, replay_client, sample, Req, Resp};
use crate::xml::Limits;

fn root() -> GuestAuth {
    GuestAuth {
        username: "root".into(),
        password: "secret".into(),
    }
}

fn file_manager() -> MoRef {
    MoRef::new("GuestFileManager", "guestOperationsFileManager")
}

fn process_manager() -> MoRef {
    MoRef::new("GuestProcessManager", "guestOperationsProcessManager")
}

fn agent_program() -> GuestProgram {
    GuestProgram {
        path: "/opt/ferry/ferry-agent".into(),
        arguments: "install --appliance 192.0.2.1:7443".into(),
        working_dir: Some("/opt/ferry".into()),
        env: vec!["FERRY_TOKEN=one-time".into(), "LANG=C".into()],
    }
}

#[test]
fn requests_match_the_recorded_and_reference_ones() {
    let vm36 = MoRef::new("VirtualMachine", "vm-36");
    let vm46 = MoRef::new("VirtualMachine", "vm-46");
    let finish = |r: Result<Request, VsphereError>| r.unwrap().finish().unwrap();
    assert_request_matches(
        finish(file_transfer_request(
            &file_manager(),
            &vm36,
            &root(),
            "/tmp/agent-installer.sh",
            &GuestFileAttributes::default(),
            1024,
            true,
        )),
        "15-initiatefiletransfertoguest-guestoperationsunavailable.request.xml",
    );
    assert_request_matches(
        finish(file_transfer_request(
            &file_manager(),
            &vm46,
            &root(),
            "/opt/ferry/ferry-agent",
            &GuestFileAttributes::Posix {
                owner_id: Some(0),
                group_id: Some(0),
                permissions: Some(0o755),
            },
            17,
            true,
        )),
        "32-initiatefiletransfertoguest.request.xml",
    );
    let shell = GuestProgram {
        path: "/bin/sh".into(),
        arguments: "/tmp/agent-installer.sh --register".into(),
        ..GuestProgram::default()
    };
    assert_request_matches(
        finish(start_program_request(
            &process_manager(),
            &vm36,
            &root(),
            &shell,
        )),
        "16-startprograminguest-not-implemented.request.xml",
    );
    assert_request_matches(
        finish(start_program_request(
            &process_manager(),
            &vm46,
            &root(),
            &agent_program(),
        )),
        "33-startprograminguest.request.xml",
    );
    assert_request_matches(
        finish(list_processes_request(
            &process_manager(),
            &vm36,
            &root(),
            &[1],
        )),
        "17-listprocessesinguest-not-implemented.request.xml",
    );
    assert_request_matches(
        finish(list_processes_request(
            &process_manager(),
            &vm46,
            &root(),
            &[4242, 1],
        )),
        "34-listprocessesinguest.request.xml",
    );
    // Windows attributes use their own type.
    let body = finish(file_transfer_request(
        &file_manager(),
        &vm46,
        &root(),
        "C:\\ferry\\agent.exe",
        &GuestFileAttributes::Windows {
            hidden: Some(false),
            read_only: Some(true),
        },
        1,
        false,
    ));
    assert!(body.contains(r#"<fileAttributes xsi:type="GuestWindowsFileAttributes"><hidden>false</hidden><readOnly>true</readOnly></fileAttributes>"#), "{body}");
}

#[test]
fn bad_guest_input_is_refused() {
    let vm = MoRef::new("VirtualMachine", "vm-1");
    let nobody = GuestAuth {
        username: String::new(),
        password: "x".into(),
    };
    let attrs = GuestFileAttributes::default();
    let refused =
        |r: Result<Request, VsphereError>| matches!(r, Err(VsphereError::InvalidInput { .. }));
    assert!(refused(file_transfer_request(
        &file_manager(),
        &vm,
        &nobody,
        "/tmp/a",
        &attrs,
        1,
        true
    )));
    for path in ["", "  ", "/tmp/a\nb"] {
        assert!(
            refused(file_transfer_request(
                &file_manager(),
                &vm,
                &root(),
                path,
                &attrs,
                1,
                true
            )),
            "{path:?}"
        );
    }
    let program = |change: &dyn Fn(&mut GuestProgram)| {
        let mut p = agent_program();
        change(&mut p);
        start_program_request(&process_manager(), &vm, &root(), &p)
    };
    assert!(refused(program(&|p| p.path = String::new())));
    assert!(refused(program(&|p| p.working_dir = Some("\u{7}".into()))));
    assert!(refused(program(&|p| p.env = vec!["NOEQUALS".into()])));
    assert!(refused(program(&|p| p.env = vec!["=value".into()])));
    assert!(refused(list_processes_request(
        &process_manager(),
        &vm,
        &nobody,
        &[]
    )));
    // A password is never shown.
    assert!(!format!("{:?}", root()).contains("secret"));
}

#[test]
fn transfer_urls_get_the_servers_host() {
    let sdk = url::Url::parse("https://vc.example.com:8443/sdk").unwrap();
    let url = resolve_transfer_url("https://*:443/guestFile?id=52&token=t", &sdk).unwrap();
    assert_eq!(
        url.as_str(),
        "https://vc.example.com/guestFile?id=52&token=t"
    );
    let url = resolve_transfer_url("https://*/guestFile?id=1", &sdk).unwrap();
    assert_eq!(url.as_str(), "https://vc.example.com/guestFile?id=1");
    let url = resolve_transfer_url("https://esx-1.example.com:443/guestFile?id=1", &sdk).unwrap();
    assert_eq!(url.host_str(), Some("esx-1.example.com"));
    let v6 = url::Url::parse("https://[::1]:8989/sdk").unwrap();
    let url = resolve_transfer_url("https://*:443/guestFile?id=1", &v6).unwrap();
    assert_eq!(url.host_str(), Some("[::1]"));
    for bad in [
        "",
        "guestFile?id=1",
        "ftp://*/x",
        "https://",
        "file:///etc/passwd",
    ] {
        assert!(
            matches!(
                resolve_transfer_url(bad, &sdk),
                Err(VsphereError::Malformed { .. })
            ),
            "{bad:?}"
        );
    }
}

fn processes(xml: &str) -> Result<Vec<GuestProcess>, VsphereError> {
    parse_processes(decode_response(
        200,
        xml.as_bytes(),
        "ListProcessesInGuest",
        &Limits::default(),
    )?)
}

#[test]
fn processes_parse() {
    let list = processes(&sample("34-listprocessesinguest.response.xml")).unwrap();
    assert_eq!(
        list,
        [
            GuestProcess {
                pid: 4242,
                name: "ferry-agent".into(),
                owner: "root".into(),
                cmd_line: "\"/opt/ferry/ferry-agent\" install --appliance 192.0.2.1:7443".into(),
                start_time: "2026-11-26T06:40:01Z".into(),
                end_time: Some("2026-11-26T06:40:03Z".into()),
                exit_code: Some(3),
            },
            GuestProcess {
                pid: 1,
                name: "systemd".into(),
                owner: "root".into(),
                cmd_line: "/sbin/init".into(),
                start_time: "2026-11-26T06:30:00Z".into(),
                end_time: None,
                exit_code: None,
            }
        ]
    );
    let none = envelope(r#"<ListProcessesInGuestResponse xmlns="urn:vim25"/>"#);
    assert_eq!(processes(&none).unwrap(), []);
    for bad in [
        r#"<ListProcessesInGuestResponse xmlns="urn:vim25"><returnval><name>x</name></returnval></ListProcessesInGuestResponse>"#,
        r#"<ListProcessesInGuestResponse xmlns="urn:vim25"><returnval><pid>one</pid></returnval></ListProcessesInGuestResponse>"#,
    ] {
        assert!(matches!(
            processes(&envelope(bad)),
            Err(VsphereError::Malformed { .. })
        ));
    }
}

/// The managers as vcsim reports them (sample 31, and its processManager twin).
fn managers(req: &Req) -> Option<Resp> {
    let body = String::from_utf8_lossy(&req.body);
    if req.soap.as_deref() != Some("RetrievePropertiesEx") {
        return None;
    }
    let file = sample("31-guestoperationsmanager-filemanager.response.xml");
    Some(if body.contains("<pathSet>processManager</pathSet>") {
        Resp::new(
            200,
            file.replace("fileManager", "processManager")
                .replace("GuestFileManager", "GuestProcessManager")
                .replace(
                    "guestOperationsFileManager",
                    "guestOperationsProcessManager",
                ),
        )
    } else {
        Resp::new(200, file)
    })
}

#[tokio::test]
async fn copy_start_and_list_against_reference_responses() {
    // The transfer URL names the replay server itself ("*"), on its port.
    let base = Arc::new(Mutex::new(String::new()));
    let port_of = base.clone();
    let (client, server) = replay_client(Arc::new(move |req: &Req| {
        if let Some(resp) = managers(req) {
            return resp;
        }
        match req.soap.as_deref() {
            Some("InitiateFileTransferToGuest") => {
                let port = port_of
                    .lock()
                    .unwrap()
                    .rsplit(':')
                    .next()
                    .unwrap()
                    .to_string();
                Resp::new(
                    200,
                    sample("32-initiatefiletransfertoguest.response.xml")
                        .replace("https://*:443/", &format!("http://*:{port}/")),
                )
            }
            Some("StartProgramInGuest") => Resp::sample("33-startprograminguest.response.xml"),
            Some("ListProcessesInGuest") => Resp::sample("34-listprocessesinguest.response.xml"),
            None if req.method == "PUT" && req.target.starts_with("/guestFile?") => {
                Resp::new(200, "")
            }
            other => panic!("unexpected {other:?} {}", req.target),
        }
    }))
    .await;
    *base.lock().unwrap() = server.base.clone();
    let vm = MoRef::new("VirtualMachine", "vm-46");
    let attrs = GuestFileAttributes::Posix {
        owner_id: Some(0),
        group_id: Some(0),
        permissions: Some(0o755),
    };
    let url = client
        .initiate_file_transfer_to_guest(&vm, &root(), "/opt/ferry/ferry-agent", &attrs, 17, true)
        .await
        .unwrap();
    assert_eq!(url.host_str(), Some("127.0.0.1"));
    client
        .put_guest_file(&url, b"agent binary here".to_vec(), None)
        .await
        .unwrap();
    // With a trust of its own for the ESXi host (unused on plain HTTP, but it must be valid).
    client
        .put_guest_file(
            &url,
            b"again".to_vec(),
            Some(&TlsTrust::Thumbprint("cd".repeat(20))),
        )
        .await
        .unwrap();
    let puts: Vec<Req> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .collect();
    assert_eq!(puts.len(), 2);
    assert_eq!(puts[0].body, b"agent binary here");
    assert_eq!(
        puts[0].target,
        "/guestFile?id=52&token=52a8c6f3-2b1f-4b7e-9a53-5e0d3b7c1f20"
    );
    let pid = client
        .start_program_in_guest(&vm, &root(), &agent_program())
        .await
        .unwrap();
    assert_eq!(pid, 4242);
    let list = client
        .list_processes_in_guest(&vm, &root(), &[pid, 1])
        .await
        .unwrap();
    assert_eq!((list[0].pid, list[0].exit_code), (4242, Some(3)));
    let sent = |m: &str| server.calls(m)[0].envelope();
    let limits = Limits::default();
    for (method, file) in [
        (
            "InitiateFileTransferToGuest",
            "32-initiatefiletransfertoguest.request.xml",
        ),
        ("StartProgramInGuest", "33-startprograminguest.request.xml"),
        (
            "ListProcessesInGuest",
            "34-listprocessesinguest.request.xml",
        ),
    ] {
        let expected = crate::xml::parse(sample(file).as_bytes(), &limits).unwrap();
        crate::task::tests::assert_same_xml(&sent(method), &expected, "");
    }
}

#[tokio::test]
async fn vcsim_fault_answers_are_typed() {
    let (client, _server) = replay_client(Arc::new(|req: &Req| {
        if let Some(resp) = managers(req) {
            return resp;
        }
        match req.soap.as_deref() {
            Some("InitiateFileTransferToGuest") => Resp::sample(
                "15-initiatefiletransfertoguest-guestoperationsunavailable.response.xml",
            ),
            Some("StartProgramInGuest") => {
                Resp::sample("16-startprograminguest-not-implemented.response.xml")
            }
            Some("ListProcessesInGuest") => {
                Resp::sample("17-listprocessesinguest-not-implemented.response.xml")
            }
            None => Resp::new(404, "no such transfer"),
            other => panic!("unexpected {other:?}"),
        }
    }))
    .await;
    let vm = MoRef::new("VirtualMachine", "vm-36");
    let err = client
        .initiate_file_transfer_to_guest(
            &vm,
            &root(),
            "/tmp/agent-installer.sh",
            &GuestFileAttributes::default(),
            1024,
            true,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, VsphereError::GuestOperationsUnavailable));
    assert!(err.is_retryable());
    let err = client
        .start_program_in_guest(&vm, &root(), &agent_program())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, VsphereError::MethodNotFound { method } if method == "StartProgramInGuest"),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert!(matches!(
        client.list_processes_in_guest(&vm, &root(), &[]).await,
        Err(VsphereError::MethodNotFound { .. })
    ));
    let url = url::Url::parse(&format!(
        "{}/guestFile?id=1",
        client.sdk_url().origin().ascii_serialization()
    ))
    .unwrap();
    assert!(matches!(
        client.put_guest_file(&url, vec![1], None).await,
        Err(VsphereError::NotFound { .. })
    ));
}

const FROM_GUEST: &str = r#"<InitiateFileTransferFromGuestResponse xmlns="urn:vim25"><returnval><attributes xsi:type="GuestPosixFileAttributes"><modificationTime>2026-11-26T06:40:03Z</modificationTime><ownerId>0</ownerId><groupId>0</groupId><permissions>420</permissions></attributes><size>PLACEHOLDER_SIZE</size><url>http://*:PLACEHOLDER_PORT/guestFile?id=53&amp;token=t53</url></returnval></InitiateFileTransferFromGuestResponse>"#;

#[tokio::test]
async fn a_file_comes_out_of_the_guest_within_the_limit() {
    let content = b"uid=0(root)\n".to_vec();
    let port = Arc::new(Mutex::new(String::new()));
    let port_of = port.clone();
    let served = content.clone();
    let (client, server) = replay_client(Arc::new(move |req: &Req| {
        if let Some(resp) = managers(req) {
            return resp;
        }
        match req.soap.as_deref() {
            Some("InitiateFileTransferFromGuest") => Resp::soap(
                &FROM_GUEST
                    .replace("PLACEHOLDER_PORT", &port_of.lock().unwrap())
                    .replace("PLACEHOLDER_SIZE", &served.len().to_string()),
            ),
            None if req.method == "GET" && req.target == "/guestFile?id=53&token=t53" => {
                Resp::new(200, served.clone())
            }
            None if req.method == "GET" => Resp::new(404, "no such transfer"),
            other => panic!("unexpected {other:?} {}", req.target),
        }
    }))
    .await;
    *port.lock().unwrap() = server.base.rsplit(':').next().unwrap().to_string();
    let vm = MoRef::new("VirtualMachine", "vm-46");
    let download = client
        .initiate_file_transfer_from_guest(&vm, &root(), "/tmp/ferry-push/out")
        .await
        .unwrap();
    assert_eq!(download.size, content.len() as u64);
    assert_eq!(download.permissions, Some(0o644));
    assert_eq!(
        download.url.host_str(),
        Some("127.0.0.1"),
        "* became the vCenter's host"
    );
    let body = String::from_utf8_lossy(&server.calls("InitiateFileTransferFromGuest")[0].body)
        .into_owned();
    assert!(
        body.contains("<guestFilePath>/tmp/ferry-push/out</guestFilePath>"),
        "{body}"
    );
    assert!(body.contains("<username>root</username>"), "{body}");
    let got = client
        .get_guest_file(&download.url, 1024, None)
        .await
        .unwrap();
    assert_eq!(got, content);
    // More than the caller allows is refused, not read.
    assert!(matches!(
        client.get_guest_file(&download.url, 4, None).await,
        Err(VsphereError::InvalidInput { .. })
    ));
    let gone = url::Url::parse(&format!("{}/guestFile?id=99", server.base)).unwrap();
    assert!(matches!(
        client.get_guest_file(&gone, 1024, None).await,
        Err(VsphereError::NotFound { .. })
    ));
}

#[test]
fn bad_from_guest_input_and_answers_are_refused() {
    let vm = MoRef::new("VirtualMachine", "vm-1");
    for path in ["", " ", "/tmp/a\u{0}b"] {
        assert!(matches!(
            file_transfer_from_request(&file_manager(), &vm, &root(), path),
            Err(VsphereError::InvalidInput { .. })
        ));
    }
    let nobody = GuestAuth {
        username: String::new(),
        password: "x".into(),
    };
    assert!(matches!(
        file_transfer_from_request(&file_manager(), &vm, &nobody, "/tmp/a"),
        Err(VsphereError::InvalidInput { .. })
    ));
    let parse = |inner: &str| {
        parse_transfer_from(decode_response(
            200,
            envelope(inner).as_bytes(),
            "InitiateFileTransferFromGuest",
            &Limits::default(),
        )?)
    };
    let good = FROM_GUEST
        .replace("PLACEHOLDER_PORT", "443")
        .replace("PLACEHOLDER_SIZE", "12");
    let (url, size, mode) = parse(&good).unwrap();
    assert_eq!(
        (url.as_str(), size, mode),
        ("http://*:443/guestFile?id=53&token=t53", 12, Some(420))
    );
    for bad in [
        good.replace("<size>12</size>", "<size>-1</size>"),
        good.replace("<size>12</size>", ""),
        good.replace(
            "<permissions>420</permissions>",
            "<permissions>rw</permissions>",
        ),
        good.replace("<url>http://*:443/guestFile?id=53&amp;token=t53</url>", ""),
        r#"<InitiateFileTransferFromGuestResponse xmlns="urn:vim25"/>"#.to_string(),
    ] {
        assert!(
            matches!(parse(&bad), Err(VsphereError::Malformed { .. })),
            "{bad}"
        );
    }
}
