//! Bad input must give a clear error, never a panic or a huge allocation.

use bytes::Bytes;
use wire::*;

fn enc(f: &Frame) -> Vec<u8> {
    let mut v = Vec::new();
    encode(f, &mut v);
    v
}

/// Builds a frame with a correct header and CRC around an arbitrary payload.
fn raw_frame(frame_type: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = b"FW".to_vec();
    v.push(WIRE_VERSION);
    v.push(frame_type);
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    let crc = crc32fast_hash(&v);
    v.extend_from_slice(&crc.to_be_bytes());
    v
}

/// CRC-32/IEEE, bit by bit: an independent check of the codec's crc32fast use.
fn crc32fast_hash(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn ping() -> Vec<u8> {
    enc(&Frame::Ping(5))
}

#[test]
fn bad_magic_is_rejected_on_the_first_byte() {
    assert!(matches!(decode(b"G"), Err(WireError::BadMagic)));
    assert!(matches!(
        decode(b"GET / HTTP/1.1\r\n"),
        Err(WireError::BadMagic)
    ));
}

#[test]
fn wrong_version_and_unknown_type() {
    let mut b = ping();
    b[2] = 2;
    assert!(matches!(decode(&b), Err(WireError::UnsupportedVersion(2))));
    let mut b = ping();
    b[3] = 0;
    assert!(matches!(decode(&b), Err(WireError::UnknownType(0))));
    b[3] = 200;
    assert!(matches!(decode(&b[..4]), Err(WireError::UnknownType(200))));
}

#[test]
fn huge_length_is_rejected_from_the_header_alone() {
    let mut b = ping();
    b[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        decode(&b[..8]),
        Err(WireError::TooLarge(u32::MAX))
    ));
    let just_over = (MAX_PAYLOAD + 1) as u32;
    b[4..8].copy_from_slice(&just_over.to_be_bytes());
    assert!(matches!(decode(&b[..8]), Err(WireError::TooLarge(n)) if n == just_over));
}

#[test]
fn every_flipped_bit_is_caught() {
    let good = enc(&Frame::Ack(Ack {
        disk_index: 1,
        durable_seq: 7,
    }));
    for i in 0..good.len() {
        for bit in 0..8 {
            let mut b = good.clone();
            b[i] ^= 1 << bit;
            match decode(&b) {
                Err(_) => {}
                // a flipped length bit that makes the frame longer just needs more bytes
                Ok(None) => assert!((4..8).contains(&i)),
                Ok(Some(f)) => panic!("flip at byte {i} bit {bit} decoded as {f:?}"),
            }
        }
    }
}

#[test]
fn checksum_is_checked_before_the_payload() {
    // a payload that would be malformed, under a wrong CRC: the CRC error wins
    let mut b = raw_frame(6, &[1]);
    let last = b.len() - 1;
    b[last] ^= 0xff;
    assert!(matches!(decode(&b), Err(WireError::Checksum)));
}

#[test]
fn trailing_and_missing_payload_bytes_are_malformed() {
    let mut payload = vec![0, 1, 0, 0, 0, 0, 0, 0, 0, 7];
    assert!(decode(&raw_frame(6, &payload)).unwrap().is_some());
    payload.push(0);
    assert!(matches!(
        decode(&raw_frame(6, &payload)),
        Err(WireError::Malformed(_))
    ));
    assert!(matches!(
        decode(&raw_frame(6, &payload[..5])),
        Err(WireError::Malformed(_))
    ));
    assert!(matches!(
        decode(&raw_frame(10, &[])),
        Err(WireError::Malformed(_))
    ));
}

#[test]
fn forged_vector_count_does_not_allocate() {
    // Welcome with a count of 4 billion resume entries in a 9-byte payload
    let payload = [1, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
    assert!(matches!(
        decode(&raw_frame(4, &payload)),
        Err(WireError::Malformed(_))
    ));
}

#[test]
fn bad_strings_are_malformed() {
    // str length over 4096
    let mut p = vec![0x10, 0x01];
    p.extend(vec![b'a'; 0x1001]);
    p.extend([0, 0]);
    assert!(matches!(
        decode(&raw_frame(1, &p)),
        Err(WireError::Malformed(_))
    ));
    // invalid UTF-8
    let p = [0, 2, 0xff, 0xfe, 0, 0];
    assert!(matches!(
        decode(&raw_frame(1, &p)),
        Err(WireError::Malformed(_))
    ));
}

#[test]
fn extent_rules_are_enforced() {
    let extent = |offset: u64, len: u32, data: usize| {
        let mut p = vec![0, 0];
        p.extend(1u64.to_be_bytes());
        p.extend(offset.to_be_bytes());
        p.extend(len.to_be_bytes());
        p.extend(vec![0u8; data]);
        raw_frame(5, &p)
    };
    assert!(decode(&extent(BLOCK_SIZE, 10, 10)).unwrap().is_some());
    assert!(matches!(
        decode(&extent(100, 10, 10)),
        Err(WireError::Malformed(_))
    ));
    assert!(matches!(
        decode(&extent(0, 0, 0)),
        Err(WireError::Malformed(_))
    ));
    let over = MAX_EXTENT_BYTES + 1;
    assert!(matches!(
        decode(&extent(0, over as u32, over)),
        Err(WireError::Malformed(_))
    ));
    assert!(matches!(
        decode(&extent(0, 20, 10)),
        Err(WireError::Malformed(_))
    ));
}

#[test]
fn unknown_bookmark_kind_is_malformed() {
    let mut p = 1u64.to_be_bytes().to_vec();
    p.push(2);
    p.extend(0u32.to_be_bytes());
    assert!(matches!(
        decode(&raw_frame(7, &p)),
        Err(WireError::Malformed(_))
    ));
}

#[test]
fn only_transport_errors_are_retryable() {
    assert!(WireError::Io(std::io::Error::other("x")).is_retryable());
    assert!(WireError::Truncated.is_retryable());
    assert!(!WireError::Checksum.is_retryable());
    assert!(!WireError::BadMagic.is_retryable());
    assert!(!WireError::Malformed("x").is_retryable());
}

#[tokio::test]
async fn eof_inside_a_frame_is_truncated() {
    let b = enc(&Frame::Ping(9));
    for cut in 1..b.len() {
        let mut r: &[u8] = &b[..cut];
        assert!(
            matches!(read_frame(&mut r).await, Err(WireError::Truncated)),
            "cut {cut}"
        );
    }
    let mut empty: &[u8] = &[];
    assert!(read_frame(&mut empty).await.unwrap().is_none());
}

#[tokio::test]
async fn read_frame_rejects_huge_length_without_reading_on() {
    // The stream claims 4 GiB but only the header exists; a reader that allocated first, or
    // waited for the payload, would fail differently.
    let mut header = b"FW\x01\x05".to_vec();
    header.extend(u32::MAX.to_be_bytes());
    let (mut a, mut b) = tokio::io::duplex(64);
    use tokio::io::AsyncWriteExt;
    a.write_all(&header).await.unwrap();
    // keep `a` open: the error must come from the header alone
    assert!(matches!(
        read_frame(&mut b).await,
        Err(WireError::TooLarge(u32::MAX))
    ));
    drop(a);
}

#[tokio::test]
async fn read_frame_reports_bad_crc_and_bad_magic() {
    let mut b = enc(&Frame::Pong(1));
    let last = b.len() - 1;
    b[last] ^= 1;
    let mut r: &[u8] = &b;
    assert!(matches!(read_frame(&mut r).await, Err(WireError::Checksum)));
    let mut r: &[u8] = b"HTTP/1.1 400";
    assert!(matches!(read_frame(&mut r).await, Err(WireError::BadMagic)));
}

#[test]
fn decode_bytes_shares_extent_data() {
    let f = Frame::Extent(Extent {
        disk_index: 0,
        seq: 1,
        offset: 0,
        data: Bytes::from(vec![3u8; 1000]),
    });
    let buf = Bytes::from(enc(&f));
    let (Frame::Extent(e), _) = decode_bytes(&buf).unwrap().unwrap() else {
        panic!()
    };
    let inside = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    assert!(inside.contains(&(e.data.as_ptr() as usize)));
}
