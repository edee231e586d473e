//! The persistent hash tracker: per 64 KiB block of a disk, a 16-byte truncated BLAKE3 of the
//! content the APPLIANCE HAS ACKNOWLEDGED. An all-zero entry means "zero block", which is also
//! the initial state, because a new disk on the appliance reads as zeros.
//!
//! Entries are written only when an extent is acknowledged, so after a crash on either side a
//! rescan finds exactly the blocks the appliance may not hold and sends them again.
//!
//! File layout (integers big-endian):
//!
//! ```text
//! offset  size  field
//! 0       8     magic b"FRYTRACK"
//! 8       2     format version (1)
//! 10      2     hash length (16)
//! 12      4     block size (65536)
//! 16      8     disk size in bytes
//! 24      8     last acknowledged sequence number of this disk
//! 32      4     CRC-32 (IEEE) of bytes 0..32
//! 36      28    reserved, zero
//! 64      16*N  block hashes, N = ceil(disk size / block size)
//! ```
//!
//! The file is never held in memory: a 2 TiB disk has a 512 MiB tracker, so scans read it in
//! windows alongside the disk and acknowledgements write single extents with positional writes.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use wire::BLOCK_SIZE;

pub const TRACKER_MAGIC: [u8; 8] = *b"FRYTRACK";
pub const TRACKER_VERSION: u16 = 1;
pub const HASH_LEN: usize = 16;
pub const HEADER_LEN: u64 = 64;

/// Truncated BLAKE3 of a block; the record of what the appliance holds for it.
pub type BlockHash = [u8; HASH_LEN];

/// The hash that stands for "all zeros", whatever the block's length.
pub const ZERO_HASH: BlockHash = [0; HASH_LEN];

/// Hash of one block's content. Zero blocks map to [`ZERO_HASH`] without hashing, which is both
/// faster and what makes an untouched tracker entry mean "zero block".
pub fn block_hash(data: &[u8]) -> BlockHash {
    // A slice comparison is a memcmp: far faster than a byte loop on mostly-empty disks.
    static ZEROS: [u8; BLOCK_SIZE as usize] = [0; BLOCK_SIZE as usize];
    let is_zero = match ZEROS.get(..data.len()) {
        Some(zeros) => data == zeros,
        None => data.iter().all(|&b| b == 0),
    };
    if is_zero {
        return ZERO_HASH;
    }
    let full = blake3::hash(data);
    let mut out = [0u8; HASH_LEN];
    out.copy_from_slice(&full.as_bytes()[..HASH_LEN]);
    if out == ZERO_HASH {
        // Astronomically unlikely, but a non-zero block must never read as "zero block".
        out[0] = 1;
    }
    out
}

/// Number of blocks of a disk of `size_bytes` (the last one may be partial).
pub fn block_count(size_bytes: u64) -> u64 {
    size_bytes.div_ceil(BLOCK_SIZE)
}

/// One disk's tracker file.
#[derive(Debug)]
pub struct Tracker {
    file: File,
    path: PathBuf,
    size_bytes: u64,
    acked_seq: AtomicU64,
    dirty: AtomicBool,
}

/// Why a tracker header could not be used as is.
fn header_problem(h: &[u8; HEADER_LEN as usize]) -> Option<&'static str> {
    if h[0..8] != TRACKER_MAGIC {
        return Some("bad magic");
    }
    if u16::from_be_bytes([h[8], h[9]]) != TRACKER_VERSION {
        return Some("unsupported version");
    }
    let crc = u32::from_be_bytes([h[32], h[33], h[34], h[35]]);
    if crc32fast::hash(&h[..32]) != crc {
        return Some("header checksum mismatch");
    }
    if u16::from_be_bytes([h[10], h[11]]) as usize != HASH_LEN
        || u32::from_be_bytes([h[12], h[13], h[14], h[15]]) as u64 != BLOCK_SIZE
    {
        return Some("different hash length or block size");
    }
    None
}

/// The 64 header bytes for a disk size and acknowledged sequence number.
pub fn encode_header(size_bytes: u64, acked_seq: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[0..8].copy_from_slice(&TRACKER_MAGIC);
    h[8..10].copy_from_slice(&TRACKER_VERSION.to_be_bytes());
    h[10..12].copy_from_slice(&(HASH_LEN as u16).to_be_bytes());
    h[12..16].copy_from_slice(&(BLOCK_SIZE as u32).to_be_bytes());
    h[16..24].copy_from_slice(&size_bytes.to_be_bytes());
    h[24..32].copy_from_slice(&acked_seq.to_be_bytes());
    let crc = crc32fast::hash(&h[..32]);
    h[32..36].copy_from_slice(&crc.to_be_bytes());
    h
}

impl Tracker {
    /// Opens or creates the tracker of a disk that is now `size_bytes` long. A disk that grew gets
    /// zero entries for the new blocks (the appliance's copy grows with zeros); one that shrank
    /// loses the entries past its end. A tracker with a damaged or foreign header is started over,
    /// which costs a full resync but can never skip a block.
    pub fn open(path: &Path, size_bytes: u64) -> io::Result<Tracker> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut header = [0u8; HEADER_LEN as usize];
        let existing = file.metadata()?.len() >= HEADER_LEN
            && {
                file.read_exact_at(&mut header, 0)?;
                match header_problem(&header) {
                    None => true,
                    Some(why) => {
                        tracing::warn!(path = %path.display(), why, "tracker unusable, starting over (full resync)");
                        false
                    }
                }
            };
        let mut acked_seq = 0;
        if existing {
            acked_seq = u64::from_be_bytes(header[24..32].try_into().expect("8 bytes"));
            let old_size = u64::from_be_bytes(header[16..24].try_into().expect("8 bytes"));
            if old_size != size_bytes {
                // The old last block may have been partial; its hash covers fewer bytes than the
                // block now holds, so it must not match by accident: forget it.
                let old_blocks = block_count(old_size);
                if old_size % BLOCK_SIZE != 0 && old_blocks > 0 {
                    file.write_all_at(&ZERO_HASH, HEADER_LEN + (old_blocks - 1) * HASH_LEN as u64)?;
                }
            }
        } else {
            file.set_len(0)?;
        }
        file.set_len(HEADER_LEN + block_count(size_bytes) * HASH_LEN as u64)?;
        file.write_all_at(&encode_header(size_bytes, acked_seq), 0)?;
        file.sync_all()?;
        Ok(Tracker {
            file,
            path: path.to_path_buf(),
            size_bytes,
            acked_seq: AtomicU64::new(acked_seq),
            dirty: AtomicBool::new(false),
        })
    }

    /// Opens an existing tracker read-only, changing nothing (for `status`, which may run beside
    /// `run`). `None` if the file is not a usable tracker.
    pub fn inspect(path: &Path) -> io::Result<Option<Tracker>> {
        let file = File::open(path)?;
        let mut header = [0u8; HEADER_LEN as usize];
        if file.metadata()?.len() < HEADER_LEN {
            return Ok(None);
        }
        file.read_exact_at(&mut header, 0)?;
        if header_problem(&header).is_some() {
            return Ok(None);
        }
        let size_bytes = u64::from_be_bytes(header[16..24].try_into().expect("8 bytes"));
        if file.metadata()?.len() < HEADER_LEN + block_count(size_bytes) * HASH_LEN as u64 {
            return Ok(None);
        }
        Ok(Some(Tracker {
            file,
            path: path.to_path_buf(),
            size_bytes,
            acked_seq: AtomicU64::new(u64::from_be_bytes(
                header[24..32].try_into().expect("8 bytes"),
            )),
            dirty: AtomicBool::new(false),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    pub fn blocks(&self) -> u64 {
        block_count(self.size_bytes)
    }

    /// The last sequence number whose extents are recorded here.
    pub fn acked_seq(&self) -> u64 {
        self.acked_seq.load(Ordering::Acquire)
    }

    /// Reads the recorded hashes of blocks `first_block ..` into `out`.
    pub fn read_hashes(&self, first_block: u64, out: &mut [BlockHash]) -> io::Result<()> {
        let mut raw = vec![0u8; out.len() * HASH_LEN];
        self.file
            .read_exact_at(&mut raw, HEADER_LEN + first_block * HASH_LEN as u64)?;
        for (dst, src) in out.iter_mut().zip(raw.chunks_exact(HASH_LEN)) {
            dst.copy_from_slice(src);
        }
        Ok(())
    }

    /// Records the content the appliance now holds for blocks `first_block ..`.
    pub fn record(&self, first_block: u64, hashes: &[BlockHash]) -> io::Result<()> {
        if first_block + hashes.len() as u64 > self.blocks() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "tracker record past the end of the disk",
            ));
        }
        let raw: Vec<u8> = hashes.iter().flatten().copied().collect();
        self.file
            .write_all_at(&raw, HEADER_LEN + first_block * HASH_LEN as u64)?;
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Stores the last acknowledged sequence number (after the hashes it covers are recorded).
    pub fn set_acked_seq(&self, seq: u64) -> io::Result<()> {
        self.file
            .write_all_at(&encode_header(self.size_bytes, seq), 0)?;
        self.acked_seq.store(seq, Ordering::Release);
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Forgets everything: every block will be compared with zeros again. Used when the appliance
    /// reports less than this tracker recorded (it lost data, or it is a different appliance).
    pub fn reset(&self) -> io::Result<()> {
        self.file.set_len(HEADER_LEN)?;
        self.file
            .set_len(HEADER_LEN + self.blocks() * HASH_LEN as u64)?;
        self.set_acked_seq(0)?;
        self.sync()
    }

    /// Makes recorded entries durable. Losing unsynced entries is safe (they are resent), so this
    /// runs periodically and at exit rather than per acknowledgement.
    pub fn sync(&self) -> io::Result<()> {
        if self.dirty.swap(false, Ordering::AcqRel) {
            if let Err(e) = self.file.sync_data() {
                self.dirty.store(true, Ordering::Release);
                return Err(e);
            }
        }
        Ok(())
    }

    /// How many blocks hold recorded non-zero content (read in windows; used by `status`).
    pub fn count_data_blocks(&self) -> io::Result<u64> {
        let mut count = 0;
        let mut buf = vec![ZERO_HASH; 4096];
        let mut block = 0;
        while block < self.blocks() {
            let n = (self.blocks() - block).min(buf.len() as u64) as usize;
            self.read_hashes(block, &mut buf[..n])?;
            count += buf[..n].iter().filter(|h| **h != ZERO_HASH).count() as u64;
            block += n as u64;
        }
        Ok(count)
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if let Err(e) = self.sync() {
            tracing::warn!(path = %self.path.display(), "tracker fsync failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fixed_bytes() {
        let h = encode_header(0x0102_0304_0506, 9);
        let mut want = [0u8; 64];
        want[..36].copy_from_slice(&[
            b'F', b'R', b'Y', b'T', b'R', b'A', b'C', b'K', 0x00, 0x01, 0x00, 0x10, 0x00, 0x01,
            0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0, 0, 0, 0, 0, 0, 0, 9,
            0xee, 0x09, 0x14, 0x7a,
        ]);
        assert_eq!(h, want);
        assert_eq!(header_problem(&h), None);
    }

    #[test]
    fn zero_blocks_hash_to_zero_and_data_never_does() {
        assert_eq!(block_hash(&[0u8; 65536]), ZERO_HASH);
        assert_eq!(block_hash(&[0u8; 100]), ZERO_HASH);
        assert_eq!(block_hash(&vec![0u8; 3 * 65536]), ZERO_HASH);
        let mut last_byte_set = vec![0u8; 65536];
        last_byte_set[65535] = 1;
        assert_ne!(block_hash(&last_byte_set), ZERO_HASH);
        assert_ne!(block_hash(&[1u8; 65536]), ZERO_HASH);
        assert_ne!(block_hash(b"a"), block_hash(b"b"));
    }

    #[test]
    fn new_tracker_is_all_zero_and_sized_to_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tracker::open(&dir.path().join("t"), 3 * BLOCK_SIZE + 5).unwrap();
        assert_eq!(t.blocks(), 4);
        let mut h = [[9u8; 16]; 4];
        t.read_hashes(0, &mut h).unwrap();
        assert!(h.iter().all(|x| *x == ZERO_HASH));
        let len = std::fs::metadata(dir.path().join("t")).unwrap().len();
        assert_eq!(len, 64 + 4 * 16);
    }

    #[test]
    fn records_survive_reopen_and_resizing_keeps_what_still_applies() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        let t = Tracker::open(&p, 4 * BLOCK_SIZE + 10).unwrap();
        t.record(1, &[[1; 16], [2; 16]]).unwrap();
        t.record(4, &[[5; 16]]).unwrap();
        t.set_acked_seq(17).unwrap();
        t.sync().unwrap();
        drop(t);
        let t = Tracker::open(&p, 4 * BLOCK_SIZE + 10).unwrap();
        assert_eq!(t.acked_seq(), 17);
        let mut h = [ZERO_HASH; 5];
        t.read_hashes(0, &mut h).unwrap();
        assert_eq!(h, [ZERO_HASH, [1; 16], [2; 16], ZERO_HASH, [5; 16]]);
        assert_eq!(t.count_data_blocks().unwrap(), 3);
        drop(t);
        // grows: the partial last block is forgotten, new blocks are zero
        let t = Tracker::open(&p, 8 * BLOCK_SIZE).unwrap();
        let mut h = [[7u8; 16]; 8];
        t.read_hashes(0, &mut h).unwrap();
        assert_eq!(
            &h[..5],
            &[ZERO_HASH, [1; 16], [2; 16], ZERO_HASH, ZERO_HASH]
        );
        assert!(h[5..].iter().all(|x| *x == ZERO_HASH));
        drop(t);
        // shrinks
        let t = Tracker::open(&p, 2 * BLOCK_SIZE).unwrap();
        assert_eq!(t.blocks(), 2);
        assert!(t.record(2, &[[1; 16]]).is_err());
    }

    #[test]
    fn damaged_header_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        let t = Tracker::open(&p, 2 * BLOCK_SIZE).unwrap();
        t.record(0, &[[3; 16]]).unwrap();
        t.set_acked_seq(4).unwrap();
        drop(t);
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.write_all_at(&[0xff], 20).unwrap();
        drop(f);
        let t = Tracker::open(&p, 2 * BLOCK_SIZE).unwrap();
        assert_eq!(t.acked_seq(), 0);
        assert_eq!(t.count_data_blocks().unwrap(), 0);
    }

    #[test]
    fn reset_forgets_everything() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tracker::open(&dir.path().join("t"), 2 * BLOCK_SIZE).unwrap();
        t.record(0, &[[3; 16], [4; 16]]).unwrap();
        t.set_acked_seq(4).unwrap();
        t.reset().unwrap();
        assert_eq!(t.acked_seq(), 0);
        assert_eq!(t.count_data_blocks().unwrap(), 0);
    }
}
