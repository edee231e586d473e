//! The crate's error type. vSphere faults become typed variants; each variant says whether
//! repeating the same call can help.

use crate::types::MoRef;
use crate::xml::Element;

/// Everything a call to vSphere can fail with.
#[derive(Debug, thiserror::Error)]
pub enum VsphereError {
    /// The user name or password was rejected.
    #[error("vSphere rejected the user name or password")]
    InvalidLogin,
    /// The session is missing or has expired, and logging in again did not help (or was not possible).
    #[error("not authenticated: the vSphere session is missing or has expired")]
    NotAuthenticated,
    /// The call named an object that does not exist (any more).
    #[error("managed object not found: {moref}")]
    ManagedObjectNotFound { moref: MoRef },
    /// An argument was rejected; `name` is the property path vSphere blamed (may be empty).
    #[error("invalid argument: {name}")]
    InvalidArgument { name: String },
    /// A file or object the call named does not exist: a datastore file (HTTP 404), or a
    /// `NotFound` / `FileNotFound` fault (an unknown extension key, a missing guest file).
    #[error("not found: {what}")]
    NotFound { what: String },
    /// The VM is not in the power state the operation needs.
    #[error("invalid power state (requested {requested:?}, existing {existing:?})")]
    InvalidPowerState {
        requested: Option<String>,
        existing: Option<String>,
    },
    /// The server does not implement the method (vcsim lacks several).
    #[error("method not implemented by the server: {method}")]
    MethodNotFound { method: String },
    /// Guest operations cannot reach the guest (VMware Tools not running yet, or not supported).
    #[error("guest operations are unavailable for this VM")]
    GuestOperationsUnavailable,
    /// The object is in a state that does not allow the operation (InvalidState and its kin).
    #[error("invalid state ({type_name}): {message}")]
    InvalidState { type_name: String, message: String },
    /// Any other vSphere fault, by its type name.
    #[error("vSphere fault {type_name}: {message}")]
    Fault { type_name: String, message: String },
    /// The connection could not be made or broke (refused, reset, cut short).
    #[error("transport: {reason}")]
    Transport { reason: String },
    /// An HTTP status that carried no SOAP fault.
    #[error("HTTP status {status}")]
    Http { status: u16 },
    /// The TLS handshake failed for a reason other than a pinned-thumbprint mismatch.
    #[error("TLS: {reason}")]
    Tls { reason: String },
    /// The server presented a certificate other than the pinned one. The new thumbprints are here so an
    /// operator can check them and accept the new certificate.
    #[error(
        "the server certificate does not match the pinned thumbprint {expected}: it presented \
         SHA-256 {presented_sha256} (SHA-1 {presented_sha1})"
    )]
    CertificateMismatch {
        expected: String,
        presented_sha256: String,
        presented_sha1: String,
    },
    /// The response is not what a vSphere server sends: bad XML, an unexpected shape, truncated
    /// XML, or larger than the configured cap.
    #[error("malformed response: {reason}")]
    Malformed { reason: String },
    /// The call did not finish within its timeout.
    #[error("timed out")]
    Timeout,
    /// A value the caller passed cannot be used (a bad thumbprint or URL, text XML cannot carry).
    #[error("invalid input: {reason}")]
    InvalidInput { reason: String },
}

/// Fault types that describe a passing condition on the server side.
const TRANSIENT_FAULTS: &[&str] = &[
    "TaskInProgress",
    "HostCommunication",
    "HostNotConnected",
    "HostNotReachable",
    "ConcurrentAccess",
    "SystemError",
];

impl VsphereError {
    /// Whether the same call may succeed if repeated later.
    pub fn is_retryable(&self) -> bool {
        match self {
            VsphereError::Transport { .. } | VsphereError::Timeout => true,
            VsphereError::Http { status } => matches!(status, 429 | 502 | 503 | 504),
            // VMware Tools may start; another task may finish.
            VsphereError::GuestOperationsUnavailable => true,
            VsphereError::Fault { type_name, .. } => TRANSIENT_FAULTS.contains(&type_name.as_str()),
            // The client has already logged in again once; repeating the call does not change that.
            VsphereError::NotAuthenticated
            | VsphereError::InvalidLogin
            | VsphereError::ManagedObjectNotFound { .. }
            | VsphereError::NotFound { .. }
            | VsphereError::InvalidArgument { .. }
            | VsphereError::InvalidPowerState { .. }
            | VsphereError::MethodNotFound { .. }
            | VsphereError::InvalidState { .. }
            | VsphereError::Tls { .. }
            | VsphereError::CertificateMismatch { .. }
            | VsphereError::Malformed { .. }
            | VsphereError::InvalidInput { .. } => false,
        }
    }

    /// The vSphere fault type name, for errors that came from a fault.
    pub fn fault_type(&self) -> Option<&str> {
        Some(match self {
            VsphereError::InvalidLogin => "InvalidLogin",
            VsphereError::NotAuthenticated => "NotAuthenticated",
            VsphereError::ManagedObjectNotFound { .. } => "ManagedObjectNotFound",
            VsphereError::InvalidArgument { .. } => "InvalidArgument",
            VsphereError::NotFound { .. } => "NotFound",
            VsphereError::InvalidPowerState { .. } => "InvalidPowerState",
            VsphereError::MethodNotFound { .. } => "MethodNotFound",
            VsphereError::GuestOperationsUnavailable => "GuestOperationsUnavailable",
            VsphereError::InvalidState { type_name, .. } => type_name,
            VsphereError::Fault { type_name, .. } => type_name,
            _ => return None,
        })
    }

    pub(crate) fn malformed(reason: impl Into<String>) -> Self {
        VsphereError::Malformed {
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid_input(reason: impl Into<String>) -> Self {
        VsphereError::InvalidInput {
            reason: reason.into(),
        }
    }

    /// The typed error for a vSphere fault object: the child of a SOAP fault's `detail`, the `fault`
    /// of a task's `info.error` (LocalizedMethodFault), or the `fault` of a property's `missingSet`.
    /// The type comes from `xsi:type`, else from the element name without its `Fault` suffix.
    pub fn from_fault(fault: &Element, message: &str) -> Self {
        let type_name = match fault.xsi_type() {
            Some(t) => t.to_string(),
            None => fault
                .name
                .strip_suffix("Fault")
                .filter(|n| !n.is_empty())
                .unwrap_or(&fault.name)
                .to_string(),
        };
        Self::from_fault_type(&type_name, message, Some(fault))
    }

    /// The typed error for a fault known only by its type name (and optionally its fields).
    pub fn from_fault_type(type_name: &str, message: &str, detail: Option<&Element>) -> Self {
        let field = |name: &str| detail.and_then(|d| d.child_text(name)).map(str::to_string);
        match type_name {
            "InvalidLogin" => VsphereError::InvalidLogin,
            "NotAuthenticated" => VsphereError::NotAuthenticated,
            "ManagedObjectNotFound" => {
                let moref = detail
                    .and_then(|d| d.child("obj"))
                    .and_then(|o| MoRef::from_element(o).ok())
                    .unwrap_or_else(|| MoRef::new("", ""));
                VsphereError::ManagedObjectNotFound { moref }
            }
            "InvalidArgument" => VsphereError::InvalidArgument {
                name: field("invalidProperty").unwrap_or_default(),
            },
            "InvalidPowerState" => VsphereError::InvalidPowerState {
                requested: field("requestedState"),
                existing: field("existingState"),
            },
            "MethodNotFound" => VsphereError::MethodNotFound {
                method: field("method").unwrap_or_default(),
            },
            "GuestOperationsUnavailable" => VsphereError::GuestOperationsUnavailable,
            "NotFound" | "FileNotFound" => VsphereError::NotFound {
                what: field("file")
                    .filter(|f| !f.is_empty())
                    .unwrap_or_else(|| message.to_string()),
            },
            "InvalidState" | "InvalidVmState" | "InvalidHostState" | "InvalidDatastoreState" => {
                VsphereError::InvalidState {
                    type_name: type_name.to_string(),
                    message: message.to_string(),
                }
            }
            _ => VsphereError::Fault {
                type_name: type_name.to_string(),
                message: message.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{parse, Limits};

    fn fault(xml: &str, message: &str) -> VsphereError {
        let el = parse(xml.as_bytes(), &Limits::default()).unwrap();
        VsphereError::from_fault(&el, message)
    }

    #[test]
    fn faults_map_to_typed_variants() {
        let xsi = r#"xmlns="urn:vim25" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance""#;
        assert!(matches!(
            fault(
                &format!(r#"<InvalidLoginFault {xsi} xsi:type="InvalidLogin"/>"#),
                ""
            ),
            VsphereError::InvalidLogin
        ));
        // Without xsi:type the element name decides.
        assert!(matches!(
            fault(r#"<NotAuthenticatedFault xmlns="urn:vim25"/>"#, ""),
            VsphereError::NotAuthenticated
        ));
        match fault(
            &format!(
                r#"<ManagedObjectNotFoundFault {xsi} xsi:type="ManagedObjectNotFound"><obj type="VirtualMachine">vm-9</obj></ManagedObjectNotFoundFault>"#
            ),
            "gone",
        ) {
            VsphereError::ManagedObjectNotFound { moref } => {
                assert_eq!(moref, MoRef::new("VirtualMachine", "vm-9"))
            }
            e => panic!("{e:?}"),
        }
        match fault(
            &format!(
                r#"<f {xsi} xsi:type="InvalidArgument"><invalidProperty>spec.name</invalidProperty></f>"#
            ),
            "",
        ) {
            VsphereError::InvalidArgument { name } => assert_eq!(name, "spec.name"),
            e => panic!("{e:?}"),
        }
        match fault(
            &format!(
                r#"<f {xsi} xsi:type="InvalidVmState"><vm type="VirtualMachine">vm-1</vm></f>"#
            ),
            "busy",
        ) {
            VsphereError::InvalidState { type_name, message } => {
                assert_eq!(
                    (type_name.as_str(), message.as_str()),
                    ("InvalidVmState", "busy")
                )
            }
            e => panic!("{e:?}"),
        }
        match fault(&format!(r#"<f {xsi} xsi:type="NoPermission"/>"#), "denied") {
            VsphereError::Fault { type_name, message } => {
                assert_eq!(
                    (type_name.as_str(), message.as_str()),
                    ("NoPermission", "denied")
                )
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn retryable_classification() {
        assert!(VsphereError::Timeout.is_retryable());
        assert!(VsphereError::Transport {
            reason: "refused".into()
        }
        .is_retryable());
        assert!(VsphereError::Http { status: 503 }.is_retryable());
        assert!(!VsphereError::Http { status: 404 }.is_retryable());
        assert!(!VsphereError::InvalidLogin.is_retryable());
        assert!(!VsphereError::malformed("x").is_retryable());
        assert!(!VsphereError::CertificateMismatch {
            expected: "a".into(),
            presented_sha256: "b".into(),
            presented_sha1: "c".into()
        }
        .is_retryable());
        assert!(VsphereError::from_fault_type("TaskInProgress", "", None).is_retryable());
        assert!(!VsphereError::from_fault_type("NoPermission", "", None).is_retryable());
        assert_eq!(
            VsphereError::from_fault_type("MethodNotFound", "", None).fault_type(),
            Some("MethodNotFound")
        );
        assert_eq!(VsphereError::Timeout.fault_type(), None);
    }

    #[test]
    fn mismatch_message_shows_the_new_thumbprint() {
        let e = VsphereError::CertificateMismatch {
            expected: "AA:BB".into(),
            presented_sha256: "CC:DD".into(),
            presented_sha1: "EE:FF".into(),
        };
        let text = e.to_string();
        assert!(text.contains("CC:DD") && text.contains("EE:FF") && text.contains("AA:BB"));
    }
}
