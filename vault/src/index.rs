//! Index objects: where each chunk lives.
//!
//! ## `index/<32 hex random>`: sealed envelope (magic `FYIX`) around
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | entry count n (u32, big-endian) |
//! | 4 + 60·i | 32 | chunk id |
//! | +32 | 16 | pack id |
//! | +48 | 8  | offset of the sealed chunk in the pack (u64) |
//! | +56 | 4  | length of the sealed chunk (u32) |

use std::collections::HashMap;

use crate::codec::{DecodeError, DecodeResult, Reader, Writer};
use crate::{ChunkId, VaultError};

pub(crate) const INDEX_MAGIC: [u8; 4] = *b"FYIX";
const INDEX_ENTRY_LEN: usize = 60;

/// A pack's random 128-bit name.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct PackId(pub [u8; 16]);

impl PackId {
    pub(crate) fn random() -> Self {
        PackId(rand::random())
    }
    /// 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    /// Parses exactly 32 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 16];
        if s.len() != 32 {
            return None;
        }
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(PackId(out))
    }
    /// `packs/<first 2 hex>/<32 hex>`; the fan-out keeps listings of one prefix short.
    pub fn object_name(&self) -> String {
        let h = self.to_hex();
        format!("packs/{}/{}", &h[..2], h)
    }
}

/// One chunk's place, as handed to the uploader and written into index objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub chunk: ChunkId,
    /// Pack id, 32 hex digits.
    pub pack: String,
    pub offset: u64,
    pub length: u32,
}

/// Where a chunk is, in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub pack: PackId,
    pub offset: u64,
    pub length: u32,
}

/// All known chunks. The first location recorded for a chunk wins: duplicates (two packs
/// holding the same chunk after a retry) are equally valid.
#[derive(Clone, Debug, Default)]
pub struct ChunkIndex {
    map: HashMap<ChunkId, Location>,
}

impl ChunkIndex {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.map.contains_key(id)
    }
    pub fn get(&self, id: &ChunkId) -> Option<&Location> {
        self.map.get(id)
    }
    /// Returns false when the chunk was already known (the old location is kept).
    pub fn insert(&mut self, id: ChunkId, loc: Location) -> bool {
        match self.map.entry(id) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(loc);
                true
            }
        }
    }
    /// Inserts an uploader entry; fails on a malformed pack id.
    pub fn insert_entry(&mut self, e: &IndexEntry) -> Result<bool, VaultError> {
        let pack = PackId::from_hex(&e.pack).ok_or_else(|| {
            VaultError::format("index entry", format!("bad pack id {:?}", e.pack))
        })?;
        Ok(self.insert(
            e.chunk,
            Location {
                pack,
                offset: e.offset,
                length: e.length,
            },
        ))
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&ChunkId, &Location)> {
        self.map.iter()
    }
}

pub(crate) fn encode_index_plain(entries: &[IndexEntry]) -> Result<Vec<u8>, VaultError> {
    let count = u32::try_from(entries.len())
        .map_err(|_| VaultError::format("index", "too many entries for one index object"))?;
    let mut w = Writer::with_capacity(4 + entries.len() * INDEX_ENTRY_LEN);
    w.u32(count);
    for e in entries {
        let pack = PackId::from_hex(&e.pack)
            .ok_or_else(|| VaultError::format("index", format!("bad pack id {:?}", e.pack)))?;
        w.bytes(&e.chunk);
        w.bytes(&pack.0);
        w.u64(e.offset);
        w.u32(e.length);
    }
    Ok(w.buf)
}

pub(crate) fn decode_index_plain(plain: &[u8]) -> DecodeResult<Vec<IndexEntry>> {
    let mut r = Reader::new(plain);
    let n = r.count(INDEX_ENTRY_LEN)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let chunk = r.array::<32>()?;
        let pack = PackId(r.array::<16>()?);
        let offset = r.u64()?;
        let length = r.u32()?;
        if offset.checked_add(u64::from(length)).is_none() {
            return Err(DecodeError::new("index entry range overflows"));
        }
        out.push(IndexEntry {
            chunk,
            pack: pack.to_hex(),
            offset,
            length,
        });
    }
    r.expect_end()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<IndexEntry> {
        vec![
            IndexEntry {
                chunk: [0xaa; 32],
                pack: "00112233445566778899aabbccddeeff".into(),
                offset: 0,
                length: 100,
            },
            IndexEntry {
                chunk: [0xbb; 32],
                pack: "00112233445566778899aabbccddeeff".into(),
                offset: 100,
                length: 0x0102_0304,
            },
        ]
    }

    #[test]
    fn index_plain_fixed_bytes() {
        let bytes = encode_index_plain(&sample()[..1]).unwrap();
        assert_eq!(
            hex::encode(&bytes),
            concat!(
                "00000001",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "00112233445566778899aabbccddeeff",
                "0000000000000000",
                "00000064"
            )
        );
        assert_eq!(decode_index_plain(&bytes).unwrap(), sample()[..1]);
    }

    #[test]
    fn index_round_trip_and_bad_input() {
        let bytes = encode_index_plain(&sample()).unwrap();
        assert_eq!(decode_index_plain(&bytes).unwrap(), sample());
        for cut in 0..bytes.len() {
            assert!(decode_index_plain(&bytes[..cut]).is_err(), "cut {cut}");
        }
        let mut huge = bytes.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_index_plain(&huge).is_err());
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(decode_index_plain(&extra).is_err());
        let mut bad = sample();
        bad[0].pack = "xyz".into();
        assert!(encode_index_plain(&bad).is_err());
    }

    #[test]
    fn chunk_index_keeps_first_location() {
        let mut idx = ChunkIndex::new();
        assert!(idx.insert_entry(&sample()[0]).unwrap());
        let mut again = sample()[0].clone();
        again.offset = 999;
        assert!(!idx.insert_entry(&again).unwrap());
        assert_eq!(idx.get(&[0xaa; 32]).unwrap().offset, 0);
        assert!(idx.contains(&[0xaa; 32]));
        assert!(!idx.contains(&[0xbb; 32]));
        assert_eq!(idx.len(), 1);
    }

    #[test]
    fn pack_names() {
        let id = PackId::from_hex("00112233445566778899aabbccddeeff").unwrap();
        assert_eq!(
            id.object_name(),
            "packs/00/00112233445566778899aabbccddeeff"
        );
        assert!(PackId::from_hex("0011").is_none());
        assert!(PackId::from_hex("zz112233445566778899aabbccddeeff").is_none());
        assert_ne!(PackId::random(), PackId::random());
    }
}
