//! Restore jobs: a point's disk written to a file on the appliance, in the background, with progress
//! and cancel. SKELETON: signatures agreed between modules; bodies being written.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::auth::Principal;
use super::{MgmtError, Page, PageRequest};
use crate::config::Config;
use crate::state::State;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RestoreFormat {
    Raw,
    Vhd,
    Vmdk,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

#[derive(Clone, Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreJobRequest {
    pub machine_id: String,
    pub disk_id: String,
    /// A point id, or "latest".
    pub point_id: String,
    /// File name under the appliance's restore folder (`<data dir>/restores`); no `..`, no absolute path.
    pub path: String,
    pub format: Option<RestoreFormat>,
    /// Replace an existing file.
    #[serde(default)]
    pub overwrite: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RestoreJobView {
    pub id: String,
    pub machine_id: String,
    pub disk_id: String,
    pub point_id: String,
    /// Absolute path of the output on the appliance.
    pub path: String,
    pub format: RestoreFormat,
    pub state: JobState,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub requested_by: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub error: Option<String>,
}

/// The restore job runner. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RestoreJobs {
    cfg: Arc<Config>,
    state: State,
}

impl RestoreJobs {
    pub fn new(cfg: Arc<Config>, state: State) -> RestoreJobs {
        RestoreJobs { cfg, state }
    }

    pub fn start(
        &self,
        _by: &Principal,
        _source: &str,
        _vault: vault::Vault,
        _req: RestoreJobRequest,
    ) -> Result<RestoreJobView, MgmtError> {
        let _ = (&self.cfg, &self.state);
        Err(MgmtError::Internal("not built yet".into()))
    }

    pub fn list(&self, page: PageRequest) -> Result<Page<RestoreJobView>, MgmtError> {
        page.apply(Vec::new())
    }

    pub fn get(&self, id: &str) -> Result<RestoreJobView, MgmtError> {
        Err(MgmtError::NotFound(format!("no restore job {id}")))
    }

    pub fn cancel(
        &self,
        _by: &Principal,
        _source: &str,
        id: &str,
    ) -> Result<RestoreJobView, MgmtError> {
        Err(MgmtError::NotFound(format!("no restore job {id}")))
    }
}
