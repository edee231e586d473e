//! `appliance firstboot`: applies the OVF environment (hostname, network, DNS, NTP, admin
//! password) to the root file system once, before the network comes up.
//!
//! The pure parts (finding, parsing, validating, writing under a given root) are here and tested
//! against temporary folders; only [`read_guestinfo`] talks to the hypervisor. The block devices
//! (CD-ROM, data disk, root growth) are in [`devices`], behind a command runner.

use std::io::Read;
use std::path::{Path, PathBuf};

mod apply;
pub mod devices;
mod ovf_env;
mod plan;

pub use apply::{
    apply, write_summary, ADMIN_PASSWORD_FILE, DONE_FILE, ENV_FILE, HOSTNAME_FILE,
    STATIC_NETWORK_FILE, SUMMARY_FILE, TIMESYNCD_FILE,
};
pub use ovf_env::{parse_properties, MAX_OVF_ENV_BYTES, NS_OVF_ENV};
pub use plan::{parse_cidr, valid_hostname, Network, Plan};

/// Why first boot could not read or apply the OVF environment.
#[derive(Debug, thiserror::Error)]
pub enum FirstbootError {
    #[error("the OVF environment is {size} bytes, over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("the OVF environment is not well-formed XML: {0}")]
    MalformedXml(String),
    #[error("the document's root is {0}, not an OVF <Environment>")]
    NotAnEnvironment(String),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// An OVF environment document and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundEnvironment {
    pub source: String,
    pub document: Vec<u8>,
}

/// The file name vSphere gives the environment on its ISO.
pub const OVF_ENV_FILE_NAME: &str = "ovf-env.xml";

/// The first source that holds a document: the guestinfo text when non-blank, else the first
/// document copied from a CD-ROM's ISO ([`devices::read_cdroms`]), else `ovf-env.xml` in each
/// already mounted CD-ROM folder in order. `None` when there is none.
pub fn find_environment(
    guestinfo: Option<&str>,
    iso_documents: &[FoundEnvironment],
    cdrom_mounts: &[PathBuf],
) -> Result<Option<FoundEnvironment>, FirstbootError> {
    if let Some(text) = guestinfo.filter(|t| !t.trim().is_empty()) {
        return Ok(Some(FoundEnvironment {
            source: "guestinfo.ovfEnv".into(),
            document: text.as_bytes().to_vec(),
        }));
    }
    if let Some(found) = iso_documents.first() {
        return Ok(Some(found.clone()));
    }
    for mount in cdrom_mounts {
        let path = mount.join(OVF_ENV_FILE_NAME);
        if path.is_file() {
            return Ok(Some(FoundEnvironment {
                source: path.display().to_string(),
                document: read_limited(&path)?,
            }));
        }
    }
    Ok(None)
}

/// Reads at most one byte over the limit, so an oversized file is refused without loading it.
pub fn read_limited(path: &Path) -> Result<Vec<u8>, FirstbootError> {
    let wrap = |source| FirstbootError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(wrap)?;
    let mut document = Vec::new();
    file.take(MAX_OVF_ENV_BYTES as u64 + 1)
        .read_to_end(&mut document)
        .map_err(wrap)?;
    if document.len() > MAX_OVF_ENV_BYTES {
        return Err(FirstbootError::TooLarge {
            size: document.len(),
            limit: MAX_OVF_ENV_BYTES,
        });
    }
    Ok(document)
}

/// The plan for what was found. A document that cannot be read as an OVF environment is treated
/// like no document (DHCP, web setup) with the error as the reason, so first boot always ends with
/// a reachable appliance.
pub fn plan_for(found: Option<&FoundEnvironment>) -> Plan {
    let Some(found) = found else {
        return Plan::without_environment();
    };
    match parse_properties(&found.document) {
        Ok(props) => Plan::from_properties(&found.source, &props),
        Err(err) => {
            let mut plan = Plan::without_environment();
            plan.source = found.source.clone();
            plan.network = Network::Dhcp {
                reason: err.to_string(),
            };
            plan
        }
    }
}

/// One summary line per fact, for the console and journal (never the password).
pub fn describe(plan: &Plan, written: &[String]) -> Vec<String> {
    let mut lines = vec![format!("OVF environment: {}", plan.source)];
    match &plan.network {
        Network::Static {
            address, prefix, ..
        } => lines.push(format!("network: static {address}/{prefix}")),
        Network::Dhcp { reason } => lines.push(format!("network: DHCP ({reason})")),
    }
    if let Some(hostname) = &plan.hostname {
        lines.push(format!("hostname: {hostname}"));
    }
    if plan.admin_password.is_some() {
        lines.push("admin password: set for the unattended setup".into());
    }
    for ignored in &plan.ignored {
        lines.push(format!("ignored: {ignored}"));
    }
    for file in written {
        lines.push(format!("wrote {file}"));
    }
    lines
}

/// Where a CD-ROM with the OVF environment may already be mounted under `root` (by hand, or by
/// an image that automounts); [`devices::read_cdroms`] mounts the drives that are not.
pub fn cdrom_mounts(root: &Path) -> Vec<PathBuf> {
    ["media/cdrom", "media/cdrom0", "mnt/cdrom"]
        .iter()
        .map(|dir| root.join(dir))
        .collect()
}

/// The OVF environment vSphere passes through guestinfo, via open-vm-tools' `vmware-rpctool`.
/// `None` when the tool is missing or the key unset (not a VM, or an ISO transport). Not unit
/// tested: it needs a hypervisor.
pub fn read_guestinfo() -> Option<String> {
    // The backdoor call is only meaningful, and only safe, on VMware's hypervisor.
    let virt = std::process::Command::new("systemd-detect-virt")
        .output()
        .ok()?;
    if String::from_utf8_lossy(&virt.stdout).trim() != "vmware" {
        return None;
    }
    let output = std::process::Command::new("vmware-rpctool")
        .arg("info-get guestinfo.ovfEnv")
        .output()
        .ok()?;
    // An oversized answer is passed on, so the parser refuses it with a recorded reason.
    if !output.status.success() {
        return None;
    }
    String::from_utf8(output.stdout).ok()
}

#[cfg(test)]
#[path = "ovf_env_tests.rs"]
mod ovf_env_tests;

#[cfg(test)]
#[path = "plan_tests.rs"]
mod plan_tests;

#[cfg(test)]
#[path = "apply_tests.rs"]
mod apply_tests;

#[cfg(test)]
#[path = "devices_tests.rs"]
mod devices_tests;

#[cfg(test)]
#[path = "root_disk_tests.rs"]
mod root_disk_tests;
