use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::soap::decode_response;
use crate::xml::Limits;
use crate::{Credentials, TlsTrust};

// ---- A replay server on 127.0.0.1 for the tests of this crate's part-2 calls --------------------

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub(crate) struct Req {
    /// `GET`, `PUT`, `POST`.
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The SOAP method for a POST to /sdk.
    pub soap: Option<String>,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The SOAP body as a tree (for comparing it with a recorded request).
    pub fn envelope(&self) -> Element {
        crate::xml::parse(&self.body, &Limits::default()).expect("the client sent bad XML")
    }
}

pub(crate) struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Resp {
        Resp {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Resp {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// A recorded response: status 500 when it is a SOAP fault, as servers send them.
    pub fn sample(name: &str) -> Resp {
        let body = sample(name);
        let status = if body.contains(":Fault>") { 500 } else { 200 };
        Resp::new(status, body).header("Content-Type", "text/xml; charset=utf-8")
    }

    pub fn soap(inner: &str) -> Resp {
        Resp::new(200, envelope(inner)).header("Content-Type", "text/xml; charset=utf-8")
    }
}

pub(crate) fn envelope(inner: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>{inner}</soapenv:Body></soapenv:Envelope>"#
    )
}

/// A file of tests/samples.
pub(crate) fn sample(name: &str) -> String {
    let path = format!("{}/tests/samples/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub(crate) type Handler = Arc<dyn Fn(&Req) -> Resp + Send + Sync>;

pub(crate) struct Replay {
    /// `http://127.0.0.1:PORT` (no path).
    pub base: String,
    pub seen: Arc<Mutex<Vec<Req>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Replay {
    pub fn requests(&self) -> Vec<Req> {
        self.seen.lock().unwrap().clone()
    }

    /// The requests with this SOAP method.
    pub fn calls(&self, soap: &str) -> Vec<Req> {
        self.requests()
            .into_iter()
            .filter(|r| r.soap.as_deref() == Some(soap))
            .collect()
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) async fn serve(handler: Handler) -> Replay {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            conns.spawn(connection(stream, handler.clone(), log.clone()));
        }
    });
    Replay {
        base: format!("http://127.0.0.1:{port}"),
        seen,
        task,
    }
}

async fn connection(
    mut stream: tokio::net::TcpStream,
    handler: Handler,
    log: Arc<Mutex<Vec<Req>>>,
) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 16384];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.lines();
        let mut first = lines.next().unwrap_or_default().split(' ');
        let method = first.next().unwrap_or_default().to_string();
        let target = first.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 16384];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf[head_end..head_end + length].to_vec();
        buf.drain(..head_end + length);
        let soap = (method == "POST")
            .then(|| crate::xml::parse(&body, &Limits::default()).ok())
            .flatten()
            .and_then(|root| {
                root.child("Body")
                    .and_then(|b| b.children.first())
                    .map(|m| m.name.clone())
            });
        let req = Req {
            method,
            target,
            headers,
            body,
            soap,
        };
        log.lock().unwrap().push(req.clone());
        let resp = handler(&req);
        let mut out = format!(
            "HTTP/1.1 {} X\r\nContent-Length: {}\r\n",
            resp.status,
            resp.body.len()
        );
        for (n, v) in &resp.headers {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&resp.body);
        if stream.write_all(&bytes).await.is_err() {
            return;
        }
    }
}

/// A client logged in to a replay server that answers RetrieveServiceContent and Login with the
/// recorded vcsim responses and everything else with `handler`.
pub(crate) async fn replay_client(handler: Handler) -> (Client, Replay) {
    replay_client_with(handler, crate::ClientOptions::default()).await
}

pub(crate) async fn replay_client_with(
    handler: Handler,
    options: crate::ClientOptions,
) -> (Client, Replay) {
    let server = serve(Arc::new(move |req: &Req| match req.soap.as_deref() {
        Some("RetrieveServiceContent") => Resp::sample("01-retrieveservicecontent.response.xml"),
        Some("Login") => Resp::sample("02-login.response.xml").header(
            "Set-Cookie",
            "vmware_soap_session=\"replay-session\"; Path=/; HttpOnly",
        ),
        _ => handler(req),
    }))
    .await;
    let client = Client::connect_with(
        &format!("{}/sdk", server.base),
        Credentials {
            username: "user".into(),
            password: "pass".into(),
        },
        // Plain HTTP: the trust setting is not used, but must be valid.
        TlsTrust::Thumbprint("ab".repeat(32)),
        options,
    )
    .await
    .unwrap();
    (client, server)
}

/// Compares two SOAP documents by namespace, local name, `xsi:type`, attributes and text, so
/// a request built by this crate can be checked against a recorded or reference request
/// whatever prefixes each uses.
pub(crate) fn assert_same_xml(built: &Element, expected: &Element, at: &str) {
    let here = format!("{at}/{}", expected.name);
    assert_eq!(
        (&built.ns, &built.name),
        (&expected.ns, &expected.name),
        "element at {here}"
    );
    assert_eq!(built.xsi_type(), expected.xsi_type(), "xsi:type of {here}");
    assert_eq!(built.attr("type"), expected.attr("type"), "type of {here}");
    assert_eq!(built.text.trim(), expected.text.trim(), "text of {here}");
    let names = |e: &Element| {
        e.children
            .iter()
            .map(|c| c.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(built), names(expected), "children of {here}");
    for (b, e) in built.children.iter().zip(&expected.children) {
        assert_same_xml(b, e, &here);
    }
}

/// The request a builder makes, against a recorded request file.
pub(crate) fn assert_request_matches(built: String, sample_name: &str) {
    let limits = Limits::default();
    let built = crate::xml::parse(built.as_bytes(), &limits).unwrap();
    let expected = crate::xml::parse(sample(sample_name).as_bytes(), &limits).unwrap();
    assert_same_xml(&built, &expected, "");
}

// ---- Tests of task waiting -----------------------------------------------------------------------

fn state(xml: &str) -> Result<TaskState, VsphereError> {
    let resp = decode_response(
        200,
        xml.as_bytes(),
        "RetrievePropertiesEx",
        &Limits::default(),
    )?;
    parse_task_state(resp)
}

/// A task poll answer with these propSets (`name`, `xsi:type`, inner XML).
fn poll(props: &[(&str, &str, &str)]) -> String {
    let t = r#"xmlns:XMLSchema-instance="http://www.w3.org/2001/XMLSchema-instance" XMLSchema-instance:type"#;
    let props: String = props
        .iter()
        .map(|(name, ty, inner)| {
            format!(r#"<propSet><name>{name}</name><val {t}="{ty}">{inner}</val></propSet>"#)
        })
        .collect();
    envelope(&format!(
        r#"<RetrievePropertiesExResponse xmlns="urn:vim25"><returnval><objects><obj type="Task">task-1</obj>{props}</objects></returnval></RetrievePropertiesExResponse>"#
    ))
}

#[test]
fn recorded_task_states() {
    assert_eq!(
        state(&sample("07-poll-task-info-state.response.xml")).unwrap(),
        TaskState::Success(None)
    );
    assert_eq!(
        state(&sample("20b-createvm-task-result.response.xml")).unwrap(),
        TaskState::Success(Some(Value::MoRef(MoRef::new("VirtualMachine", "vm-46"))))
    );
    match state(&sample(
        "21b-poweronvm-task-again-invalidpowerstate.response.xml",
    )) {
        Err(VsphereError::InvalidPowerState {
            requested,
            existing,
        }) => {
            assert_eq!(requested.as_deref(), Some("poweredOn"));
            assert_eq!(existing.as_deref(), Some("poweredOn"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn running_and_broken_task_states() {
    let running = poll(&[
        ("info.state", "TaskInfoState", "running"),
        ("info.progress", "xsd:int", "42"),
    ]);
    assert_eq!(
        state(&running).unwrap(),
        TaskState::Pending { progress: Some(42) }
    );
    let queued = poll(&[("info.state", "TaskInfoState", "queued")]);
    assert_eq!(
        state(&queued).unwrap(),
        TaskState::Pending { progress: None }
    );
    // An error without a fault object still fails, as an unknown fault.
    let bare = poll(&[
        ("info.state", "TaskInfoState", "error"),
        (
            "info.error",
            "LocalizedMethodFault",
            "<localizedMessage>boom</localizedMessage>",
        ),
    ]);
    assert!(matches!(
        state(&bare),
        Err(VsphereError::Fault { message, .. }) if message == "boom"
    ));
    let fault = poll(&[
        ("info.state", "TaskInfoState", "error"),
        (
            "info.error",
            "LocalizedMethodFault",
            r#"<fault XMLSchema-instance:type="NoPermission"/><localizedMessage>denied</localizedMessage>"#,
        ),
    ]);
    assert!(matches!(
        state(&fault),
        Err(VsphereError::Fault { type_name, .. }) if type_name == "NoPermission"
    ));
    for bad in [
        poll(&[("info.state", "TaskInfoState", "exploded")]),
        poll(&[]),
        envelope(r#"<RetrievePropertiesExResponse xmlns="urn:vim25"/>"#),
        envelope(
            r#"<RetrievePropertiesExResponse xmlns="urn:vim25"><returnval/></RetrievePropertiesExResponse>"#,
        ),
    ] {
        assert!(
            matches!(state(&bad), Err(VsphereError::Malformed { .. })),
            "{bad}"
        );
    }
    // A task the server no longer knows: the missingSet fault is the error.
    let gone = envelope(
        r#"<RetrievePropertiesExResponse xmlns="urn:vim25" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><returnval><objects><obj type="Task">task-9</obj><missingSet><path>info.state</path><fault><fault xsi:type="ManagedObjectNotFound"><obj type="Task">task-9</obj></fault></fault></missingSet></objects></returnval></RetrievePropertiesExResponse>"#,
    );
    assert!(matches!(
        state(&gone),
        Err(VsphereError::ManagedObjectNotFound { moref }) if moref == MoRef::new("Task", "task-9")
    ));
}

#[tokio::test]
async fn wait_reports_progress_and_returns_the_result() {
    let polls = Arc::new(Mutex::new(0));
    let count = polls.clone();
    let (client, server) = replay_client(Arc::new(move |req: &Req| {
        assert_eq!(req.soap.as_deref(), Some("RetrievePropertiesEx"));
        let mut n = count.lock().unwrap();
        *n += 1;
        let running = |p: &str| {
            Resp::new(
                200,
                poll(&[
                    ("info.state", "TaskInfoState", "running"),
                    ("info.progress", "xsd:int", p),
                ]),
            )
        };
        match *n {
            1 => running("10"),
            2 | 3 => running("60"),
            _ => Resp::sample("20b-createvm-task-result.response.xml"),
        }
    }))
    .await;
    let mut seen = Vec::new();
    let result = client
        .wait_for_task(
            &MoRef::new("Task", "task-45"),
            Duration::from_secs(10),
            |p| seen.push(p),
        )
        .await
        .unwrap();
    assert_eq!(
        result,
        Some(Value::MoRef(MoRef::new("VirtualMachine", "vm-46")))
    );
    assert_eq!(seen, [Some(10), Some(60), Some(100)]);
    let polls = server.calls("RetrievePropertiesEx");
    assert_eq!(polls.len(), 4);
    // Every poll asks for the task's state, progress, result and error.
    let body = String::from_utf8_lossy(&polls[0].body).to_string();
    for path in TASK_PATHS {
        assert!(
            body.contains(&format!("<pathSet>{path}</pathSet>")),
            "{body}"
        );
    }
    assert!(body.contains(r#"<obj type="Task">task-45</obj>"#));
}

#[tokio::test]
async fn a_task_that_never_ends_times_out() {
    let (client, _server) = replay_client(Arc::new(|_req: &Req| {
        Resp::new(200, poll(&[("info.state", "TaskInfoState", "running")]))
    }))
    .await;
    let started = Instant::now();
    let mut reports = 0;
    let result = client
        .wait_for_task(
            &MoRef::new("Task", "task-1"),
            Duration::from_millis(400),
            |_| reports += 1,
        )
        .await;
    assert!(matches!(result, Err(VsphereError::Timeout)), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // Progress did not change after the first poll: one report.
    assert_eq!(reports, 1);
}

#[tokio::test]
async fn a_failed_task_is_its_typed_fault() {
    let (client, server) = replay_client(Arc::new(|req: &Req| match req.soap.as_deref() {
        Some("PowerOnVM_Task") => Resp::soap(
            r#"<PowerOnVM_TaskResponse xmlns="urn:vim25"><returnval type="Task">task-48</returnval></PowerOnVM_TaskResponse>"#,
        ),
        _ => Resp::sample("21b-poweronvm-task-again-invalidpowerstate.response.xml"),
    }))
    .await;
    let err = client
        .power_on(&MoRef::new("VirtualMachine", "vm-46"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, VsphereError::InvalidPowerState { .. }),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert_eq!(server.calls("RetrievePropertiesEx").len(), 1);
}

#[tokio::test]
async fn a_task_method_that_returns_no_task_is_malformed() {
    let (client, _server) = replay_client(Arc::new(|_req: &Req| {
        Resp::soap(
            r#"<PowerOnVM_TaskResponse xmlns="urn:vim25"><returnval type="VirtualMachine">vm-1</returnval></PowerOnVM_TaskResponse>"#,
        )
    }))
    .await;
    let err = client
        .power_on(&MoRef::new("VirtualMachine", "vm-1"))
        .await
        .unwrap_err();
    assert!(matches!(err, VsphereError::Malformed { .. }), "{err:?}");
}

#[test]
fn task_results_that_are_not_references_are_malformed() {
    assert_eq!(
        result_moref(
            Some(Value::MoRef(MoRef::new("VirtualMachine", "vm-1"))),
            "x"
        )
        .unwrap(),
        MoRef::new("VirtualMachine", "vm-1")
    );
    for bad in [None, Some(Value::String("vm-1".into()))] {
        assert!(matches!(
            result_moref(bad, "x"),
            Err(VsphereError::Malformed { .. })
        ));
    }
}
