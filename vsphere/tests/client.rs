//! The client against local stand-in servers on 127.0.0.1: sessions and re-login, paging, faults
//! over HTTP, and broken transports.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{envelope, serve, FakeVc, Reply, Seen};
use vsphere::{list_vms, Client, ClientOptions, Credentials, MoRef, TlsTrust, VsphereError};

fn creds() -> Credentials {
    Credentials {
        username: "user".into(),
        password: "pass".into(),
    }
}

/// Plain-HTTP servers ignore the trust setting; it still has to be valid.
fn trust() -> TlsTrust {
    TlsTrust::Thumbprint("ab".repeat(32))
}

fn options() -> ClientOptions {
    ClientOptions {
        call_timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    }
}

async fn connect(url: &str, options: ClientOptions) -> Result<Client, VsphereError> {
    Client::connect_with(url, creds(), trust(), options).await
}

fn count(methods: &[String], name: &str) -> usize {
    methods.iter().filter(|m| *m == name).count()
}

#[tokio::test]
async fn connect_announces_versions_and_keeps_the_session_cookie() {
    let vc = FakeVc::new(3);
    let server = serve(vc.handler()).await;
    let client = connect(&server.url, options()).await.unwrap();
    assert_eq!(client.api_version(), "7.0.3.0");
    assert_eq!(
        client.service_content().root_folder,
        MoRef::new("Folder", "group-d1")
    );
    assert_eq!(client.user_session().unwrap().key, "session-1");
    assert_eq!(
        client.session_cookie().as_deref(),
        Some("vmware_soap_session=\"session-1\"")
    );
    let vms = list_vms(&client).await.unwrap();
    assert_eq!(
        vms.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        ["vm 0", "vm 1", "vm 2"]
    );
    assert_eq!(vms[2].disks[0].capacity_bytes, 2 * 1024);
    let seen = server.requests();
    let methods: Vec<_> = seen.iter().map(|s| s.method.as_str()).collect();
    assert_eq!(
        methods,
        [
            "RetrieveServiceContent",
            "Login",
            "CreateContainerView",
            "RetrievePropertiesEx",
            "DestroyView"
        ]
    );
    assert_eq!(seen[0].header("SOAPAction"), Some("\"urn:vim25/6.5\""));
    assert_eq!(seen[1].header("SOAPAction"), Some("\"urn:vim25/7.0.3.0\""));
    assert_eq!(seen[1].header("Cookie"), None);
    for s in &seen[2..] {
        assert_eq!(
            s.header("Cookie"),
            Some("vmware_soap_session=\"session-1\""),
            "{}",
            s.method
        );
        assert_eq!(s.header("Content-Type"), Some("text/xml; charset=utf-8"));
    }
}

#[tokio::test]
async fn paging_continues_until_the_last_token() {
    let vc = FakeVc::new(5);
    let server = serve(vc.handler()).await;
    let client = connect(
        &server.url,
        ClientOptions {
            page_size: 2,
            ..options()
        },
    )
    .await
    .unwrap();
    let vms = list_vms(&client).await.unwrap();
    let names: Vec<_> = vms.iter().map(|v| v.name.clone()).collect();
    assert_eq!(names, ["vm 0", "vm 1", "vm 2", "vm 3", "vm 4"]);
    let seen = server.requests();
    let first = seen
        .iter()
        .find(|s| s.method == "RetrievePropertiesEx")
        .unwrap();
    assert_eq!(first.field("maxObjects").as_deref(), Some("2"));
    let tokens: Vec<_> = seen
        .iter()
        .filter(|s| s.method == "ContinueRetrievePropertiesEx")
        .map(|s| s.field("token").unwrap())
        .collect();
    assert_eq!(
        tokens.len(),
        2,
        "5 objects in pages of 2: two continuations"
    );
    assert_ne!(tokens[0], tokens[1]);
}

#[tokio::test]
async fn an_expired_session_is_renewed_once_and_the_call_repeated() {
    let vc = FakeVc::new(2);
    let server = serve(vc.handler()).await;
    let client = connect(&server.url, options()).await.unwrap();
    assert_eq!(client.session_generation(), 1);
    vc.expire_sessions();
    // HTTP 500 NotAuthenticated on CreateContainerView: log in again, repeat.
    let vms = list_vms(&client).await.unwrap();
    assert_eq!(vms.len(), 2);
    assert_eq!(client.session_generation(), 2);
    assert_eq!(client.user_session().unwrap().key, "session-2");
    let methods = server.methods();
    assert_eq!(count(&methods, "Login"), 2);
    assert_eq!(count(&methods, "CreateContainerView"), 2);
    let seen = server.requests();
    let last = seen.last().unwrap();
    assert_eq!(
        last.header("Cookie"),
        Some("vmware_soap_session=\"session-2\"")
    );
}

#[tokio::test]
async fn the_vcsim_missing_set_shape_also_renews_the_session() {
    let vc = FakeVc::vcsim_style(2);
    let server = serve(vc.handler()).await;
    let client = connect(&server.url, options()).await.unwrap();
    let sm = client.service_content().session_manager.clone();
    assert_eq!(
        client.current_session().await.unwrap().unwrap().key,
        "session-1"
    );
    vc.expire_sessions();
    // current_session is a probe: it reports no session and does not log in.
    assert_eq!(client.current_session().await.unwrap(), None);
    assert_eq!(count(&server.methods(), "Login"), 1);
    // Any other RetrievePropertiesEx answered 200 with a NotAuthenticated missingSet logs in again.
    let object = client
        .retrieve_one(&sm, &["currentSession"])
        .await
        .unwrap()
        .unwrap();
    let key = object
        .get("currentSession")
        .and_then(|v| v.field("key"))
        .and_then(|v| v.as_str());
    assert_eq!(key, Some("session-2"));
    assert_eq!(count(&server.methods(), "Login"), 2);
}

#[tokio::test]
async fn a_listing_cut_by_a_new_session_starts_over() {
    let vc = FakeVc::new(5);
    let server = serve(vc.handler()).await;
    let client = connect(
        &server.url,
        ClientOptions {
            page_size: 2,
            ..options()
        },
    )
    .await
    .unwrap();
    // The session dies after the first page: the continuation fails, the client logs in again,
    // the old token is unknown in the new session, and the listing restarts in it.
    vc.expire_after_pages(1);
    let vms = list_vms(&client).await.unwrap();
    assert_eq!(vms.len(), 5);
    let methods = server.methods();
    assert_eq!(count(&methods, "Login"), 2);
    assert_eq!(count(&methods, "CreateContainerView"), 2);
}

#[tokio::test]
async fn wrong_passwords_are_invalid_login() {
    let vc = FakeVc::new(1);
    let server = serve(vc.handler()).await;
    let bad = Client::connect_with(
        &server.url,
        Credentials {
            username: "user".into(),
            password: "wrong".into(),
        },
        trust(),
        options(),
    )
    .await
    .unwrap_err();
    assert!(matches!(bad, VsphereError::InvalidLogin), "{bad:?}");
    assert!(!bad.is_retryable());
    // A password changed on the server while connected: the re-login fails with InvalidLogin.
    let client = connect(&server.url, options()).await.unwrap();
    vc.set_password("rotated");
    vc.expire_sessions();
    let err = list_vms(&client).await.unwrap_err();
    assert!(matches!(err, VsphereError::InvalidLogin), "{err:?}");
}

#[tokio::test]
async fn logout_clone_session_and_session_is_active() {
    let vc = FakeVc::new(1);
    let server = serve(vc.handler()).await;
    let client = connect(&server.url, options()).await.unwrap();
    let key = client.user_session().unwrap().key;
    assert!(client.session_is_active(&key, "user").await.unwrap());
    assert!(!client
        .session_is_active("session-99", "user")
        .await
        .unwrap());

    let clone = client.clone_session().await.unwrap();
    let clone_key = clone.user_session().unwrap().key;
    assert_ne!(clone_key, key);
    assert_eq!(list_vms(&clone).await.unwrap().len(), 1);
    let seen = server.requests();
    let cloned = seen.iter().find(|s| s.method == "CloneSession").unwrap();
    assert!(cloned.field("cloneTicket").unwrap().starts_with("ticket-"));
    // A cloned session cannot log in again: its ticket was single-use.
    vc.expire_sessions();
    assert!(matches!(
        list_vms(&clone).await,
        Err(VsphereError::NotAuthenticated)
    ));
    assert!(matches!(
        Client::connect_with_ticket(&server.url, "ticket-unknown", trust(), options()).await,
        Err(VsphereError::InvalidLogin)
    ));

    // Logout ends the session; an expired one counts as logged out.
    client.logout().await.unwrap();
    assert_eq!(client.session_cookie(), None);
    client.logout().await.unwrap();
    assert_eq!(count(&server.methods(), "Logout"), 2);
}

/// A server that answers the bootstrap and Login, then what `next` holds.
fn scripted(next: Arc<Mutex<Option<Reply>>>) -> support::Handler {
    Arc::new(move |seen: &Seen| match seen.method.as_str() {
        "RetrieveServiceContent" => Reply::ok(&support::service_content("6.7.3")),
        "Login" => Reply::Soap {
            status: 200,
            body: envelope(
                r#"<LoginResponse xmlns="urn:vim25"><returnval><key>k</key><userName>user</userName></returnval></LoginResponse>"#,
            ),
            set_cookie: Some("vmware_soap_session=k; Path=/".into()),
        },
        _ => next.lock().unwrap().take().unwrap_or(Reply::Hang),
    })
}

async fn scripted_client(
    options: ClientOptions,
) -> (support::Server, Client, Arc<Mutex<Option<Reply>>>) {
    let next = Arc::new(Mutex::new(None));
    let server = serve(scripted(next.clone())).await;
    let client = connect(&server.url, options).await.unwrap();
    (server, client, next)
}

async fn view(client: &Client) -> Result<MoRef, VsphereError> {
    let root = client.service_content().root_folder.clone();
    client
        .create_container_view(&root, &["VirtualMachine"], true)
        .await
}

#[tokio::test]
async fn faults_over_http_are_typed() {
    let (_server, client, next) = scripted_client(options()).await;
    type Check = fn(&VsphereError) -> bool;
    let cases: Vec<(Reply, Check)> = vec![
        (
            Reply::Soap {
                status: 500,
                body: include_str!("samples/14-querychangeddiskareas-not-supported.response.xml").into(),
                set_cookie: None,
            },
            |e| matches!(e, VsphereError::MethodNotFound { method } if method == "QueryChangedDiskAreas"),
        ),
        (
            Reply::Soap {
                status: 500,
                body: include_str!("samples/15-initiatefiletransfertoguest-guestoperationsunavailable.response.xml").into(),
                set_cookie: None,
            },
            |e| matches!(e, VsphereError::GuestOperationsUnavailable) && e.is_retryable(),
        ),
        (
            Reply::fault("InvalidPowerState", "<requestedState>poweredOn</requestedState><existingState>poweredOn</existingState>"),
            |e| matches!(e, VsphereError::InvalidPowerState { existing: Some(s), .. } if s == "poweredOn"),
        ),
        (
            Reply::fault("ManagedObjectNotFound", r#"<obj type="Folder">group-d1</obj>"#),
            |e| matches!(e, VsphereError::ManagedObjectNotFound { moref } if moref.value == "group-d1"),
        ),
        (
            Reply::fault("InvalidArgument", "<invalidProperty>type</invalidProperty>"),
            |e| matches!(e, VsphereError::InvalidArgument { name } if name == "type"),
        ),
        (
            Reply::Soap { status: 503, body: "<html>maintenance</html>".into(), set_cookie: None },
            |e| matches!(e, VsphereError::Http { status: 503 }) && e.is_retryable(),
        ),
        (
            Reply::Soap { status: 200, body: "<html>captive portal</html>".into(), set_cookie: None },
            |e| matches!(e, VsphereError::Malformed { .. }),
        ),
    ];
    for (reply, check) in cases {
        *next.lock().unwrap() = Some(reply);
        let err = view(&client).await.unwrap_err();
        assert!(check(&err), "{err:?}");
    }
}

#[tokio::test]
async fn oversized_truncated_and_silent_answers() {
    let options = ClientOptions {
        max_response_bytes: 4096,
        call_timeout: Duration::from_millis(500),
        ..options()
    };
    let (_server, client, next) = scripted_client(options).await;
    let big = envelope(&format!(
        r#"<CreateContainerViewResponse xmlns="urn:vim25"><returnval type="ContainerView">{}</returnval></CreateContainerViewResponse>"#,
        "v".repeat(8192)
    ));
    // Announced with Content-Length.
    *next.lock().unwrap() = Some(Reply::Soap {
        status: 200,
        body: big.clone(),
        set_cookie: None,
    });
    let err = view(&client).await.unwrap_err();
    assert!(
        matches!(&err, VsphereError::Malformed { reason } if reason.contains("4096")),
        "{err:?}"
    );
    // Not announced: the body is cut off while it streams in.
    let mut raw =
        b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nConnection: close\r\n\r\n".to_vec();
    raw.extend_from_slice(big.as_bytes());
    *next.lock().unwrap() = Some(Reply::Raw(raw));
    let err = view(&client).await.unwrap_err();
    assert!(
        matches!(&err, VsphereError::Malformed { reason } if reason.contains("4096")),
        "{err:?}"
    );
    // The connection closes before Content-Length bytes: a transport failure, worth a retry.
    let small = envelope(
        r#"<CreateContainerViewResponse xmlns="urn:vim25"><returnval type="ContainerView">v</returnval></CreateContainerViewResponse>"#,
    );
    let mut raw =
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", small.len()).into_bytes();
    raw.extend_from_slice(&small.as_bytes()[..small.len() / 2]);
    *next.lock().unwrap() = Some(Reply::Raw(raw));
    let err = view(&client).await.unwrap_err();
    assert!(matches!(err, VsphereError::Transport { .. }), "{err:?}");
    assert!(err.is_retryable());
    // A complete HTTP answer whose XML stops half-way: malformed.
    *next.lock().unwrap() = Some(Reply::Soap {
        status: 200,
        body: small[..small.len() - 40].to_string(),
        set_cookie: None,
    });
    let err = view(&client).await.unwrap_err();
    assert!(matches!(err, VsphereError::Malformed { .. }), "{err:?}");
    // No answer at all within the call timeout.
    *next.lock().unwrap() = Some(Reply::Hang);
    let started = std::time::Instant::now();
    let err = view(&client).await.unwrap_err();
    assert!(matches!(err, VsphereError::Timeout), "{err:?}");
    assert!(err.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_closed_port_is_a_retryable_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let err = connect(&format!("http://127.0.0.1:{port}/sdk"), options())
        .await
        .unwrap_err();
    assert!(matches!(err, VsphereError::Transport { .. }), "{err:?}");
    assert!(err.is_retryable());
    let err = connect("ftp://127.0.0.1/sdk", options()).await.unwrap_err();
    assert!(matches!(err, VsphereError::InvalidInput { .. }), "{err:?}");
    let err = Client::connect(
        "http://127.0.0.1:1/sdk",
        creds(),
        TlsTrust::Thumbprint("12:34".into()),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, VsphereError::InvalidInput { .. }), "{err:?}");
}

#[tokio::test]
async fn vm_watch_follows_changes_and_starts_over_in_a_new_session() {
    let vc = FakeVc::new(3);
    let server = serve(vc.handler()).await;
    let client = connect(&server.url, options()).await.unwrap();
    let mut watch = vsphere::VmWatch::start(&client).await.unwrap();
    let mut vms = std::collections::BTreeMap::new();
    assert!(watch.poll(&client, &mut vms, 1).await.unwrap().is_empty());
    assert_eq!(vms.len(), 3);
    let vm1 = MoRef::new("VirtualMachine", "vm-1");
    assert_eq!(vms[&vm1].name, "vm 1");
    let waits = server.requests();
    let first = waits
        .iter()
        .find(|s| s.method == "WaitForUpdatesEx")
        .unwrap();
    assert_eq!(first.field("version").as_deref(), Some(""));
    assert_eq!(first.field("maxWaitSeconds").as_deref(), Some("1"));

    vc.rename(1, "db01");
    watch.poll(&client, &mut vms, 1).await.unwrap();
    assert_eq!(vms[&vm1].name, "db01");
    let last = server
        .requests()
        .into_iter()
        .rev()
        .find(|s| s.method == "WaitForUpdatesEx")
        .unwrap();
    assert_eq!(
        last.field("version").as_deref(),
        Some("1"),
        "the version of the last answer"
    );
    // Nothing changed: an empty answer, nothing applied.
    watch.poll(&client, &mut vms, 1).await.unwrap();
    assert_eq!(vms.len(), 3);

    // The session dies: the wait logs in again and finds no filter in the new session; the next
    // poll makes a new view and filter and delivers every VM again.
    vc.expire_sessions();
    vms.insert(
        MoRef::new("VirtualMachine", "vm-gone"),
        vsphere::VmInfo::new(MoRef::new("VirtualMachine", "vm-gone")),
    );
    watch.poll(&client, &mut vms, 1).await.unwrap();
    watch.poll(&client, &mut vms, 1).await.unwrap();
    assert_eq!(vms.len(), 3, "the map was rebuilt from the new session");
    assert_eq!(vms[&vm1].name, "vm 1");
    let methods = server.methods();
    assert_eq!(count(&methods, "Login"), 2);
    assert_eq!(count(&methods, "CreateFilter"), 2);
    watch.stop(&client).await.unwrap();
    assert_eq!(count(&server.methods(), "DestroyPropertyFilter"), 1);
}

#[tokio::test]
async fn endless_empty_pages_are_refused() {
    let handler: support::Handler = Arc::new(|seen: &Seen| match seen.method.as_str() {
        "RetrieveServiceContent" => Reply::ok(&support::service_content("6.7.3")),
        "Login" => Reply::ok(
            r#"<LoginResponse xmlns="urn:vim25"><returnval><key>k</key></returnval></LoginResponse>"#,
        ),
        "RetrievePropertiesEx" | "ContinueRetrievePropertiesEx" => Reply::ok(&format!(
            r#"<{m}Response xmlns="urn:vim25"><returnval><token>again</token></returnval></{m}Response>"#,
            m = seen.method
        )),
        "CancelRetrievePropertiesEx" => {
            Reply::ok(r#"<CancelRetrievePropertiesExResponse xmlns="urn:vim25"/>"#)
        }
        other => Reply::fault("MethodNotFound", &format!("<method>{other}</method>")),
    });
    let server = serve(handler).await;
    let client = connect(&server.url, options()).await.unwrap();
    let view = MoRef::new("ContainerView", "v");
    let spec = vsphere::FilterSpec::container_view(&view, "VirtualMachine", &["name"]);
    let err = client.retrieve_all(&[spec]).await.unwrap_err();
    assert!(matches!(err, VsphereError::Malformed { .. }), "{err:?}");
    let methods = server.methods();
    assert_eq!(count(&methods, "ContinueRetrievePropertiesEx"), 17);
    assert_eq!(count(&methods, "CancelRetrievePropertiesEx"), 1);
}
