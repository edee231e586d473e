//! `check` against small OVAs made here with tar and qemu-img: one good, and each way one can be bad.

use super::*;

const OVF: &str = r#"<?xml version="1.0"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
  <References><File ovf:href="d.vmdk" ovf:id="file1" ovf:size="SIZE"/></References>
</Envelope>
"#;

/// A folder with `t.ovf`, `t.mf` and a 1 MiB VMDK, consistent with each other.
fn parts() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let vmdk = dir.path().join("d.vmdk");
    run::cmd(
        "qemu-img",
        [
            "create".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            "vmdk".as_ref(),
            "-o".as_ref(),
            "subformat=streamOptimized".as_ref(),
            vmdk.as_os_str(),
            "1M".as_ref(),
        ],
    )
    .unwrap();
    let size = std::fs::metadata(&vmdk).unwrap().len();
    std::fs::write(
        dir.path().join("t.ovf"),
        OVF.replace("SIZE", &size.to_string()),
    )
    .unwrap();
    write_manifest(dir.path());
    dir
}

fn write_manifest(dir: &Path) {
    let digests: Vec<(String, String)> = ["t.ovf", "d.vmdk"]
        .iter()
        .map(|n| (n.to_string(), run::sha256_file(&dir.join(n)).unwrap()))
        .collect();
    std::fs::write(dir.join("t.mf"), manifest(&digests)).unwrap();
}

fn pack(dir: &Path, members: &[&str]) -> PathBuf {
    let ova = dir.join("t.ova");
    let mut args = vec!["-cf".to_string(), ova.display().to_string()];
    args.extend(members.iter().map(|m| m.to_string()));
    run::cmd_in(Some(dir), "tar", &args, None).unwrap();
    ova
}

fn check_err(ova: &Path) -> String {
    let into = tempfile::tempdir().unwrap();
    format!("{:#}", check(ova, into.path(), None).unwrap_err())
}

#[test]
fn a_consistent_ova_passes() {
    let dir = parts();
    let ova = pack(dir.path(), &["t.ovf", "t.mf", "d.vmdk"]);
    let into = tempfile::tempdir().unwrap();
    let checked = check(&ova, into.path(), None).unwrap();
    assert_eq!(checked.vmdks, [into.path().join("d.vmdk")]);
}

#[test]
fn the_descriptor_must_come_first_and_the_manifest_second() {
    let dir = parts();
    let ova = pack(dir.path(), &["t.mf", "t.ovf", "d.vmdk"]);
    assert!(check_err(&ova).contains("expected the .ovf, then the .mf"));
}

#[test]
fn a_changed_disk_fails_its_digest() {
    let dir = parts();
    let mut bytes = std::fs::read(dir.path().join("d.vmdk")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(dir.path().join("d.vmdk"), bytes).unwrap();
    let ova = pack(dir.path(), &["t.ovf", "t.mf", "d.vmdk"]);
    assert!(check_err(&ova).contains("does not match the manifest"));
}

#[test]
fn a_manifest_that_misses_a_member_is_refused() {
    let dir = parts();
    let text = std::fs::read_to_string(dir.path().join("t.mf")).unwrap();
    std::fs::write(
        dir.path().join("t.mf"),
        text.lines().next().unwrap().to_string() + "\n",
    )
    .unwrap();
    let ova = pack(dir.path(), &["t.ovf", "t.mf", "d.vmdk"]);
    assert!(check_err(&ova).contains("the manifest lists"));
}

#[test]
fn a_referenced_disk_that_is_not_a_vmdk_fails_qemu_img_check() {
    let dir = parts();
    std::fs::write(dir.path().join("d.vmdk"), b"KDMV not really").unwrap();
    let size = std::fs::metadata(dir.path().join("d.vmdk")).unwrap().len();
    std::fs::write(
        dir.path().join("t.ovf"),
        OVF.replace("SIZE", &size.to_string()),
    )
    .unwrap();
    write_manifest(dir.path());
    let ova = pack(dir.path(), &["t.ovf", "t.mf", "d.vmdk"]);
    assert!(check_err(&ova).contains("qemu-img check d.vmdk"));
}

#[test]
fn a_size_other_than_the_descriptor_says_is_refused() {
    let dir = parts();
    std::fs::write(dir.path().join("t.ovf"), OVF.replace("SIZE", "1")).unwrap();
    write_manifest(dir.path());
    let ova = pack(dir.path(), &["t.ovf", "t.mf", "d.vmdk"]);
    assert!(check_err(&ova).contains("the OVF says"));
}

#[test]
fn a_truncated_archive_is_refused() {
    let dir = parts();
    let ova = pack(dir.path(), &["t.ovf", "t.mf", "d.vmdk"]);
    let bytes = std::fs::read(&ova).unwrap();
    std::fs::write(&ova, &bytes[..bytes.len() / 3]).unwrap();
    assert!(check(&ova, tempfile::tempdir().unwrap().path(), None).is_err());
}
