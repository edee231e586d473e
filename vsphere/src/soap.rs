//! SOAP envelopes: the request builder (with escaping) and the response decoder (faults to typed errors).

use std::fmt::Write as _;

use crate::error::VsphereError;
use crate::types::MoRef;
use crate::xml::{self, Element, Limits, Ns};

/// Builds one vim25 request. Element names are `&'static str` (they come from this crate, never
/// from data); every value is escaped. Text that XML 1.0 cannot carry (most control characters)
/// makes [`Request::finish`] fail instead of sending something the server would misread.
#[derive(Debug)]
pub struct Request {
    method: &'static str,
    buf: String,
    open: Vec<&'static str>,
    bad_text: bool,
}

impl Request {
    /// Starts `<method xmlns="urn:vim25"><_this type="...">...</_this>`.
    pub fn new(method: &'static str, this: &MoRef) -> Self {
        let mut req = Request {
            method,
            buf: String::with_capacity(512),
            open: Vec::new(),
            bad_text: false,
        };
        req.buf.push_str(concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" "#,
            r#"xmlns:xsd="http://www.w3.org/2001/XMLSchema" "#,
            r#"xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>"#
        ));
        let _ = write!(req.buf, r#"<{method} xmlns="urn:vim25">"#);
        req.moref("_this", this);
        req
    }

    pub fn method(&self) -> &'static str {
        self.method
    }

    /// `<name>value</name>`.
    pub fn text(&mut self, name: &'static str, value: &str) -> &mut Self {
        let _ = write!(self.buf, "<{name}>");
        self.escape(value, false);
        let _ = write!(self.buf, "</{name}>");
        self
    }

    /// `<name>value</name>` for numbers and booleans.
    pub fn value(&mut self, name: &'static str, value: impl std::fmt::Display) -> &mut Self {
        let value = value.to_string();
        self.text(name, &value)
    }

    /// `<name xsi:type="type">value</name>`, for values of type anyType (`xsd:string`, `xsd:int`).
    pub fn typed_text(
        &mut self,
        name: &'static str,
        xsi_type: &'static str,
        value: &str,
    ) -> &mut Self {
        let _ = write!(self.buf, r#"<{name} xsi:type="{xsi_type}">"#);
        self.escape(value, false);
        let _ = write!(self.buf, "</{name}>");
        self
    }

    /// `<name type="Kind">value</name>`.
    pub fn moref(&mut self, name: &'static str, moref: &MoRef) -> &mut Self {
        let _ = write!(self.buf, r#"<{name} type=""#);
        self.escape(&moref.kind, true);
        self.buf.push_str("\">");
        self.escape(&moref.value, false);
        let _ = write!(self.buf, "</{name}>");
        self
    }

    /// Opens `<name>`; close it with [`Request::close`].
    pub fn open(&mut self, name: &'static str) -> &mut Self {
        let _ = write!(self.buf, "<{name}>");
        self.open.push(name);
        self
    }

    /// Opens `<name xsi:type="type">` (a vim25 type name: the default namespace is urn:vim25).
    pub fn open_typed(&mut self, name: &'static str, xsi_type: &'static str) -> &mut Self {
        let _ = write!(self.buf, r#"<{name} xsi:type="{xsi_type}">"#);
        self.open.push(name);
        self
    }

    /// Closes the innermost open element.
    pub fn close(&mut self) -> &mut Self {
        if let Some(name) = self.open.pop() {
            let _ = write!(self.buf, "</{name}>");
        }
        self
    }

    /// `<name/>`.
    pub fn empty(&mut self, name: &'static str) -> &mut Self {
        let _ = write!(self.buf, "<{name}/>");
        self
    }

    /// Closes what is still open and the envelope.
    pub fn finish(mut self) -> Result<String, VsphereError> {
        if self.bad_text {
            return Err(VsphereError::invalid_input(format!(
                "a value for {} contains a character XML 1.0 cannot carry",
                self.method
            )));
        }
        while !self.open.is_empty() {
            self.close();
        }
        let _ = write!(
            self.buf,
            "</{}></soapenv:Body></soapenv:Envelope>",
            self.method
        );
        Ok(self.buf)
    }

    fn escape(&mut self, value: &str, attribute: bool) {
        for c in value.chars() {
            match c {
                '&' => self.buf.push_str("&amp;"),
                '<' => self.buf.push_str("&lt;"),
                '>' => self.buf.push_str("&gt;"),
                '"' if attribute => self.buf.push_str("&quot;"),
                '\'' if attribute => self.buf.push_str("&apos;"),
                // A parser turns a raw CR into LF, and raw whitespace in attributes into spaces.
                '\r' => self.buf.push_str("&#13;"),
                '\n' if attribute => self.buf.push_str("&#10;"),
                '\t' if attribute => self.buf.push_str("&#9;"),
                '\t' | '\n' => self.buf.push(c),
                '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => self.bad_text = true,
                c => self.buf.push(c),
            }
        }
    }
}

/// Decodes a response: the `<method>Response` element, or the typed error of a SOAP fault.
/// A body that is not a SOAP envelope gives `Http{status}` when the status was an error, else
/// `Malformed`.
pub fn decode_response(
    status: u16,
    body: &[u8],
    method: &str,
    limits: &Limits,
) -> Result<Element, VsphereError> {
    decode_parsed(status, xml::parse(body, limits), method)
}

/// [`decode_response`] for a document already parsed.
pub fn decode_parsed(
    status: u16,
    parsed: Result<Element, VsphereError>,
    method: &str,
) -> Result<Element, VsphereError> {
    let envelope = match parsed {
        Ok(root) if root.is(&Ns::SoapEnv, "Envelope") => root,
        Ok(_) | Err(_) if status != 200 => return Err(VsphereError::Http { status }),
        Ok(root) => {
            return Err(VsphereError::malformed(format!(
                "expected a SOAP Envelope, got <{}>",
                root.name
            )))
        }
        Err(e) => return Err(e),
    };
    let body_el = envelope
        .children
        .into_iter()
        .find(|c| c.is(&Ns::SoapEnv, "Body"))
        .ok_or_else(|| VsphereError::malformed("SOAP envelope without a Body"))?;
    let first = body_el.children.into_iter().next();
    match first {
        Some(fault) if fault.is(&Ns::SoapEnv, "Fault") => Err(soap_fault(&fault)),
        _ if status != 200 => Err(VsphereError::Http { status }),
        Some(resp)
            if resp.ns == Ns::Vim25 && resp.name.strip_suffix("Response") == Some(method) =>
        {
            Ok(resp)
        }
        Some(other) => Err(VsphereError::malformed(format!(
            "expected {method}Response, got <{}>",
            other.name
        ))),
        None => Err(VsphereError::malformed("empty SOAP Body")),
    }
}

/// `<soapenv:Fault><faultcode/><faultstring/><detail><XFault xsi:type="X">...`.
fn soap_fault(fault: &Element) -> VsphereError {
    let message = fault.child_text("faultstring").unwrap_or_default();
    match fault.child("detail").and_then(|d| d.children.first()) {
        Some(detail) => VsphereError::from_fault(detail, message),
        None => {
            let code = fault.child_text("faultcode").unwrap_or("ServerFaultCode");
            // `soapenv:Client` and the like: keep the local part.
            let code = code.rsplit(':').next().unwrap_or(code);
            VsphereError::from_fault_type(code, message, None)
        }
    }
}

#[cfg(test)]
#[path = "soap_tests.rs"]
mod tests;
