//! A namespace-aware XML reader that builds a small owned tree, with limits.
//!
//! Names are resolved by namespace URI, never by prefix: vcsim writes `xsi:type` as
//! `XMLSchema-instance:type`, and a real vCenter may use yet another prefix. The tree is built
//! under limits on size, depth and element count, so hostile input ends in
//! [`VsphereError::Malformed`], never in a panic, a stack overflow or unbounded memory.

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{QName, ResolveResult};
use quick_xml::{NsReader, XmlVersion};

use crate::error::VsphereError;

pub const NS_VIM25: &str = "urn:vim25";
pub const NS_SOAP_ENV: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub const NS_XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";
pub const NS_XSD: &str = "http://www.w3.org/2001/XMLSchema";

/// A namespace, resolved from its URI. The ones vSphere uses are interned.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Ns {
    /// No namespace (an unprefixed attribute, or an element outside any default namespace).
    #[default]
    None,
    Vim25,
    SoapEnv,
    Xsi,
    Xsd,
    Other(Box<str>),
}

impl Ns {
    fn from_uri(uri: &[u8]) -> Result<Ns, VsphereError> {
        Ok(match uri {
            b"urn:vim25" => Ns::Vim25,
            b"http://schemas.xmlsoap.org/soap/envelope/" => Ns::SoapEnv,
            b"http://www.w3.org/2001/XMLSchema-instance" => Ns::Xsi,
            b"http://www.w3.org/2001/XMLSchema" => Ns::Xsd,
            other => Ns::Other(utf8(other)?.into()),
        })
    }

    /// The namespace URI (None for no namespace).
    pub fn uri(&self) -> Option<&str> {
        match self {
            Ns::None => None,
            Ns::Vim25 => Some(NS_VIM25),
            Ns::SoapEnv => Some(NS_SOAP_ENV),
            Ns::Xsi => Some(NS_XSI),
            Ns::Xsd => Some(NS_XSD),
            Ns::Other(uri) => Some(uri),
        }
    }
}

/// A qualified type name, the value of an `xsi:type` attribute with its prefix resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeName {
    pub ns: Ns,
    pub name: String,
}

/// An attribute other than a namespace declaration or `xsi:type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ns: Ns,
    pub name: String,
    pub value: String,
}

/// One element of the owned tree.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    pub ns: Ns,
    /// The local name.
    pub name: String,
    /// The `xsi:type` attribute, whatever its prefix.
    pub xsi_type: Option<TypeName>,
    pub attrs: Vec<Attr>,
    /// The character data, exactly as sent for leaf elements. For an element with children,
    /// whitespace-only text (indentation) is dropped.
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    /// Whether this element has the given namespace and local name.
    pub fn is(&self, ns: &Ns, name: &str) -> bool {
        self.ns == *ns && self.name == name
    }

    /// The first child with this local name. Used inside a response whose namespace is already
    /// checked; vSphere puts data-object fields in urn:vim25 and fault fields in no namespace.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// All children with this local name, in document order.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The text of the first child with this local name.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }

    /// An attribute in no namespace (`type` of a managed object reference).
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attr_ns(&Ns::None, name)
    }

    pub fn attr_ns(&self, ns: &Ns, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.ns == *ns && a.name == name)
            .map(|a| a.value.as_str())
    }

    /// The local name of the `xsi:type` (`VirtualDisk`, `string` for `xsd:string`).
    pub fn xsi_type(&self) -> Option<&str> {
        self.xsi_type.as_ref().map(|t| t.name.as_str())
    }
}

/// Limits on a document.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_depth: usize,
    pub max_elements: usize,
}

impl Default for Limits {
    /// 64 MiB, depth 64, one million elements (a page of 1,000 VMs with all their devices uses a
    /// few hundred thousand). The element cap bounds the tree to a few hundred MiB in the worst case.
    fn default() -> Self {
        Limits {
            max_bytes: 64 << 20,
            max_depth: 64,
            max_elements: 1_000_000,
        }
    }
}

fn malformed(reason: impl Into<String>) -> VsphereError {
    VsphereError::malformed(reason)
}

fn utf8(bytes: &[u8]) -> Result<&str, VsphereError> {
    std::str::from_utf8(bytes).map_err(|_| malformed("invalid UTF-8 in a name"))
}

fn resolved(result: ResolveResult<'_>) -> Result<Ns, VsphereError> {
    match result {
        ResolveResult::Unbound => Ok(Ns::None),
        ResolveResult::Bound(ns) => Ns::from_uri(ns.into_inner()),
        ResolveResult::Unknown(prefix) => Err(malformed(format!(
            "undeclared namespace prefix {:?}",
            String::from_utf8_lossy(&prefix)
        ))),
    }
}

/// Reads one start tag: resolves its name and attributes while its namespace declarations are in scope.
fn open(reader: &NsReader<&[u8]>, start: &BytesStart<'_>) -> Result<Element, VsphereError> {
    let resolver = reader.resolver();
    let (ns, local) = resolver.resolve_element(start.name());
    let mut el = Element {
        ns: resolved(ns)?,
        name: utf8(local.as_ref())?.to_string(),
        ..Element::default()
    };
    for attr in start.attributes() {
        let attr = attr.map_err(|e| malformed(format!("attribute of <{}>: {e}", el.name)))?;
        if attr.key.as_namespace_binding().is_some() {
            continue;
        }
        let (ns, local) = resolver.resolve_attribute(attr.key);
        let ns = resolved(ns)?;
        let value = attr
            .decoded_and_normalized_value(XmlVersion::Implicit1_0, reader.decoder())
            .map_err(|e| malformed(format!("attribute of <{}>: {e}", el.name)))?;
        let name = utf8(local.as_ref())?;
        if ns == Ns::Xsi && name == "type" {
            // A QName value: its prefix is resolved against the declarations in scope here.
            let (type_local, prefix) = QName(value.as_bytes()).decompose();
            let type_ns = match resolver.resolve_prefix(prefix, true) {
                // An undeclared prefix in a value is tolerated: the local names of vSphere types are unique.
                ResolveResult::Unknown(_) => Ns::None,
                other => resolved(other)?,
            };
            el.xsi_type = Some(TypeName {
                ns: type_ns,
                name: utf8(type_local.as_ref())?.to_string(),
            });
        } else {
            el.attrs.push(Attr {
                ns,
                name: name.to_string(),
                value: value.into_owned(),
            });
        }
    }
    Ok(el)
}

/// Finishes an element: indentation between children is not data.
fn close(mut el: Element) -> Element {
    if !el.children.is_empty() && el.text.bytes().all(|b| b.is_ascii_whitespace()) {
        el.text = String::new();
    }
    el
}

/// Parses a whole document into its root element.
pub fn parse(doc: &[u8], limits: &Limits) -> Result<Element, VsphereError> {
    if doc.len() > limits.max_bytes {
        return Err(malformed(format!(
            "document of {} bytes is over the limit of {} bytes",
            doc.len(),
            limits.max_bytes
        )));
    }
    // XML 1.0 allows no control character but tab, LF and CR (quick-xml does not check).
    if let Some(at) = doc
        .iter()
        .position(|&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r'))
    {
        return Err(malformed(format!("control character at byte {at}")));
    }
    let mut reader = NsReader::from_reader(doc);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut elements = 0usize;
    loop {
        let event = reader.read_event().map_err(|e| {
            malformed(format!(
                "bad XML near byte {}: {e}",
                reader.error_position()
            ))
        })?;
        match event {
            Event::Start(ref start) | Event::Empty(ref start) => {
                if root.is_some() {
                    return Err(malformed("more than one root element"));
                }
                elements += 1;
                if elements > limits.max_elements {
                    return Err(malformed(format!(
                        "more than {} elements",
                        limits.max_elements
                    )));
                }
                if stack.len() >= limits.max_depth {
                    return Err(malformed(format!(
                        "elements nested deeper than {}",
                        limits.max_depth
                    )));
                }
                let el = open(&reader, start)?;
                if matches!(event, Event::Start(_)) {
                    stack.push(el);
                } else {
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(el),
                        None => root = Some(el),
                    }
                }
            }
            Event::End(_) => {
                // quick-xml has already checked that the end tag matches the open one.
                let el = close(stack.pop().ok_or_else(|| malformed("unmatched end tag"))?);
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Text(text) => {
                let text = text
                    .xml10_content()
                    .map_err(|e| malformed(format!("text: {e}")))?;
                push_text(&mut stack, &text)?;
            }
            Event::CData(data) => {
                let data = data
                    .xml10_content()
                    .map_err(|e| malformed(format!("CDATA: {e}")))?;
                push_text(&mut stack, &data)?;
            }
            Event::GeneralRef(reference) => {
                let ch = reference
                    .resolve_char_ref()
                    .map_err(|e| malformed(format!("character reference: {e}")))?;
                let mut buf = [0u8; 4];
                let text = match ch {
                    Some(c) => &*c.encode_utf8(&mut buf),
                    None => {
                        let name = reference
                            .decode()
                            .map_err(|e| malformed(format!("entity: {e}")))?;
                        quick_xml::escape::resolve_xml_entity(&name)
                            .ok_or_else(|| malformed(format!("unknown entity &{name};")))?
                    }
                };
                push_text(&mut stack, text)?;
            }
            Event::DocType(_) => return Err(malformed("a DOCTYPE is not allowed")),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(malformed(format!(
            "truncated document: <{}> is not closed",
            stack.last().map(|e| e.name.as_str()).unwrap_or_default()
        )));
    }
    root.ok_or_else(|| malformed("empty document"))
}

fn push_text(stack: &mut [Element], text: &str) -> Result<(), VsphereError> {
    match stack.last_mut() {
        Some(el) => {
            el.text.push_str(text);
            Ok(())
        }
        None if text.bytes().all(|b| b.is_ascii_whitespace()) => Ok(()),
        None => Err(malformed("text outside the root element")),
    }
}

#[cfg(test)]
#[path = "xml_tests.rs"]
pub(crate) mod tests;
