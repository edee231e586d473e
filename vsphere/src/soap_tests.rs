use super::*;
use crate::client::{login_request, Credentials};
use crate::property::{
    container_view_request, create_filter_request, retrieve_request, wait_request, FilterSpec,
};
use crate::xml::{parse, Limits, TypeName};

/// A namespace-resolved shape of an element, for comparing our requests with recorded ones
/// regardless of prefixes and indentation.
#[derive(Debug, PartialEq)]
struct Shape {
    ns: Ns,
    name: String,
    xsi_type: Option<TypeName>,
    attrs: Vec<(String, String)>,
    text: String,
    children: Vec<Shape>,
}

fn shape(el: &Element) -> Shape {
    let mut attrs: Vec<_> = el
        .attrs
        .iter()
        .map(|a| (format!("{:?}:{}", a.ns, a.name), a.value.clone()))
        .collect();
    attrs.sort();
    Shape {
        ns: el.ns.clone(),
        name: el.name.clone(),
        xsi_type: el.xsi_type.clone(),
        attrs,
        text: el.text.clone(),
        children: el.children.iter().map(shape).collect(),
    }
}

fn body_shape(xml: &str) -> Shape {
    let root = parse(xml.as_bytes(), &Limits::default()).unwrap();
    shape(&root.child("Body").unwrap().children[0])
}

fn assert_same_request(ours: Request, recorded: &str) {
    let ours = ours.finish().unwrap();
    assert_eq!(body_shape(&ours), body_shape(recorded), "ours: {ours}");
}

fn moref(kind: &str, value: &str) -> MoRef {
    MoRef::new(kind, value)
}

#[test]
fn requests_match_the_recorded_ones() {
    let pc = moref("PropertyCollector", "propertyCollector");
    let sm = moref("SessionManager", "SessionManager");
    let view = moref(
        "ContainerView",
        "session[7d2880be-a632-4015-9ae0-a15885006910]e3a1c7e8-e7cc-4be7-b8a9-5320e1acb59b",
    );
    assert_same_request(
        Request::new(
            "RetrieveServiceContent",
            &moref("ServiceInstance", "ServiceInstance"),
        ),
        include_str!("../tests/samples/01-retrieveservicecontent.request.xml"),
    );
    let creds = Credentials {
        username: "user".into(),
        password: "pass".into(),
    };
    assert_same_request(
        login_request(&sm, &creds),
        include_str!("../tests/samples/02-login.request.xml"),
    );
    assert_same_request(
        retrieve_request(&pc, &[FilterSpec::object(&sm, &["currentSession"])], None),
        include_str!("../tests/samples/03-currentsession-with-cookie.request.xml"),
    );
    assert_same_request(
        container_view_request(
            &moref("ViewManager", "ViewManager"),
            &moref("Folder", "group-d1"),
            &["VirtualMachine"],
            true,
        ),
        include_str!("../tests/samples/04-createcontainerview.request.xml"),
    );
    let paths = [
        "name",
        "config.uuid",
        "config.instanceUuid",
        "guest.ipAddress",
        "guest.guestFamily",
        "runtime.powerState",
        "config.hardware.device",
    ];
    assert_same_request(
        retrieve_request(
            &pc,
            &[FilterSpec::container_view(&view, "VirtualMachine", &paths)],
            Some(100),
        ),
        include_str!("../tests/samples/05-retrievepropertiesex-containerview-vms.request.xml"),
    );
    assert_same_request(
        retrieve_request(
            &pc,
            &[FilterSpec::object(
                &moref("Task", "task-41"),
                &["info.state", "info.error", "info.result"],
            )],
            None,
        ),
        include_str!("../tests/samples/07-poll-task-info-state.request.xml"),
    );
    assert_same_request(
        create_filter_request(
            &pc,
            &FilterSpec::object(
                &moref("Task", "task-42"),
                &["info.state", "info.result", "info.error"],
            ),
            false,
        ),
        include_str!("../tests/samples/10-createfilter-on-task.request.xml"),
    );
    assert_same_request(
        wait_request(&pc, "", 5, None),
        include_str!("../tests/samples/11-waitforupdatesex-task-state.request.xml"),
    );
    assert_same_request(
        wait_request(&pc, "-", 2, None),
        include_str!(
            "../tests/samples/11b-waitforupdatesex-version-dash-vm-powerstate-modify.request.xml"
        ),
    );
    assert_same_request(
        Request::new("Logout", &sm),
        include_str!("../tests/samples/28-logout.request.xml"),
    );
}

#[test]
fn values_are_escaped_and_survive_a_round_trip() {
    let tricky = "a&b<c>d\"e'f\r\ng\th ü 😀 ]]> &amp;";
    let mut req = Request::new("Login", &moref("Sess\"ion<Manager>", "v&1"));
    req.text("userName", tricky)
        .typed_text("value", "xsd:string", tricky)
        .open("nested")
        .moref("obj", &moref("a\tb\nc", tricky));
    let xml = req.finish().unwrap();
    let root = parse(xml.as_bytes(), &Limits::default()).unwrap();
    let login = &root.child("Body").unwrap().children[0];
    assert!(login.is(&Ns::Vim25, "Login"));
    let this = login.child("_this").unwrap();
    assert_eq!(this.attr("type"), Some("Sess\"ion<Manager>"));
    assert_eq!(this.text, "v&1");
    assert_eq!(login.child_text("userName"), Some(tricky));
    let value = login.child("value").unwrap();
    assert_eq!(value.text, tricky);
    assert_eq!(value.xsi_type.as_ref().unwrap().ns, Ns::Xsd);
    let obj = login.child("nested").unwrap().child("obj").unwrap();
    assert_eq!(obj.attr("type"), Some("a\tb\nc"));
    assert_eq!(obj.text, tricky);
}

#[test]
fn text_xml_cannot_carry_is_refused() {
    for bad in ["nul\u{0}", "bell\u{7}", "esc\u{1b}", "\u{ffff}"] {
        let mut req = Request::new("Login", &moref("SessionManager", "SessionManager"));
        req.text("password", bad);
        assert!(
            matches!(req.finish(), Err(VsphereError::InvalidInput { .. })),
            "{bad:?}"
        );
    }
}

fn decode(status: u16, xml: &str, method: &str) -> Result<Element, VsphereError> {
    decode_response(status, xml.as_bytes(), method, &Limits::default())
}

#[test]
fn recorded_faults_become_typed_errors() {
    assert!(matches!(
        decode(
            500,
            include_str!("../tests/samples/02b-login-wrong-password-invalidlogin.response.xml"),
            "Login"
        ),
        Err(VsphereError::InvalidLogin)
    ));
    for (xml, method) in [
        (
            include_str!("../tests/samples/14-querychangeddiskareas-not-supported.response.xml"),
            "QueryChangedDiskAreas",
        ),
        (
            include_str!("../tests/samples/16-startprograminguest-not-implemented.response.xml"),
            "StartProgramInGuest",
        ),
        (
            include_str!("../tests/samples/17-listprocessesinguest-not-implemented.response.xml"),
            "ListProcessesInGuest",
        ),
    ] {
        match decode(500, xml, method) {
            Err(VsphereError::MethodNotFound { method: m }) => assert_eq!(m, method),
            other => panic!("{method}: {other:?}"),
        }
    }
    assert!(matches!(
        decode(500, include_str!("../tests/samples/15-initiatefiletransfertoguest-guestoperationsunavailable.response.xml"), "InitiateFileTransferToGuest"),
        Err(VsphereError::GuestOperationsUnavailable)
    ));
    assert!(matches!(
        decode(
            500,
            include_str!(
                "../tests/samples/29-stale-cookie-after-logout-notauthenticated.response.xml"
            ),
            "CreateContainerView"
        ),
        Err(VsphereError::NotAuthenticated)
    ));
}

#[test]
fn every_recorded_response_decodes() {
    for (name, xml) in crate::xml::tests::all_samples() {
        if !name.ends_with(".response.xml") {
            continue;
        }
        let envelope = parse(xml.as_bytes(), &Limits::default()).unwrap();
        let first = &envelope.child("Body").unwrap().children[0];
        if first.is(&Ns::SoapEnv, "Fault") {
            let err = decode(500, xml, "Any").unwrap_err();
            assert!(err.fault_type().is_some(), "{name}: {err:?}");
            continue;
        }
        let method = first.name.strip_suffix("Response").unwrap().to_string();
        let resp = decode(200, xml, &method).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(resp.name, format!("{method}Response"));
        // The same document answering another method is an unexpected shape.
        assert!(matches!(
            decode(200, xml, "Other"),
            Err(VsphereError::Malformed { .. })
        ));
    }
}

#[test]
fn envelopes_that_are_not_answers() {
    let env = |inner: &str| {
        format!(
            r#"<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/">{inner}</e:Envelope>"#
        )
    };
    let malformed =
        |r: Result<Element, VsphereError>| matches!(r, Err(VsphereError::Malformed { .. }));
    assert!(malformed(decode(200, &env(""), "Login")));
    assert!(malformed(decode(200, &env("<e:Body/>"), "Login")));
    assert!(malformed(decode(200, "<html>hi</html>", "Login")));
    assert!(malformed(decode(200, "not xml", "Login")));
    // The right name in the wrong namespace is not the answer.
    assert!(malformed(decode(
        200,
        &env("<e:Body><LoginResponse/></e:Body>"),
        "Login"
    )));
    assert!(decode(
        200,
        &env(r#"<e:Body><LoginResponse xmlns="urn:vim25"/></e:Body>"#),
        "Login"
    )
    .is_ok());
    // HTTP errors without a SOAP fault keep their status.
    assert!(matches!(
        decode(503, "", "Login"),
        Err(VsphereError::Http { status: 503 })
    ));
    assert!(matches!(
        decode(500, "<html>oops</html>", "Login"),
        Err(VsphereError::Http { status: 500 })
    ));
    assert!(matches!(
        decode(
            404,
            &env(r#"<e:Body><LoginResponse xmlns="urn:vim25"/></e:Body>"#),
            "Login"
        ),
        Err(VsphereError::Http { status: 404 })
    ));
    // A fault without detail is named by its faultcode.
    match decode(500, &env("<e:Body><e:Fault><faultcode>e:Client</faultcode><faultstring>bad request</faultstring></e:Fault></e:Body>"), "Login") {
        Err(VsphereError::Fault { type_name, message }) => {
            assert_eq!((type_name.as_str(), message.as_str()), ("Client", "bad request"))
        }
        other => panic!("{other:?}"),
    }
    // A truncated fault body is still an HTTP error, a truncated answer is malformed.
    let fault = include_str!("../tests/samples/02b-login-wrong-password-invalidlogin.response.xml");
    assert!(matches!(
        decode(500, &fault[..fault.len() / 2], "Login"),
        Err(VsphereError::Http { status: 500 })
    ));
    let answer = include_str!("../tests/samples/02-login.response.xml");
    assert!(malformed(decode(
        200,
        &answer[..answer.len() - 30],
        "Login"
    )));
}
