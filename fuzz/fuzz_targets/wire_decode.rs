//! Fuzzes the wire decoder: no input may panic, and every frame that decodes must re-encode to
//! exactly the bytes it came from (the encoding is canonical).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let shared = bytes::Bytes::copy_from_slice(data);
    let by_copy = wire::decode(data);
    let by_share = wire::decode_bytes(&shared);
    match (by_copy, by_share) {
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
});
