use std::fs;

use super::devices::*;
use super::devices_tests::{block_dir, exit, FakeRunner, FakeSystem, GIB_SECTORS};

#[test]
fn the_root_mount_is_read_from_mountinfo_and_garbage_is_ignored() {
    let text = "garbage\n\
        1 2 3\n\
        25 1 8:1 / / rw shared:1 master:2 - ext4 /dev/sda1 rw\n\
        30 25 0:5 / /dev rw - devtmpfs udev rw\n";
    assert_eq!(
        parse_root_mount(text),
        Some(("8:1".into(), "ext4".into(), "/dev/sda1".into()))
    );
    assert_eq!(parse_root_mount("25 1 8:1 / / rw\n"), None, "no separator");
    assert_eq!(
        parse_root_mount("25 1 8:1 / / rw - ext4\n"),
        None,
        "no source"
    );
    assert_eq!(parse_root_mount(""), None);
}

#[test]
fn the_root_is_found_by_uuid_link_or_by_device_number() {
    let sys = FakeSystem::new();
    fs::create_dir_all(sys.paths.dev.join("disk/by-uuid")).unwrap();
    fs::write(sys.paths.dev.join("sda1"), "").unwrap();
    std::os::unix::fs::symlink("../../sda1", sys.paths.dev.join("disk/by-uuid/abcd")).unwrap();
    sys.mountinfo("22 1 8:1 / / rw - ext4 /dev/disk/by-uuid/abcd rw\n");
    let root = find_root(&sys.paths).unwrap();
    assert_eq!(
        (root.disk.as_str(), root.partition.as_deref()),
        ("sda", Some("sda1"))
    );

    // /dev/root that does not exist as a node: the device number decides.
    sys.mountinfo("22 1 8:1 / / rw - ext4 /dev/root rw\n");
    let root = find_root(&sys.paths).unwrap();
    assert_eq!(root.partition.as_deref(), Some("sda1"));
    assert_eq!(root.fstype, "ext4");
}

fn grow_fixture(disk_gib: u64, root_sectors: u64) -> FakeSystem {
    let sys = FakeSystem::new();
    sys.disk("sda", disk_gib * GIB_SECTORS, "8:0");
    sys.attr("sda/sda1/size", &root_sectors.to_string());
    sys
}

#[test]
fn the_root_partition_grows_into_free_space() {
    let sys = grow_fixture(40, 20 * GIB_SECTORS - 2048);
    let size_file = block_dir(&sys.paths).join("sda/sda1/size");
    let runner = FakeRunner::new(move |program, _| {
        if program == "partx" {
            // What the kernel shows once partx has told it about the new end.
            fs::write(&size_file, format!("{}\n", 40 * GIB_SECTORS - 2048)).unwrap();
        }
        exit(0, "", "")
    });

    let line = grow_root(&sys.paths, &runner).unwrap();

    assert_eq!(line, "root file system grown from 20479 to 40959 MiB");
    assert_eq!(runner.programs(), ["sfdisk", "partx", "resize2fs"]);
    let calls = runner.calls.borrow();
    assert_eq!(
        calls[0].args,
        [
            "--no-reread",
            "--no-tell-kernel",
            "-N",
            "1",
            &sys.node("sda")
        ]
    );
    assert_eq!(calls[0].stdin.as_deref(), Some(", +\n"));
    assert_eq!(calls[1].args, ["-u", "--nr", "1", &sys.node("sda")]);
    assert_eq!(calls[2].args, [sys.node("sda1")]);
}

#[test]
fn the_root_does_not_grow_for_less_than_16_mib() {
    let sys = grow_fixture(20, 20 * GIB_SECTORS - 2048 - (16 * 2048 - 1));
    let runner = FakeRunner::new(|_, _| exit(0, "", ""));
    let line = grow_root(&sys.paths, &runner).unwrap();
    assert!(line.contains("15 MiB free after sda1"), "{line}");
    assert!(runner.programs().is_empty());
}

#[test]
fn the_root_does_not_grow_when_another_partition_follows() {
    let sys = grow_fixture(40, 10 * GIB_SECTORS);
    sys.partition("sda", "sda2", 2, 30 * GIB_SECTORS, GIB_SECTORS, "8:2");
    let runner = FakeRunner::new(|_, _| exit(0, "", ""));
    let line = grow_root(&sys.paths, &runner).unwrap();
    assert!(
        line.contains("not the last partition on sda (sda2 follow)"),
        "{line}"
    );
    assert!(runner.programs().is_empty());
}

#[test]
fn bad_partition_numbers_are_errors_with_nothing_run() {
    let sys = grow_fixture(40, 10 * GIB_SECTORS);
    sys.attr("sda/sda1/start", "-1");
    let runner = FakeRunner::new(|_, _| exit(0, "", ""));
    let err = grow_root(&sys.paths, &runner).unwrap_err();
    assert!(matches!(err, DeviceError::MalformedNumber { .. }), "{err}");

    sys.attr("sda/sda1/start", "2048");
    sys.attr("sda/sda1/size", &(41 * GIB_SECTORS).to_string());
    let err = grow_root(&sys.paths, &runner).unwrap_err();
    assert!(matches!(err, DeviceError::Inconsistent(_)), "{err}");
    assert!(err.to_string().contains("ends past sda"), "{err}");
    assert!(runner.programs().is_empty());
}

#[test]
fn a_failing_sfdisk_stops_before_the_kernel_is_told() {
    let sys = grow_fixture(40, 10 * GIB_SECTORS);
    let runner = FakeRunner::new(|_, _| exit(1, "", "sfdisk: cannot write\n"));
    let err = grow_root(&sys.paths, &runner).unwrap_err();
    assert!(err.to_string().contains("sfdisk: cannot write"), "{err}");
    assert_eq!(runner.programs(), ["sfdisk"]);
}

#[test]
fn a_partition_the_kernel_does_not_see_grown_stops_before_resize2fs() {
    let sys = grow_fixture(40, 10 * GIB_SECTORS);
    let runner = FakeRunner::new(|_, _| exit(0, "", ""));
    let err = grow_root(&sys.paths, &runner).unwrap_err();
    assert!(
        err.to_string().contains("still sees sda1 at 10240 MiB"),
        "{err}"
    );
    assert_eq!(runner.programs(), ["sfdisk", "partx"]);
}

#[test]
fn a_root_that_is_not_ext_is_not_grown() {
    let sys = grow_fixture(40, 10 * GIB_SECTORS);
    sys.mountinfo("22 1 8:1 / / rw - xfs /dev/sda1 rw\n");
    let runner = FakeRunner::new(|_, _| exit(0, "", ""));
    let line = grow_root(&sys.paths, &runner).unwrap();
    assert!(line.contains("xfs cannot be grown"), "{line}");
    assert!(runner.programs().is_empty());
}
