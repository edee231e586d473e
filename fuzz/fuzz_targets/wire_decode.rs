//! Fuzzes the wire decoder: no input may panic, and every frame that decodes must re-encode to
//! exactly the bytes it came from (the encoding is canonical).
//!
//! Each input is tried twice: as raw stream bytes (header and CRC checks), and as
//! `type byte + payload` wrapped in a valid header and CRC, so the fuzzer reaches the payload
//! parsers instead of stalling on the checksum.
#![no_main]

use libfuzzer_sys::fuzz_target;

fn check(data: &[u8]) {
    let shared = bytes::Bytes::copy_from_slice(data);
    match (wire::decode(data), wire::decode_bytes(&shared)) {
        (Ok(Some((frame, used))), Ok(Some((frame2, used2)))) => {
            assert_eq!(frame, frame2);
            assert_eq!(used, used2);
            let mut again = Vec::new();
            wire::encode(&frame, &mut again);
            assert_eq!(again, &data[..used]);
        }
        (Ok(None), Ok(None)) | (Err(_), Err(_)) => {}
        (a, b) => panic!("decode and decode_bytes disagree: {a:?} vs {b:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Some((&frame_type, payload)) = data.split_first() {
        let mut framed = b"FW".to_vec();
        framed.push(wire::WIRE_VERSION);
        framed.push(frame_type % 12);
        framed.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        framed.extend_from_slice(payload);
        let crc = crc32fast::hash(&framed);
        framed.extend_from_slice(&crc.to_be_bytes());
        check(&framed);
    }
});
