//! A thin vSphere Web Services (SOAP, vim25) client with only the calls Ferry uses, each a typed
//! function.
//!
//! - [`Client`]: HTTPS to the SDK endpoint with the server certificate pinned by thumbprint (or
//!   checked against a CA), the `vmware_soap_session` cookie, per-call timeouts, a response size
//!   cap, and one automatic re-login when the session has expired.
//! - [`property`]: container views, RetrievePropertiesEx with paging, filters and WaitForUpdatesEx.
//! - [`inventory`]: every VM with the properties Ferry keeps, and incremental following.
//! - [`task`] and [`vm`]: waiting for tasks; snapshots, creating, powering, reconfiguring and
//!   destroying VMs. [`datastore`]: datastore files over HTTP (ranges, streaming).
//! - [`events`], [`guest`], [`extension`]: event history collectors, guest operations through
//!   VMware Tools, and the vCenter extension registration.
//! - [`xml`] and [`soap`]: a namespace-aware XML reader with limits, the envelope builder, and
//!   SOAP faults as typed [`VsphereError`]s.
//!
//! The crate knows nothing of actors, HTTP servers or storage.

pub mod client;
pub mod datastore;
pub mod error;
pub mod events;
pub mod extension;
#[doc(hidden)]
pub mod fuzzing;
pub mod guest;
pub mod inventory;
pub mod property;
pub mod soap;
pub mod task;
pub mod tls;
mod transport;
pub mod types;
pub mod value;
pub mod vm;
pub mod xml;

pub use client::{Client, Credentials};
pub use error::VsphereError;
pub use events::{Event, EventFilter, Recursion};
pub use extension::{Extension, ExtensionClient, ExtensionServer};
pub use guest::{GuestAuth, GuestFileAttributes, GuestProcess, GuestProgram};
pub use inventory::{list_vms, DiskInfo, NicInfo, PowerState, VmInfo, VmWatch};
pub use property::{
    ChangeOp, FilterSpec, ObjectContent, ObjectUpdate, ObjectUpdateKind, PropertyChange,
    RetrieveResult, UpdateSet,
};
pub use tls::TlsTrust;
pub use transport::{ClientOptions, SESSION_COOKIE};
pub use types::{About, MoRef, ServiceContent, UserSession};
pub use value::{DataObject, Value};
pub use vm::{DiskSpec, NicAdapter, NicSpec, ReconfigSpec, VmCreateSpec};
