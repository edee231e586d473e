//! Counters the data path keeps for status and metrics.

use crate::machines::Machines;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Stats {
    pub bytes_received: AtomicU64,
    pub extents_durable: AtomicU64,
    pub bytes_compressed_in: AtomicU64,
    pub bytes_uploaded: AtomicU64,
    pub points_committed: AtomicU64,
    pub sessions_refused: AtomicU64,
    pub actor_restarts: AtomicU64,
    /// The same facts per machine, and the broadcast of committed points.
    pub machines: Machines,
}

impl Stats {
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        vec![
            (
                "bytes_received",
                self.bytes_received.load(Ordering::Relaxed),
            ),
            (
                "extents_durable",
                self.extents_durable.load(Ordering::Relaxed),
            ),
            (
                "bytes_compressed_in",
                self.bytes_compressed_in.load(Ordering::Relaxed),
            ),
            (
                "bytes_uploaded",
                self.bytes_uploaded.load(Ordering::Relaxed),
            ),
            (
                "points_committed",
                self.points_committed.load(Ordering::Relaxed),
            ),
            (
                "sessions_refused",
                self.sessions_refused.load(Ordering::Relaxed),
            ),
            (
                "actor_restarts",
                self.actor_restarts.load(Ordering::Relaxed),
            ),
        ]
    }
}
