//! Extents sent but not yet acknowledged: the flow-control window and, per extent, the block
//! hashes to record in the tracker when its acknowledgement arrives.
//!
//! The scanner thread blocks in [`Flight::reserve`] while the window is full; the reader task
//! releases room in [`Flight::ack`]. The pending lists outlive a connection: after a reconnect,
//! the appliance's durable sequence number says which of them it kept ([`Flight::resolve`]).

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::tracker::BlockHash;

/// One extent awaiting its acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub seq: u64,
    pub first_block: u64,
    pub hashes: Vec<BlockHash>,
    pub len: u64,
}

/// The session a reservation belongs to is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

#[derive(Debug)]
struct State {
    pending: Vec<VecDeque<Pending>>,
    bytes: u64,
    window: u64,
    /// Bumped per session, so a scanner thread left over from a dead session cannot reserve.
    session: u64,
    closed: bool,
}

#[derive(Debug)]
pub struct Flight {
    state: Mutex<State>,
    room: Condvar,
    in_flight: watch::Sender<u64>,
}

/// Unacknowledged blocks by disk (for status).
pub type PendingBlocks = Vec<u64>;

impl Flight {
    pub fn new(disks: usize) -> Flight {
        Flight {
            state: Mutex::new(State {
                pending: vec![VecDeque::new(); disks],
                bytes: 0,
                window: 0,
                session: 0,
                closed: true,
            }),
            room: Condvar::new(),
            in_flight: watch::channel(0).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a session with the appliance's window; returns the session number for `reserve`.
    pub fn begin_session(&self, window_bytes: u64) -> u64 {
        let mut s = self.lock();
        s.session += 1;
        s.closed = false;
        s.window = window_bytes;
        s.session
    }

    /// Ends the session: wakes a scanner waiting for room so it can notice.
    pub fn close(&self) {
        self.lock().closed = true;
        self.room.notify_all();
    }

    pub fn is_current(&self, session: u64) -> bool {
        let s = self.lock();
        !s.closed && s.session == session
    }

    /// Waits (blocking) until the extent fits in the window, then records it as in flight. An
    /// extent larger than the whole window still goes out when nothing else is in flight.
    pub fn reserve(&self, session: u64, disk: usize, p: Pending) -> Result<(), Closed> {
        let mut s = self.lock();
        loop {
            if s.closed || s.session != session {
                return Err(Closed);
            }
            if s.bytes == 0 || s.bytes + p.len <= s.window {
                break;
            }
            s = self.room.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.bytes += p.len;
        s.pending[disk].push_back(p);
        self.in_flight.send_replace(s.bytes);
        Ok(())
    }

    /// Removes and returns the extents of `disk` with seq <= `seq`, in order, freeing their room.
    pub fn ack(&self, disk: usize, seq: u64) -> Vec<Pending> {
        let mut done = Vec::new();
        let _ = self.ack_with(disk, seq, |p| {
            done.push(p.clone());
            Ok::<(), ()>(())
        });
        done
    }

    /// Like [`Flight::ack`], but `commit` (recording the hashes in the tracker) runs for each
    /// extent before its room is freed, so nobody who waits for the window to drain can see an
    /// empty window while a record is still being written. Stops at the first failing commit.
    pub fn ack_with<E>(
        &self,
        disk: usize,
        seq: u64,
        mut commit: impl FnMut(&Pending) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut s = self.lock();
        let mut result = Ok(());
        while let Some(p) = s.pending[disk].front().filter(|p| p.seq <= seq) {
            if let Err(e) = commit(p) {
                result = Err(e);
                break;
            }
            let p = s.pending[disk].pop_front().expect("front checked");
            s.bytes -= p.len;
        }
        self.in_flight.send_replace(s.bytes);
        drop(s);
        self.room.notify_all();
        result
    }

    /// After a reconnect: the extents the appliance holds durably (seq <= `durable_seq`) are
    /// returned for recording; the rest were lost with the connection and are forgotten (the
    /// next scan finds their blocks again).
    pub fn resolve(&self, disk: usize, durable_seq: u64) -> Vec<Pending> {
        let kept = self.ack(disk, durable_seq);
        let mut s = self.lock();
        let lost: u64 = s.pending[disk].iter().map(|p| p.len).sum();
        s.pending[disk].clear();
        s.bytes -= lost;
        self.in_flight.send_replace(s.bytes);
        kept
    }

    /// The highest sequence number in flight for `disk`, if any.
    pub fn last_pending_seq(&self, disk: usize) -> Option<u64> {
        self.lock().pending[disk].back().map(|p| p.seq)
    }

    pub fn pending_blocks(&self) -> PendingBlocks {
        self.lock()
            .pending
            .iter()
            .map(|q| q.iter().map(|p| p.hashes.len() as u64).sum())
            .collect()
    }

    /// Resolves when nothing is in flight.
    pub async fn drained(&self) {
        let mut rx = self.in_flight.subscribe();
        let _ = rx.wait_for(|b| *b == 0).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn p(seq: u64, len: u64) -> Pending {
        Pending {
            seq,
            first_block: seq,
            hashes: vec![[seq as u8; 16]],
            len,
        }
    }

    #[test]
    fn ack_pops_only_up_to_the_sequence() {
        let f = Flight::new(2);
        let s = f.begin_session(100);
        for i in 1..=3 {
            f.reserve(s, 0, p(i, 10)).unwrap();
        }
        f.reserve(s, 1, p(1, 10)).unwrap();
        let got: Vec<u64> = f.ack(0, 2).iter().map(|p| p.seq).collect();
        assert_eq!(got, vec![1, 2]);
        assert!(f.ack(0, 2).is_empty());
        assert_eq!(f.pending_blocks(), vec![1, 1]);
        assert_eq!(f.last_pending_seq(0), Some(3));
    }

    #[test]
    fn full_window_blocks_until_an_ack() {
        let f = Arc::new(Flight::new(1));
        let s = f.begin_session(25);
        f.reserve(s, 0, p(1, 10)).unwrap();
        f.reserve(s, 0, p(2, 10)).unwrap();
        let f2 = f.clone();
        let t = std::thread::spawn(move || f2.reserve(s, 0, p(3, 10)));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!t.is_finished(), "third extent must wait for room");
        f.ack(0, 1);
        assert_eq!(t.join().unwrap(), Ok(()));
    }

    #[test]
    fn oversized_extent_goes_alone_and_close_releases_waiters() {
        let f = Arc::new(Flight::new(1));
        let s = f.begin_session(5);
        f.reserve(s, 0, p(1, 50)).unwrap();
        let f2 = f.clone();
        let t = std::thread::spawn(move || f2.reserve(s, 0, p(2, 1)));
        std::thread::sleep(Duration::from_millis(20));
        f.close();
        assert_eq!(t.join().unwrap(), Err(Closed));
        let s2 = f.begin_session(5);
        assert_eq!(f.reserve(s, 0, p(3, 1)), Err(Closed), "stale session");
        let kept = f.resolve(0, 0);
        assert!(kept.is_empty());
        f.reserve(s2, 0, p(1, 1)).unwrap();
    }

    #[test]
    fn resolve_keeps_durable_and_forgets_the_rest() {
        let f = Flight::new(1);
        let s = f.begin_session(100);
        for i in 1..=4 {
            f.reserve(s, 0, p(i, 10)).unwrap();
        }
        f.close();
        let kept: Vec<u64> = f.resolve(0, 2).iter().map(|p| p.seq).collect();
        assert_eq!(kept, vec![1, 2]);
        assert_eq!(f.pending_blocks(), vec![0]);
        assert_eq!(*f.in_flight.borrow(), 0);
    }
}
