//! The on-disk record format of the cache's segment files.
//!
//! A segment is a file `seg-<first seq, 20 digits>.log` holding records back to back. Each record:
//!
//! ```text
//! offset size field
//! 0      2    magic b"FC"
//! 2      1    format version (1)
//! 3      1    kind: 1 = extent, 2 = bookmark
//! 4      4    body length n (u32 BE); extents: data length, bookmarks: 1
//! 8      8    seq (u64 BE): the extent's sequence number; for a bookmark the last extent seq before it
//! 16     8    extent: byte offset on the disk; bookmark: bookmark id
//! 24     4    CRC-32 (IEEE) over bytes 0..24 and the body
//! 28     n    body: extent data, or the bookmark kind (0 crash, 1 app)
//! ```
//!
//! A record is trusted only when its CRC matches; a torn tail (a crash mid-write of a record that was never
//! acknowledged) is cut off when the cache is reopened.

use std::io::{self, Read};

pub const MAGIC: [u8; 2] = *b"FC";
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 28;
/// Larger than any extent the wire allows, so a corrupt length cannot make us allocate gigabytes.
pub const MAX_BODY: u32 = 4 * 1024 * 1024;

const KIND_EXTENT: u8 = 1;
const KIND_BOOKMARK: u8 = 2;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Extent {
        seq: u64,
        offset: u64,
        data: bytes::Bytes,
    },
    Bookmark {
        last_seq: u64,
        bookmark_id: u64,
        app_consistent: bool,
    },
}

impl Record {
    /// Bytes this record occupies in a segment.
    pub fn encoded_len(&self) -> u64 {
        HEADER_LEN as u64
            + match self {
                Record::Extent { data, .. } => data.len() as u64,
                Record::Bookmark { .. } => 1,
            }
    }
}

/// Encodes the header of `record`; the body is written separately so extent data is never copied.
pub fn encode_header(record: &Record) -> [u8; HEADER_LEN] {
    let (kind, len, a, b, body): (u8, u32, u64, u64, &[u8]) = match record {
        Record::Extent { seq, offset, data } => {
            (KIND_EXTENT, data.len() as u32, *seq, *offset, data)
        }
        Record::Bookmark {
            last_seq,
            bookmark_id,
            app_consistent,
        } => (
            KIND_BOOKMARK,
            1,
            *last_seq,
            *bookmark_id,
            if *app_consistent { &[1] } else { &[0] },
        ),
    };
    let mut h = [0u8; HEADER_LEN];
    h[0..2].copy_from_slice(&MAGIC);
    h[2] = VERSION;
    h[3] = kind;
    h[4..8].copy_from_slice(&len.to_be_bytes());
    h[8..16].copy_from_slice(&a.to_be_bytes());
    h[16..24].copy_from_slice(&b.to_be_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&h[..24]);
    crc.update(body);
    h[24..28].copy_from_slice(&crc.finalize().to_be_bytes());
    h
}

/// The body bytes of a record (the extent data, or the one bookmark byte).
pub fn body(record: &Record) -> &[u8] {
    match record {
        Record::Extent { data, .. } => data,
        Record::Bookmark { app_consistent, .. } => {
            if *app_consistent {
                &[1]
            } else {
                &[0]
            }
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("segment record: bad magic or version")]
    BadMagic,
    #[error("segment record: unknown kind {0}")]
    UnknownKind(u8),
    #[error("segment record: body length {0} over the limit")]
    TooLarge(u32),
    #[error("segment record: checksum mismatch")]
    Checksum,
    #[error("segment record: truncated")]
    Truncated,
    /// A bookmark whose kind byte is neither 0 (crash) nor 1 (app): written by no version of Ferry.
    #[error("segment record: bookmark kind {0} is neither 0 (crash) nor 1 (app)")]
    BadBookmarkKind(u8),
}

struct Header {
    kind: u8,
    len: u32,
    a: u64,
    b: u64,
    crc: u32,
}

fn parse_header(h: &[u8; HEADER_LEN]) -> Result<Header, RecordError> {
    if h[0..2] != MAGIC || h[2] != VERSION {
        return Err(RecordError::BadMagic);
    }
    let len = u32::from_be_bytes(h[4..8].try_into().expect("4 bytes"));
    if len > MAX_BODY {
        return Err(RecordError::TooLarge(len));
    }
    Ok(Header {
        kind: h[3],
        len,
        a: u64::from_be_bytes(h[8..16].try_into().expect("8 bytes")),
        b: u64::from_be_bytes(h[16..24].try_into().expect("8 bytes")),
        crc: u32::from_be_bytes(h[24..28].try_into().expect("4 bytes")),
    })
}

/// Checks the CRC and builds the record; `body` is the header's `len` bytes.
fn finish_record(
    h: &[u8; HEADER_LEN],
    head: Header,
    body: bytes::Bytes,
) -> Result<Record, RecordError> {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&h[..24]);
    crc.update(&body);
    if crc.finalize() != head.crc {
        return Err(RecordError::Checksum);
    }
    match head.kind {
        KIND_EXTENT => Ok(Record::Extent {
            seq: head.a,
            offset: head.b,
            data: body,
        }),
        KIND_BOOKMARK if head.len == 1 => Ok(Record::Bookmark {
            last_seq: head.a,
            bookmark_id: head.b,
            app_consistent: match body[0] {
                0 => false,
                1 => true,
                other => return Err(RecordError::BadBookmarkKind(other)),
            },
        }),
        other => Err(RecordError::UnknownKind(other)),
    }
}

/// Reads one record. `Ok(None)` means a clean end of the segment; a partial or corrupt record is an error that
/// the caller treats as the end of the valid log.
pub fn read_record<R: Read>(r: &mut R) -> Result<Option<Record>, RecordError> {
    let mut h = [0u8; HEADER_LEN];
    match read_full(r, &mut h) {
        Ok(0) => return Ok(None),
        Ok(n) if n < HEADER_LEN => return Err(RecordError::Truncated),
        Ok(_) => {}
        Err(_) => return Err(RecordError::Truncated),
    }
    let head = parse_header(&h)?;
    // Grown as bytes arrive rather than sized from the header, so a damaged length costs no more
    // memory than the file really holds.
    let mut body = Vec::new();
    match r.take(u64::from(head.len)).read_to_end(&mut body) {
        Ok(n) if n == head.len as usize => {}
        _ => return Err(RecordError::Truncated),
    }
    finish_record(&h, head, body.into()).map(Some)
}

/// Decodes the record starting at `at` in `buf` without copying its body (extent data is a slice of `buf`).
/// Returns the record and its encoded length, or `Ok(None)` when `buf` ends before the record does (the
/// caller read only part of a segment and reads the rest later).
pub fn decode_record(
    buf: &bytes::Bytes,
    at: usize,
) -> Result<Option<(Record, usize)>, RecordError> {
    let Some(h) = buf.get(at..at + HEADER_LEN) else {
        return Ok(None);
    };
    let h: [u8; HEADER_LEN] = h.try_into().expect("header length");
    let head = parse_header(&h)?;
    let end = at + HEADER_LEN + head.len as usize;
    if end > buf.len() {
        return Ok(None);
    }
    let body = buf.slice(at + HEADER_LEN..end);
    finish_record(&h, head, body).map(|r| Some((r, end - at)))
}

fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(r: &Record) -> Vec<u8> {
        let mut v = encode_header(r).to_vec();
        v.extend_from_slice(body(r));
        v
    }

    #[test]
    fn extent_record_fixed_bytes() {
        let r = Record::Extent {
            seq: 7,
            offset: 0x10000,
            data: bytes::Bytes::from_static(b"abcd"),
        };
        let got = encode(&r);
        let mut want = vec![b'F', b'C', 1, 1, 0, 0, 0, 4];
        want.extend_from_slice(&7u64.to_be_bytes());
        want.extend_from_slice(&0x10000u64.to_be_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&want);
        crc.update(b"abcd");
        want.extend_from_slice(&crc.finalize().to_be_bytes());
        want.extend_from_slice(b"abcd");
        assert_eq!(got, want);
        assert_eq!(
            got[24..28],
            [0xbe, 0x29, 0x95, 0xf2],
            "CRC of the pinned sample changed: the layout changed"
        );
        assert_eq!(read_record(&mut &got[..]).unwrap(), Some(r));
    }

    #[test]
    fn decode_record_slices_without_copy_and_detects_damage() {
        let a = Record::Extent {
            seq: 3,
            offset: 0,
            data: bytes::Bytes::from(vec![5u8; 300]),
        };
        let b = Record::Bookmark {
            last_seq: 3,
            bookmark_id: 42,
            app_consistent: false,
        };
        let mut raw = encode(&a);
        raw.extend_from_slice(&encode(&b));
        let buf = bytes::Bytes::from(raw.clone());
        let (got_a, n) = decode_record(&buf, 0).unwrap().unwrap();
        assert_eq!((got_a, n as u64), (a.clone(), a.encoded_len()));
        let (got_b, m) = decode_record(&buf, n).unwrap().unwrap();
        assert_eq!((got_b, m as u64), (b, 29));
        assert_eq!(decode_record(&buf, n + m).unwrap(), None, "clean end");
        // A record cut by the end of the buffer is "not yet", never a record or a panic.
        for cut in [1, 27, 28, 100, n - 1] {
            assert_eq!(
                decode_record(&buf.slice(..cut), 0).unwrap(),
                None,
                "cut at {cut}"
            );
        }
        let mut flipped = raw.clone();
        flipped[40] ^= 0x10;
        assert_eq!(
            decode_record(&bytes::Bytes::from(flipped), 0),
            Err(RecordError::Checksum)
        );
        let mut huge = raw.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            decode_record(&bytes::Bytes::from(huge), 0),
            Err(RecordError::TooLarge(u32::MAX))
        );
        let mut magic = raw;
        magic[1] = 0;
        assert_eq!(
            decode_record(&bytes::Bytes::from(magic), 0),
            Err(RecordError::BadMagic)
        );
        let mut seed = 7u64;
        for _ in 0..200 {
            let junk: Vec<u8> = (0..64)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (seed >> 33) as u8
                })
                .collect();
            let _ = decode_record(&bytes::Bytes::from(junk), 0);
        }
    }

    #[test]
    fn a_bookmark_kind_other_than_crash_or_app_is_refused() {
        let good = encode(&Record::Bookmark {
            last_seq: 5,
            bookmark_id: 6,
            app_consistent: false,
        });
        let mut bad = good;
        bad[HEADER_LEN] = 7;
        // A valid checksum over the bad byte: only the kind check can refuse it.
        let mut crc = crc32fast::Hasher::new();
        crc.update(&bad[..24]);
        crc.update(&bad[HEADER_LEN..]);
        bad[24..28].copy_from_slice(&crc.finalize().to_be_bytes());
        assert_eq!(
            read_record(&mut &bad[..]),
            Err(RecordError::BadBookmarkKind(7))
        );
        assert_eq!(
            decode_record(&bytes::Bytes::from(bad), 0).map(|_| ()),
            Err(RecordError::BadBookmarkKind(7))
        );
    }

    #[test]
    fn bookmark_round_trip() {
        let r = Record::Bookmark {
            last_seq: 99,
            bookmark_id: 1_700_000_000_000,
            app_consistent: true,
        };
        let bytes = encode(&r);
        assert_eq!(bytes.len() as u64, r.encoded_len());
        assert_eq!(read_record(&mut &bytes[..]).unwrap(), Some(r));
    }

    #[test]
    fn bad_records_are_errors() {
        let r = Record::Extent {
            seq: 1,
            offset: 0,
            data: bytes::Bytes::from(vec![9u8; 100]),
        };
        let good = encode(&r);
        assert_eq!(read_record(&mut &[][..]).unwrap(), None);
        assert_eq!(read_record(&mut &good[..10]), Err(RecordError::Truncated));
        assert_eq!(read_record(&mut &good[..50]), Err(RecordError::Truncated));
        let mut flipped = good.clone();
        flipped[60] ^= 1;
        assert_eq!(read_record(&mut &flipped[..]), Err(RecordError::Checksum));
        let mut magic = good.clone();
        magic[0] = b'X';
        assert_eq!(read_record(&mut &magic[..]), Err(RecordError::BadMagic));
        let mut huge = good;
        huge[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            read_record(&mut &huge[..]),
            Err(RecordError::TooLarge(u32::MAX))
        );
    }

    /// Seeded random and mutated inputs: the reader returns records or errors, never panics, and never
    /// accepts a record whose bytes were changed.
    #[test]
    fn random_and_mutated_input_never_panics() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let good = {
            let r = Record::Extent {
                seq: 3,
                offset: 65536,
                data: bytes::Bytes::from(vec![5u8; 300]),
            };
            let mut v = encode_header(&r).to_vec();
            v.extend_from_slice(body(&r));
            v
        };
        for i in 0..20_000 {
            let buf: Vec<u8> = if i % 2 == 0 {
                let n = (next() % 200) as usize;
                (0..n).map(|_| next() as u8).collect()
            } else {
                let mut m = good.clone();
                let at = (next() as usize) % m.len();
                m[at] ^= (next() as u8) | 1;
                m
            };
            // CRC-32 detects every error burst of up to 32 bits, so no single-byte change gets through.
            if let Ok(Some(rec)) = read_record(&mut &buf[..]) {
                assert!(i % 2 == 0, "a mutated record was accepted: {rec:?}");
                assert!(rec.encoded_len() as usize <= buf.len());
            }
        }
    }
}
