//! Commits sealed batches to the vault in the order that keeps it consistent after any crash:
//! packs, then index entries, then the local block map (fsync'd), then the cache cursor; and for a point,
//! its manifest after all of that. Cache segments are released only after the cursor moved.

use crate::blockmap::BlockMapFile;
use crate::cache::{Cache, Cursor};
use crate::compress::{PointCommit, SealedBatch};
use crate::machines::PointCommitted;
use crate::ratelimit::UploadLimiter;
use crate::state_file;
use crate::ActorError;
use futures::{StreamExt, TryStreamExt};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use vault::{BlockRef, DiskMap, DiskPoint, PointKind, PointManifest, Vault};

const CHAIN_FORMAT: &str = "ferry.point-chain";

/// Per machine: the last point written, so the next one can be a delta on it.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct PointChain {
    last_point: Option<String>,
    since_full: u32,
}

#[derive(Debug)]
struct DiskState {
    map: BlockMapFile,
    /// Blocks changed since the last point. Lost on restart, which forces the next point to be full.
    dirty: BTreeMap<u64, BlockRef>,
    exact_dirty: bool,
}

pub struct Uploader {
    vault: Vault,
    cache: Arc<Cache>,
    maps_dir: PathBuf,
    pack_target: usize,
    full_every: u32,
    disks: HashMap<(String, String), DiskState>,
    chains: HashMap<String, PointChain>,
    described: HashSet<String>,
    concurrency: usize,
    limiter: Arc<UploadLimiter>,
}

/// What [`Uploader::commit_point`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PointOutcome {
    pub point_id: String,
    /// The point written now; `None` when it was already in the vault (a replay after a restart).
    pub committed: Option<PointCommitted>,
}

impl std::fmt::Debug for Uploader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploader")
            .field("disks", &self.disks.len())
            .finish()
    }
}

/// The point id the vault stores for a bookmark: the bookmark id in fixed-width hex, so ids sort by time.
pub fn point_id(bookmark_id: u64) -> String {
    format!("{bookmark_id:016x}")
}

/// Retries a vault call while the error says a retry can help, with capped backoff; gives up after
/// `attempts` so the actor can report the store as down and be restarted.
pub async fn with_retry<T, F, Fut>(
    what: &str,
    attempts: u32,
    mut f: F,
) -> Result<T, vault::VaultError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, vault::VaultError>>,
{
    let mut delay = Duration::from_millis(100);
    let mut n = 0;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retryable() && n + 1 < attempts => {
                n += 1;
                tracing::warn!(what, error = %e, attempt = n, "vault call failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e),
        }
    }
}

const ATTEMPTS: u32 = 8;

impl Uploader {
    pub fn new(
        vault: Vault,
        cache: Arc<Cache>,
        maps_dir: PathBuf,
        pack_target: usize,
        full_every: u32,
    ) -> Self {
        Uploader {
            vault,
            cache,
            maps_dir,
            pack_target,
            full_every: full_every.max(1),
            disks: HashMap::new(),
            chains: HashMap::new(),
            described: HashSet::new(),
            concurrency: 4,
            limiter: Arc::new(UploadLimiter::default()),
        }
    }

    /// The bandwidth limit every pack upload waits on (shared with the other uploads of the appliance).
    pub fn with_limiter(mut self, limiter: Arc<UploadLimiter>) -> Self {
        self.limiter = limiter;
        self
    }

    /// How many pack uploads of one batch may be in flight at once (config `upload_concurrency`).
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    fn disk(&mut self, machine: &str, disk: &str, size: u64) -> Result<&mut DiskState, ActorError> {
        let key = (machine.to_string(), disk.to_string());
        if !self.disks.contains_key(&key) {
            let map = BlockMapFile::open(
                &self.maps_dir.join(machine).join(format!("{disk}.map")),
                size,
            )?;
            self.disks.insert(
                key.clone(),
                DiskState {
                    map,
                    dirty: BTreeMap::new(),
                    exact_dirty: false,
                },
            );
        }
        Ok(self.disks.get_mut(&key).expect("inserted"))
    }

    fn chain(&mut self, machine: &str) -> Result<&mut PointChain, ActorError> {
        if !self.chains.contains_key(machine) {
            let path = self.maps_dir.join(machine).join("chain.json");
            let chain = state_file::read(CHAIN_FORMAT, &path)?.unwrap_or_default();
            self.chains.insert(machine.to_string(), chain);
        }
        Ok(self.chains.get_mut(machine).expect("inserted"))
    }

    /// Writes the machine's descriptor (name, disks) once per uploader lifetime, so the vault alone
    /// tells a new appliance what each machine is.
    async fn describe_machine(&mut self, machine_id: &str) -> Result<(), ActorError> {
        if self.described.contains(machine_id) {
            return Ok(());
        }
        let Some(meta) = self
            .cache
            .machines()
            .into_iter()
            .find(|m| m.machine_id == machine_id)
        else {
            return Ok(());
        };
        let desc = vault::MachineDescriptor {
            machine_id: meta.machine_id.clone(),
            name: meta.hostname.clone(),
            disks: meta
                .disks
                .iter()
                .map(|d| vault::DiskDescriptor {
                    disk_id: d.disk_id.clone(),
                    size_bytes: d.size_bytes,
                    label: d.label.clone(),
                })
                .collect(),
        };
        let vault = self.vault.clone();
        with_retry("put machine", ATTEMPTS, || vault.put_machine(&desc)).await?;
        self.described.insert(machine_id.to_string());
        Ok(())
    }

    /// Uploads one batch and moves the disk's cursor. Returns the bytes uploaded.
    pub async fn commit_batch(&mut self, batch: SealedBatch) -> Result<u64, ActorError> {
        // A batch wholly at or below the committed cursor was committed before a compressor restart;
        // applying it again would move the block map back in time.
        let log = self
            .cache
            .disk(&batch.machine_id, &batch.disk_id)
            .ok_or_else(|| {
                ActorError::Cache(format!(
                    "no cache log for {}/{}",
                    batch.machine_id, batch.disk_id
                ))
            })?;
        let committed = log.committed();
        if batch.start_seq > committed.seq {
            return Err(ActorError::Cache(format!(
                "batch of {}/{} starts after seq {} but only {} is committed: an earlier batch was lost",
                batch.machine_id, batch.disk_id, batch.start_seq, committed.seq
            )));
        }
        if batch.end.seq <= committed.seq && batch.end.seq > batch.start_seq {
            return Ok(0);
        }
        let mut uploaded = 0u64;
        let mut packs = Vec::new();
        let mut pack = self.vault.new_pack();
        for (id, sealed) in &batch.chunks {
            pack.add_sealed(*id, sealed.clone());
            if pack.len() >= self.pack_target {
                packs.push(std::mem::replace(&mut pack, self.vault.new_pack()).finish());
            }
        }
        if pack.chunk_count() > 0 {
            packs.push(pack.finish());
        }
        // The packs of a batch are written concurrently so their fsyncs overlap; the index is written only
        // after every one of them is durable.
        uploaded += packs.iter().map(|p| p.size() as u64).sum::<u64>();
        let puts = packs.into_iter().map(|p| {
            let (vault, limiter) = (self.vault.clone(), self.limiter.clone());
            async move {
                limiter.acquire(p.size() as u64).await;
                with_retry("put pack", ATTEMPTS, || vault.put_pack(p.clone())).await
            }
        });
        let entries: Vec<_> = futures::stream::iter(puts)
            .buffer_unordered(self.concurrency)
            .try_collect::<Vec<_>>()
            .await?
            .into_iter()
            .flatten()
            .collect();
        if !entries.is_empty() {
            let vault = self.vault.clone();
            with_retry("put index", ATTEMPTS, || vault.put_index(&entries)).await?;
        }
        let state = self.disk(&batch.machine_id, &batch.disk_id, batch.size_bytes)?;
        for (block, r) in &batch.updates {
            state.map.set(*block, r)?;
            state.dirty.insert(*block, *r);
        }
        state.map.sync()?;
        // Never move a cursor back: a partly replayed batch ends where the committed state already is.
        let end = Cursor {
            seq: batch.end.seq.max(committed.seq),
            bookmark_id: batch.end.bookmark_id.max(committed.bookmark_id),
        };
        self.cache.commit(&log, end)?;
        Ok(uploaded)
    }

    /// Writes the point manifest (a delta on the machine's last point, or a full map every `full_every`
    /// points and whenever the dirty sets may be incomplete), then moves every disk's bookmark cursor.
    pub async fn commit_point(&mut self, p: &PointCommit) -> Result<PointOutcome, ActorError> {
        let id = point_id(p.bookmark_id);
        // A compressor restarted from the cursors may hand over a point again; the first one stands.
        let logs: Vec<_> = p
            .disks
            .iter()
            .filter_map(|(d, _, _)| self.cache.disk(&p.machine_id, d))
            .collect();
        if logs.len() == p.disks.len()
            && logs
                .iter()
                .all(|l| l.committed().bookmark_id >= p.bookmark_id)
        {
            return Ok(PointOutcome {
                point_id: id,
                committed: None,
            });
        }
        for (log, (disk, _, seq)) in logs.iter().zip(&p.disks) {
            if log.committed().seq < *seq {
                return Err(ActorError::Cache(format!(
                    "point {id} of {}/{disk} needs seq {seq} but only {} is committed: a batch was lost",
                    p.machine_id,
                    log.committed().seq
                )));
            }
        }
        self.describe_machine(&p.machine_id).await?;
        let chain = self.chain(&p.machine_id)?.clone();
        let mut disks_exact = true;
        for (disk, size, _) in &p.disks {
            disks_exact &= self.disk(&p.machine_id, disk, *size)?.exact_dirty;
        }
        let full =
            chain.last_point.is_none() || !disks_exact || chain.since_full + 1 >= self.full_every;
        let mut disks = Vec::new();
        for (disk, size, seq) in &p.disks {
            let st = self.disk(&p.machine_id, disk, *size)?;
            let map = if full {
                DiskMap::Full(st.map.read_all()?)
            } else {
                DiskMap::Delta(st.dirty.iter().map(|(b, r)| (*b, *r)).collect())
            };
            disks.push(DiskPoint {
                disk_id: disk.clone(),
                size_bytes: *size,
                seq: *seq,
                map,
            });
        }
        let manifest = PointManifest {
            machine_id: p.machine_id.clone(),
            point_id: id.clone(),
            parent: if full { None } else { chain.last_point.clone() },
            kind: if p.app_consistent {
                PointKind::App
            } else {
                PointKind::Crash
            },
            bookmark_id: p.bookmark_id,
            created_unix_ms: now_ms(),
            disks,
        };
        let vault = self.vault.clone();
        with_retry("put point", ATTEMPTS, || vault.put_point(&manifest)).await?;
        let next = PointChain {
            last_point: Some(id.clone()),
            since_full: if full { 0 } else { chain.since_full + 1 },
        };
        let dir = self.maps_dir.join(&p.machine_id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| ActorError::Cache(format!("{}: {e}", dir.display())))?;
        state_file::write(CHAIN_FORMAT, &dir.join("chain.json"), &next)?;
        self.chains.insert(p.machine_id.clone(), next);
        for (disk, size, seq) in &p.disks {
            let st = self.disk(&p.machine_id, disk, *size)?;
            st.dirty.clear();
            st.exact_dirty = true;
            if let Some(log) = self.cache.disk(&p.machine_id, disk) {
                self.cache.commit(
                    &log,
                    Cursor {
                        seq: (*seq).max(log.committed().seq),
                        bookmark_id: p.bookmark_id,
                    },
                )?;
            }
        }
        Ok(PointOutcome {
            committed: Some(PointCommitted {
                machine_id: manifest.machine_id.clone(),
                point_id: id.clone(),
                kind: manifest.kind,
                created_unix_ms: manifest.created_unix_ms,
                disks: p
                    .disks
                    .iter()
                    .map(|(d, size, _)| (d.clone(), *size))
                    .collect(),
            }),
            point_id: id,
        })
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
