//! Per-machine facts the data path learns as it runs (bytes received, connected, hostname, disks, last
//! committed point), and a broadcast of committed points for whoever keeps a catalog.
//!
//! Machine id == agent id. The hot path (one update per extent) touches only the machine's own atomic:
//! a session looks its entry up once when it starts and keeps the `Arc`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::broadcast;

/// Committed points a slow subscriber may fall behind by before it sees `Lagged` (and must reconcile).
const POINT_BROADCAST_CAPACITY: usize = 1024;
/// Longest hostname kept; the agent reports it, a person reads it.
const MAX_HOSTNAME_CHARS: usize = 255;

/// A recovery point the uploader has just committed to the vault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PointCommitted {
    pub machine_id: String,
    pub point_id: String,
    pub kind: vault::PointKind,
    pub created_unix_ms: u64,
    /// (disk id, size in bytes)
    pub disks: Vec<(String, u64)>,
}

/// A disk as the agent described it in its last session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskFact {
    pub disk_id: String,
    pub size_bytes: u64,
    pub label: String,
}

/// What the data path knows about one machine right now (since this process started).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineFacts {
    pub machine_id: String,
    /// Empty until the agent's first session in this process.
    pub hostname: String,
    pub connected: bool,
    /// Extent payload bytes received since this process started.
    pub bytes_received: u64,
    pub disks: Vec<DiskFact>,
    pub last_point: Option<PointCommitted>,
}

#[derive(Debug, Default)]
struct Described {
    hostname: String,
    disks: Vec<DiskFact>,
    last_point: Option<PointCommitted>,
}

/// One machine's live counters. Sessions hold it for their lifetime.
#[derive(Debug, Default)]
pub struct MachineEntry {
    bytes_received: AtomicU64,
    /// Sessions open: during a replacement the old and the new one overlap briefly.
    sessions: AtomicU32,
    described: Mutex<Described>,
}

impl MachineEntry {
    /// Counts received extent bytes: one relaxed atomic add, no lock.
    pub fn add_bytes(&self, n: u64) {
        self.bytes_received.fetch_add(n, Ordering::Relaxed);
    }
}

/// Marks the machine connected while it lives; dropping it (session end, also by a panic) disconnects.
#[derive(Debug)]
pub struct SessionGuard {
    entry: Arc<MachineEntry>,
}

impl SessionGuard {
    pub fn entry(&self) -> &Arc<MachineEntry> {
        &self.entry
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.entry.sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every machine's facts, plus the committed-point broadcast.
pub struct Machines {
    map: RwLock<HashMap<String, Arc<MachineEntry>>>,
    points: broadcast::Sender<PointCommitted>,
}

impl Default for Machines {
    fn default() -> Self {
        Machines {
            map: RwLock::default(),
            points: broadcast::channel(POINT_BROADCAST_CAPACITY).0,
        }
    }
}

impl std::fmt::Debug for Machines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machines").finish_non_exhaustive()
    }
}

fn clean_hostname(hostname: &str) -> String {
    hostname
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_HOSTNAME_CHARS)
        .collect()
}

impl Machines {
    /// The machine's entry, created on first use.
    pub fn entry(&self, machine_id: &str) -> Arc<MachineEntry> {
        if let Some(e) = self.map.read().expect("machines lock").get(machine_id) {
            return e.clone();
        }
        self.map
            .write()
            .expect("machines lock")
            .entry(machine_id.to_string())
            .or_default()
            .clone()
    }

    /// A session of `machine_id` started with these disks; the machine counts as connected until the
    /// returned guard is dropped.
    pub fn session_started(
        &self,
        machine_id: &str,
        hostname: &str,
        disks: Vec<DiskFact>,
    ) -> SessionGuard {
        let entry = self.entry(machine_id);
        {
            let mut d = entry.described.lock().expect("machine lock");
            let cleaned = clean_hostname(hostname);
            if !cleaned.is_empty() {
                d.hostname = cleaned;
            }
            d.disks = disks;
        }
        entry.sessions.fetch_add(1, Ordering::Relaxed);
        SessionGuard { entry }
    }

    /// Records a committed point and tells subscribers (none listening is fine).
    pub fn point_committed(&self, p: PointCommitted) {
        let entry = self.entry(&p.machine_id);
        {
            let mut d = entry.described.lock().expect("machine lock");
            // A replayed older point never replaces a newer one.
            let newer = d.last_point.as_ref().is_none_or(|old| {
                (p.created_unix_ms, &p.point_id) >= (old.created_unix_ms, &old.point_id)
            });
            if newer {
                d.last_point = Some(p.clone());
            }
        }
        let _ = self.points.send(p);
    }

    /// Committed points from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<PointCommitted> {
        self.points.subscribe()
    }

    /// One machine's facts, if the data path has seen it.
    pub fn get(&self, machine_id: &str) -> Option<MachineFacts> {
        let entry = self
            .map
            .read()
            .expect("machines lock")
            .get(machine_id)
            .cloned()?;
        Some(facts_of(machine_id, &entry))
    }

    /// Every machine's facts, ordered by machine id.
    pub fn snapshot(&self) -> Vec<MachineFacts> {
        let entries: Vec<(String, Arc<MachineEntry>)> = self
            .map
            .read()
            .expect("machines lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut out: Vec<MachineFacts> = entries.iter().map(|(k, e)| facts_of(k, e)).collect();
        out.sort_by(|a, b| a.machine_id.cmp(&b.machine_id));
        out
    }
}

fn facts_of(machine_id: &str, e: &MachineEntry) -> MachineFacts {
    let d = e.described.lock().expect("machine lock");
    MachineFacts {
        machine_id: machine_id.to_string(),
        hostname: d.hostname.clone(),
        connected: e.sessions.load(Ordering::Relaxed) > 0,
        bytes_received: e.bytes_received.load(Ordering::Relaxed),
        disks: d.disks.clone(),
        last_point: d.last_point.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(machine: &str, id: &str, at: u64) -> PointCommitted {
        PointCommitted {
            machine_id: machine.into(),
            point_id: id.into(),
            kind: vault::PointKind::Crash,
            created_unix_ms: at,
            disks: vec![("disk0".into(), 1 << 20)],
        }
    }

    #[test]
    fn sessions_bytes_and_connection_are_per_machine() {
        let m = Machines::default();
        assert!(m.get("a").is_none());
        let disks = vec![DiskFact {
            disk_id: "disk0".into(),
            size_bytes: 4096,
            label: "sda".into(),
        }];
        let g1 = m.session_started("a", " host-a\u{7} ", disks.clone());
        g1.entry().add_bytes(10);
        // A reconnect overlaps the old session: still connected until both ended.
        let g2 = m.session_started("a", "", disks.clone());
        g2.entry().add_bytes(5);
        drop(g1);
        let a = m.get("a").unwrap();
        assert!(a.connected);
        assert_eq!((a.bytes_received, a.hostname.as_str()), (15, "host-a"));
        assert_eq!(a.disks, disks);
        drop(g2);
        assert!(!m.get("a").unwrap().connected);
        m.entry("b");
        let ids: Vec<_> = m.snapshot().into_iter().map(|f| f.machine_id).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(m.get("b").unwrap().bytes_received, 0);
    }

    #[test]
    fn points_are_broadcast_and_the_newest_is_kept() {
        let m = Machines::default();
        m.point_committed(point("a", "00000000000000ff", 5)); // nobody listening: fine
        let mut rx = m.subscribe();
        m.point_committed(point("a", "0000000000000200", 9));
        m.point_committed(point("a", "0000000000000100", 7)); // a replay of an older point
        assert_eq!(rx.try_recv().unwrap().point_id, "0000000000000200");
        assert_eq!(rx.try_recv().unwrap().point_id, "0000000000000100");
        assert!(rx.try_recv().is_err());
        let last = m.get("a").unwrap().last_point.unwrap();
        assert_eq!(last.point_id, "0000000000000200");
        assert!(!m.get("a").unwrap().connected);
    }
}
