//! Restore jobs: a point's disk written to a file on the appliance, in the background, with progress
//! and cancel.
//!
//! Each job is a record in the sled tree `restore_jobs`: key = the job id (16 hex digits of a sled
//! id, so key order is start order), value = its [`RestoreJobView`] as JSON in the state record
//! envelope. A record is written when a job starts and when it ends; progress and the cancel flag
//! live in memory (atomics the restore updates per range) and are merged into views of running
//! jobs. A record still `running` when the appliance starts belongs to a restore the previous
//! process never finished: [`RestoreJobs::recover`] marks it failed and removes its partial file.
//!
//! Output goes only under `<data dir>/restores`: the requested path is relative, every component is
//! a plain name (no `..`, no hidden names, no symbolic links), so an API caller cannot write
//! anywhere else on the appliance. The image is built in `<path>.partial` by the vault and renamed
//! at the end, so names ending in `.partial` are refused: they would collide with another job's.

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::FutureExt;
use serde::{Deserialize, Serialize};
use vault::{RestoreRequest, RestoreStats, Vault, VaultError};

use super::auth::Principal;
use super::{MgmtError, Page, PageRequest};
use crate::config::Config;
use crate::points_cmd::{resolve_point, DEFAULT_RESTORE_PARALLELISM};
use crate::state::{decode_record, encode_record, now_rfc3339, State, StateError};

#[path = "restore_jobs_checks.rs"]
mod checks;
pub use checks::target_path;
use checks::{
    admit, check_id, format_for, format_name, require_operator, state_name, vault_format,
    vault_unavailable,
};

/// The sled tree of job records.
pub const TREE: &str = "restore_jobs";
/// The folder under the data dir that restores write into.
pub const RESTORES_DIR: &str = "restores";
/// Restores running at once: each holds up to parallelism x 8 MiB of fetched ranges and competes
/// with replication for the uplink and the disk.
pub const MAX_RUNNING: usize = 2;
/// Longest requested path, in bytes.
pub const MAX_PATH_BYTES: usize = 255;
/// The error of a job the appliance was restarted under.
pub const INTERRUPTED: &str = "interrupted by an appliance restart";

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
    /// Default: from the file name's extension (`.vhd`, `.vmdk`), else raw.
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
    /// The point restored ("latest" resolved when the job started).
    pub point_id: String,
    /// Absolute path of the output on the appliance.
    pub path: String,
    pub format: RestoreFormat,
    pub state: JobState,
    /// Bytes of disk data written so far (zero blocks are not written, so not counted).
    pub bytes_done: u64,
    /// Bytes of disk data to write; 0 until the restore has read the point's block map.
    pub bytes_total: u64,
    pub requested_by: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    /// A cancel was asked for; the job stops within one range and then ends `cancelled`.
    #[serde(default)]
    pub cancel_requested: bool,
}

/// What a running job shares with its restore task.
struct Live {
    out: PathBuf,
    cancel: AtomicBool,
    done: AtomicU64,
    total: AtomicU64,
}

impl Live {
    fn overlay(&self, view: &mut RestoreJobView) {
        view.bytes_done = self.done.load(Ordering::Relaxed);
        view.bytes_total = self.total.load(Ordering::Relaxed);
        view.cancel_requested = self.cancel.load(Ordering::Acquire);
    }
}

/// How a restore task ended.
enum Outcome {
    Done(RestoreStats),
    Cancelled,
    Failed(String),
}

/// Test hook: called with (job id, done, total) on every progress report, on the restore's thread.
#[cfg(test)]
pub(crate) type ProgressHook = Arc<dyn Fn(&str, u64, u64) + Send + Sync>;

struct Inner {
    cfg: Arc<Config>,
    state: State,
    restores_dir: PathBuf,
    /// Running jobs by id. Held while a job is admitted, ends or is cancelled, so the limit and
    /// the record/flag pair stay consistent.
    live: Mutex<HashMap<String, Arc<Live>>>,
    #[cfg(test)]
    progress_hook: Mutex<Option<ProgressHook>>,
}

/// The restore job runner. Cheap to clone.
#[derive(Clone)]
pub struct RestoreJobs {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RestoreJobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestoreJobs")
            .field("data_dir", &self.inner.cfg.data_dir)
            .field("restores_dir", &self.inner.restores_dir)
            .finish_non_exhaustive()
    }
}

impl RestoreJobs {
    /// Opens the runner and recovers jobs a previous process left running (see [`Self::recover`];
    /// a failure there is logged, the jobs stay listed as running until the next start).
    pub fn new(cfg: Arc<Config>, state: State) -> RestoreJobs {
        let joined = cfg.data_dir.join(RESTORES_DIR);
        let restores_dir = std::path::absolute(&joined).unwrap_or(joined);
        let jobs = RestoreJobs {
            inner: Arc::new(Inner {
                cfg,
                state,
                restores_dir,
                live: Mutex::new(HashMap::new()),
                #[cfg(test)]
                progress_hook: Mutex::new(None),
            }),
        };
        match jobs.recover() {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                jobs = n,
                "restore jobs interrupted by a restart marked failed"
            ),
            Err(err) => tracing::error!(%err, "could not recover interrupted restore jobs"),
        }
        jobs
    }

    /// Where restores are written (`<data dir>/restores`, absolute).
    pub fn restores_dir(&self) -> &Path {
        &self.inner.restores_dir
    }

    /// Marks every job recorded as running but not running in this process failed with
    /// [`INTERRUPTED`] and removes its partial file. Returns how many it marked.
    pub fn recover(&self) -> Result<usize, MgmtError> {
        let live = self.live();
        let tree = self.tree()?;
        let mut marked = 0;
        for entry in tree.iter() {
            let (key, raw) = entry?;
            // One unreadable record must not keep the others from being cleaned up; `get` and
            // `list` still report it.
            let mut view = match decode_view(&key, &raw) {
                Ok(view) => view,
                Err(err) => {
                    tracing::warn!(%err, "skipping an unreadable restore job record");
                    continue;
                }
            };
            if view.state != JobState::Running || live.contains_key(&view.id) {
                continue;
            }
            remove_partial(&RestoreRequest::partial_path_of(Path::new(&view.path)));
            view.state = JobState::Failed;
            view.error = Some(INTERRUPTED.to_string());
            view.finished_at = Some(now_rfc3339());
            self.put(&tree, &view)?;
            self.inner.state.audit(
                "restore_failed",
                &format!("{}: {INTERRUPTED}", describe(&view)),
            )?;
            marked += 1;
        }
        if marked > 0 {
            tree.flush()?;
        }
        Ok(marked)
    }

    /// Validates the request, resolves the point, records the job and starts the restore on the
    /// current tokio runtime. Returns at once with the job `running`.
    pub async fn start(
        &self,
        by: &Principal,
        source: &str,
        vault: Vault,
        req: RestoreJobRequest,
    ) -> Result<RestoreJobView, MgmtError> {
        require_operator(by)?;
        check_id("machine_id", &req.machine_id)?;
        check_id("disk_id", &req.disk_id)?;
        if req.point_id != "latest" {
            check_id("point_id", &req.point_id)?;
        }
        let out = target_path(&self.inner.restores_dir, &req.path)?;
        let format = req.format.unwrap_or_else(|| format_for(&out));
        // Refuse early what needs no vault; checked again below, since the vault call can be slow.
        admit(&self.live(), &out, req.overwrite)?;

        let points = vault.list_points().await.map_err(vault_unavailable)?;
        let point_id = resolve_point(&points, &req.machine_id, &req.disk_id, &req.point_id)
            .map_err(|e| MgmtError::NotFound(e.to_string()))?;

        let path = out.to_string_lossy().into_owned();
        let mut live_map = self.live();
        admit(&live_map, &out, req.overwrite)?;
        if let Some(parent) = out.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| MgmtError::Internal(format!("creating {}: {e}", parent.display())))?;
        }
        let tree = self.tree()?;
        let id = format!("{:016x}", self.inner.state.db().generate_id()?);
        let view = RestoreJobView {
            id: id.clone(),
            machine_id: req.machine_id,
            disk_id: req.disk_id,
            point_id,
            path,
            format,
            state: JobState::Running,
            bytes_done: 0,
            bytes_total: 0,
            requested_by: by.user.clone(),
            started_at: now_rfc3339(),
            finished_at: None,
            error: None,
            cancel_requested: false,
        };
        self.put(&tree, &view)?;
        let audited =
            self.inner
                .state
                .audit_as(&by.user, source, "restore_started", &describe(&view));
        if let Err(err) = audited {
            let _ = tree.remove(id.as_bytes());
            return Err(err.into());
        }
        // The record must outlive a crash from here on, or recovery could not clean up.
        tree.flush()?;
        let live = Arc::new(Live {
            out: out.clone(),
            cancel: AtomicBool::new(false),
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
        });
        live_map.insert(id.clone(), live.clone());
        drop(live_map);

        let request = RestoreRequest {
            machine_id: view.machine_id.clone(),
            disk_id: view.disk_id.clone(),
            point_id: view.point_id.clone(),
            out,
            format: vault_format(format),
            parallelism: DEFAULT_RESTORE_PARALLELISM,
        };
        let jobs = self.clone();
        tokio::spawn(async move {
            let outcome = AssertUnwindSafe(jobs.run(&vault, &id, &request, &live))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Outcome::Failed("the restore task panicked".into()));
            jobs.finish(&id, &request, &live, outcome);
        });
        Ok(view)
    }

    /// Jobs, newest first.
    pub fn list(&self, page: PageRequest) -> Result<Page<RestoreJobView>, MgmtError> {
        let (offset, limit) = page.resolve()?;
        let live = self.live();
        let tree = self.tree()?;
        let items = tree
            .iter()
            .rev()
            .skip(offset)
            .take(limit)
            .map(|entry| {
                let (key, raw) = entry?;
                Ok(with_progress(&live, decode_view(&key, &raw)?))
            })
            .collect::<Result<Vec<_>, MgmtError>>()?;
        Ok(Page {
            items,
            total: tree.len(),
            limit,
            offset,
        })
    }

    pub fn get(&self, id: &str) -> Result<RestoreJobView, MgmtError> {
        let live = self.live();
        let view = self.record(&self.tree()?, id)?;
        Ok(with_progress(&live, view))
    }

    /// Asks a running job to stop. Returns the job, still `running` with `cancel_requested`; it
    /// ends `cancelled` within one range. A job that already ended is a conflict.
    pub fn cancel(
        &self,
        by: &Principal,
        source: &str,
        id: &str,
    ) -> Result<RestoreJobView, MgmtError> {
        require_operator(by)?;
        let live_map = self.live();
        let mut view = self.record(&self.tree()?, id)?;
        let Some(live) = live_map.get(id).filter(|_| view.state == JobState::Running) else {
            return Err(MgmtError::Conflict(format!(
                "restore job {id} is not running (it is {})",
                state_name(view.state)
            )));
        };
        if !live.cancel.load(Ordering::Acquire) {
            self.inner
                .state
                .audit_as(&by.user, source, "restore_cancelled", &describe(&view))?;
            live.cancel.store(true, Ordering::Release);
        }
        live.overlay(&mut view);
        Ok(view)
    }

    /// Test hook on progress reports (see [`ProgressHook`]).
    #[cfg(test)]
    pub(crate) fn set_progress_hook(&self, hook: Option<ProgressHook>) {
        *self
            .inner
            .progress_hook
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = hook;
    }

    // `id` is only read by the test hook.
    #[cfg_attr(not(test), allow(unused_variables))]
    async fn run(&self, vault: &Vault, id: &str, req: &RestoreRequest, live: &Live) -> Outcome {
        #[cfg(test)]
        let hook = self
            .inner
            .progress_hook
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let progress = |done: u64, total: u64| {
            live.total.store(total, Ordering::Relaxed);
            live.done.store(done, Ordering::Relaxed);
            #[cfg(test)]
            if let Some(hook) = &hook {
                hook(id, done, total);
            }
        };
        match vault
            .restore_cancellable(req, &progress, &live.cancel)
            .await
        {
            Ok(stats) => Outcome::Done(stats),
            Err(VaultError::Cancelled) => Outcome::Cancelled,
            Err(err) => Outcome::Failed(err.to_string()),
        }
    }

    /// Records how a job ended and releases its slot.
    fn finish(&self, id: &str, req: &RestoreRequest, live: &Live, outcome: Outcome) {
        if !matches!(outcome, Outcome::Done(_)) {
            // The vault removes it on error and cancel; this covers a restore that panicked.
            remove_partial(&req.partial_path());
        }
        let mut live_map = self.live();
        let recorded = self.tree().and_then(|tree| {
            let mut view = self.record(&tree, id)?;
            live.overlay(&mut view);
            view.finished_at = Some(now_rfc3339());
            let event = match &outcome {
                Outcome::Done(stats) => {
                    view.state = JobState::Succeeded;
                    view.bytes_done = view.bytes_total;
                    Some((
                        "restore_finished",
                        format!("{}: {} bytes", describe(&view), stats.bytes),
                    ))
                }
                Outcome::Cancelled => {
                    view.state = JobState::Cancelled;
                    None
                }
                Outcome::Failed(error) => {
                    view.state = JobState::Failed;
                    view.error = Some(error.clone());
                    Some(("restore_failed", format!("{}: {error}", describe(&view))))
                }
            };
            self.put(&tree, &view)?;
            tree.flush()?;
            if let Some((event, detail)) = event {
                self.inner.state.audit(event, &detail)?;
            }
            Ok(())
        });
        live_map.remove(id);
        drop(live_map);
        if let Err(err) = recorded {
            tracing::error!(job = id, %err, "could not record the end of a restore job");
        }
    }

    fn live(&self) -> MutexGuard<'_, HashMap<String, Arc<Live>>> {
        // The map is only inserted into and removed from; a panic elsewhere cannot leave it torn.
        self.inner.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tree(&self) -> Result<sled::Tree, MgmtError> {
        Ok(self.inner.state.db().open_tree(TREE)?)
    }

    fn record(&self, tree: &sled::Tree, id: &str) -> Result<RestoreJobView, MgmtError> {
        match tree.get(id.as_bytes())? {
            Some(raw) => decode_view(id.as_bytes(), &raw),
            None => Err(MgmtError::NotFound(format!("no restore job {id}"))),
        }
    }

    fn put(&self, tree: &sled::Tree, view: &RestoreJobView) -> Result<(), MgmtError> {
        let json = serde_json::to_vec(view)
            .map_err(|e| MgmtError::Internal(format!("encoding restore job: {e}")))?;
        tree.insert(view.id.as_bytes(), encode_record(&json))?;
        Ok(())
    }
}

/// The audit detail naming a job.
fn describe(view: &RestoreJobView) -> String {
    format!(
        "job {}: {}/{} point {} to {} ({})",
        view.id,
        view.machine_id,
        view.disk_id,
        view.point_id,
        view.path,
        format_name(view.format)
    )
}

fn with_progress(live: &HashMap<String, Arc<Live>>, mut view: RestoreJobView) -> RestoreJobView {
    if view.state == JobState::Running {
        if let Some(l) = live.get(&view.id) {
            l.overlay(&mut view);
        }
    }
    view
}

fn decode_view(key: &[u8], raw: &[u8]) -> Result<RestoreJobView, MgmtError> {
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

fn remove_partial(partial: &Path) {
    match std::fs::remove_file(partial) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %partial.display(), %e, "could not remove a partial restore")
        }
    }
}

#[cfg(test)]
#[path = "restore_jobs_tests.rs"]
mod tests;
