//! Which agents are connected: lets the uploader tell an agent that its point is durable, and makes sure
//! only one session per agent writes to that agent's cache logs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch, OwnedMutexGuard};
use wire::Frame;

#[derive(Default)]
struct Entry {
    out: Option<mpsc::UnboundedSender<Frame>>,
    /// Held by the live session; a new session waits for it after asking the old one to stop.
    lock: Arc<tokio::sync::Mutex<()>>,
    replace: Option<watch::Sender<bool>>,
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
    /// The returned receiver fires when a newer session replaces this one.
    pub async fn claim(&self, agent: &str) -> (OwnedMutexGuard<()>, watch::Receiver<bool>) {
        let (tx, rx) = watch::channel(false);
        let lock = {
            let mut agents = self.agents.lock().expect("hub lock");
            let e = agents.entry(agent.to_string()).or_default();
            if let Some(old) = e.replace.replace(tx) {
                let _ = old.send(true);
            }
            e.lock.clone()
        };
        (lock.lock_owned().await, rx)
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
