//! Turns durable cache records into sealed vault chunks and block-map updates, in sequence order.
//!
//! Ordering is the invariant that matters here: records of one disk are processed strictly in log order,
//! so for every block the newest extent at or below a bookmark wins. A bookmark is only turned into a point
//! when every disk of the machine has reached it.

use crate::cache::{Cache, Cursor, DiskLog, ReadPos};
use crate::segment::Record;
use crate::ActorError;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use vault::{BlockRef, ChunkId, Vault, BLOCK_SIZE};

/// What the compressor hands the uploader for one disk: new sealed chunks and the map updates that use them.
#[derive(Debug)]
pub struct SealedBatch {
    pub machine_id: String,
    pub disk_id: String,
    pub size_bytes: u64,
    /// Chunks not yet in the vault, each once, sealed (slices of a few large buffers).
    pub chunks: Vec<(ChunkId, bytes::Bytes)>,
    /// Block updates in log order (a later entry for the same block wins).
    pub updates: Vec<(u64, BlockRef)>,
    /// The cursor the disk reaches once this batch is committed (bookmark_id unchanged until the point is).
    pub end: Cursor,
    /// The disk's seq before this batch: the uploader commits it only on top of exactly that much, so a
    /// batch whose predecessor was lost (an uploader restart with batches queued) is refused, not applied
    /// over a gap.
    pub start_seq: u64,
    pub plain_bytes: u64,
}

/// A point to commit once all of a machine's batches up to it are uploaded.
#[derive(Debug, Clone)]
pub struct PointCommit {
    pub machine_id: String,
    pub bookmark_id: u64,
    pub app_consistent: bool,
    /// Per disk: id, size, and the last extent seq the point includes.
    pub disks: Vec<(String, u64, u64)>,
}

#[derive(Debug)]
pub enum Work {
    Batch(SealedBatch),
    Point(PointCommit),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct BookmarkWait {
    bookmark_id: u64,
    app_consistent: bool,
    /// The disk's last extent seq at the bookmark.
    seq: u64,
}

#[derive(Debug)]
struct DiskReader {
    log: Arc<DiskLog>,
    size_bytes: u64,
    pos: ReadPos,
    /// Seq of the last extent handed on (or committed at start).
    seq: u64,
    /// The bookmark this disk has reached and waits at, until every disk of the machine has.
    waiting_at: Option<BookmarkWait>,
    committed_bookmark: u64,
}

/// The compressor's state: one reader per disk and the set of chunk ids the vault has or will have.
pub struct Compressor {
    cache: Arc<Cache>,
    vault: Vault,
    threads: usize,
    batch_bytes: u64,
    readers: HashMap<(String, String), DiskReader>,
    known: HashSet<ChunkId>,
    /// Buffers earlier batches were sealed into, reused once their chunks are uploaded.
    seal_buffers: Vec<bytes::Bytes>,
}

impl std::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressor")
            .field("disks", &self.readers.len())
            .finish()
    }
}

impl Compressor {
    /// `known` is every chunk id already in the vault (from its index).
    pub fn new(
        cache: Arc<Cache>,
        vault: Vault,
        known: HashSet<ChunkId>,
        threads: usize,
        batch_bytes: u64,
    ) -> Self {
        Compressor {
            cache,
            vault,
            threads: threads.max(1),
            batch_bytes,
            readers: HashMap::new(),
            known,
            seal_buffers: Vec::new(),
        }
    }

    fn sync_readers(&mut self) {
        for m in self.cache.machines() {
            for d in &m.disks {
                let key = (m.machine_id.clone(), d.disk_id.clone());
                if let Some(r) = self.readers.get_mut(&key) {
                    r.size_bytes = d.size_bytes;
                    continue;
                }
                if let Some(log) = self.cache.disk(&m.machine_id, &d.disk_id) {
                    let committed = log.committed();
                    self.readers.insert(
                        key,
                        DiskReader {
                            pos: log.start_pos(),
                            log,
                            size_bytes: d.size_bytes,
                            seq: committed.seq,
                            waiting_at: None,
                            committed_bookmark: committed.bookmark_id,
                        },
                    );
                }
            }
        }
    }

    /// Produces the next pieces of work, or an empty list when every durable record is handed on.
    pub fn next_work(&mut self) -> Result<Vec<Work>, ActorError> {
        self.sync_readers();
        let mut out = Vec::new();
        let mut keys: Vec<_> = self.readers.keys().cloned().collect();
        keys.sort();
        for key in &keys {
            if self.readers[key].waiting_at.is_some() {
                continue;
            }
            if let Some(batch) = self.read_disk(key)? {
                out.push(Work::Batch(batch));
            }
        }
        out.extend(self.points_ready());
        Ok(out)
    }

    fn read_disk(&mut self, key: &(String, String)) -> Result<Option<SealedBatch>, ActorError> {
        let reader = self.readers.get_mut(key).expect("reader");
        let (records, pos) = reader.log.read_from(&reader.pos, self.batch_bytes)?;
        if records.is_empty() {
            return Ok(None);
        }
        reader.pos = pos;
        let mut blocks: Vec<(u64, bytes::Bytes)> = Vec::new();
        let start_seq = reader.seq;
        let mut end_seq = reader.seq;
        for rec in records {
            match rec {
                Record::Extent { seq, offset, data } => {
                    if seq <= reader.seq {
                        continue; // committed before a restart, or already handed on
                    }
                    end_seq = seq;
                    let first = offset / BLOCK_SIZE as u64;
                    for (i, piece) in data.chunks(BLOCK_SIZE).enumerate() {
                        let start = i * BLOCK_SIZE;
                        blocks.push((first + i as u64, data.slice(start..start + piece.len())));
                    }
                }
                Record::Bookmark {
                    last_seq,
                    bookmark_id,
                    app_consistent,
                } => {
                    if bookmark_id > reader.committed_bookmark {
                        reader.waiting_at = Some(BookmarkWait {
                            bookmark_id,
                            app_consistent,
                            seq: last_seq.max(end_seq),
                        });
                    }
                }
            }
        }
        reader.seq = end_seq;
        let size_bytes = reader.size_bytes;
        let plain_bytes = blocks.iter().map(|(_, b)| b.len() as u64).sum();
        let (updates, chunks) = self.seal_blocks(blocks);
        let reader = &self.readers[key];
        Ok(Some(SealedBatch {
            machine_id: key.0.clone(),
            disk_id: key.1.clone(),
            size_bytes,
            chunks,
            updates,
            end: Cursor {
                seq: end_seq,
                bookmark_id: reader.committed_bookmark,
            },
            start_seq,
            plain_bytes,
        }))
    }

    /// Zero-skips, names, dedups and seals blocks on `threads` threads; keeps log order in `updates`.
    ///
    /// One pass, handed out a few blocks at a time: a thread that the receiver or uploader holds up does
    /// not leave the others waiting at a barrier between naming and sealing. A chunk new to the vault is
    /// sealed by whichever thread names it first, into that thread's buffer; the chunks are slices of
    /// those buffers, so neither sealing nor pack assembly allocates or copies per chunk.
    #[allow(clippy::type_complexity)]
    fn seal_blocks(
        &mut self,
        blocks: Vec<(u64, bytes::Bytes)>,
    ) -> (Vec<(u64, BlockRef)>, Vec<(ChunkId, bytes::Bytes)>) {
        const STEP: usize = 8;
        let threads = self.threads.min(blocks.len().div_ceil(STEP)).max(1);
        let per_thread = (blocks.len().div_ceil(threads) + STEP) * (BLOCK_SIZE + 64);
        let buffers: Vec<Vec<u8>> = (0..threads).map(|_| self.seal_buffer(per_thread)).collect();
        let vault = &self.vault;
        let known = Mutex::new(&mut self.known);
        let next = AtomicUsize::new(0);
        let (blocks_ref, known_ref, next_ref) = (&blocks, &known, &next);
        type Sealed = (usize, Option<ChunkId>, Option<(usize, usize)>);
        let done: Vec<(Vec<Sealed>, Vec<u8>)> = std::thread::scope(|s| {
            let handles: Vec<_> = buffers
                .into_iter()
                .map(|mut buf| {
                    s.spawn(move || {
                        let mut out = Vec::new();
                        loop {
                            let first = next_ref.fetch_add(STEP, Ordering::Relaxed);
                            if first >= blocks_ref.len() {
                                return (out, buf);
                            }
                            for (i, (_, data)) in
                                blocks_ref.iter().enumerate().skip(first).take(STEP)
                            {
                                if data.iter().all(|&x| x == 0) {
                                    out.push((i, None, None));
                                    continue;
                                }
                                let id = vault.chunk_id(data);
                                let sealed = if known_ref.lock().expect("known chunks").insert(id) {
                                    let at = buf.len();
                                    Some((at, vault.seal_chunk_into(&id, data, &mut buf)))
                                } else {
                                    None
                                };
                                out.push((i, Some(id), sealed));
                            }
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("sealing thread"))
                .collect()
        });
        let mut ids: Vec<Option<ChunkId>> = vec![None; blocks.len()];
        let mut chunks = Vec::new();
        for (sealed, buf) in done {
            let buf = bytes::Bytes::from(buf);
            for (i, id, at) in sealed {
                ids[i] = id;
                if let (Some(id), Some((at, len))) = (id, at) {
                    chunks.push((i, id, buf.slice(at..at + len)));
                }
            }
            self.seal_buffers.push(buf);
        }
        // Log order for the chunks too, so packs come out the same whatever the thread timing.
        chunks.sort_unstable_by_key(|c| c.0);
        let updates = blocks
            .iter()
            .zip(ids)
            .map(|((b, _), id)| (*b, id.map_or(BlockRef::Zero, BlockRef::Chunk)))
            .collect();
        (
            updates,
            chunks.into_iter().map(|(_, id, s)| (id, s)).collect(),
        )
    }

    /// An empty buffer for sealing into: one of the earlier ones once every chunk cut from it is uploaded
    /// and dropped (memory that is already mapped), else a new one.
    fn seal_buffer(&mut self, capacity: usize) -> Vec<u8> {
        let mut found = None;
        let mut kept = Vec::new();
        for b in self.seal_buffers.drain(..) {
            match b.try_into_mut() {
                Ok(m) if found.is_none() => found = Some(Vec::from(m)),
                Ok(m) => kept.push(m.freeze()),
                Err(b) => kept.push(b),
            }
        }
        // Bounded: what one batch in flight and one being sealed use, with a spare per thread.
        kept.truncate(3 * self.threads);
        self.seal_buffers = kept;
        let mut buf = found.unwrap_or_default();
        buf.clear();
        buf.reserve(capacity);
        buf
    }

    /// Points whose bookmark every disk of the machine has reached.
    fn points_ready(&mut self) -> Vec<Work> {
        let mut by_machine: HashMap<String, Vec<(String, u64, Option<BookmarkWait>)>> =
            HashMap::new();
        for ((m, d), r) in &self.readers {
            by_machine
                .entry(m.clone())
                .or_default()
                .push((d.clone(), r.size_bytes, r.waiting_at));
        }
        let mut out = Vec::new();
        for (machine, mut disks) in by_machine {
            disks.sort();
            let Some(Some(first)) = disks.first().map(|d| d.2) else {
                continue;
            };
            let id = first.bookmark_id;
            if disks.iter().all(|d| d.2.map(|w| w.bookmark_id) == Some(id)) {
                let commit = PointCommit {
                    machine_id: machine.clone(),
                    bookmark_id: id,
                    app_consistent: first.app_consistent,
                    disks: disks
                        .iter()
                        .map(|d| (d.0.clone(), d.1, d.2.expect("waiting").seq))
                        .collect(),
                };
                for (d, _, _) in &disks {
                    let r = self
                        .readers
                        .get_mut(&(machine.clone(), d.clone()))
                        .expect("reader");
                    r.waiting_at = None;
                    r.committed_bookmark = id;
                }
                out.push(Work::Point(commit));
            }
        }
        out
    }
}
