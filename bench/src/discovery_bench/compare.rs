//! What both clients must agree on: every VM, by managed object id, name and BIOS UUID; and which
//! properties each asked for and got.

use std::collections::BTreeSet;

use anyhow::{bail, Result};

/// One VM as both clients report it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct VmKey {
    /// The managed object id (`vm-123`).
    pub moref: String,
    pub name: String,
    /// `config.uuid`.
    pub bios_uuid: Option<String>,
}

impl std::fmt::Display for VmKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:?} (BIOS UUID {})",
            self.moref,
            self.name,
            self.bios_uuid.as_deref().unwrap_or("none")
        )
    }
}

/// The properties of a retrieval: asked for, and present in the answer (over all VMs; a property
/// with no value on any VM is left out by the server), and reported missing (`missingSet`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PropertySet {
    pub requested: Vec<String>,
    pub returned: BTreeSet<String>,
    pub missing: BTreeSet<String>,
}

/// How many differing VMs an error names.
const SHOWN: usize = 5;

/// Fails unless both lists hold `expected` VMs, each VM once, and the same VMs.
pub fn check_same(ferry: &[VmKey], pyvmomi: &[VmKey], expected: usize) -> Result<()> {
    let ferry_set = unique("Ferry", ferry)?;
    let py_set = unique("pyvmomi", pyvmomi)?;
    let only_ferry: Vec<String> = ferry_set
        .difference(&py_set)
        .take(SHOWN)
        .map(ToString::to_string)
        .collect();
    let only_py: Vec<String> = py_set
        .difference(&ferry_set)
        .take(SHOWN)
        .map(ToString::to_string)
        .collect();
    if !only_ferry.is_empty() || !only_py.is_empty() {
        bail!(
            "the clients disagree: Ferry listed {} VMs, pyvmomi {}; only Ferry's (first {SHOWN}): [{}]; \
             only pyvmomi's (first {SHOWN}): [{}]",
            ferry.len(),
            pyvmomi.len(),
            only_ferry.join(", "),
            only_py.join(", ")
        );
    }
    if ferry.len() != expected {
        bail!(
            "both clients listed {} VMs, the vcsim was started with {expected}",
            ferry.len()
        );
    }
    if ferry
        .iter()
        .any(|v| v.name.is_empty() || v.bios_uuid.is_none())
    {
        bail!("a VM without a name or BIOS UUID: both clients agree, but the comparison would prove nothing");
    }
    Ok(())
}

fn unique<'a>(who: &str, vms: &'a [VmKey]) -> Result<BTreeSet<&'a VmKey>> {
    let mut seen = BTreeSet::new();
    let mut morefs = BTreeSet::new();
    for vm in vms {
        if !morefs.insert(vm.moref.as_str()) {
            bail!("{who} listed {} twice", vm.moref);
        }
        seen.insert(vm);
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(id: u32, name: &str, uuid: Option<&str>) -> VmKey {
        VmKey {
            moref: format!("vm-{id}"),
            name: name.into(),
            bios_uuid: uuid.map(str::to_string),
        }
    }

    fn three() -> Vec<VmKey> {
        vec![
            vm(1, "a", Some("u1")),
            vm(2, "b", Some("u2")),
            vm(3, "c", Some("u3")),
        ]
    }

    #[test]
    fn the_same_vms_in_any_order_pass() {
        let mut other = three();
        other.reverse();
        check_same(&three(), &other, 3).unwrap();
    }

    #[test]
    fn a_different_name_or_uuid_fails_and_is_named() {
        let mut renamed = three();
        renamed[1].name = "B".into();
        let e = check_same(&three(), &renamed, 3).unwrap_err().to_string();
        assert!(e.contains("\"b\"") && e.contains("\"B\""), "{e}");
        let mut uuid = three();
        uuid[2].bios_uuid = Some("other".into());
        let e = check_same(&three(), &uuid, 3).unwrap_err().to_string();
        assert!(e.contains("other") && e.contains("u3"), "{e}");
    }

    #[test]
    fn a_missing_extra_or_repeated_vm_fails() {
        assert!(check_same(&three(), &three()[..2], 3).is_err());
        let mut extra = three();
        extra.push(vm(4, "d", Some("u4")));
        assert!(check_same(&extra, &three(), 3).is_err());
        let mut twice = three();
        twice.push(twice[0].clone());
        assert!(check_same(&twice, &three(), 3).is_err());
        assert!(check_same(&three(), &twice, 3).is_err());
    }

    #[test]
    fn agreeing_on_the_wrong_count_or_on_nothing_fails() {
        let e = check_same(&three(), &three(), 2000)
            .unwrap_err()
            .to_string();
        assert!(e.contains("2000"), "{e}");
        assert!(check_same(&[], &[], 0).is_ok());
        let blank = vec![vm(1, "", Some("u")), vm(2, "b", None)];
        assert!(check_same(&blank, &blank, 2).is_err());
    }
}
