//! The machines the appliance protects, their disks, points, RPO and throughput, kept in sled so lists
//! are fast and survive restarts.
//!
//! ## sled trees (every value is a `crate::state` record: `FS`, version 1, JSON body)
//!
//! | tree | key | value |
//! |---|---|---|
//! | `machines` | machine id | [`MachineRecord`]: name, disks, bytes received, last point, points, first seen |
//! | `points` | `<machine id>/<point id>` | [`PointView`] (point ids are 16 hex digits, so they sort by time) |
//! | `points_by_time` | big-endian u64 creation ms, then `<machine id>/<point id>` | empty: the index of "newest first over every machine" |
//! | `history` | `<machine id>/`, then big-endian u64 Unix minute | [`Sample`], one per machine per minute, 24 h kept |
//!
//! Lists are served from an in-memory snapshot (sorted by name, then id) rebuilt when the catalog changes;
//! a request computes only the RPO and protection state of the items it returns. Machine id == agent id.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{MgmtError, Page, PageRequest, Running};
use crate::state::{decode_record, encode_record, State, StateError};

#[path = "catalog_follow.rs"]
mod follow;
#[path = "catalog_json.rs"]
mod json;
#[cfg(test)]
#[path = "catalog_tests.rs"]
mod tests;
#[path = "catalog_write.rs"]
mod write;

/// A machine whose last point is older than this is flagged (`rpo_exceeded`).
pub const RPO_TARGET_SECS: u64 = 900;
/// How often the catalog samples the data path's per-machine facts.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(10);
/// How much history a machine keeps.
pub const HISTORY_SECS: u64 = 24 * 3600;

const MACHINES_TREE: &str = "machines";
const POINTS_TREE: &str = "points";
const BY_TIME_TREE: &str = "points_by_time";
const HISTORY_TREE: &str = "history";
/// Longest machine name kept (the agent reports it; a person reads it).
const MAX_NAME_CHARS: usize = 255;

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
    /// Agent not connected, and no point within the RPO target.
    Disconnected,
    /// Agent revoked: no longer replicating.
    Revoked,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DiskView {
    pub disk_id: String,
    pub size_bytes: u64,
    pub label: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// Bytes per second received from the agent over the last sample interval.
    pub throughput_bytes_per_sec: u64,
    pub bytes_received: u64,
    pub points: u64,
}

/// One sample of a machine's history (charts).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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

/// What the `machines` tree keeps per machine.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MachineRecord {
    pub id: String,
    /// Hostname as last reported (agent session or vault descriptor); empty when unknown.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub disks: Vec<DiskView>,
    /// Extent bytes received over the appliance's lifetime (restarts included).
    #[serde(default)]
    pub bytes_received: u64,
    #[serde(default)]
    pub throughput_bytes_per_sec: u64,
    #[serde(default)]
    pub last_point: Option<PointView>,
    #[serde(default)]
    pub points: u64,
    #[serde(default)]
    pub first_seen_unix: u64,
}

#[derive(Clone, Debug, Default)]
struct AgentInfo {
    hostname: String,
    revoked: bool,
}

/// What the sampler remembers between samples (not persisted: it restarts with the process).
#[derive(Clone, Debug, Default)]
struct Live {
    connected: bool,
    /// The data path's own counter at the last sample (it starts at 0 with the process).
    facts_bytes: u64,
    last_sample_ms: u64,
    history_minute: Option<u64>,
    history_bytes: u64,
    history_since_ms: u64,
}

#[derive(Default)]
struct Data {
    records: BTreeMap<String, MachineRecord>,
    /// Machine records that could not be decoded: key -> why. Lists fail until reconciliation rewrites them.
    corrupt: BTreeMap<String, String>,
    agents: BTreeMap<String, AgentInfo>,
    live: HashMap<String, Live>,
}

/// One list item with the parts that depend on the time of the request left to fill in.
#[derive(Debug)]
struct Listed {
    view: MachineView,
    revoked: bool,
    last_point_ms: Option<u64>,
    /// The view's JSON around its `state` and `rpo_seconds` values (see `catalog_json.rs`).
    json: [String; 3],
}

#[derive(Debug, Default)]
struct Snapshot {
    items: Vec<Listed>,
    by_id: HashMap<String, usize>,
    points_total: u64,
    error: Option<String>,
}

struct Inner {
    state: State,
    machines: sled::Tree,
    points: sled::Tree,
    by_time: sled::Tree,
    history: sled::Tree,
    data: Mutex<Data>,
    snapshot: RwLock<Arc<Snapshot>>,
    attached: AtomicBool,
    reconciling: AtomicBool,
}

/// The catalog. Cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").finish_non_exhaustive()
    }
}

/// The current time in Unix milliseconds.
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// RFC 3339 (UTC) of a Unix millisecond time; empty when out of range.
pub fn rfc3339_of_ms(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// The state of a machine from its revocation, its agent's connection and its RPO.
pub fn protection(revoked: bool, connected: bool, rpo_seconds: Option<u64>) -> ProtectionState {
    if revoked {
        ProtectionState::Revoked
    } else if rpo_seconds.is_some_and(|r| r <= RPO_TARGET_SECS) {
        // A recent point protects the machine even while its agent reconnects.
        ProtectionState::Protected
    } else if !connected {
        ProtectionState::Disconnected
    } else if rpo_seconds.is_none() {
        ProtectionState::InitialSync
    } else {
        ProtectionState::RpoExceeded
    }
}

/// Ids become key segments: the vault's alphabet, so `/` can separate machine and point.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn clean_name(name: &str) -> String {
    name.trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME_CHARS)
        .collect()
}

/// Points know their disks' ids and sizes; the labels come from the machine's description, which may
/// arrive after the point (so they are filled in when a point is shown).
fn fill_labels(p: &mut PointView, disks: &[DiskView]) {
    for d in p.disks.iter_mut().filter(|d| d.label.is_empty()) {
        if let Some(known) = disks.iter().find(|k| k.disk_id == d.disk_id) {
            d.label.clone_from(&known.label);
        }
    }
}

fn point_key(machine: &str, point: &str) -> Vec<u8> {
    format!("{machine}/{point}").into_bytes()
}

fn by_time_key(p: &PointView) -> Vec<u8> {
    let mut k = p.created_unix_ms.to_be_bytes().to_vec();
    k.extend_from_slice(&point_key(&p.machine_id, &p.point_id));
    k
}

fn history_key(machine: &str, minute: u64) -> Vec<u8> {
    let mut k = format!("{machine}/").into_bytes();
    k.extend_from_slice(&minute.to_be_bytes());
    k
}

fn history_key_name(key: &[u8]) -> String {
    match key.len().checked_sub(8) {
        Some(n) => {
            let minute = u64::from_be_bytes(key[n..].try_into().unwrap_or([0; 8]));
            format!("{}{minute}", String::from_utf8_lossy(&key[..n]))
        }
        None => hex::encode(key),
    }
}

fn decode<T: serde::de::DeserializeOwned>(
    tree: &'static str,
    key: String,
    raw: &[u8],
) -> Result<T, StateError> {
    let corrupt = |reason: String| StateError::Corrupt {
        tree,
        key: key.clone(),
        reason,
    };
    let body = decode_record(raw).map_err(corrupt)?;
    serde_json::from_slice(body).map_err(|e| corrupt(e.to_string()))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    encode_record(&serde_json::to_vec(value).expect("catalog records always serialize"))
}

impl Catalog {
    /// Opens the catalog's trees and loads the machine records. A corrupt record does not stop the
    /// appliance: lists report it (naming the key) until it is rewritten.
    pub fn new(state: State) -> Result<Catalog, MgmtError> {
        let db = state.db();
        let inner = Inner {
            machines: db.open_tree(MACHINES_TREE)?,
            points: db.open_tree(POINTS_TREE)?,
            by_time: db.open_tree(BY_TIME_TREE)?,
            history: db.open_tree(HISTORY_TREE)?,
            state,
            data: Mutex::default(),
            snapshot: RwLock::default(),
            attached: AtomicBool::new(false),
            reconciling: AtomicBool::new(false),
        };
        let catalog = Catalog {
            inner: Arc::new(inner),
        };
        {
            let mut data = catalog.lock();
            for entry in catalog.inner.machines.iter() {
                let (key, raw) = entry?;
                let id = String::from_utf8_lossy(&key).into_owned();
                match decode::<MachineRecord>(MACHINES_TREE, id.clone(), &raw) {
                    Ok(record) => {
                        data.records.insert(id, record);
                    }
                    Err(err) => {
                        tracing::error!(%err, "catalog: corrupt machine record");
                        data.corrupt.insert(id, err.to_string());
                    }
                }
            }
        }
        catalog.refresh();
        Ok(catalog)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Data> {
        self.inner.data.lock().expect("catalog lock")
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.snapshot.read().expect("snapshot lock").clone()
    }

    /// Starts following the data path (sampler, reconciliation with the vault). Needs a tokio (actix)
    /// runtime; a second call while the first still follows does nothing.
    pub fn attach(&self, running: &Running) {
        follow::attach(self, running);
    }

    /// Re-reads the agents (names, revocations) and rebuilds the lists: call after revoking an agent so
    /// the change shows at once rather than at the next sample.
    pub fn refresh(&self) {
        match self.inner.state.agents() {
            Ok(agents) => {
                let mut data = self.lock();
                data.agents = agents
                    .into_iter()
                    .map(|(id, r)| {
                        let info = AgentInfo {
                            hostname: clean_name(&r.hostname),
                            revoked: r.revoked,
                        };
                        (id, info)
                    })
                    .collect();
                self.rebuild(&data);
            }
            Err(err) => {
                // The previous list of agents stays; the next sample tries again.
                tracing::warn!(%err, "catalog: could not read the agents");
                self.rebuild(&self.lock());
            }
        }
    }

    /// Rebuilds the list snapshot from `data` (called with the data lock held, so snapshots follow
    /// changes in order).
    fn rebuild(&self, data: &Data) {
        let ids: std::collections::BTreeSet<&String> =
            data.records.keys().chain(data.agents.keys()).collect();
        let mut items: Vec<Listed> = ids
            .into_iter()
            .map(|id| {
                let record = data.records.get(id);
                let agent = data.agents.get(id);
                let name = record
                    .map(|r| r.name.clone())
                    .filter(|n| !n.is_empty())
                    .or_else(|| agent.map(|a| a.hostname.clone()))
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| id.clone());
                let disks = record.map(|r| r.disks.clone()).unwrap_or_default();
                let last_point = record.and_then(|r| r.last_point.clone()).map(|mut p| {
                    fill_labels(&mut p, &disks);
                    p
                });
                let last_point_ms = last_point.as_ref().map(|p| p.created_unix_ms);
                let view = MachineView {
                    id: id.clone(),
                    name,
                    state: ProtectionState::Disconnected,
                    agent_connected: data.live.get(id).is_some_and(|l| l.connected),
                    disks,
                    last_point,
                    rpo_seconds: None,
                    throughput_bytes_per_sec: record.map_or(0, |r| r.throughput_bytes_per_sec),
                    bytes_received: record.map_or(0, |r| r.bytes_received),
                    points: record.map_or(0, |r| r.points),
                };
                Listed {
                    revoked: agent.is_some_and(|a| a.revoked),
                    last_point_ms,
                    json: json::parts(&view),
                    view,
                }
            })
            .collect();
        items.sort_by(|a, b| (&a.view.name, &a.view.id).cmp(&(&b.view.name, &b.view.id)));
        let snapshot = Snapshot {
            by_id: items
                .iter()
                .enumerate()
                .map(|(i, l)| (l.view.id.clone(), i))
                .collect(),
            points_total: items.iter().map(|l| l.view.points).sum(),
            error: data.corrupt.values().next().cloned(),
            items,
        };
        *self.inner.snapshot.write().expect("snapshot lock") = Arc::new(snapshot);
    }

    fn finish(item: &Listed, now_ms: u64) -> MachineView {
        let mut view = item.view.clone();
        view.rpo_seconds = item
            .last_point_ms
            .map(|ms| now_ms.saturating_sub(ms) / 1000);
        view.state = protection(item.revoked, view.agent_connected, view.rpo_seconds);
        view
    }

    pub fn list(&self, page: PageRequest) -> Result<Page<MachineView>, MgmtError> {
        let (offset, limit) = page.resolve()?;
        let snapshot = self.snapshot();
        if let Some(err) = &snapshot.error {
            return Err(MgmtError::Internal(format!("machine catalog: {err}")));
        }
        let now = now_unix_ms();
        let items = snapshot
            .items
            .iter()
            .skip(offset)
            .take(limit)
            .map(|l| Catalog::finish(l, now))
            .collect();
        Ok(Page {
            items,
            total: snapshot.items.len(),
            limit,
            offset,
        })
    }

    pub fn get(&self, id: &str) -> Result<MachineDetail, MgmtError> {
        let snapshot = self.snapshot();
        let now = now_unix_ms();
        let Some(&i) = snapshot.by_id.get(id) else {
            return Err(MgmtError::NotFound(format!("no machine {id}")));
        };
        let cutoff_minute = now.saturating_sub(HISTORY_SECS * 1000) / 60_000;
        let from = history_key(id, cutoff_minute);
        let to = history_key(id, u64::MAX);
        let mut history = Vec::new();
        for entry in self.inner.history.range(from..=to) {
            let (key, raw) = entry?;
            let sample: Sample = decode(HISTORY_TREE, history_key_name(&key), &raw)?;
            if sample.at_unix * 1000 + HISTORY_SECS * 1000 >= now {
                history.push(sample);
            }
        }
        Ok(MachineDetail {
            machine: Catalog::finish(&snapshot.items[i], now),
            history,
        })
    }

    /// Points, newest first: of one machine, or of every machine.
    pub fn points(
        &self,
        machine: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<PointView>, MgmtError> {
        let (offset, limit) = page.resolve()?;
        let snapshot = self.snapshot();
        let mut items = Vec::new();
        let total = match machine {
            Some(m) => {
                let Some(&i) = snapshot.by_id.get(m) else {
                    return Err(MgmtError::NotFound(format!("no machine {m}")));
                };
                let prefix = format!("{m}/");
                for entry in self
                    .inner
                    .points
                    .scan_prefix(prefix.as_bytes())
                    .rev()
                    .skip(offset)
                    .take(limit)
                {
                    let (key, raw) = entry?;
                    let name = String::from_utf8_lossy(&key).into_owned();
                    let mut p: PointView = decode(POINTS_TREE, name, &raw)?;
                    fill_labels(&mut p, &snapshot.items[i].view.disks);
                    items.push(p);
                }
                snapshot.items[i].view.points
            }
            None => {
                for entry in self.inner.by_time.iter().rev().skip(offset).take(limit) {
                    let (key, _) = entry?;
                    let name = String::from_utf8_lossy(key.get(8..).unwrap_or_default());
                    let raw = self.inner.points.get(name.as_bytes())?.ok_or_else(|| {
                        MgmtError::Internal(format!(
                            "machine catalog: index entry {name} names a point that is not stored"
                        ))
                    })?;
                    let mut p: PointView = decode(POINTS_TREE, name.into_owned(), &raw)?;
                    if let Some(&i) = snapshot.by_id.get(&p.machine_id) {
                        fill_labels(&mut p, &snapshot.items[i].view.disks);
                    }
                    items.push(p);
                }
                snapshot.points_total
            }
        };
        Ok(Page {
            items,
            total: total as usize,
            limit,
            offset,
        })
    }

    pub fn point(&self, machine: &str, point: &str) -> Result<PointView, MgmtError> {
        let not_found = || MgmtError::NotFound(format!("no point {machine}/{point}"));
        if !valid_id(machine) || !valid_id(point) {
            return Err(not_found());
        }
        let key = point_key(machine, point);
        let raw = self.inner.points.get(&key)?.ok_or_else(not_found)?;
        let mut p: PointView = decode(POINTS_TREE, format!("{machine}/{point}"), &raw)?;
        let snapshot = self.snapshot();
        if let Some(&i) = snapshot.by_id.get(machine) {
            fill_labels(&mut p, &snapshot.items[i].view.disks);
        }
        Ok(p)
    }

    /// (machine id, RPO seconds) for /metrics.
    pub fn rpo_per_machine(&self) -> Vec<(String, Option<u64>)> {
        let now = now_unix_ms();
        self.snapshot()
            .items
            .iter()
            .map(|l| {
                let rpo = l.last_point_ms.map(|ms| now.saturating_sub(ms) / 1000);
                (l.view.id.clone(), rpo)
            })
            .collect()
    }
}
