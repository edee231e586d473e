//! The vSphere data types of part 1: managed object references, the service content, user sessions.

use serde::{Deserialize, Serialize};

use crate::error::VsphereError;
use crate::xml::Element;

/// A managed object reference: the object's type and its opaque id (`vm-36`,
/// `session[...]uuid`, `/some/dir@folder-5`). Never parse the value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MoRef {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

impl MoRef {
    pub fn new(kind: impl Into<String>, value: impl Into<String>) -> Self {
        MoRef {
            kind: kind.into(),
            value: value.into(),
        }
    }

    /// Reads `<x type="Kind">value</x>`.
    pub fn from_element(el: &Element) -> Result<Self, VsphereError> {
        let kind = el.attr("type").ok_or_else(|| {
            VsphereError::malformed(format!("<{}> is not a managed object reference", el.name))
        })?;
        if el.text.is_empty() {
            return Err(VsphereError::malformed(format!(
                "<{}> has an empty managed object reference",
                el.name
            )));
        }
        Ok(MoRef::new(kind, el.text.clone()))
    }
}

impl std::fmt::Display for MoRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

/// `ServiceContent.about`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct About {
    pub name: String,
    pub full_name: String,
    pub version: String,
    pub build: String,
    /// `VirtualCenter` or `HostAgent` (a standalone ESXi).
    pub api_type: String,
    pub api_version: String,
    /// Only a vCenter has one.
    pub instance_uuid: Option<String>,
}

/// The managers Ferry uses, from `RetrieveServiceContent`. Optional ones are absent on some servers
/// (a standalone ESXi has no extension manager).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceContent {
    pub root_folder: MoRef,
    pub property_collector: MoRef,
    pub session_manager: MoRef,
    pub view_manager: Option<MoRef>,
    pub event_manager: Option<MoRef>,
    pub extension_manager: Option<MoRef>,
    pub task_manager: Option<MoRef>,
    pub search_index: Option<MoRef>,
    pub file_manager: Option<MoRef>,
    pub virtual_disk_manager: Option<MoRef>,
    pub guest_operations_manager: Option<MoRef>,
    pub about: About,
}

impl ServiceContent {
    /// Reads the `returnval` of `RetrieveServiceContentResponse`.
    pub fn from_element(el: &Element) -> Result<Self, VsphereError> {
        let required = |name: &str| {
            el.child(name)
                .ok_or_else(|| VsphereError::malformed(format!("ServiceContent has no {name}")))
                .and_then(MoRef::from_element)
        };
        let optional = |name: &str| el.child(name).map(MoRef::from_element).transpose();
        let about = el
            .child("about")
            .ok_or_else(|| VsphereError::malformed("ServiceContent has no about"))?;
        let text = |name: &str| about.child_text(name).unwrap_or_default().to_string();
        let about = About {
            name: text("name"),
            full_name: text("fullName"),
            version: text("version"),
            build: text("build"),
            api_type: text("apiType"),
            api_version: text("apiVersion"),
            instance_uuid: about.child_text("instanceUuid").map(str::to_string),
        };
        if about.api_version.is_empty() {
            return Err(VsphereError::malformed(
                "ServiceContent has no about.apiVersion",
            ));
        }
        Ok(ServiceContent {
            root_folder: required("rootFolder")?,
            property_collector: required("propertyCollector")?,
            session_manager: required("sessionManager")?,
            view_manager: optional("viewManager")?,
            event_manager: optional("eventManager")?,
            extension_manager: optional("extensionManager")?,
            task_manager: optional("taskManager")?,
            search_index: optional("searchIndex")?,
            file_manager: optional("fileManager")?,
            virtual_disk_manager: optional("virtualDiskManager")?,
            guest_operations_manager: optional("guestOperationsManager")?,
            about,
        })
    }
}

/// A vSphere login session (`UserSession`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserSession {
    /// The session id (what `SessionIsActive` takes).
    pub key: String,
    pub user_name: String,
    pub full_name: String,
    pub login_time: String,
    pub last_active_time: String,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
}

impl UserSession {
    pub fn from_element(el: &Element) -> Result<Self, VsphereError> {
        let key = el
            .child_text("key")
            .filter(|k| !k.is_empty())
            .ok_or_else(|| VsphereError::malformed("UserSession has no key"))?;
        let text = |name: &str| el.child_text(name).unwrap_or_default().to_string();
        Ok(UserSession {
            key: key.to_string(),
            user_name: text("userName"),
            full_name: text("fullName"),
            login_time: text("loginTime"),
            last_active_time: text("lastActiveTime"),
            ip_address: el.child_text("ipAddress").map(str::to_string),
            user_agent: el.child_text("userAgent").map(str::to_string),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soap::decode_response;
    use crate::xml::Limits;

    fn returnval(xml: &str, method: &str) -> Element {
        let mut resp = decode_response(200, xml.as_bytes(), method, &Limits::default()).unwrap();
        resp.children.remove(0)
    }

    #[test]
    fn service_content_from_vcsim() {
        let el = returnval(
            include_str!("../tests/samples/01-retrieveservicecontent.response.xml"),
            "RetrieveServiceContent",
        );
        let sc = ServiceContent::from_element(&el).unwrap();
        assert_eq!(sc.root_folder, MoRef::new("Folder", "group-d1"));
        assert_eq!(
            sc.property_collector,
            MoRef::new("PropertyCollector", "propertyCollector")
        );
        assert_eq!(
            sc.session_manager,
            MoRef::new("SessionManager", "SessionManager")
        );
        assert_eq!(
            sc.view_manager,
            Some(MoRef::new("ViewManager", "ViewManager"))
        );
        assert_eq!(
            sc.event_manager,
            Some(MoRef::new("EventManager", "EventManager"))
        );
        assert_eq!(
            sc.extension_manager,
            Some(MoRef::new("ExtensionManager", "ExtensionManager"))
        );
        assert_eq!(
            sc.task_manager,
            Some(MoRef::new("TaskManager", "TaskManager"))
        );
        assert_eq!(
            sc.guest_operations_manager,
            Some(MoRef::new(
                "GuestOperationsManager",
                "guestOperationsManager"
            ))
        );
        assert_eq!(sc.about.api_version, "6.5");
        assert_eq!(sc.about.api_type, "VirtualCenter");
        assert_eq!(
            sc.about.full_name,
            "VMware vCenter Server 6.5.0 build-5973321"
        );
        assert_eq!(
            sc.about.instance_uuid.as_deref(),
            Some("dbed6e0c-bd88-4ef6-b594-21283e1c677f")
        );
    }

    #[test]
    fn service_content_without_required_parts_is_malformed() {
        let doc = |inner: &str| {
            format!(
                r#"<e:Envelope xmlns:e="http://schemas.xmlsoap.org/soap/envelope/"><e:Body><RetrieveServiceContentResponse xmlns="urn:vim25"><returnval>{inner}</returnval></RetrieveServiceContentResponse></e:Body></e:Envelope>"#
            )
        };
        let parts = r#"<rootFolder type="Folder">group-d1</rootFolder><propertyCollector type="PropertyCollector">pc</propertyCollector><sessionManager type="SessionManager">sm</sessionManager>"#;
        let about = "<about><apiVersion>8.0.3.0</apiVersion></about>";
        let ok = returnval(&doc(&format!("{parts}{about}")), "RetrieveServiceContent");
        let sc = ServiceContent::from_element(&ok).unwrap();
        assert_eq!(sc.view_manager, None);
        assert_eq!(sc.about.instance_uuid, None);
        for bad in [
            parts.to_string(),
            format!("{parts}<about/>"),
            format!("{about}{}", &parts[40..]),
            format!(r#"{parts}{about}<viewManager>no-type</viewManager>"#),
        ] {
            let el = returnval(&doc(&bad), "RetrieveServiceContent");
            assert!(
                matches!(
                    ServiceContent::from_element(&el),
                    Err(VsphereError::Malformed { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn user_session_from_login() {
        let el = returnval(
            include_str!("../tests/samples/02-login.response.xml"),
            "Login",
        );
        let s = UserSession::from_element(&el).unwrap();
        assert_eq!(s.key, "7d2880be-a632-4015-9ae0-a15885006910");
        assert_eq!(s.user_name, "user");
        assert_eq!(s.ip_address.as_deref(), Some("127.0.0.1"));
        let mut no_key = el.clone();
        no_key.children.retain(|c| c.name != "key");
        assert!(UserSession::from_element(&no_key).is_err());
    }

    #[test]
    fn moref_display_and_json() {
        let m = MoRef::new("VirtualMachine", "vm-36");
        assert_eq!(m.to_string(), "VirtualMachine:vm-36");
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"type":"VirtualMachine","value":"vm-36"}"#);
    }
}
