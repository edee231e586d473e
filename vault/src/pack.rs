//! Packs: many sealed chunks in one object, with a sealed footer that lists them.
//!
//! ## `packs/<2 hex>/<pack id hex>`
//!
//! ```text
//! +-------------------+  offset 0
//! | sealed chunk 0    |  (layout in `chunk`)
//! | sealed chunk 1    |
//! | ...               |
//! +-------------------+  footer offset F
//! | sealed footer     |  envelope, magic FYPF, bound to the pack's object name
//! +-------------------+  pack length - 24
//! | trailer           |  24 bytes, clear
//! +-------------------+
//! ```
//!
//! Footer plaintext: u32 count n, then n × { chunk id (32), offset (u64), length (u32) }.
//!
//! Trailer (big-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0  | 4 | magic `b"FYPT"` |
//! | 4  | 1 | format version (1) |
//! | 5  | 3 | reserved, 0 |
//! | 8  | 8 | footer offset F |
//! | 16 | 4 | footer length |
//! | 20 | 4 | chunk count n |
//!
//! The footer makes each pack self-describing: lost or damaged index objects can be rebuilt
//! from the packs alone.

use std::sync::Arc;

use bytes::Bytes;

use crate::chunk::VaultKeys;
use crate::codec::{DecodeError, DecodeResult, Reader, Writer};
use crate::crypto::{random_nonce, seal_envelope, FORMAT_VERSION, NONCE_LEN};
use crate::index::{IndexEntry, PackId};
use crate::ChunkId;

pub(crate) const FOOTER_MAGIC: [u8; 4] = *b"FYPF";
pub(crate) const TRAILER_MAGIC: [u8; 4] = *b"FYPT";
pub(crate) const TRAILER_LEN: usize = 24;
const FOOTER_ENTRY_LEN: usize = 44;

/// Collects sealed chunks for one pack. Not thread-safe by design: one writer per uploader lane.
pub struct PackWriter {
    keys: Arc<VaultKeys>,
    id: PackId,
    /// The pack's bytes so far, as shared slices: a chunk sealed into a larger buffer is not copied again.
    parts: Vec<Bytes>,
    len: usize,
    entries: Vec<(ChunkId, u64, u32)>,
}

impl PackWriter {
    pub(crate) fn new(keys: Arc<VaultKeys>) -> Self {
        PackWriter {
            keys,
            id: PackId::random(),
            parts: Vec::new(),
            len: 0,
            entries: Vec::new(),
        }
    }

    /// Appends one chunk as returned by `Vault::seal_chunk` (copied).
    pub fn add(&mut self, id: ChunkId, sealed: &[u8]) {
        self.add_sealed(id, Bytes::copy_from_slice(sealed));
    }

    /// Appends one sealed chunk without copying it, e.g. a slice of a buffer `Vault::seal_chunk_into`
    /// filled.
    pub fn add_sealed(&mut self, id: ChunkId, sealed: Bytes) {
        // A sealed chunk is at most BLOCK_SIZE + lz4 worst case + 56 bytes.
        self.entries
            .push((id, self.len as u64, sealed.len() as u32));
        self.len += sealed.len();
        self.parts.push(sealed);
    }

    /// Bytes of chunk data so far (the footer adds about 44 bytes per chunk).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn chunk_count(&self) -> usize {
        self.entries.len()
    }

    /// Seals the footer and appends the trailer.
    pub fn finish(self) -> FinishedPack {
        let nonce = random_nonce();
        self.finish_with_nonce(nonce)
    }

    pub(crate) fn finish_with_nonce(mut self, nonce: [u8; NONCE_LEN]) -> FinishedPack {
        let name = self.id.object_name();
        let footer_plain = encode_footer_plain(&self.entries);
        let footer = seal_envelope(&self.keys.cipher, FOOTER_MAGIC, &name, &footer_plain, nonce);
        let footer_offset = self.len as u64;
        let mut tail = footer.clone();
        tail.extend_from_slice(&encode_trailer(
            footer_offset,
            footer.len() as u32,
            self.entries.len() as u32,
        ));
        self.len += tail.len();
        self.parts.push(Bytes::from(tail));
        let pack_hex = self.id.to_hex();
        let entries = self
            .entries
            .iter()
            .map(|(chunk, offset, length)| IndexEntry {
                chunk: *chunk,
                pack: pack_hex.clone(),
                offset: *offset,
                length: *length,
            })
            .collect();
        FinishedPack {
            id: self.id,
            parts: self.parts,
            size: self.len,
            entries,
        }
    }
}

/// A complete pack object, ready for `Vault::put_pack`. Cloning is cheap (shared bytes),
/// so a caller can keep a copy to retry an upload.
#[derive(Clone)]
pub struct FinishedPack {
    pub(crate) id: PackId,
    /// The pack's bytes in order (chunks, then footer and trailer), written as one object.
    pub(crate) parts: Vec<Bytes>,
    pub(crate) size: usize,
    pub(crate) entries: Vec<IndexEntry>,
}

impl FinishedPack {
    /// Pack id, 32 hex digits.
    pub fn id_hex(&self) -> String {
        self.id.to_hex()
    }
    pub fn object_name(&self) -> String {
        self.id.object_name()
    }
    /// Object size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }
    /// The whole pack in one buffer (a copy; the upload itself writes the parts).
    pub fn to_bytes(&self) -> Bytes {
        let mut all = Vec::with_capacity(self.size);
        for p in &self.parts {
            all.extend_from_slice(p);
        }
        Bytes::from(all)
    }
    /// The index entries `put_pack` will return.
    pub fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }
}

fn encode_footer_plain(entries: &[(ChunkId, u64, u32)]) -> Vec<u8> {
    let mut w = Writer::with_capacity(4 + entries.len() * FOOTER_ENTRY_LEN);
    w.u32(entries.len() as u32);
    for (id, offset, length) in entries {
        w.bytes(id);
        w.u64(*offset);
        w.u32(*length);
    }
    w.buf
}

/// Decodes a footer's plaintext; every chunk must lie before the footer.
pub(crate) fn decode_footer_plain(
    plain: &[u8],
    footer_offset: u64,
) -> DecodeResult<Vec<(ChunkId, u64, u32)>> {
    let mut r = Reader::new(plain);
    let n = r.count(FOOTER_ENTRY_LEN)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let id = r.array::<32>()?;
        let offset = r.u64()?;
        let length = r.u32()?;
        match offset.checked_add(u64::from(length)) {
            Some(end) if end <= footer_offset => out.push((id, offset, length)),
            _ => {
                return Err(DecodeError::new(format!(
                    "footer entry {offset}+{length} runs past the footer at {footer_offset}"
                )))
            }
        }
    }
    r.expect_end()?;
    Ok(out)
}

fn encode_trailer(footer_offset: u64, footer_len: u32, count: u32) -> [u8; TRAILER_LEN] {
    let mut w = Writer::with_capacity(TRAILER_LEN);
    w.bytes(&TRAILER_MAGIC);
    w.u8(FORMAT_VERSION);
    w.bytes(&[0, 0, 0]);
    w.u64(footer_offset);
    w.u32(footer_len);
    w.u32(count);
    let mut out = [0u8; TRAILER_LEN];
    out.copy_from_slice(&w.buf);
    out
}

/// Where the footer is, per the trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PackTrailer {
    pub(crate) footer_offset: u64,
    pub(crate) footer_len: u32,
    pub(crate) chunk_count: u32,
}

/// Decodes the last [`TRAILER_LEN`] bytes of a pack of `pack_len` bytes.
pub(crate) fn decode_trailer(bytes: &[u8], pack_len: u64) -> DecodeResult<PackTrailer> {
    if bytes.len() != TRAILER_LEN {
        return Err(DecodeError::new(format!(
            "trailer is {} bytes",
            bytes.len()
        )));
    }
    let mut r = Reader::new(bytes);
    if r.array::<4>()? != TRAILER_MAGIC {
        return Err(DecodeError::new("bad pack trailer magic"));
    }
    let version = r.u8()?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::new(format!(
            "unsupported pack version {version}"
        )));
    }
    let _reserved = r.array::<3>()?;
    let t = PackTrailer {
        footer_offset: r.u64()?,
        footer_len: r.u32()?,
        chunk_count: r.u32()?,
    };
    let end = t
        .footer_offset
        .checked_add(u64::from(t.footer_len))
        .and_then(|e| e.checked_add(TRAILER_LEN as u64));
    if end != Some(pack_len) {
        return Err(DecodeError::new(format!(
            "trailer places the footer at {}+{} in a pack of {pack_len} bytes",
            t.footer_offset, t.footer_len
        )));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::tests_support::test_keys;
    use crate::crypto::open_envelope;

    #[test]
    fn trailer_fixed_bytes() {
        let t = encode_trailer(0x0102, 0x30, 2);
        assert_eq!(
            hex::encode(t),
            concat!(
                "46595054",
                "01",
                "000000",
                "0000000000000102",
                "00000030",
                "00000002"
            )
        );
        assert_eq!(
            decode_trailer(&t, 0x0102 + 0x30 + 24).unwrap(),
            PackTrailer {
                footer_offset: 0x0102,
                footer_len: 0x30,
                chunk_count: 2
            }
        );
        assert!(decode_trailer(&t, 1000).is_err());
        assert!(decode_trailer(&t[..23], 0x14a).is_err());
        let mut bad = t;
        bad[4] = 7;
        assert!(decode_trailer(&bad, 0x14a)
            .unwrap_err()
            .0
            .contains("version"));
        let mut huge = t;
        huge[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(decode_trailer(&huge, 0x14a).is_err());
    }

    #[test]
    fn footer_plain_fixed_bytes() {
        let plain = encode_footer_plain(&[([0xcc; 32], 7, 9)]);
        assert_eq!(
            hex::encode(&plain),
            concat!(
                "00000001",
                "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc",
                "0000000000000007",
                "00000009"
            )
        );
        assert_eq!(
            decode_footer_plain(&plain, 16).unwrap(),
            vec![([0xcc; 32], 7, 9)]
        );
        assert!(
            decode_footer_plain(&plain, 15).is_err(),
            "entry past the footer"
        );
        for cut in 0..plain.len() {
            assert!(decode_footer_plain(&plain[..cut], 100).is_err());
        }
    }

    #[test]
    fn pack_layout_is_chunks_footer_trailer() {
        let keys = Arc::new(test_keys());
        let mut w = PackWriter::new(keys.clone());
        let a = keys.seal_chunk(&keys.chunk_id(b"a"), b"a");
        let b = keys.seal_chunk(&keys.chunk_id(b"bb"), b"bb");
        w.add(keys.chunk_id(b"a"), &a);
        w.add(keys.chunk_id(b"bb"), &b);
        assert_eq!(w.len(), a.len() + b.len());
        assert_eq!(w.chunk_count(), 2);
        let pack = w.finish_with_nonce([0x77; NONCE_LEN]);
        let bytes = &pack.to_bytes();
        assert_eq!(bytes.len(), pack.size());
        assert_eq!(&bytes[..a.len()], &a[..]);
        assert_eq!(&bytes[a.len()..a.len() + b.len()], &b[..]);
        let t = decode_trailer(&bytes[bytes.len() - TRAILER_LEN..], bytes.len() as u64).unwrap();
        assert_eq!(t.footer_offset as usize, a.len() + b.len());
        assert_eq!(t.chunk_count, 2);
        let footer = &bytes[t.footer_offset as usize..bytes.len() - TRAILER_LEN];
        let plain = open_envelope(&keys.cipher, FOOTER_MAGIC, &pack.object_name(), footer).unwrap();
        let listed = decode_footer_plain(&plain, t.footer_offset).unwrap();
        assert_eq!(
            listed[1],
            (keys.chunk_id(b"bb"), a.len() as u64, b.len() as u32)
        );
        assert_eq!(pack.entries()[1].offset, a.len() as u64);
        assert_eq!(pack.entries()[1].pack, pack.id_hex());
        // The footer is bound to this pack's name.
        assert!(open_envelope(&keys.cipher, FOOTER_MAGIC, "packs/00/other", footer).is_err());
    }
}
