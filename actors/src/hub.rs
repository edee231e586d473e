//! Which agents are connected: lets the uploader tell an agent that its point is durable, and makes sure
//! only one session per agent writes to that agent's cache logs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch, OwnedMutexGuard};
use wire::Frame;

/// Why a live session is asked to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// Not asked: keep going.
    Running,
    /// A newer session of the same agent took over.
    Replaced,
    /// The appliance ended it (the agent was revoked).
    Disconnected,
}

#[derive(Default)]
struct Entry {
    out: Option<mpsc::UnboundedSender<Frame>>,
    /// Held by the live session; a new session waits for it after asking the old one to stop.
    lock: Arc<tokio::sync::Mutex<()>>,
    replace: Option<watch::Sender<StopReason>>,
}

#[derive(Default)]
pub struct Hub {
    agents: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

impl Hub {
    /// Becomes the one session of `agent`: asks any older session to end and waits until it has drained.
    /// The returned receiver changes when this session must end (replaced, or disconnected).
    pub async fn claim(&self, agent: &str) -> (OwnedMutexGuard<()>, watch::Receiver<StopReason>) {
        let (tx, rx) = watch::channel(StopReason::Running);
        let lock = {
            let mut agents = self.agents.lock().expect("hub lock");
            let e = agents.entry(agent.to_string()).or_default();
            if let Some(old) = e.replace.replace(tx) {
                let _ = old.send(StopReason::Replaced);
            }
            e.lock.clone()
        };
        (lock.lock_owned().await, rx)
    }

    /// Ends the agent's live session now: it stops reading, drains what it read into the cache (that data
    /// is acknowledged as usual) and closes. True when a session was there to end. An agent that
    /// reconnects is admitted or refused afresh, so revoke first, then disconnect.
    pub fn disconnect(&self, agent: &str) -> bool {
        let stop = self
            .agents
            .lock()
            .expect("hub lock")
            .get_mut(agent)
            .and_then(|e| e.replace.take());
        stop.is_some_and(|tx| tx.send(StopReason::Disconnected).is_ok())
    }

    pub fn attach(&self, agent: &str, out: mpsc::UnboundedSender<Frame>) {
        self.agents
            .lock()
            .expect("hub lock")
            .entry(agent.to_string())
            .or_default()
            .out = Some(out);
    }

    pub fn detach(&self, agent: &str, out: &mpsc::UnboundedSender<Frame>) {
        if let Some(e) = self.agents.lock().expect("hub lock").get_mut(agent) {
            if e.out.as_ref().is_some_and(|o| o.same_channel(out)) {
                e.out = None;
            }
        }
    }

    /// Sends a frame to the agent's live session; false when it is not connected (it learns on reconnect).
    pub fn send(&self, agent: &str, frame: Frame) -> bool {
        let agents = self.agents.lock().expect("hub lock");
        agents
            .get(agent)
            .and_then(|e| e.out.as_ref())
            .is_some_and(|o| o.send(frame).is_ok())
    }

    pub fn connected(&self) -> Vec<String> {
        let agents = self.agents.lock().expect("hub lock");
        let mut v: Vec<_> = agents
            .iter()
            .filter(|(_, e)| e.out.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        v.sort();
        v
    }
}
