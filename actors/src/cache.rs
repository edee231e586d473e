//! The durable change log ("cache"): append-only segment files per disk.
//!
//! ```text
//! <cache dir>/<machine id>/machine.json          hostname and disks, as the agent last said Hello
//! <cache dir>/<machine id>/<disk id>/seg-<first seq>.log   records (see `segment`)
//! <cache dir>/<machine id>/<disk id>/cursor      what the uploader has committed to the vault (see `Cursor`)
//! ```
//!
//! The receiver appends and fsyncs before it acknowledges; the compressor reads only what is durable; segments
//! are deleted only after the uploader has committed everything in them. The total size is bounded: an append
//! that would exceed the limit waits until the uploader releases space, which stops the receiver from reading
//! its socket, so agents wait and nothing is dropped.

use crate::segment::{self, Record};
use crate::state_file;
use crate::ActorError;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

const MACHINE_FORMAT: &str = "ferry.cache-machine";
const CURSOR_FORMAT: &str = "ferry.cache-cursor";

/// A new segment is started once the current one passes this size, so released space comes back in steps.
pub const SEGMENT_TARGET_BYTES: u64 = 64 * 1024 * 1024;

/// The segment size for a cache of `max_bytes`: the segment being written cannot be released, so it must be
/// a small part of the budget, or a full cache could never free space (a deadlock with a store that is down).
pub fn segment_target(max_bytes: u64) -> u64 {
    (max_bytes / 8).clamp(1 << 20, SEGMENT_TARGET_BYTES)
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct DiskMeta {
    pub disk_id: String,
    pub size_bytes: u64,
    pub label: String,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct MachineMeta {
    pub machine_id: String,
    pub hostname: String,
    pub disks: Vec<DiskMeta>,
}

/// The uploader's commit point for one disk: every extent with `seq <= seq` and every bookmark with
/// `bookmark_id <= bookmark_id` is in the vault and in the appliance's block map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    pub seq: u64,
    pub bookmark_id: u64,
}

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    path: PathBuf,
    /// Bytes known to be fsync'd; readers never go past this.
    durable_len: u64,
    /// Highest extent seq and bookmark id in the durable part.
    last_seq: u64,
    last_bookmark: u64,
}

#[derive(Debug)]
struct DiskLogState {
    segments: Vec<Segment>,
    writer: Option<File>,
    /// Bytes appended to the last segment, synced or not.
    written_len: u64,
    /// Highest seq / bookmark appended but not yet synced.
    pending_seq: u64,
    pending_bookmark: u64,
    durable_seq: u64,
    committed: Cursor,
}

/// One disk's log. Appends come from one session at a time; reads from the compressor.
#[derive(Debug)]
pub struct DiskLog {
    pub machine_id: String,
    pub disk_id: String,
    dir: PathBuf,
    segment_target: u64,
    state: Mutex<DiskLogState>,
    /// Buffers of recent reads, reused once the compressor has dropped every record cut from them.
    read_buffers: Mutex<Vec<bytes::Bytes>>,
}

/// Read buffers kept per disk: one is enough once a batch is sealed; a read across a segment end needs two.
const READ_BUFFERS: usize = 2;

/// Position of a reader in a disk log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadPos {
    pub segment_first_seq: u64,
    pub offset: u64,
}

/// All machines' logs plus the shared size budget.
#[derive(Debug)]
pub struct Cache {
    root: PathBuf,
    max_bytes: u64,
    used: Mutex<u64>,
    space_freed: Condvar,
    disks: Mutex<HashMap<(String, String), Arc<DiskLog>>>,
    machines: Mutex<HashMap<String, MachineMeta>>,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> ActorError {
    ActorError::Cache(format!("{what} {}: {e}", path.display()))
}

impl Cache {
    /// Opens the cache, recovering every disk log: torn tails are cut, durable sequence numbers recomputed.
    pub fn open(root: &Path, max_bytes: u64) -> Result<Arc<Cache>, ActorError> {
        fs::create_dir_all(root).map_err(|e| io_err("create", root, e))?;
        let cache = Arc::new(Cache {
            root: root.to_path_buf(),
            max_bytes,
            used: Mutex::new(0),
            space_freed: Condvar::new(),
            disks: Mutex::new(HashMap::new()),
            machines: Mutex::new(HashMap::new()),
        });
        for entry in fs::read_dir(root).map_err(|e| io_err("list", root, e))? {
            let entry = entry.map_err(|e| io_err("list", root, e))?;
            let meta_path = entry.path().join("machine.json");
            if !meta_path.exists() {
                continue;
            }
            let Some(meta) = state_file::read::<MachineMeta>(MACHINE_FORMAT, &meta_path)? else {
                continue;
            };
            cache.register_machine(meta)?;
        }
        Ok(cache)
    }

    /// Records a machine's disks (from its Hello) and opens their logs.
    pub fn register_machine(&self, meta: MachineMeta) -> Result<Vec<Arc<DiskLog>>, ActorError> {
        let mdir = self.root.join(&meta.machine_id);
        fs::create_dir_all(&mdir).map_err(|e| io_err("create", &mdir, e))?;
        state_file::write(MACHINE_FORMAT, &mdir.join("machine.json"), &meta)?;
        let mut logs = Vec::new();
        for d in &meta.disks {
            let key = (meta.machine_id.clone(), d.disk_id.clone());
            let existing = self.disks.lock().expect("cache lock").get(&key).cloned();
            let log = match existing {
                Some(l) => l,
                None => {
                    let (log, bytes) = DiskLog::open(
                        &meta.machine_id,
                        &d.disk_id,
                        &mdir.join(&d.disk_id),
                        segment_target(self.max_bytes),
                    )?;
                    *self.used.lock().expect("cache lock") += bytes;
                    let log = Arc::new(log);
                    self.disks
                        .lock()
                        .expect("cache lock")
                        .insert(key, log.clone());
                    log
                }
            };
            logs.push(log);
        }
        self.machines
            .lock()
            .expect("cache lock")
            .insert(meta.machine_id.clone(), meta);
        Ok(logs)
    }

    pub fn machines(&self) -> Vec<MachineMeta> {
        let mut v: Vec<_> = self
            .machines
            .lock()
            .expect("cache lock")
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.machine_id.cmp(&b.machine_id));
        v
    }

    pub fn disk(&self, machine_id: &str, disk_id: &str) -> Option<Arc<DiskLog>> {
        self.disks
            .lock()
            .expect("cache lock")
            .get(&(machine_id.to_string(), disk_id.to_string()))
            .cloned()
    }

    pub fn used_bytes(&self) -> u64 {
        *self.used.lock().expect("cache lock")
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Reserves room for `bytes` of records, waiting while the cache is full. Returns false when `stop` became
    /// true while waiting (shutdown), so the caller can give up without writing.
    pub fn reserve(&self, bytes: u64, stop: &dyn Fn() -> bool) -> bool {
        let mut used = self.used.lock().expect("cache lock");
        // The segment being written can never be released, so "as empty as it gets" is one segment's worth:
        // a batch that does not fit even then goes through rather than waiting forever.
        let floor = segment_target(self.max_bytes);
        while *used > floor && *used + bytes > self.max_bytes {
            if stop() {
                return false;
            }
            used = self
                .space_freed
                .wait_timeout(used, Duration::from_millis(200))
                .expect("cache lock")
                .0;
        }
        *used += bytes;
        true
    }

    /// Gives back reserved bytes that were not written (a failed append).
    pub fn unreserve(&self, bytes: u64) {
        let mut used = self.used.lock().expect("cache lock");
        *used = used.saturating_sub(bytes);
        self.space_freed.notify_all();
    }

    /// Marks everything up to `cursor` as committed to the vault and deletes segments that are wholly
    /// committed (never the one being written).
    pub fn commit(&self, log: &DiskLog, cursor: Cursor) -> Result<(), ActorError> {
        let freed = log.commit(cursor)?;
        if freed > 0 {
            self.unreserve(freed);
        }
        Ok(())
    }
}

impl DiskLog {
    fn open(
        machine_id: &str,
        disk_id: &str,
        dir: &Path,
        segment_target: u64,
    ) -> Result<(DiskLog, u64), ActorError> {
        fs::create_dir_all(dir).map_err(|e| io_err("create", dir, e))?;
        let committed: Cursor =
            state_file::read(CURSOR_FORMAT, &dir.join("cursor"))?.unwrap_or_default();
        let mut names: Vec<(u64, PathBuf)> = fs::read_dir(dir)
            .map_err(|e| io_err("list", dir, e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let seq = name
                    .strip_prefix("seg-")?
                    .strip_suffix(".log")?
                    .parse()
                    .ok()?;
                Some((seq, e.path()))
            })
            .collect();
        names.sort();
        let mut segments = Vec::new();
        let mut durable_seq = committed.seq;
        let mut total = 0;
        let count = names.len();
        for (i, (first_seq, path)) in names.into_iter().enumerate() {
            let scan = scan_segment(&path)?;
            if scan.valid_len < scan.file_len {
                // A torn or corrupt tail can only be the last, unacknowledged write of the last segment.
                tracing::warn!(path = %path.display(), valid = scan.valid_len, file = scan.file_len,
                    last = i + 1 == count, "cutting a torn tail off a cache segment");
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| io_err("open", &path, e))?;
                f.set_len(scan.valid_len)
                    .map_err(|e| io_err("truncate", &path, e))?;
                f.sync_all().map_err(|e| io_err("fsync", &path, e))?;
            }
            durable_seq = durable_seq.max(scan.last_seq);
            total += scan.valid_len;
            segments.push(Segment {
                first_seq,
                path,
                durable_len: scan.valid_len,
                last_seq: scan.last_seq,
                last_bookmark: scan.last_bookmark,
            });
        }
        let log = DiskLog {
            machine_id: machine_id.to_string(),
            disk_id: disk_id.to_string(),
            dir: dir.to_path_buf(),
            segment_target,
            read_buffers: Mutex::new(Vec::new()),
            state: Mutex::new(DiskLogState {
                segments,
                writer: None,
                written_len: 0,
                pending_seq: durable_seq,
                pending_bookmark: 0,
                durable_seq,
                committed,
            }),
        };
        Ok((log, total))
    }

    /// The highest sequence number that is fsync'd here (or already committed to the vault).
    pub fn durable_seq(&self) -> u64 {
        self.state.lock().expect("log lock").durable_seq
    }

    pub fn committed(&self) -> Cursor {
        self.state.lock().expect("log lock").committed
    }

    /// Appends records without syncing; `sync` makes them durable. Split so a session can group-commit
    /// many records with one fsync per disk.
    pub fn append(&self, records: &[Record]) -> Result<(), ActorError> {
        let mut st = self.state.lock().expect("log lock");
        for r in records {
            let roll = st.segments.last().is_none_or(|s| {
                st.written_len >= self.segment_target || s.durable_len >= self.segment_target
            });
            if roll {
                // The old segment is made durable before the new one exists, so only the last segment
                // can ever hold unsynced bytes.
                self.sync_locked(&mut st)?;
                let first = match r {
                    Record::Extent { seq, .. } => *seq,
                    Record::Bookmark { last_seq, .. } => *last_seq + 1,
                };
                let first = first.max(st.segments.last().map_or(0, |s| s.first_seq + 1));
                let path = self.dir.join(format!("seg-{first:020}.log"));
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| io_err("create", &path, e))?;
                File::open(&self.dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| io_err("fsync", &self.dir, e))?;
                st.writer = Some(f);
                st.written_len = 0;
                st.segments.push(Segment {
                    first_seq: first,
                    path,
                    durable_len: 0,
                    last_seq: 0,
                    last_bookmark: 0,
                });
            } else if st.writer.is_none() {
                let seg = st.segments.last().expect("segment");
                let path = seg.path.clone();
                st.written_len = seg.durable_len;
                st.writer = Some(
                    OpenOptions::new()
                        .append(true)
                        .open(&path)
                        .map_err(|e| io_err("open", &path, e))?,
                );
            }
            let header = segment::encode_header(r);
            let w = st.writer.as_mut().expect("writer open");
            w.write_all(&header)
                .and_then(|_| w.write_all(segment::body(r)))
                .map_err(|e| io_err("append to", &self.dir, e))?;
            st.written_len += r.encoded_len();
            match r {
                Record::Extent { seq, .. } => st.pending_seq = st.pending_seq.max(*seq),
                Record::Bookmark { bookmark_id, .. } => {
                    st.pending_bookmark = st.pending_bookmark.max(*bookmark_id)
                }
            }
        }
        Ok(())
    }

    /// fsyncs the segment being written and publishes everything appended so far as durable.
    /// Returns the durable sequence number.
    pub fn sync(&self) -> Result<u64, ActorError> {
        let mut st = self.state.lock().expect("log lock");
        self.sync_locked(&mut st)?;
        Ok(st.durable_seq)
    }

    fn sync_locked(&self, st: &mut DiskLogState) -> Result<(), ActorError> {
        let Some(w) = st.writer.as_mut() else {
            return Ok(());
        };
        let written = st.written_len;
        let Some(seg) = st.segments.last_mut() else {
            return Ok(());
        };
        if seg.durable_len == written {
            return Ok(());
        }
        w.sync_data().map_err(|e| io_err("fsync", &seg.path, e))?;
        seg.durable_len = written;
        seg.last_seq = seg.last_seq.max(st.pending_seq);
        seg.last_bookmark = seg.last_bookmark.max(st.pending_bookmark);
        st.durable_seq = st.durable_seq.max(st.pending_seq);
        Ok(())
    }

    /// Drops unsynced appends after a failed write so the log never acknowledges a partial batch:
    /// the file is cut back to its durable length.
    pub fn rollback(&self) -> Result<(), ActorError> {
        let mut st = self.state.lock().expect("log lock");
        if let Some(seg) = st.segments.last() {
            let (path, len) = (seg.path.clone(), seg.durable_len);
            st.writer = None;
            st.written_len = len;
            st.pending_seq = st.durable_seq;
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| io_err("open", &path, e))?;
            f.set_len(len).map_err(|e| io_err("truncate", &path, e))?;
        }
        Ok(())
    }

    /// Reads durable records from `pos` until `max_bytes` of extent data or a bookmark (inclusive).
    /// Returns the records and the new position.
    pub fn read_from(
        &self,
        pos: &ReadPos,
        max_bytes: u64,
    ) -> Result<(Vec<Record>, ReadPos), ActorError> {
        let segs: Vec<(u64, PathBuf, u64)> = {
            let st = self.state.lock().expect("log lock");
            st.segments
                .iter()
                .filter(|s| s.first_seq >= pos.segment_first_seq)
                .map(|s| (s.first_seq, s.path.clone(), s.durable_len))
                .collect()
        };
        let mut out = Vec::new();
        let mut bytes = 0u64;
        let mut cur = pos.clone();
        for (first, path, durable_len) in segs {
            let start = if first == cur.segment_first_seq {
                cur.offset
            } else {
                0
            };
            cur = ReadPos {
                segment_first_seq: first,
                offset: start,
            };
            if start >= durable_len {
                continue;
            }
            // Read the part of the segment this call can use in one go, then cut records out of it without
            // copying; a record cut by the end of the read is read again by the next call.
            let left = durable_len - start;
            let mut want = (max_bytes - bytes).saturating_add(segment::HEADER_LEN as u64);
            let (buf, whole) = loop {
                let len = left.min(want);
                let buf = self.read_range(&path, start, len as usize)?;
                let first = segment::decode_record(&buf, 0)
                    .map_err(|e| ActorError::Cache(format!("{}: {e}", path.display())))?;
                if first.is_some() || len == left {
                    break (buf, len == left);
                }
                if want > left {
                    return Err(ActorError::Cache(format!(
                        "{}: record at {start} is cut short",
                        path.display()
                    )));
                }
                // Only a record longer than the budget: read enough for the largest one.
                want = len + segment::HEADER_LEN as u64 + segment::MAX_BODY as u64;
            };
            let mut at = 0;
            while let Some((rec, n)) = segment::decode_record(&buf, at)
                .map_err(|e| ActorError::Cache(format!("{}: {e}", path.display())))?
            {
                at += n;
                cur.offset += n as u64;
                let is_bookmark = matches!(rec, Record::Bookmark { .. });
                if let Record::Extent { data, .. } = &rec {
                    bytes += data.len() as u64;
                }
                out.push(rec);
                if is_bookmark || bytes >= max_bytes {
                    return Ok((out, cur));
                }
            }
            if !whole {
                return Ok((out, cur));
            }
            if at < buf.len() {
                return Err(ActorError::Cache(format!(
                    "{}: torn record inside the durable part",
                    path.display()
                )));
            }
        }
        Ok((out, cur))
    }

    /// Reads `len` bytes at `offset` of a segment into a buffer from `read_buffers` when one is no longer
    /// referenced (every record cut from it was dropped), so steady reading does not fault in fresh memory.
    fn read_range(&self, path: &Path, offset: u64, len: usize) -> Result<bytes::Bytes, ActorError> {
        let reused = {
            let mut pool = self.read_buffers.lock().expect("read buffers");
            let mut found = None;
            for _ in 0..pool.len() {
                let b = pool.remove(0);
                match b.try_into_mut() {
                    Ok(m) if found.is_none() => found = Some(Vec::from(m)),
                    Ok(m) => pool.push(m.freeze()),
                    Err(b) => pool.push(b),
                }
            }
            found
        };
        let mut buf = reused.unwrap_or_default();
        buf.clear();
        buf.reserve_exact(len);
        let mut f = File::open(path).map_err(|e| io_err("open", path, e))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| io_err("seek", path, e))?;
        f.take(len as u64)
            .read_to_end(&mut buf)
            .map_err(|e| io_err("read", path, e))?;
        let buf = bytes::Bytes::from(buf);
        let mut pool = self.read_buffers.lock().expect("read buffers");
        if pool.len() >= READ_BUFFERS {
            pool.remove(0);
        }
        pool.push(buf.clone());
        Ok(buf)
    }

    /// The read position just after the committed cursor: the start of the first segment still held.
    /// Records at or below the cursor are skipped by the reader.
    pub fn start_pos(&self) -> ReadPos {
        let st = self.state.lock().expect("log lock");
        ReadPos {
            segment_first_seq: st.segments.first().map_or(0, |s| s.first_seq),
            offset: 0,
        }
    }

    fn commit(&self, cursor: Cursor) -> Result<u64, ActorError> {
        state_file::write(CURSOR_FORMAT, &self.dir.join("cursor"), &cursor)?;
        let mut st = self.state.lock().expect("log lock");
        st.committed = cursor;
        let mut freed = 0;
        while st.segments.len() > 1 {
            let s = &st.segments[0];
            let done = s.last_seq <= cursor.seq && s.last_bookmark <= cursor.bookmark_id;
            if !done {
                break;
            }
            fs::remove_file(&s.path).map_err(|e| io_err("remove", &s.path, e))?;
            freed += s.durable_len;
            st.segments.remove(0);
        }
        Ok(freed)
    }
}

struct SegmentScan {
    valid_len: u64,
    file_len: u64,
    last_seq: u64,
    last_bookmark: u64,
}

fn scan_segment(path: &Path) -> Result<SegmentScan, ActorError> {
    let f = File::open(path).map_err(|e| io_err("open", path, e))?;
    let file_len = f.metadata().map_err(|e| io_err("stat", path, e))?.len();
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut scan = SegmentScan {
        valid_len: 0,
        file_len,
        last_seq: 0,
        last_bookmark: 0,
    };
    while let Ok(Some(rec)) = segment::read_record(&mut r) {
        scan.valid_len += rec.encoded_len();
        match rec {
            Record::Extent { seq, .. } => scan.last_seq = scan.last_seq.max(seq),
            Record::Bookmark { bookmark_id, .. } => {
                scan.last_bookmark = scan.last_bookmark.max(bookmark_id)
            }
        }
    }
    Ok(scan)
}

/// Writes `body` to `tmp`, fsyncs, renames over `dest` and fsyncs the folder: the file is either old or new.
pub fn write_durably(tmp: &Path, dest: &Path, body: &[u8]) -> Result<(), ActorError> {
    let mut f = File::create(tmp).map_err(|e| io_err("create", tmp, e))?;
    f.write_all(body).map_err(|e| io_err("write", tmp, e))?;
    f.sync_all().map_err(|e| io_err("fsync", tmp, e))?;
    fs::rename(tmp, dest).map_err(|e| io_err("rename", dest, e))?;
    if let Some(dir) = dest.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err("fsync", dir, e))?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
