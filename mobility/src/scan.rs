//! One pass over a disk: large sequential reads, each 64 KiB block hashed and compared with the
//! tracker, runs of changed blocks handed out as extents of up to 1 MiB. Runs on a blocking
//! thread; the caller's `emit` applies flow control and queues the extent for sending.

use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{Context, Result};
use bytes::Bytes;
use wire::{BLOCK_SIZE, MAX_EXTENT_BYTES};

use crate::tracker::{block_hash, BlockHash, Tracker};

/// Bytes read from the disk per read call.
pub const READ_CHUNK: usize = 4 * 1024 * 1024;
const BLOCKS_PER_CHUNK: usize = READ_CHUNK / BLOCK_SIZE as usize;
const BLOCKS_PER_EXTENT: usize = MAX_EXTENT_BYTES / BLOCK_SIZE as usize;

/// Changed blocks to send as one extent, with the hashes to record once it is acknowledged.
#[derive(Debug, Clone)]
pub struct PlannedExtent {
    pub first_block: u64,
    pub data: Bytes,
    pub hashes: Vec<BlockHash>,
}

impl PlannedExtent {
    pub fn offset(&self) -> u64 {
        self.first_block * BLOCK_SIZE
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanStats {
    pub blocks: u64,
    pub changed_blocks: u64,
    pub extents: u64,
    pub bytes: u64,
}

/// Why a scan ended early.
#[derive(Debug)]
pub enum ScanEnd {
    /// `should_stop` said so (the session is gone).
    Stopped,
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for ScanEnd {
    fn from(e: anyhow::Error) -> Self {
        ScanEnd::Failed(e)
    }
}

/// Scans `disk` (of the tracker's size) and calls `emit` for every run of blocks whose content
/// differs from the tracker's record. `emit` returning `Err(ScanEnd::Stopped)` ends the scan.
pub fn scan_disk(
    disk: &File,
    tracker: &Tracker,
    should_stop: &dyn Fn() -> bool,
    emit: &mut dyn FnMut(PlannedExtent) -> Result<(), ScanEnd>,
) -> Result<ScanStats, ScanEnd> {
    let size = tracker.size_bytes();
    let mut stats = ScanStats {
        blocks: tracker.blocks(),
        ..ScanStats::default()
    };
    let mut recorded = vec![[0u8; 16]; BLOCKS_PER_CHUNK];
    let mut hashes = Vec::with_capacity(BLOCKS_PER_CHUNK);
    // Reused while chunks are unchanged; once a chunk is sent its buffer belongs to the extents.
    let mut buf: Vec<u8> = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        if should_stop() {
            return Err(ScanEnd::Stopped);
        }
        let len = (size - pos).min(READ_CHUNK as u64) as usize;
        buf.resize(len, 0);
        disk.read_exact_at(&mut buf, pos)
            .with_context(|| format!("reading the disk at offset {pos}"))?;
        let first_block = pos / BLOCK_SIZE;
        let nblocks = len.div_ceil(BLOCK_SIZE as usize);
        tracker
            .read_hashes(first_block, &mut recorded[..nblocks])
            .context("reading the tracker")?;
        hashes.clear();
        hashes.extend(buf.chunks(BLOCK_SIZE as usize).map(block_hash));
        let runs = changed_runs(&hashes, &recorded[..nblocks]);
        if !runs.is_empty() {
            let chunk = Bytes::from(std::mem::take(&mut buf));
            for (start, end) in runs {
                let from = start * BLOCK_SIZE as usize;
                let to = (end * BLOCK_SIZE as usize).min(len);
                stats.changed_blocks += (end - start) as u64;
                stats.extents += 1;
                stats.bytes += (to - from) as u64;
                emit(PlannedExtent {
                    first_block: first_block + start as u64,
                    data: chunk.slice(from..to),
                    hashes: hashes[start..end].to_vec(),
                })?;
            }
        }
        pos += len as u64;
    }
    Ok(stats)
}

/// Half-open block ranges `[start, end)` where `now` differs from `recorded`, each at most one
/// extent long.
pub fn changed_runs(now: &[BlockHash], recorded: &[BlockHash]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut start = None;
    for (i, (a, b)) in now.iter().zip(recorded).enumerate() {
        match (a != b, start) {
            (true, None) => start = Some(i),
            (true, Some(s)) if i - s == BLOCKS_PER_EXTENT => {
                runs.push((s, i));
                start = Some(i);
            }
            (false, Some(s)) => {
                runs.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        runs.push((s, now.len()));
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const B: usize = BLOCK_SIZE as usize;

    fn disk(blocks: &[u8], tail: usize) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        for &b in blocks {
            f.write_all(&vec![b; B]).unwrap();
        }
        f.write_all(&vec![0xee; tail]).unwrap();
        f.flush().unwrap();
        f
    }

    fn scan(f: &tempfile::NamedTempFile, t: &Tracker) -> (ScanStats, Vec<PlannedExtent>) {
        let mut out = Vec::new();
        let stats = scan_disk(f.as_file(), t, &|| false, &mut |e| {
            out.push(e);
            Ok(())
        })
        .map_err(|e| format!("{e:?}"))
        .unwrap();
        (stats, out)
    }

    fn ack_all(t: &Tracker, extents: &[PlannedExtent]) {
        for e in extents {
            t.record(e.first_block, &e.hashes).unwrap();
        }
    }

    #[test]
    fn runs_split_at_unchanged_blocks_and_extent_size() {
        let z = [0u8; 16];
        let x = [1u8; 16];
        assert_eq!(changed_runs(&[x, x, z, x], &[z; 4]), vec![(0, 2), (3, 4)]);
        assert_eq!(changed_runs(&[z, z], &[z, z]), vec![]);
        let all = vec![x; 40];
        assert_eq!(
            changed_runs(&all, &[z; 40]),
            vec![(0, 16), (16, 32), (32, 40)]
        );
    }

    #[test]
    fn zero_blocks_are_never_sent_on_a_fresh_tracker() {
        let f = disk(&[0, 0, 5, 0, 7, 7, 0], 0);
        let dir = tempfile::tempdir().unwrap();
        let t = Tracker::open(&dir.path().join("t"), 7 * BLOCK_SIZE).unwrap();
        let (stats, ex) = scan(&f, &t);
        assert_eq!(stats.changed_blocks, 3);
        let got: Vec<(u64, usize)> = ex.iter().map(|e| (e.offset(), e.data.len())).collect();
        assert_eq!(got, vec![(2 * BLOCK_SIZE, B), (4 * BLOCK_SIZE, 2 * B)]);
        assert!(ex[1].data.iter().all(|&b| b == 7));
    }

    #[test]
    fn rescan_finds_exactly_the_changed_blocks() {
        let mut f = disk(&[1; 80], 0);
        let dir = tempfile::tempdir().unwrap();
        let t = Tracker::open(&dir.path().join("t"), 80 * BLOCK_SIZE).unwrap();
        let (stats, ex) = scan(&f, &t);
        assert_eq!(stats.changed_blocks, 80);
        assert!(ex.iter().all(|e| e.data.len() <= MAX_EXTENT_BYTES));
        ack_all(&t, &ex);
        assert_eq!(scan(&f, &t).0.changed_blocks, 0);
        // change blocks 3, 64 (first block of the second read chunk) and 79; zero block 10
        for (block, byte) in [(3u64, 9u8), (64, 9), (79, 9), (10, 0)] {
            f.as_file()
                .write_all_at(&vec![byte; B], block * BLOCK_SIZE)
                .unwrap();
        }
        f.flush().unwrap();
        let (stats, ex) = scan(&f, &t);
        let blocks: Vec<u64> = ex.iter().map(|e| e.first_block).collect();
        assert_eq!(blocks, vec![3, 10, 64, 79]);
        assert_eq!(stats.changed_blocks, 4);
        assert!(
            ex[1].data.iter().all(|&b| b == 0),
            "a block zeroed on the disk is sent"
        );
    }

    #[test]
    fn partial_last_block_is_tracked_and_sent_short() {
        let f = disk(&[1, 2], 1000);
        let dir = tempfile::tempdir().unwrap();
        let t = Tracker::open(&dir.path().join("t"), 2 * BLOCK_SIZE + 1000).unwrap();
        let (_, ex) = scan(&f, &t);
        assert_eq!(ex.len(), 1);
        assert_eq!(ex[0].data.len(), 2 * B + 1000);
        assert_eq!(ex[0].hashes.len(), 3);
        ack_all(&t, &ex);
        f.as_file()
            .write_all_at(&[1], 2 * BLOCK_SIZE + 999)
            .unwrap();
        let (_, ex) = scan(&f, &t);
        assert_eq!(ex.len(), 1);
        assert_eq!((ex[0].first_block, ex[0].data.len()), (2, 1000));
    }

    #[test]
    fn only_acknowledged_extents_stop_being_sent() {
        let f = disk(&[1, 0, 2, 0, 3], 0);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        let t = Tracker::open(&p, 5 * BLOCK_SIZE).unwrap();
        let (_, ex) = scan(&f, &t);
        assert_eq!(ex.len(), 3);
        // only the middle extent is acknowledged, then the agent "restarts"
        ack_all(&t, &ex[1..2]);
        t.set_acked_seq(2).unwrap();
        drop(t);
        let t = Tracker::open(&p, 5 * BLOCK_SIZE).unwrap();
        let (_, again) = scan(&f, &t);
        let blocks: Vec<u64> = again.iter().map(|e| e.first_block).collect();
        assert_eq!(blocks, vec![0, 4]);
    }

    #[test]
    fn a_disk_shorter_than_its_tracker_is_an_error_not_a_panic() {
        let f = disk(&[1], 0);
        let dir = tempfile::tempdir().unwrap();
        let t = Tracker::open(&dir.path().join("t"), 3 * BLOCK_SIZE).unwrap();
        let r = scan_disk(f.as_file(), &t, &|| false, &mut |_| Ok(()));
        assert!(matches!(r, Err(ScanEnd::Failed(_))));
    }

    #[test]
    fn stop_request_ends_the_scan() {
        let f = disk(&[1; 4], 0);
        let dir = tempfile::tempdir().unwrap();
        let t = Tracker::open(&dir.path().join("t"), 4 * BLOCK_SIZE).unwrap();
        let r = scan_disk(f.as_file(), &t, &|| true, &mut |_| Ok(()));
        assert!(matches!(r, Err(ScanEnd::Stopped)));
    }
}
