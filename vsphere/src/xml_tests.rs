use super::*;

/// Every recorded request and response of tests/samples, by file name.
pub(crate) fn all_samples() -> Vec<(&'static str, &'static str)> {
    macro_rules! samples {
        ($($name:literal),* $(,)?) => {
            vec![$(($name, include_str!(concat!("../tests/samples/", $name)))),*]
        };
    }
    samples![
        "01-retrieveservicecontent.request.xml",
        "01-retrieveservicecontent.response.xml",
        "02-login.request.xml",
        "02-login.response.xml",
        "02b-login-wrong-password-invalidlogin.request.xml",
        "02b-login-wrong-password-invalidlogin.response.xml",
        "03-currentsession-with-cookie.request.xml",
        "03-currentsession-with-cookie.response.xml",
        "03a-nosession-notauthenticated.request.xml",
        "03a-nosession-notauthenticated.response.xml",
        "04-createcontainerview.request.xml",
        "04-createcontainerview.response.xml",
        "05-retrievepropertiesex-containerview-vms.request.xml",
        "05-retrievepropertiesex-containerview-vms.response.xml",
        "06-reconfigvm-task-set-guest-ipaddress.request.xml",
        "06-reconfigvm-task-set-guest-ipaddress.response.xml",
        "07-poll-task-info-state.request.xml",
        "07-poll-task-info-state.response.xml",
        "08-vm-guest-after-set.request.xml",
        "08-vm-guest-after-set.response.xml",
        "09-createsnapshot-task.request.xml",
        "09-createsnapshot-task.response.xml",
        "10-createfilter-on-task.request.xml",
        "10-createfilter-on-task.response.xml",
        "11-waitforupdatesex-task-state.request.xml",
        "11-waitforupdatesex-task-state.response.xml",
        "11b-waitforupdatesex-version-dash-vm-powerstate-modify.request.xml",
        "11b-waitforupdatesex-version-dash-vm-powerstate-modify.response.xml",
        "11c-waitforupdatesex-timeout-empty.request.xml",
        "11c-waitforupdatesex-timeout-empty.response.xml",
        "12-vm-snapshot-property.request.xml",
        "12-vm-snapshot-property.response.xml",
        "13-removesnapshot-task.request.xml",
        "13-removesnapshot-task.response.xml",
        "14-querychangeddiskareas-not-supported.request.xml",
        "14-querychangeddiskareas-not-supported.response.xml",
        "15-initiatefiletransfertoguest-guestoperationsunavailable.request.xml",
        "15-initiatefiletransfertoguest-guestoperationsunavailable.response.xml",
        "16-startprograminguest-not-implemented.request.xml",
        "16-startprograminguest-not-implemented.response.xml",
        "17-listprocessesinguest-not-implemented.request.xml",
        "17-listprocessesinguest-not-implemented.response.xml",
        "20-createvm-task.request.xml",
        "20-createvm-task.response.xml",
        "20b-createvm-task-result.request.xml",
        "20b-createvm-task-result.response.xml",
        "21-poweronvm-task.request.xml",
        "21-poweronvm-task.response.xml",
        "21b-poweronvm-task-again-invalidpowerstate.request.xml",
        "21b-poweronvm-task-again-invalidpowerstate.response.xml",
        "22-new-vm-properties.request.xml",
        "22-new-vm-properties.response.xml",
        "23-retrievepropertiesex-eventmanager-latestevent.request.xml",
        "23-retrievepropertiesex-eventmanager-latestevent.response.xml",
        "24-createcollectorforevents.request.xml",
        "24-createcollectorforevents.response.xml",
        "25-eventhistorycollector-latestpage.request.xml",
        "25-eventhistorycollector-latestpage.response.xml",
        "26-readnextevents.request.xml",
        "26-readnextevents.response.xml",
        "27-rename-task-specific-vm-name.request.xml",
        "27-rename-task-specific-vm-name.response.xml",
        "28-logout.request.xml",
        "28-logout.response.xml",
        "29-stale-cookie-after-logout-notauthenticated.request.xml",
        "29-stale-cookie-after-logout-notauthenticated.response.xml",
        "vm-nics.response.xml",
        "31-guestoperationsmanager-filemanager.response.xml",
        "32-initiatefiletransfertoguest.request.xml",
        "32-initiatefiletransfertoguest.response.xml",
        "33-startprograminguest.request.xml",
        "33-startprograminguest.response.xml",
        "34-listprocessesinguest.request.xml",
        "34-listprocessesinguest.response.xml",
        "35-registerextension.request.xml",
        "35-registerextension.response.xml",
        "35b-registerextension-duplicate-invalidargument.response.xml",
        "36-findextension.response.xml",
        "36b-findextension-unknown-key.response.xml",
        "37-unregisterextension.response.xml",
        "37b-unregisterextension-notfound.response.xml",
        "38-registerextension-methodnotfound.response.xml",
    ]
}

fn parse_str(xml: &str) -> Result<Element, VsphereError> {
    parse(xml.as_bytes(), &Limits::default())
}

fn is_malformed(r: Result<Element, VsphereError>) -> bool {
    matches!(r, Err(VsphereError::Malformed { .. }))
}

#[test]
fn every_sample_parses_into_a_soap_envelope() {
    let samples = all_samples();
    assert_eq!(samples.len(), 82);
    for (name, xml) in samples {
        let root = parse_str(xml).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(root.is(&Ns::SoapEnv, "Envelope"), "{name}");
        let body = root.child("Body").unwrap();
        assert!(body.is(&Ns::SoapEnv, "Body"), "{name}");
        let first = &body.children[0];
        // Requests use the prefix vim25:, responses a default namespace: both resolve to urn:vim25.
        assert!(
            first.ns == Ns::Vim25 || first.is(&Ns::SoapEnv, "Fault"),
            "{name}: {first:?}"
        );
    }
}

#[test]
fn xsi_type_is_resolved_by_uri_whatever_the_prefix() {
    // vcsim's spelling.
    let vcsim = parse_str(
        r#"<val xmlns="urn:vim25" xmlns:XMLSchema-instance="http://www.w3.org/2001/XMLSchema-instance" XMLSchema-instance:type="xsd:string" xmlns:xsd="http://www.w3.org/2001/XMLSchema">x</val>"#,
    )
    .unwrap();
    assert_eq!(
        vcsim.xsi_type,
        Some(TypeName {
            ns: Ns::Xsd,
            name: "string".into()
        })
    );
    assert!(
        vcsim.attrs.is_empty(),
        "xsi:type is not kept as an attribute"
    );
    // An unprefixed type value takes the default namespace in scope.
    let unprefixed = parse_str(
        r#"<v xmlns="urn:vim25" xmlns:i="http://www.w3.org/2001/XMLSchema-instance" i:type="VirtualDisk"/>"#,
    )
    .unwrap();
    assert_eq!(unprefixed.xsi_type.as_ref().unwrap().ns, Ns::Vim25);
    assert_eq!(unprefixed.xsi_type(), Some("VirtualDisk"));
    // The prefix "xsi" bound to something else is not xsi.
    let impostor = parse_str(r#"<v xmlns:xsi="urn:not-xsi" xsi:type="VirtualDisk"/>"#).unwrap();
    assert_eq!(impostor.xsi_type, None);
    assert_eq!(
        impostor.attr_ns(&Ns::Other("urn:not-xsi".into()), "type"),
        Some("VirtualDisk")
    );
    assert_eq!(impostor.attr("type"), None);
    // An undeclared prefix inside the value is tolerated (the local name is kept).
    let loose = parse_str(
        r#"<v xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="nope:Thing"/>"#,
    )
    .unwrap();
    assert_eq!(
        loose.xsi_type.unwrap(),
        TypeName {
            ns: Ns::None,
            name: "Thing".into()
        }
    );
}

#[test]
fn element_namespaces_come_from_uris() {
    let a =
        parse_str(r#"<a:Envelope xmlns:a="http://schemas.xmlsoap.org/soap/envelope/"/>"#).unwrap();
    assert!(a.is(&Ns::SoapEnv, "Envelope"));
    let b = parse_str(r#"<soapenv:Envelope xmlns:soapenv="urn:other"/>"#).unwrap();
    assert!(!b.is(&Ns::SoapEnv, "Envelope"));
    assert_eq!(b.ns.uri(), Some("urn:other"));
    let c = parse_str(r#"<x><y xmlns="urn:vim25"><z/></y><w/></x>"#).unwrap();
    assert_eq!(c.ns, Ns::None);
    assert_eq!(c.children[0].children[0].ns, Ns::Vim25);
    assert_eq!(c.children[1].ns, Ns::None);
    assert!(is_malformed(parse_str(r#"<p:x/>"#)));
    assert!(is_malformed(parse_str(r#"<x p:a="1"/>"#)));
}

#[test]
fn text_entities_cdata_and_whitespace() {
    let el = parse_str(
        "<r a=\"x &amp; &quot;y&quot; &#233;\"><leaf>  keep me  </leaf>\n  <e>&lt;b&gt; &amp; &#x1F600; &#65;</e><c><![CDATA[<raw> & ]]></c><empty/></r>",
    )
    .unwrap();
    assert_eq!(el.attr("a"), Some("x & \"y\" é"));
    assert_eq!(el.text, "", "indentation between children is dropped");
    assert_eq!(el.child_text("leaf"), Some("  keep me  "));
    assert_eq!(el.child_text("e"), Some("<b> & 😀 A"));
    assert_eq!(el.child_text("c"), Some("<raw> & "));
    assert_eq!(el.child_text("empty"), Some(""));
    assert_eq!(el.children_named("leaf").count(), 1);
    // CR LF in text is normalized as XML requires.
    assert_eq!(parse_str("<a>1\r\n2</a>").unwrap().text, "1\n2");
}

#[test]
fn hostile_and_broken_documents_are_malformed() {
    for bad in [
        "",
        "   ",
        "<a>",
        "<a></b>",
        "</a>",
        "<a/><b/>",
        "text<a/>",
        "<a/>text",
        "<a>&unknown;</a>",
        "<a>&#0;</a>",
        "<a>&#xD800;</a>",
        "<a b='1' b='2'/>",
        "<a b=1/>",
        "<!DOCTYPE a [<!ENTITY x \"xx\">]><a>&x;</a>",
        "<a><!-- unterminated </a>",
        "<a><![CDATA[ unterminated </a>",
        "<<<<",
        "<a\u{0}/>",
    ] {
        assert!(is_malformed(parse_str(bad)), "{bad:?}");
    }
    // Invalid UTF-8 in text and in names.
    assert!(is_malformed(parse(b"<a>\xff\xfe</a>", &Limits::default())));
    assert!(is_malformed(parse(b"<\xff/>", &Limits::default())));
}

#[test]
fn ten_thousand_nested_elements_fail_cleanly() {
    let deep = format!("{}{}", "<a>".repeat(10_000), "</a>".repeat(10_000));
    match parse_str(&deep) {
        Err(VsphereError::Malformed { reason }) => assert!(reason.contains("deeper"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // The limit is exact: 64 levels parse, 65 do not.
    let at_limit = format!("{}{}", "<a>".repeat(64), "</a>".repeat(64));
    assert!(parse_str(&at_limit).is_ok());
    let over = format!("{}<b/>{}", "<a>".repeat(64), "</a>".repeat(64));
    assert!(is_malformed(parse_str(&over)));
}

#[test]
fn size_and_element_limits() {
    let limits = Limits {
        max_bytes: 100,
        max_depth: 8,
        max_elements: 10,
    };
    let big = format!("<a>{}</a>", "x".repeat(100));
    match parse(big.as_bytes(), &limits) {
        Err(VsphereError::Malformed { reason }) => assert!(reason.contains("over the limit")),
        other => panic!("{other:?}"),
    }
    assert!(parse(b"<a><b/><b/><b/></a>", &limits).is_ok());
    let many = format!("<a>{}</a>", "<b/>".repeat(10));
    assert!(matches!(
        parse(many.as_bytes(), &limits),
        Err(VsphereError::Malformed { reason }) if reason.contains("elements")
    ));
}

#[test]
fn every_truncation_of_a_response_is_malformed() {
    let xml =
        include_str!("../tests/samples/05-retrievepropertiesex-containerview-vms.response.xml");
    let end = xml.find("</soapenv:Envelope>").unwrap() + "</soapenv:Envelope>".len();
    for cut in 0..xml.len() {
        let result = parse(&xml.as_bytes()[..cut], &Limits::default());
        if cut >= end {
            // Only the trailing comment and newline are missing: still the whole envelope, or a broken comment.
            assert!(result.is_ok() || is_malformed(result), "cut at {cut}");
        } else {
            assert!(is_malformed(result), "cut at {cut} parsed");
        }
    }
}
