//! Machine descriptors and point manifests.
//!
//! ## `machines/<machine id>`: sealed envelope (magic `FYMD`) around a JSON document
//! (`{"machine_id": .., "name": .., "disks": [{"disk_id", "size_bytes", "label"}]}`).
//!
//! ## `points/<machine id>/<point id>`: sealed envelope (magic `FYPM`) around
//! (big-endian; `str` = u16 length + UTF-8):
//!
//! | field | encoding |
//! |---|---|
//! | machine id | str |
//! | point id | str |
//! | parent | u8 0 = none, 1 = present, then str |
//! | kind | u8 0 = crash-consistent, 1 = app-consistent |
//! | bookmark id | u64 |
//! | created | u64, Unix milliseconds |
//! | disk count | u32 |
//! | per disk: disk id | str |
//! | size in bytes | u64 |
//! | sequence number | u64 |
//! | map kind | u8 0 = full, 1 = delta |
//! | map length L | u64, bytes of the map that follows (lets summaries skip maps) |
//! | map | L bytes, below |
//!
//! Full map: u64 block count B (= ceil(size / 64 KiB)), then items until B blocks are covered:
//! `0x00` + u32 run length (a run of zero blocks, >= 1), or `0x01` + 32-byte chunk id.
//!
//! Delta map: u64 entry count, then entries { u64 block index, u8 tag (0 zero, 1 chunk),
//! 32-byte chunk id when tag = 1 }, block indexes strictly increasing and below B.

use serde::{Deserialize, Serialize};

use crate::codec::{DecodeError, DecodeResult, Reader, Writer};
use crate::{BlockRef, VaultError, BLOCK_SIZE};

pub(crate) const MACHINE_MAGIC: [u8; 4] = *b"FYMD";
pub(crate) const POINT_MAGIC: [u8; 4] = *b"FYPM";

/// Largest disk a manifest may describe (64 TiB, above VMDK's 62 TiB limit): 2^30 blocks.
pub const MAX_DISK_BYTES: u64 = 64 << 40;
pub(crate) const MAX_DISK_BLOCKS: u64 = MAX_DISK_BYTES / BLOCK_SIZE as u64;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskDescriptor {
    pub disk_id: String,
    pub size_bytes: u64,
    pub label: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineDescriptor {
    pub machine_id: String,
    pub name: String,
    pub disks: Vec<DiskDescriptor>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PointKind {
    Crash,
    App,
}

/// A disk's block map in one point: complete, or the blocks changed since the parent point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskMap {
    /// One entry per block, `ceil(size_bytes / BLOCK_SIZE)` entries.
    Full(Vec<BlockRef>),
    /// (block index, new content), indexes strictly increasing.
    Delta(Vec<(u64, BlockRef)>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskPoint {
    pub disk_id: String,
    pub size_bytes: u64,
    /// The agent's sequence number this disk's state corresponds to.
    pub seq: u64,
    pub map: DiskMap,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PointManifest {
    pub machine_id: String,
    pub point_id: String,
    /// The point this one's delta maps apply to.
    pub parent: Option<String>,
    pub kind: PointKind,
    pub bookmark_id: u64,
    pub created_unix_ms: u64,
    pub disks: Vec<DiskPoint>,
}

/// What listing shows of a point, without its block maps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointSummary {
    pub machine_id: String,
    pub point_id: String,
    pub kind: PointKind,
    pub created_unix_ms: u64,
    /// (disk id, size in bytes)
    pub disks: Vec<(String, u64)>,
}

/// Number of blocks of a disk of `size` bytes.
pub fn block_count(size: u64) -> u64 {
    size.div_ceil(BLOCK_SIZE as u64)
}

/// Ids become object-name segments: keep them to a safe, listable alphabet.
pub(crate) fn validate_id(what: &str, id: &str) -> Result<(), VaultError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(VaultError::format(
            what,
            format!("{id:?} is not a valid id (1-128 of A-Z a-z 0-9 - _ ., not starting with '.')"),
        ))
    }
}

pub(crate) fn machine_object(machine_id: &str) -> Result<String, VaultError> {
    validate_id("machine id", machine_id)?;
    Ok(format!("machines/{machine_id}"))
}

pub(crate) fn point_object(machine_id: &str, point_id: &str) -> Result<String, VaultError> {
    validate_id("machine id", machine_id)?;
    validate_id("point id", point_id)?;
    Ok(format!("points/{machine_id}/{point_id}"))
}

/// Checks what the decoder would refuse, so a bad manifest fails at `put_point`, not at restore.
pub(crate) fn validate_point(p: &PointManifest, object: &str) -> Result<(), VaultError> {
    let bad = |reason: String| VaultError::format(object, reason);
    if let Some(parent) = &p.parent {
        validate_id("parent point id", parent)?;
        if parent == &p.point_id {
            return Err(bad("a point cannot be its own parent".into()));
        }
    }
    for d in &p.disks {
        validate_id("disk id", &d.disk_id)?;
        if d.size_bytes > MAX_DISK_BYTES {
            return Err(bad(format!("disk {} is larger than 64 TiB", d.disk_id)));
        }
        let blocks = block_count(d.size_bytes);
        match &d.map {
            DiskMap::Full(map) if map.len() as u64 != blocks => {
                return Err(bad(format!(
                    "disk {}: full map has {} blocks, size {} needs {blocks}",
                    d.disk_id,
                    map.len(),
                    d.size_bytes
                )))
            }
            DiskMap::Full(_) => {}
            DiskMap::Delta(entries) => {
                if p.parent.is_none() {
                    return Err(bad(format!(
                        "disk {}: delta map without a parent",
                        d.disk_id
                    )));
                }
                let mut prev: Option<u64> = None;
                for (index, _) in entries {
                    if *index >= blocks || prev.is_some_and(|p| p >= *index) {
                        return Err(bad(format!(
                            "disk {}: delta block {index} out of order or beyond {blocks} blocks",
                            d.disk_id
                        )));
                    }
                    prev = Some(*index);
                }
            }
        }
    }
    let mut ids: Vec<&str> = p.disks.iter().map(|d| d.disk_id.as_str()).collect();
    ids.sort_unstable();
    if ids.windows(2).any(|w| w[0] == w[1]) {
        return Err(bad("duplicate disk id".into()));
    }
    Ok(())
}

fn encode_full_map(w: &mut Writer, map: &[BlockRef]) {
    w.u64(map.len() as u64);
    let mut i = 0;
    while i < map.len() {
        match map[i] {
            BlockRef::Chunk(id) => {
                w.u8(1);
                w.bytes(&id);
                i += 1;
            }
            BlockRef::Zero => {
                let run = map[i..]
                    .iter()
                    .take(u32::MAX as usize)
                    .take_while(|b| **b == BlockRef::Zero)
                    .count();
                w.u8(0);
                w.u32(run as u32);
                i += run;
            }
        }
    }
}

fn encode_delta_map(w: &mut Writer, entries: &[(u64, BlockRef)]) {
    w.u64(entries.len() as u64);
    for (index, block) in entries {
        w.u64(*index);
        match block {
            BlockRef::Zero => w.u8(0),
            BlockRef::Chunk(id) => {
                w.u8(1);
                w.bytes(id);
            }
        }
    }
}

/// Encodes a manifest already checked by [`validate_point`].
pub(crate) fn encode_point_plain(p: &PointManifest) -> Result<Vec<u8>, DecodeError> {
    let mut w = Writer::default();
    w.str(&p.machine_id)?;
    w.str(&p.point_id)?;
    match &p.parent {
        None => w.u8(0),
        Some(parent) => {
            w.u8(1);
            w.str(parent)?;
        }
    }
    w.u8(match p.kind {
        PointKind::Crash => 0,
        PointKind::App => 1,
    });
    w.u64(p.bookmark_id);
    w.u64(p.created_unix_ms);
    w.u32(p.disks.len() as u32);
    for d in &p.disks {
        w.str(&d.disk_id)?;
        w.u64(d.size_bytes);
        w.u64(d.seq);
        let mut map = Writer::default();
        match &d.map {
            DiskMap::Full(m) => {
                w.u8(0);
                encode_full_map(&mut map, m);
            }
            DiskMap::Delta(e) => {
                w.u8(1);
                encode_delta_map(&mut map, e);
            }
        }
        w.u64(map.buf.len() as u64);
        w.bytes(&map.buf);
    }
    Ok(w.buf)
}

fn decode_block_ref(r: &mut Reader<'_>) -> DecodeResult<BlockRef> {
    match r.u8()? {
        0 => Ok(BlockRef::Zero),
        1 => Ok(BlockRef::Chunk(r.array()?)),
        t => Err(DecodeError::new(format!("unknown block tag {t}"))),
    }
}

fn decode_full_map(
    r: &mut Reader<'_>,
    blocks: u64,
    max_blocks: u64,
) -> DecodeResult<Vec<BlockRef>> {
    let count = r.u64()?;
    if count != blocks {
        return Err(DecodeError::new(format!(
            "full map has {count} blocks, disk size needs {blocks}"
        )));
    }
    if count > max_blocks {
        return Err(DecodeError::new(format!(
            "full map of {count} blocks is too large"
        )));
    }
    // Grows with the data present; a forged count cannot reserve memory up front.
    let mut map = Vec::with_capacity((count as usize).min(r.remaining()));
    while (map.len() as u64) < count {
        match r.u8()? {
            0 => {
                let run = u64::from(r.u32()?);
                if run == 0 || map.len() as u64 + run > count {
                    return Err(DecodeError::new(format!(
                        "zero run of {run} blocks does not fit"
                    )));
                }
                map.resize(map.len() + run as usize, BlockRef::Zero);
            }
            1 => map.push(BlockRef::Chunk(r.array()?)),
            t => return Err(DecodeError::new(format!("unknown block tag {t}"))),
        }
    }
    Ok(map)
}

fn decode_delta_map(r: &mut Reader<'_>, blocks: u64) -> DecodeResult<Vec<(u64, BlockRef)>> {
    let count = r.u64()?;
    if count > (r.remaining() / 9) as u64 {
        return Err(DecodeError::new(format!(
            "delta count {count} exceeds the data"
        )));
    }
    let mut entries = Vec::with_capacity(count as usize);
    let mut prev: Option<u64> = None;
    for _ in 0..count {
        let index = r.u64()?;
        if index >= blocks || prev.is_some_and(|p| p >= index) {
            return Err(DecodeError::new(format!(
                "delta block {index} out of order or beyond {blocks} blocks"
            )));
        }
        prev = Some(index);
        entries.push((index, decode_block_ref(r)?));
    }
    Ok(entries)
}

struct Header {
    machine_id: String,
    point_id: String,
    parent: Option<String>,
    kind: PointKind,
    bookmark_id: u64,
    created_unix_ms: u64,
    disk_count: usize,
}

fn decode_header(r: &mut Reader<'_>) -> DecodeResult<Header> {
    let machine_id = r.str()?;
    let point_id = r.str()?;
    let parent = match r.u8()? {
        0 => None,
        1 => Some(r.str()?),
        t => return Err(DecodeError::new(format!("bad parent flag {t}"))),
    };
    let kind = match r.u8()? {
        0 => PointKind::Crash,
        1 => PointKind::App,
        t => return Err(DecodeError::new(format!("unknown point kind {t}"))),
    };
    Ok(Header {
        machine_id,
        point_id,
        parent,
        kind,
        bookmark_id: r.u64()?,
        created_unix_ms: r.u64()?,
        // A disk entry takes at least 2 + 8 + 8 + 1 + 8 bytes.
        disk_count: r.count(27)?,
    })
}

/// One disk's fixed fields and the raw bytes of its map.
fn decode_disk_head<'a>(r: &mut Reader<'a>) -> DecodeResult<(String, u64, u64, u8, &'a [u8])> {
    let disk_id = r.str()?;
    let size = r.u64()?;
    if size > MAX_DISK_BYTES {
        return Err(DecodeError::new(format!(
            "disk size {size} exceeds the limit"
        )));
    }
    let seq = r.u64()?;
    let map_kind = r.u8()?;
    let len = r.u64()?;
    let len = usize::try_from(len).map_err(|_| DecodeError::new("map length overflows"))?;
    Ok((disk_id, size, seq, map_kind, r.take(len)?))
}

/// Decodes a manifest; `max_blocks` bounds the expanded size of any full map.
pub(crate) fn decode_point_plain(plain: &[u8], max_blocks: u64) -> DecodeResult<PointManifest> {
    let mut r = Reader::new(plain);
    let h = decode_header(&mut r)?;
    let mut disks = Vec::with_capacity(h.disk_count);
    for _ in 0..h.disk_count {
        let (disk_id, size_bytes, seq, map_kind, map_bytes) = decode_disk_head(&mut r)?;
        let blocks = block_count(size_bytes);
        let mut mr = Reader::new(map_bytes);
        let map = match map_kind {
            0 => DiskMap::Full(decode_full_map(&mut mr, blocks, max_blocks)?),
            1 => DiskMap::Delta(decode_delta_map(&mut mr, blocks)?),
            t => return Err(DecodeError::new(format!("unknown map kind {t}"))),
        };
        mr.expect_end()?;
        disks.push(DiskPoint {
            disk_id,
            size_bytes,
            seq,
            map,
        });
    }
    r.expect_end()?;
    Ok(PointManifest {
        machine_id: h.machine_id,
        point_id: h.point_id,
        parent: h.parent,
        kind: h.kind,
        bookmark_id: h.bookmark_id,
        created_unix_ms: h.created_unix_ms,
        disks,
    })
}

/// Decodes only what listings need, skipping the block maps.
pub(crate) fn decode_point_summary(plain: &[u8]) -> DecodeResult<PointSummary> {
    let mut r = Reader::new(plain);
    let h = decode_header(&mut r)?;
    let mut disks = Vec::with_capacity(h.disk_count);
    for _ in 0..h.disk_count {
        let (disk_id, size, _, _, _) = decode_disk_head(&mut r)?;
        disks.push((disk_id, size));
    }
    r.expect_end()?;
    Ok(PointSummary {
        machine_id: h.machine_id,
        point_id: h.point_id,
        kind: h.kind,
        created_unix_ms: h.created_unix_ms,
        disks,
    })
}

#[cfg(test)]
#[path = "manifest_tests.rs"]
mod tests;
