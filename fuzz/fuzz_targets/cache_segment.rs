//! Fuzzes the cache segment reader: arbitrary bytes on the appliance's cache disk (a torn or corrupted
//! segment) must give records or errors, never a panic or an unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = data;
    for _ in 0..1024 {
        match actors::segment::read_record(&mut r) {
            Ok(Some(rec)) => assert!(rec.encoded_len() as usize <= data.len()),
            Ok(None) | Err(_) => break,
        }
    }
});
