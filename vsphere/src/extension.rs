//! The ExtensionManager: registering Ferry as a vCenter extension (with the servers it runs and
//! the remote plugin manifest the vSphere Client loads), finding and unregistering it.
//!
//! vcsim 0.24.2 has an ExtensionManager object without methods; the project's vcsim launcher adds
//! them (tests/vcsim/extension.go), against which `tests/vcsim.rs` registers, finds and unregisters.
//! The unit tests also read responses written from the vSphere API reference.

use std::time::SystemTime;

use crate::client::{parse_nothing, Client};
use crate::error::VsphereError;
use crate::events::xsd_datetime;
use crate::soap::Request;
use crate::tls::Thumbprint;
use crate::types::MoRef;
use crate::xml::Element;

/// A server of the extension (`ExtensionServerInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExtensionServer {
    pub url: String,
    /// `HTTPS`, `SOAP`, `REST`, or `MANIFEST_SERVER` for a remote plugin's manifest server.
    pub type_name: String,
    pub company: String,
    pub label: String,
    pub summary: String,
    /// At least one address.
    pub admin_emails: Vec<String>,
    /// The SHA-1 or SHA-256 thumbprint of the server's certificate (sent colon-separated,
    /// upper case).
    pub thumbprint: Option<String>,
}

/// A client of the extension (`ExtensionClientInfo`): for a vSphere Client remote plugin, type
/// `vsphere-client-remote` and the URL of the plugin manifest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExtensionClient {
    pub version: String,
    pub type_name: String,
    pub company: String,
    pub label: String,
    pub summary: String,
    pub url: String,
}

/// An extension (`Extension`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Extension {
    /// Unique, in Java package style (`io.ferry.dr`).
    pub key: String,
    /// Dot-separated (`1.2.0`).
    pub version: String,
    pub company: String,
    pub label: String,
    pub summary: String,
    pub type_name: Option<String>,
    pub servers: Vec<ExtensionServer>,
    pub clients: Vec<ExtensionClient>,
    pub shown_in_solution_manager: Option<bool>,
    /// As read back from the server; registering sends the current time.
    pub last_heartbeat_time: Option<String>,
}

fn invalid(reason: impl Into<String>) -> VsphereError {
    VsphereError::InvalidInput {
        reason: reason.into(),
    }
}

/// The reference's rule for keys: printable lower ASCII without `,/\#+<>=;"`.
pub fn check_extension_key(key: &str) -> Result<(), VsphereError> {
    let bad = |c: char| !(' '..='~').contains(&c) || ",/\\#+<>=;\"".contains(c);
    if key.trim().is_empty() || key.chars().any(bad) {
        return Err(invalid(format!("{key:?} is not a valid extension key")));
    }
    Ok(())
}

fn check_url(what: &str, text: &str) -> Result<(), VsphereError> {
    let ok = url::Url::parse(text)
        .map(|u| matches!(u.scheme(), "https" | "http") && u.host_str().is_some())
        .unwrap_or(false);
    if !ok {
        return Err(invalid(format!("{what} {text:?} is not an http(s) URL")));
    }
    Ok(())
}

fn description(req: &mut Request, label: &str, summary: &str) {
    req.open("description")
        .text("label", label)
        .text("summary", summary)
        .close();
}

/// `<extension>` in schema order; `now` is the heartbeat time to send.
pub(crate) fn extension_request(
    method: &'static str,
    manager: &MoRef,
    ext: &Extension,
    now: SystemTime,
) -> Result<Request, VsphereError> {
    check_extension_key(&ext.key)?;
    if ext.version.trim().is_empty() {
        return Err(invalid("the extension version is empty"));
    }
    let mut req = Request::new(method, manager);
    req.open("extension");
    description(&mut req, &ext.label, &ext.summary);
    req.text("key", &ext.key);
    if !ext.company.is_empty() {
        req.text("company", &ext.company);
    }
    if let Some(t) = &ext.type_name {
        req.text("type", t);
    }
    req.text("version", &ext.version);
    for s in &ext.servers {
        check_url("server URL", &s.url)?;
        if s.admin_emails.is_empty() {
            return Err(invalid(format!("server {} has no admin e-mail", s.url)));
        }
        let thumbprint = s
            .thumbprint
            .as_deref()
            .map(|t| Thumbprint::parse(t).map(|t| t.to_string()))
            .transpose()?;
        req.open("server").text("url", &s.url);
        description(&mut req, &s.label, &s.summary);
        req.text("company", &s.company).text("type", &s.type_name);
        for mail in &s.admin_emails {
            req.text("adminEmail", mail);
        }
        if let Some(t) = &thumbprint {
            req.text("serverThumbprint", t);
        }
        req.close();
    }
    for c in &ext.clients {
        check_url("client URL", &c.url)?;
        req.open("client").text("version", &c.version);
        description(&mut req, &c.label, &c.summary);
        req.text("company", &c.company)
            .text("type", &c.type_name)
            .text("url", &c.url)
            .close();
    }
    req.text("lastHeartbeatTime", &xsd_datetime(now));
    if let Some(shown) = ext.shown_in_solution_manager {
        req.value("shownInSolutionManager", shown);
    }
    req.close();
    Ok(req)
}

fn text(el: &Element, name: &str) -> String {
    el.child_text(name).unwrap_or_default().to_string()
}

fn label_summary(el: &Element) -> (String, String) {
    el.child("description")
        .map(|d| (text(d, "label"), text(d, "summary")))
        .unwrap_or_default()
}

/// Reads an `Extension` data object.
pub(crate) fn parse_extension(el: &Element) -> Result<Extension, VsphereError> {
    let key = text(el, "key");
    if key.is_empty() {
        return Err(VsphereError::malformed("an extension without a key"));
    }
    let (label, summary) = label_summary(el);
    let servers = el
        .children_named("server")
        .map(|s| {
            let (label, summary) = label_summary(s);
            ExtensionServer {
                url: text(s, "url"),
                type_name: text(s, "type"),
                company: text(s, "company"),
                label,
                summary,
                admin_emails: s
                    .children_named("adminEmail")
                    .map(|m| m.text.clone())
                    .collect(),
                thumbprint: s.child_text("serverThumbprint").map(str::to_string),
            }
        })
        .collect();
    let clients = el
        .children_named("client")
        .map(|c| {
            let (label, summary) = label_summary(c);
            ExtensionClient {
                version: text(c, "version"),
                type_name: text(c, "type"),
                company: text(c, "company"),
                label,
                summary,
                url: text(c, "url"),
            }
        })
        .collect();
    Ok(Extension {
        key,
        version: text(el, "version"),
        company: text(el, "company"),
        label,
        summary,
        type_name: el.child_text("type").map(str::to_string),
        servers,
        clients,
        shown_in_solution_manager: el
            .child_text("shownInSolutionManager")
            .map(|v| v.trim() == "true"),
        last_heartbeat_time: el.child_text("lastHeartbeatTime").map(str::to_string),
    })
}

/// FindExtension answers without a `returnval` when the key is not registered.
pub(crate) fn parse_found(resp: Element) -> Result<Option<Extension>, VsphereError> {
    resp.child("returnval").map(parse_extension).transpose()
}

impl Client {
    fn extension_manager(&self) -> Result<MoRef, VsphereError> {
        self.service_content()
            .extension_manager
            .clone()
            .ok_or_else(|| VsphereError::MethodNotFound {
                method: "RegisterExtension (the server has no ExtensionManager)".into(),
            })
    }

    /// Registers a new extension; a key that is registered already gives `InvalidArgument`
    /// (use [`Client::update_extension`]).
    pub async fn register_extension(&self, ext: &Extension) -> Result<(), VsphereError> {
        let req = extension_request(
            "RegisterExtension",
            &self.extension_manager()?,
            ext,
            SystemTime::now(),
        )?;
        self.invoke(req, parse_nothing).await
    }

    /// Replaces a registered extension; an unknown key gives `NotFound`.
    pub async fn update_extension(&self, ext: &Extension) -> Result<(), VsphereError> {
        let req = extension_request(
            "UpdateExtension",
            &self.extension_manager()?,
            ext,
            SystemTime::now(),
        )?;
        self.invoke(req, parse_nothing).await
    }

    /// Unregisters an extension; an unknown key gives `NotFound`.
    pub async fn unregister_extension(&self, key: &str) -> Result<(), VsphereError> {
        check_extension_key(key)?;
        let mut req = Request::new("UnregisterExtension", &self.extension_manager()?);
        req.text("extensionKey", key);
        self.invoke(req, parse_nothing).await
    }

    /// The registered extension with this key, if any.
    pub async fn find_extension(&self, key: &str) -> Result<Option<Extension>, VsphereError> {
        check_extension_key(key)?;
        let mut req = Request::new("FindExtension", &self.extension_manager()?);
        req.text("extensionKey", key);
        self.invoke(req, parse_found).await
    }
}

#[cfg(test)]
#[path = "extension_tests.rs"]
mod tests;
