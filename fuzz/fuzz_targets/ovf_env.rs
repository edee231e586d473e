//! Fuzzes first boot's reading of the OVF environment (guestinfo or the CD-ROM's ovf-env.xml, both
//! outside input): the namespace-aware parse, then turning the properties into a plan (address,
//! prefix, gateway, DNS, NTP and host name checks). No input may panic; a bad document must give a
//! DHCP plan with a reason, never an error that stops first boot.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let found = appliance::firstboot::FoundEnvironment {
        source: "fuzz".into(),
        document: data.to_vec(),
    };
    let plan = appliance::firstboot::plan_for(Some(&found));
    let _ = appliance::firstboot::describe(&plan, &[]);
});
