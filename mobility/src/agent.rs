//! The `run` command: a registered agent replicating its disks, reconnecting with capped
//! exponential backoff. Everything durable lives in the state dir, so a restart resumes.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use rustls::ClientConfig;
use tokio::time::Instant;

use crate::flight::Flight;
use crate::scan::ScanStats;
use crate::session::{open_disks, run_session, Goal, OpenDisk, SessionError};
use crate::state::{Registration, StateDir};
use crate::status::{DiskStatus, StatusBoard};
use crate::tls;
use crate::tracker::Tracker;

const SESSION_HEALTHY_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub state_dir: Option<PathBuf>,
    pub disks: Vec<PathBuf>,
    pub once: bool,
    /// Pause between passes without `--once`.
    pub interval: Duration,
    /// With `--once`: give up when the point is not durable by then.
    pub timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Send a Ping after this long without sending anything.
    pub keepalive: Duration,
}

impl RunOptions {
    pub fn new(disks: Vec<PathBuf>) -> RunOptions {
        RunOptions {
            state_dir: None,
            disks,
            once: false,
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(600),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            keepalive: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DiskSpec {
    /// Absolute path; also the Hello label.
    pub path: String,
    pub disk_id: String,
}

/// A registered agent and the state shared by its sessions.
pub struct Agent {
    pub state: StateDir,
    pub registration: Registration,
    pub tls: Arc<ClientConfig>,
    pub disks: Vec<DiskSpec>,
    pub flight: Arc<Flight>,
    pub status: StatusBoard,
    opts: RunOptions,
    open_trackers: Mutex<Vec<Arc<Tracker>>>,
}

impl Agent {
    /// Loads the registration and credentials and checks that every disk can be opened, so a
    /// mistyped path fails at once instead of after retries.
    pub fn new(opts: RunOptions) -> Result<Agent> {
        if opts.disks.is_empty() {
            bail!("no disk given: pass --disk PATH");
        }
        let state = StateDir::open(opts.state_dir.as_deref())?;
        let registration = state.registration()?.ok_or_else(|| {
            anyhow!(
                "this agent is not registered (no registration in {}): run `mobility register` first",
                state.root().display()
            )
        })?;
        let creds = state.credentials()?;
        let tls = tls::agent_config(&creds.cert_pem, &creds.key_pem, &creds.ca_pem)?;
        let mut paths = Vec::new();
        for p in &opts.disks {
            // Absolute but with symlinks kept: /dev/disk/by-id/... must stay the same disk id
            // even when the kernel renames the device it points to.
            let abs = std::path::absolute(p)
                .with_context(|| format!("disk {} cannot be opened", p.display()))?;
            std::fs::metadata(&abs)
                .with_context(|| format!("disk {} cannot be opened", p.display()))?;
            paths.push(abs.to_string_lossy().into_owned());
        }
        let ids = state.disk_ids(&paths)?;
        let disks: Vec<DiskSpec> = paths
            .into_iter()
            .zip(ids)
            .map(|(path, disk_id)| DiskSpec { path, disk_id })
            .collect();
        if disks.len() > usize::from(u16::MAX) {
            bail!("too many disks");
        }
        let status = StatusBoard::load(&state);
        let agent = Agent {
            flight: Arc::new(Flight::new(disks.len())),
            state,
            registration,
            tls,
            disks,
            status,
            opts,
            open_trackers: Mutex::new(Vec::new()),
        };
        let opened = open_disks(&agent)?;
        agent.status_disks(&opened);
        agent.set_open_trackers(opened.iter().map(|d| d.tracker.clone()).collect());
        Ok(agent)
    }

    /// Runs until done: with `once`, returns the durable point's id; otherwise only returns on a
    /// fatal error (stop it by dropping the future, then call [`Agent::shutdown`]).
    pub async fn run(&self) -> Result<String> {
        let goal = if self.opts.once {
            Goal::Once {
                bookmark_id: self.state.next_bookmark_id()?,
            }
        } else {
            Goal::Continuous {
                interval: self.opts.interval,
            }
        };
        let deadline = Instant::now() + self.opts.timeout;
        let mut backoff = self.opts.backoff_min;
        loop {
            let mut welcomed = false;
            let started = Instant::now();
            let outcome = if self.opts.once {
                match tokio::time::timeout_at(deadline, run_session(self, goal, &mut welcomed))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => Err(SessionError::Fatal(self.timeout_error())),
                }
            } else {
                run_session(self, goal, &mut welcomed).await
            };
            match outcome {
                Ok(point) => {
                    self.status.set_state("done", false);
                    self.status.save();
                    return Ok(point);
                }
                Err(SessionError::Fatal(e)) => {
                    self.status.error(&format!("{e:#}"));
                    self.status.set_state("failed", false);
                    self.status.save();
                    return Err(e);
                }
                Err(SessionError::Retry(e)) => {
                    let msg = format!("{e:#}");
                    tracing::warn!("{msg}; reconnecting in {backoff:?}");
                    self.status.error(&msg);
                    self.status.set_state("waiting_retry", false);
                    self.status.save();
                }
            }
            // A session that was accepted and ran a while was healthy: start the backoff over.
            // One that fails right after Welcome keeps backing off.
            if welcomed && started.elapsed() >= SESSION_HEALTHY_AFTER {
                backoff = self.opts.backoff_min;
            }
            if self.opts.once && Instant::now() + backoff >= deadline {
                tokio::time::sleep_until(deadline).await;
                return Err(self.timeout_error());
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.opts.backoff_max);
        }
    }

    fn timeout_error(&self) -> anyhow::Error {
        let last = self.status.lock().last_error.clone();
        let mut msg = format!(
            "the recovery point did not become durable within {} s",
            self.opts.timeout.as_secs()
        );
        if let Some(l) = last {
            msg += &format!(" (last error: {l})");
        }
        self.status.error(&msg);
        self.status.set_state("failed", false);
        self.status.save();
        anyhow!(msg)
    }

    /// Makes every tracker update durable and records that the agent stopped. Call after the
    /// `run` future was dropped (signal) or returned.
    pub fn shutdown(&self) {
        self.flight.close();
        for t in self
            .open_trackers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            if let Err(e) = t.sync() {
                tracing::warn!(path = %t.path().display(), "tracker fsync failed: {e}");
            }
        }
        self.status.set_state("stopped", false);
        self.status.save();
    }

    pub(crate) fn keepalive(&self) -> Duration {
        self.opts.keepalive
    }

    pub(crate) fn set_open_trackers(&self, trackers: Vec<Arc<Tracker>>) {
        let mut open = self.open_trackers.lock().unwrap_or_else(|e| e.into_inner());
        for t in open.iter() {
            let _ = t.sync();
        }
        *open = trackers;
    }

    /// Resets the per-disk status to the disks as opened now.
    pub(crate) fn status_disks(&self, disks: &[OpenDisk]) {
        let mut s = self.status.lock();
        let old = std::mem::take(&mut s.disks);
        s.disks = disks
            .iter()
            .map(|d| {
                let prev = old
                    .iter()
                    .find(|o| o.disk_id == d.disk_id && o.size_bytes == d.tracker.size_bytes());
                DiskStatus {
                    disk_id: d.disk_id.clone(),
                    path: d.path.clone(),
                    size_bytes: d.tracker.size_bytes(),
                    blocks_total: d.tracker.blocks(),
                    blocks_in_sync: prev.and_then(|p| p.blocks_in_sync),
                    blocks_unacked: 0,
                    last_acked_seq: d.tracker.acked_seq(),
                    last_scan_changed_blocks: prev.and_then(|p| p.last_scan_changed_blocks),
                    last_scan_finished_unix: prev.and_then(|p| p.last_scan_finished_unix),
                }
            })
            .collect();
    }

    /// Refreshes acked sequence numbers and unacknowledged block counts.
    pub(crate) fn status_refresh(&self, disks: &[OpenDisk]) {
        let pending = self.flight.pending_blocks();
        let mut s = self.status.lock();
        for (st, d) in s.disks.iter_mut().zip(disks) {
            st.last_acked_seq = d.tracker.acked_seq();
            st.blocks_unacked = pending.get(usize::from(d.index)).copied().unwrap_or(0);
            if st.last_scan_finished_unix.is_some() {
                st.blocks_in_sync = Some(st.blocks_total.saturating_sub(st.blocks_unacked));
            }
        }
    }

    pub(crate) fn status_scanned(&self, stats: &[ScanStats]) {
        let now = crate::state::unix_millis() / 1000;
        let mut s = self.status.lock();
        for (st, scan) in s.disks.iter_mut().zip(stats) {
            st.last_scan_changed_blocks = Some(scan.changed_blocks);
            st.last_scan_finished_unix = Some(now);
        }
    }
}
