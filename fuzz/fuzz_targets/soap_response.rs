//! Fuzzes the vSphere SOAP response parser: the namespace-aware XML reader, the envelope and fault
//! decoder, and every response parser (service content, sessions, RetrievePropertiesEx pages,
//! WaitForUpdatesEx update sets, property values, VM inventory). No input may panic, recurse
//! without bound or allocate without bound. Seeds: `vsphere::fuzzing::samples()`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vsphere::fuzzing::parse_everything(data);
});
