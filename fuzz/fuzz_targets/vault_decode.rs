//! Fuzzes every vault decoder of outside input (config, pack trailer and footer, index, point
//! manifest, chunk header, sealed envelopes): no input may panic, hang or allocate without bound.
//! Seeds: `vault::fuzzing::samples()`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vault::fuzzing::decode_everything(data);
    vault::fuzzing::decode_config_with_passphrase(data);
});
