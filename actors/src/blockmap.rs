//! The appliance's current block map of one disk: which vault chunk holds each 64 KiB block as of the
//! uploader's cursor. It lives in a file, not in memory, because a 2 TiB disk has 32 million blocks.
//!
//! ```text
//! offset size field
//! 0      4    magic b"FBMP"
//! 4      1    format version (1)
//! 5      3    reserved, zero
//! 8      8    disk size in bytes (u64 BE)
//! 16     33*n entries, one per block: tag (0 = zero block, 1 = chunk), then the 32-byte chunk id
//!             (all zero for a zero block)
//! ```
//!
//! A file shorter than its header says (a new disk, or one that grew) reads as zero blocks past its end.

use crate::ActorError;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use vault::{BlockRef, ChunkId};

pub const MAGIC: [u8; 4] = *b"FBMP";
pub const VERSION: u8 = 1;
pub const HEADER_LEN: u64 = 16;
pub const ENTRY_LEN: u64 = 33;

#[derive(Debug)]
pub struct BlockMapFile {
    path: PathBuf,
    file: File,
    size_bytes: u64,
}

fn err(what: &str, path: &Path, e: impl std::fmt::Display) -> ActorError {
    ActorError::Cache(format!("block map {what} {}: {e}", path.display()))
}

pub fn encode_entry(r: &BlockRef) -> [u8; 33] {
    let mut e = [0u8; 33];
    if let BlockRef::Chunk(id) = r {
        e[0] = 1;
        e[1..].copy_from_slice(id);
    }
    e
}

pub fn decode_entry(e: &[u8]) -> Result<BlockRef, String> {
    match e[0] {
        0 => Ok(BlockRef::Zero),
        1 => {
            let mut id: ChunkId = [0; 32];
            id.copy_from_slice(&e[1..33]);
            Ok(BlockRef::Chunk(id))
        }
        t => Err(format!("unknown entry tag {t}")),
    }
}

impl BlockMapFile {
    pub fn open(path: &Path, size_bytes: u64) -> Result<BlockMapFile, ActorError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err("create", dir, e))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| err("open", path, e))?;
        let mut header = [0u8; HEADER_LEN as usize];
        let len = file.metadata().map_err(|e| err("stat", path, e))?.len();
        if len >= HEADER_LEN {
            file.read_exact_at(&mut header, 0)
                .map_err(|e| err("read", path, e))?;
            if header[0..4] != MAGIC || header[4] != VERSION {
                return Err(err("check", path, "bad magic or version"));
            }
        }
        header[0..4].copy_from_slice(&MAGIC);
        header[4] = VERSION;
        header[8..16].copy_from_slice(&size_bytes.to_be_bytes());
        file.write_all_at(&header, 0)
            .map_err(|e| err("write", path, e))?;
        Ok(BlockMapFile {
            path: path.to_path_buf(),
            file,
            size_bytes,
        })
    }

    pub fn blocks(&self) -> u64 {
        self.size_bytes.div_ceil(vault::BLOCK_SIZE as u64)
    }

    pub fn set(&self, block: u64, r: &BlockRef) -> Result<(), ActorError> {
        self.file
            .write_all_at(&encode_entry(r), HEADER_LEN + block * ENTRY_LEN)
            .map_err(|e| err("write", &self.path, e))
    }

    pub fn sync(&self) -> Result<(), ActorError> {
        self.file
            .sync_data()
            .map_err(|e| err("fsync", &self.path, e))
    }

    /// The whole map, for a full manifest.
    pub fn read_all(&self) -> Result<Vec<BlockRef>, ActorError> {
        let n = self.blocks();
        let mut out = Vec::with_capacity(n as usize);
        let mut f = BufReader::with_capacity(1 << 20, &self.file);
        let mut skip = [0u8; HEADER_LEN as usize];
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0))
            .map_err(|e| err("seek", &self.path, e))?;
        f.read_exact(&mut skip)
            .map_err(|e| err("read", &self.path, e))?;
        let mut e = [0u8; ENTRY_LEN as usize];
        for _ in 0..n {
            match f.read_exact(&mut e) {
                Ok(()) => out.push(decode_entry(&e).map_err(|m| err("decode", &self.path, m))?),
                // Past the end of the file: blocks never written are zero.
                Err(x) if x.kind() == std::io::ErrorKind::UnexpectedEof => out.push(BlockRef::Zero),
                Err(x) => return Err(err("read", &self.path, x)),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_bytes_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.map");
        let m = BlockMapFile::open(&p, 3 * 65536 + 1).unwrap();
        assert_eq!(m.blocks(), 4);
        m.set(1, &BlockRef::Chunk([0xab; 32])).unwrap();
        m.sync().unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(
            &bytes[..16],
            &[b'F', b'B', b'M', b'P', 1, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 1]
        );
        assert_eq!(bytes[16..49], [0u8; 33]);
        assert_eq!(bytes[49], 1);
        assert_eq!(bytes[50..82], [0xab; 32]);
        drop(m);
        let m = BlockMapFile::open(&p, 3 * 65536 + 1).unwrap();
        assert_eq!(
            m.read_all().unwrap(),
            vec![
                BlockRef::Zero,
                BlockRef::Chunk([0xab; 32]),
                BlockRef::Zero,
                BlockRef::Zero
            ]
        );
    }

    #[test]
    fn bad_header_and_entry_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.map");
        std::fs::write(&p, b"XXXXXXXXXXXXXXXXXXXX").unwrap();
        assert!(BlockMapFile::open(&p, 65536).is_err());
        assert!(decode_entry(&[7u8; 33]).is_err());
    }
}
