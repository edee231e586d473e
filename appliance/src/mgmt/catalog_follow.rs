//! How the catalog follows the data path: committed points as they are announced, the per-machine facts
//! every [`SAMPLE_INTERVAL`], and a reconciliation with the vault (at attach, and whenever the catalog fell
//! behind the announcements). The vault being down is logged and retried, never fatal.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actors::machines::{MachineFacts, PointCommitted};
use actors::stats::Stats;
use tokio::sync::broadcast::{self, error::RecvError};

use super::*;

/// First wait after a failed reconciliation; doubles up to [`RECONCILE_MAX_WAIT`].
const RECONCILE_FIRST_WAIT: Duration = Duration::from_secs(30);
const RECONCILE_MAX_WAIT: Duration = Duration::from_secs(600);
const MINUTE_MS: u64 = 60_000;

fn kind_name(kind: vault::PointKind) -> &'static str {
    match kind {
        vault::PointKind::Crash => "crash",
        vault::PointKind::App => "app",
    }
}

fn point_view(
    machine_id: &str,
    point_id: &str,
    kind: vault::PointKind,
    created_unix_ms: u64,
    disks: &[(String, u64)],
) -> PointView {
    PointView {
        machine_id: machine_id.to_string(),
        point_id: point_id.to_string(),
        kind: kind_name(kind).to_string(),
        created_at: rfc3339_of_ms(created_unix_ms),
        created_unix_ms,
        disks: disks
            .iter()
            .map(|(id, size)| DiskView {
                disk_id: id.clone(),
                size_bytes: *size,
                label: String::new(),
            })
            .collect(),
    }
}

/// The catalog's view of a point the uploader just committed.
pub fn committed_view(p: &PointCommitted) -> PointView {
    point_view(
        &p.machine_id,
        &p.point_id,
        p.kind,
        p.created_unix_ms,
        &p.disks,
    )
}

/// The catalog's view of a point listed from the vault.
pub fn summary_view(p: &vault::PointSummary) -> PointView {
    point_view(
        &p.machine_id,
        &p.point_id,
        p.kind,
        p.created_unix_ms,
        &p.disks,
    )
}

pub(super) fn attach(catalog: &Catalog, running: &Running) {
    catalog.follow_data_path(running.shared.vault.clone(), running.shared.stats.clone());
}

impl Catalog {
    /// What [`Catalog::attach`] does, from the two parts of the data path it needs.
    pub(super) fn follow_data_path(&self, vault: vault::Vault, stats: Arc<Stats>) {
        if self.inner.attached.swap(true, Ordering::SeqCst) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::error!(
                "catalog: attach was called outside a runtime; not following the data path"
            );
            self.inner.attached.store(false, Ordering::SeqCst);
            return;
        };
        // Subscribed before reconciling, so a point committed meanwhile is in one or the other.
        let points = stats.machines.subscribe();
        self.start_reconcile(&rt, vault.clone());
        let me = self.clone();
        rt.spawn(async move {
            me.follow(vault, stats, points).await;
            me.inner.attached.store(false, Ordering::SeqCst);
        });
    }

    pub(super) fn start_reconcile(&self, rt: &tokio::runtime::Handle, vault: vault::Vault) {
        if self.inner.reconciling.swap(true, Ordering::SeqCst) {
            return;
        }
        let me = self.clone();
        rt.spawn(async move {
            let mut wait = RECONCILE_FIRST_WAIT;
            loop {
                match me.reconcile(&vault).await {
                    Ok((machines, points)) => {
                        tracing::info!(machines, points, "catalog reconciled with the vault");
                        break;
                    }
                    Err(err) => {
                        tracing::warn!(%err, retry_in_secs = wait.as_secs(), "catalog: reconciling with the vault failed");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(RECONCILE_MAX_WAIT);
                    }
                }
            }
            me.inner.reconciling.store(false, Ordering::SeqCst);
        });
    }

    /// Records every machine and point the vault holds: those committed before this process started,
    /// or announced while the catalog was behind. Returns (machines, points) seen.
    pub async fn reconcile(&self, vault: &vault::Vault) -> Result<(usize, usize), MgmtError> {
        let unavailable = |e: vault::VaultError| MgmtError::Unavailable(format!("vault: {e}"));
        let machines = vault.list_machines().await.map_err(unavailable)?;
        self.record_machines(&machines)?;
        let points: Vec<PointView> = vault
            .list_points()
            .await
            .map_err(unavailable)?
            .iter()
            .map(summary_view)
            .collect();
        self.record_points(&points)?;
        Ok((machines.len(), points.len()))
    }

    async fn follow(
        &self,
        vault: vault::Vault,
        stats: Arc<Stats>,
        mut points: broadcast::Receiver<PointCommitted>,
    ) {
        let rt = tokio::runtime::Handle::current();
        let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                got = points.recv() => match got {
                    Ok(p) => {
                        if let Err(err) = self.record_point(&committed_view(&p)) {
                            tracing::warn!(%err, machine = %p.machine_id, point = %p.point_id, "catalog: could not record a point");
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "catalog fell behind the committed points; reconciling");
                        self.start_reconcile(&rt, vault.clone());
                    }
                    // The data path is gone (shutdown): nothing more to follow.
                    Err(RecvError::Closed) => return,
                },
                _ = tick.tick() => {
                    let (me, facts) = (self.clone(), stats.machines.snapshot());
                    // sled writes for up to every machine: off the async worker.
                    let sampled = tokio::task::spawn_blocking(move || {
                        me.refresh();
                        me.sample(&facts, now_unix_ms())
                    })
                    .await;
                    match sampled {
                        Ok(Ok(())) => {}
                        Ok(Err(err)) => tracing::warn!(%err, "catalog: sampling failed"),
                        Err(err) => tracing::error!(%err, "catalog: the sampler panicked"),
                    }
                }
            }
        }
    }

    /// Takes one sample of the data path's facts at `now_ms`: cumulative bytes, throughput over the
    /// interval since the previous sample, connection, names and disks into `machines`; and, once per
    /// machine per minute, a history sample (pruning history older than 24 h). Works without attach.
    pub fn sample(&self, facts: &[MachineFacts], now_ms: u64) -> Result<(), MgmtError> {
        let mut data = self.lock();
        let now_unix = now_ms / 1000;
        let minute = now_ms / MINUTE_MS;
        let mut deltas: HashMap<String, u64> = HashMap::new();
        let mut result = Ok(());
        for f in facts.iter().filter(|f| valid_id(&f.machine_id)) {
            let mut record = self.record_for(&mut data, &f.machine_id, now_unix);
            let live = data.live.entry(f.machine_id.clone()).or_default();
            // The data path counts from 0 when it starts; a smaller count than last time means it restarted.
            let delta = f
                .bytes_received
                .checked_sub(live.facts_bytes)
                .unwrap_or(f.bytes_received);
            live.facts_bytes = f.bytes_received;
            live.connected = f.connected;
            record.bytes_received = record.bytes_received.saturating_add(delta);
            let name = clean_name(&f.hostname);
            if !name.is_empty() {
                record.name = name;
            }
            if !f.disks.is_empty() {
                record.disks = f
                    .disks
                    .iter()
                    .map(|d| DiskView {
                        disk_id: d.disk_id.clone(),
                        size_bytes: d.size_bytes,
                        label: d.label.clone(),
                    })
                    .collect();
            }
            deltas.insert(f.machine_id.clone(), delta);
            let stored = self.store_record(&mut data, record).and_then(|_| {
                // A point whose announcement was missed is still recorded (a no-op when it is known).
                match &f.last_point {
                    Some(p) => self.insert_point(&mut data, &committed_view(p), now_unix),
                    None => Ok(false),
                }
            });
            if let Err(err) = stored {
                result = Err(err);
            }
        }
        let ids: Vec<String> = data.records.keys().cloned().collect();
        for id in ids {
            let delta = deltas.get(&id).copied();
            let live = data.live.entry(id.clone()).or_default();
            // The data path lists every machine it has seen since it started; one it does not list has
            // no session.
            if delta.is_none() {
                live.connected = false;
            }
            let delta = delta.unwrap_or(0);
            let interval_ms = match now_ms.checked_sub(live.last_sample_ms) {
                Some(ms) if live.last_sample_ms > 0 && ms > 0 => ms,
                _ => SAMPLE_INTERVAL.as_millis() as u64,
            };
            live.last_sample_ms = now_ms;
            let throughput = delta.saturating_mul(1000) / interval_ms;
            live.history_bytes = live.history_bytes.saturating_add(delta);
            let history_due = live.history_minute != Some(minute);
            let history_throughput = match now_ms.checked_sub(live.history_since_ms) {
                Some(ms) if live.history_since_ms > 0 && ms > 0 => {
                    live.history_bytes.saturating_mul(1000) / ms
                }
                _ => throughput,
            };
            if history_due {
                live.history_minute = Some(minute);
                live.history_bytes = 0;
                live.history_since_ms = now_ms;
            }
            let Some(mut record) = data.records.get(&id).cloned() else {
                continue;
            };
            record.throughput_bytes_per_sec = throughput;
            let rpo_seconds = record
                .last_point
                .as_ref()
                .map(|p| now_ms.saturating_sub(p.created_unix_ms) / 1000);
            let mut stored = self.store_record(&mut data, record).map(drop);
            if history_due && stored.is_ok() {
                let sample = Sample {
                    at_unix: now_unix,
                    rpo_seconds,
                    throughput_bytes_per_sec: history_throughput,
                };
                stored = self.write_history(&id, minute, &sample);
            }
            if let Err(err) = stored {
                result = Err(err);
            }
        }
        self.rebuild(&data);
        result
    }

    /// Stores the minute's sample and drops the machine's samples older than 24 h.
    fn write_history(&self, id: &str, minute: u64, sample: &Sample) -> Result<(), MgmtError> {
        let history = &self.inner.history;
        history.insert(history_key(id, minute), encode(sample))?;
        let cutoff = minute.saturating_sub(HISTORY_SECS / 60);
        for key in history
            .range(history_key(id, 0)..history_key(id, cutoff))
            .keys()
        {
            history.remove(key?)?;
        }
        Ok(())
    }
}
