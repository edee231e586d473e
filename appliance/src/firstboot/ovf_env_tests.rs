use super::*;

/// As vSphere writes it (abridged), with the namespace prefixes it uses.
pub(super) fn vsphere_env(properties: &[(&str, &str)]) -> String {
    let props: String = properties
        .iter()
        .map(|(k, v)| format!("         <Property oe:key=\"{k}\" oe:value=\"{v}\"/>\n"))
        .collect();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Environment
     xmlns="http://schemas.dmtf.org/ovf/environment/1"
     xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
     xmlns:oe="http://schemas.dmtf.org/ovf/environment/1"
     xmlns:ve="http://www.vmware.com/schema/ovfenv"
     oe:id=""
     ve:vCenterId="vm-42">
   <PlatformSection>
      <Kind>VMware ESXi</Kind>
      <Version>8.0.2</Version>
   </PlatformSection>
   <PropertySection>
{props}   </PropertySection>
   <ve:EthernetAdapterSection>
      <ve:Adapter ve:mac="00:50:56:aa:bb:cc" ve:network="VM Network" ve:unitNumber="7"/>
   </ve:EthernetAdapterSection>
</Environment>
"#
    )
}

#[test]
fn reads_the_properties_of_a_vsphere_document() {
    let doc = vsphere_env(&[("ferry.hostname", "dr-1"), ("ferry.ip", "10.0.0.5/24")]);
    let props = parse_properties(doc.as_bytes()).unwrap();
    assert_eq!(props.len(), 2);
    assert_eq!(props["ferry.hostname"], "dr-1");
    assert_eq!(props["ferry.ip"], "10.0.0.5/24");
}

#[test]
fn reads_by_namespace_uri_whatever_the_prefixes() {
    let doc = r#"<env:Environment xmlns:env="http://schemas.dmtf.org/ovf/environment/1">
        <env:PropertySection>
          <env:Property env:key="ferry.hostname" env:value="a&amp;b"/>
        </env:PropertySection></env:Environment>"#;
    let props = parse_properties(doc.as_bytes()).unwrap();
    assert_eq!(props["ferry.hostname"], "a&b");
}

#[test]
fn ignores_properties_and_attributes_of_other_namespaces() {
    // `key` without the OVF namespace, and a Property element in another namespace.
    let doc = r#"<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1"
          xmlns:x="urn:other" xmlns:oe="http://schemas.dmtf.org/ovf/environment/1">
        <PropertySection>
          <x:Property oe:key="ferry.ip" oe:value="10.0.0.9/24"/>
          <Property oe:key="ferry.hostname" x:value="wrong" oe:value="right"/>
        </PropertySection></Environment>"#;
    let props = parse_properties(doc.as_bytes()).unwrap();
    assert_eq!(props.len(), 1);
    assert_eq!(props["ferry.hostname"], "right");
}

#[test]
fn a_document_without_a_property_section_has_no_properties() {
    let doc = r#"<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1"/>"#;
    assert!(parse_properties(doc.as_bytes()).unwrap().is_empty());
}

#[test]
fn truncated_xml_is_a_malformed_error() {
    let doc = vsphere_env(&[("ferry.ip", "10.0.0.5/24")]);
    let cut = &doc.as_bytes()[..doc.len() / 2];
    assert!(matches!(
        parse_properties(cut),
        Err(FirstbootError::MalformedXml(_))
    ));
}

#[test]
fn bad_xml_is_a_malformed_error() {
    for doc in [
        "",
        "not xml at all",
        r#"<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1"><PropertySection></Environment>"#,
        r#"<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1"><Property oe:key="a"/></Environment>"#,
        r#"<!DOCTYPE x [<!ENTITY a "b">]><Environment xmlns="http://schemas.dmtf.org/ovf/environment/1"/>"#,
    ] {
        let result = parse_properties(doc.as_bytes());
        assert!(
            matches!(result, Err(FirstbootError::MalformedXml(_))),
            "{doc:?} gave {result:?}"
        );
    }
}

#[test]
fn a_property_without_a_key_is_a_malformed_error() {
    let doc = r#"<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1"
        xmlns:oe="http://schemas.dmtf.org/ovf/environment/1">
        <PropertySection><Property oe:value="x"/></PropertySection></Environment>"#;
    assert!(matches!(
        parse_properties(doc.as_bytes()),
        Err(FirstbootError::MalformedXml(_))
    ));
}

#[test]
fn another_root_element_is_refused() {
    let doc = r#"<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"/>"#;
    match parse_properties(doc.as_bytes()) {
        Err(FirstbootError::NotAnEnvironment(root)) => assert!(root.contains("Envelope")),
        other => panic!("{other:?}"),
    }
    // The right local name in no namespace is not an OVF environment either.
    assert!(matches!(
        parse_properties(b"<Environment/>"),
        Err(FirstbootError::NotAnEnvironment(_))
    ));
}

#[test]
fn an_oversized_document_is_refused_before_parsing() {
    let mut doc = vsphere_env(&[]).into_bytes();
    doc.extend(std::iter::repeat_n(b' ', MAX_OVF_ENV_BYTES));
    match parse_properties(&doc) {
        Err(FirstbootError::TooLarge { size, limit }) => {
            assert_eq!(size, doc.len());
            assert_eq!(limit, MAX_OVF_ENV_BYTES);
        }
        other => panic!("{other:?}"),
    }
}
