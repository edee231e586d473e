//! How push job records are named, described, logged to and stored.

use serde::{Deserialize, Serialize};

use super::{MgmtError, Operation, PushJobState, PushJobView, MAX_LOG_LINES, TREE};
use crate::state::{decode_record, encode_record, now_rfc3339, StateError};

pub(super) fn host_key_name(host: &str, port: u16) -> String {
    format!("{}:{port}", host.to_ascii_lowercase())
}

pub(crate) fn state_name(state: PushJobState) -> &'static str {
    match state {
        PushJobState::Queued => "queued",
        PushJobState::Running => "running",
        PushJobState::Succeeded => "succeeded",
        PushJobState::Failed => "failed",
        PushJobState::Cancelled => "cancelled",
    }
}

pub(super) fn operation_name(op: Operation) -> &'static str {
    match op {
        Operation::Install => "install",
        Operation::Upgrade => "upgrade",
        Operation::Uninstall => "uninstall",
    }
}

/// How a job reaches the guest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// SSH to `host:port`.
    #[default]
    Ssh,
    /// vSphere guest operations through the vCenter of `vm` (`<vCenter id>/<moref>`).
    VmwareTools,
}

impl Via {
    pub fn name(self) -> &'static str {
        match self {
            Via::Ssh => "ssh",
            Via::VmwareTools => "vmware_tools",
        }
    }
}

/// The audit detail naming a job.
pub(super) fn describe(view: &PushJobView) -> String {
    match view.via {
        Via::Ssh => format!(
            "job {}: {} to {}@{}:{} for vm {}",
            view.id,
            operation_name(view.operation),
            view.username,
            view.host,
            view.port,
            view.vm
        ),
        Via::VmwareTools => format!(
            "job {}: {} as {} for vm {} through VMware Tools",
            view.id,
            operation_name(view.operation),
            view.username,
            view.vm
        ),
    }
}

/// Appends a timestamped line, keeping at most [`MAX_LOG_LINES`].
pub(super) fn push_log(view: &mut PushJobView, line: &str) {
    let clean: String = line
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(2000)
        .collect();
    view.log.push(format!("{} {clean}", now_rfc3339()));
    if view.log.len() > MAX_LOG_LINES {
        let cut = view.log.len() - MAX_LOG_LINES;
        view.log.drain(..cut);
        view.log[0] = format!("(older lines dropped) {}", view.log[0]);
    }
}

pub(super) fn record(tree: &sled::Tree, id: &str) -> Result<PushJobView, MgmtError> {
    match tree.get(id.as_bytes())? {
        Some(raw) => decode_view(id.as_bytes(), &raw),
        None => Err(MgmtError::NotFound(format!("no push job {id}"))),
    }
}

pub(super) fn put(tree: &sled::Tree, view: &PushJobView) -> Result<(), MgmtError> {
    let json = serde_json::to_vec(view)
        .map_err(|e| MgmtError::Internal(format!("encoding push job: {e}")))?;
    tree.insert(view.id.as_bytes(), encode_record(&json))?;
    Ok(())
}

pub(super) fn decode_view(key: &[u8], raw: &[u8]) -> Result<PushJobView, MgmtError> {
    let corrupt = |reason: String| {
        MgmtError::from(StateError::Corrupt {
            tree: TREE,
            key: String::from_utf8_lossy(key).into_owned(),
            reason,
        })
    };
    let body = decode_record(raw).map_err(corrupt)?;
    serde_json::from_slice(body).map_err(|e| corrupt(e.to_string()))
}
