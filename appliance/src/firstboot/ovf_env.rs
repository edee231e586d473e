//! Reading the OVF environment document (`ovf-env.xml`) into its property map.
//!
//! Elements and attributes are matched by namespace URI: vSphere writes the `oe:` prefix, other
//! tools pick their own, and a prefix-based reader would silently find no properties.

use std::collections::BTreeMap;

use vsphere::xml::{self, Element, Limits, Ns};

use super::FirstbootError;

/// The namespace of `<Environment>` and its sections.
pub const NS_OVF_ENV: &str = "http://schemas.dmtf.org/ovf/environment/1";
/// A real document is a few KiB; anything near this is not an OVF environment.
pub const MAX_OVF_ENV_BYTES: usize = 1 << 20;

/// The `<PropertySection>` key/value pairs. A key given twice keeps its last value, as
/// vSphere itself never repeats one.
pub fn parse_properties(doc: &[u8]) -> Result<BTreeMap<String, String>, FirstbootError> {
    if doc.len() > MAX_OVF_ENV_BYTES {
        return Err(FirstbootError::TooLarge {
            size: doc.len(),
            limit: MAX_OVF_ENV_BYTES,
        });
    }
    let limits = Limits {
        max_bytes: MAX_OVF_ENV_BYTES,
        max_depth: 16,
        max_elements: 10_000,
    };
    let root = xml::parse(doc, &limits).map_err(|e| FirstbootError::MalformedXml(e.to_string()))?;
    let ns = Ns::Other(NS_OVF_ENV.into());
    if !root.is(&ns, "Environment") {
        return Err(FirstbootError::NotAnEnvironment(describe(&root)));
    }
    let mut properties = BTreeMap::new();
    for section in root
        .children
        .iter()
        .filter(|c| c.is(&ns, "PropertySection"))
    {
        for property in section.children.iter().filter(|c| c.is(&ns, "Property")) {
            let key = property.attr_ns(&ns, "key").ok_or_else(|| {
                FirstbootError::MalformedXml("a <Property> without a key attribute".into())
            })?;
            let value = property.attr_ns(&ns, "value").unwrap_or_default();
            properties.insert(key.to_string(), value.to_string());
        }
    }
    Ok(properties)
}

fn describe(el: &Element) -> String {
    match el.ns.uri() {
        Some(uri) => format!("{{{uri}}}{}", el.name),
        None => el.name.clone(),
    }
}
