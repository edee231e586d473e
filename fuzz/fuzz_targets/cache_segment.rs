//! Fuzzes the cache segment reader: arbitrary bytes on the appliance's cache disk (a torn or corrupted
//! segment) must give records or errors, never a panic or an unbounded allocation.
//!
//! Each input is read twice: as raw segment bytes, through both the streaming reader and the
//! zero-copy decoder (which must agree), and as `kind selector + seq + offset + body` wrapped in a
//! header with a valid CRC, so the fuzzer reaches the record builder instead of stalling on the
//! checksum; such a record must re-encode to the header it came from.
#![no_main]

use actors::segment::{decode_record, encode_header, read_record, Record, RecordError, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

/// Reads records back to back with both readers; they must see the same records.
fn read_both(data: &[u8]) {
    let shared = bytes::Bytes::copy_from_slice(data);
    let mut stream = data;
    let mut at = 0;
    for _ in 0..1024 {
        let streamed = read_record(&mut stream);
        let decoded = decode_record(&shared, at);
        match (streamed, decoded) {
            (Ok(Some(a)), Ok(Some((b, used)))) => {
                assert_eq!(a, b);
                assert_eq!(a.encoded_len(), used as u64);
                assert!(at + used <= data.len());
                at += used;
            }
            // The zero-copy decoder leaves a partial tail for a later read; the stream has ended.
            (Ok(None), Ok(None)) | (Err(RecordError::Truncated), Ok(None)) => break,
            (Err(a), Err(b)) if a == b => break,
            (a, b) => panic!("read_record and decode_record disagree: {a:?} vs {b:?}"),
        }
    }
}

fn framed(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < 17 {
        return None;
    }
    let (head, body) = data.split_at(17);
    let mut h = [0u8; HEADER_LEN];
    h[0..2].copy_from_slice(b"FC");
    h[2] = 1;
    // Kinds 0 and 3 are unknown: the builder must reject them, not only accept 1 and 2.
    h[3] = head[0] % 4;
    h[4..8].copy_from_slice(&(body.len() as u32).to_be_bytes());
    h[8..24].copy_from_slice(&head[1..17]);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&h[..24]);
    crc.update(body);
    h[24..28].copy_from_slice(&crc.finalize().to_be_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(body);
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    read_both(data);
    if let Some(record) = framed(data) {
        read_both(&record);
        match read_record(&mut record.as_slice()) {
            Ok(Some(rec @ Record::Extent { .. })) => {
                assert_eq!(encode_header(&rec)[..], record[..HEADER_LEN]);
                assert_eq!(actors::segment::body(&rec), &record[HEADER_LEN..]);
            }
            // A bookmark byte other than 1 reads as crash-consistent (the weaker promise), so only
            // the fields before the checksum must round-trip.
            Ok(Some(rec)) => assert_eq!(encode_header(&rec)[..24], record[..24]),
            Ok(None) | Err(_) => {}
        }
        // A record missing its last byte (a torn write) is never read as a valid one.
        let cut = &record[..record.len() - 1];
        assert!(!matches!(read_record(&mut &cut[..]), Ok(Some(_))));
    }
});
