//! The machines the appliance protects, their disks, points, RPO and throughput, kept in sled so lists
//! are fast and survive restarts. SKELETON: signatures agreed between modules; bodies being written.

use serde::{Deserialize, Serialize};

use super::{MgmtError, Page, PageRequest, Running};
use crate::state::State;

/// How well a machine is protected right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProtectionState {
    /// Agent connected, no recovery point yet.
    InitialSync,
    /// Last point within the RPO target.
    Protected,
    /// Last point older than the RPO target.
    RpoExceeded,
    /// Agent not connected.
    Disconnected,
    /// Agent revoked: no longer replicating.
    Revoked,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DiskView {
    pub disk_id: String,
    pub size_bytes: u64,
    pub label: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PointView {
    pub machine_id: String,
    pub point_id: String,
    /// `crash` or `app`.
    pub kind: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub created_unix_ms: u64,
    pub disks: Vec<DiskView>,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MachineView {
    pub id: String,
    pub name: String,
    pub state: ProtectionState,
    pub agent_connected: bool,
    pub disks: Vec<DiskView>,
    pub last_point: Option<PointView>,
    /// Seconds since the last point (None before the first one).
    pub rpo_seconds: Option<u64>,
    /// Bytes per second received from the agent over the last minute.
    pub throughput_bytes_per_sec: u64,
    pub bytes_received: u64,
    pub points: u64,
}

/// One sample of a machine's history (charts).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Sample {
    pub at_unix: u64,
    pub rpo_seconds: Option<u64>,
    pub throughput_bytes_per_sec: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MachineDetail {
    pub machine: MachineView,
    /// Oldest first, the last 24 hours.
    pub history: Vec<Sample>,
}

/// The catalog. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Catalog {
    state: State,
}

impl Catalog {
    pub fn new(state: State) -> Result<Catalog, MgmtError> {
        Ok(Catalog { state })
    }

    /// Starts following the data path (sampler, reconciliation with the vault). Needs an actix/tokio
    /// runtime.
    pub fn attach(&self, _running: &Running) {
        let _ = &self.state;
    }

    pub fn list(&self, page: PageRequest) -> Result<Page<MachineView>, MgmtError> {
        page.apply(Vec::new())
    }

    pub fn get(&self, id: &str) -> Result<MachineDetail, MgmtError> {
        Err(MgmtError::NotFound(format!("no machine {id}")))
    }

    pub fn points(
        &self,
        _machine: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<PointView>, MgmtError> {
        page.apply(Vec::new())
    }

    pub fn point(&self, machine: &str, point: &str) -> Result<PointView, MgmtError> {
        Err(MgmtError::NotFound(format!("no point {machine}/{point}")))
    }

    /// (machine id, RPO seconds) for /metrics.
    pub fn rpo_per_machine(&self) -> Vec<(String, Option<u64>)> {
        Vec::new()
    }
}
