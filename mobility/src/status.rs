//! status.json: what `run` last did, for `mobility status` and for people reading the state dir.
//!
//! ```text
//! {"format":"ferry-mobility-status","version":1,"pid":N,"state":"syncing"|"idle"|"connecting"|
//!  "waiting_retry"|"stopped"|"failed","connected":bool,"disks":[{disk_id,path,size_bytes,
//!  blocks_total,blocks_in_sync,blocks_unacked,last_acked_seq,last_scan_changed_blocks,
//!  last_scan_finished_unix}],"last_bookmark_id","last_point_id","last_point_unix","last_error",
//!  "last_error_unix","bytes_sent","updated_unix"}
//! ```

use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::state::{unix_millis, Registration, StateDir};
use crate::tracker::Tracker;

pub const STATUS_FORMAT: &str = "ferry-mobility-status";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DiskStatus {
    pub disk_id: String,
    pub path: String,
    pub size_bytes: u64,
    pub blocks_total: u64,
    /// Blocks whose acknowledged content matched the disk at the last scan and that are not
    /// waiting for an acknowledgement; `None` before the first finished scan.
    pub blocks_in_sync: Option<u64>,
    pub blocks_unacked: u64,
    pub last_acked_seq: u64,
    pub last_scan_changed_blocks: Option<u64>,
    pub last_scan_finished_unix: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    pub format: String,
    pub version: u32,
    pub pid: u32,
    pub state: String,
    pub connected: bool,
    pub disks: Vec<DiskStatus>,
    pub last_bookmark_id: Option<u64>,
    pub last_point_id: Option<String>,
    pub last_point_unix: Option<u64>,
    pub last_error: Option<String>,
    pub last_error_unix: Option<u64>,
    pub bytes_sent: u64,
    pub updated_unix: u64,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            format: STATUS_FORMAT.into(),
            version: 1,
            pid: std::process::id(),
            state: "starting".into(),
            connected: false,
            disks: Vec::new(),
            last_bookmark_id: None,
            last_point_id: None,
            last_point_unix: None,
            last_error: None,
            last_error_unix: None,
            bytes_sent: 0,
            updated_unix: 0,
        }
    }
}

/// The live status of a running agent, saved to status.json on [`StatusBoard::save`].
#[derive(Debug, Clone)]
pub struct StatusBoard {
    inner: Arc<Mutex<Status>>,
    state: StateDir,
}

impl StatusBoard {
    /// Starts from the previous status.json (so the last point and error survive restarts).
    pub fn load(state: &StateDir) -> StatusBoard {
        let mut status = load_status(state).ok().flatten().unwrap_or_default();
        status.pid = std::process::id();
        status.connected = false;
        status.state = "starting".into();
        StatusBoard {
            inner: Arc::new(Mutex::new(status)),
            state: state.clone(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Status> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_state(&self, state: &str, connected: bool) {
        let mut s = self.lock();
        s.state = state.into();
        s.connected = connected;
    }

    pub fn error(&self, msg: &str) {
        let mut s = self.lock();
        s.last_error = Some(msg.into());
        s.last_error_unix = Some(unix_millis() / 1000);
    }

    /// Writes status.json; failures are logged, never fatal (status is informational).
    pub fn save(&self) {
        let bytes = {
            let mut s = self.lock();
            s.updated_unix = unix_millis() / 1000;
            serde_json::to_vec_pretty(&*s)
        };
        let res = bytes
            .map_err(anyhow::Error::from)
            .and_then(|b| self.state.write_atomic("status.json", &b, 0o644));
        if let Err(e) = res {
            tracing::warn!("cannot write status.json: {e:#}");
        }
    }
}

pub fn load_status(state: &StateDir) -> Result<Option<Status>> {
    match std::fs::read(state.status_path()) {
        Ok(b) => Ok(Some(
            serde_json::from_slice(&b).context("parsing status.json")?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).context("reading status.json"),
    }
}

/// Everything `mobility status` shows.
#[derive(Debug, Serialize)]
pub struct Report {
    pub state_dir: String,
    pub registered: bool,
    pub registration: Option<Registration>,
    /// Per tracker file: blocks with acknowledged non-zero content (read from the trackers).
    pub trackers: Vec<TrackerReport>,
    pub run: Option<Status>,
}

#[derive(Debug, Serialize)]
pub struct TrackerReport {
    pub disk_id: String,
    pub size_bytes: u64,
    pub blocks_total: u64,
    pub blocks_with_data_acked: u64,
    pub last_acked_seq: u64,
}

pub fn report(state: &StateDir) -> Result<Report> {
    let registration = state.registration()?;
    let mut trackers = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(state.root().join("trackers"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "trk"))
        .collect();
    entries.sort();
    for path in entries {
        let Some(disk_id) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
            continue;
        };
        if let Some(t) = Tracker::inspect(&path)? {
            trackers.push(TrackerReport {
                disk_id,
                size_bytes: t.size_bytes(),
                blocks_total: t.blocks(),
                blocks_with_data_acked: t.count_data_blocks()?,
                last_acked_seq: t.acked_seq(),
            });
        }
    }
    Ok(Report {
        state_dir: state.root().display().to_string(),
        registered: registration.is_some(),
        registration,
        trackers,
        run: load_status(state)?,
    })
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or("-".into(), |v| v.to_string())
}

/// The human-readable form of a report.
pub fn render(r: &Report) -> String {
    let mut out = format!("state dir:   {}\n", r.state_dir);
    match &r.registration {
        Some(reg) => {
            out += &format!(
                "agent id:    {}\nappliance:   {}\nhostname:    {}\n",
                reg.agent_id, reg.appliance, reg.hostname
            );
        }
        None => out += "not registered (run `mobility register`)\n",
    }
    if let Some(s) = &r.run {
        out += &format!(
            "agent:       {} (pid {}, {}), updated {}\n",
            s.state,
            s.pid,
            if s.connected {
                "connected"
            } else {
                "not connected"
            },
            s.updated_unix
        );
        for d in &s.disks {
            out += &format!(
                "disk {}:  {} size {} B, blocks {} in sync {} unacked {}, last acked seq {}, last scan changed {}\n",
                d.disk_id,
                d.path,
                d.size_bytes,
                d.blocks_total,
                opt(&d.blocks_in_sync),
                d.blocks_unacked,
                d.last_acked_seq,
                opt(&d.last_scan_changed_blocks)
            );
        }
        out += &format!(
            "last bookmark: {}  last point: {}  bytes sent: {}\nlast error:  {}\n",
            opt(&s.last_bookmark_id),
            opt(&s.last_point_id),
            s.bytes_sent,
            opt(&s.last_error)
        );
    } else {
        out += "agent has not run yet\n";
    }
    for t in &r.trackers {
        out += &format!(
            "tracker {}: {} B, {} blocks, {} with data acknowledged, last acked seq {}\n",
            t.disk_id, t.size_bytes, t.blocks_total, t.blocks_with_data_acked, t.last_acked_seq
        );
    }
    out
}
