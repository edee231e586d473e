use std::cell::RefCell;
use std::fs;
use std::path::{Path, PathBuf};

use super::devices::*;
use super::ovf_env_tests::vsphere_env;
use super::{find_environment, plan_for};

pub(super) const GIB_SECTORS: u64 = 2 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Call {
    pub(super) program: String,
    pub(super) args: Vec<String>,
    pub(super) stdin: Option<String>,
}

type Answer = Box<dyn Fn(&str, &[&str]) -> CommandOutput>;

/// Records every call and answers with `answer` (which may also change the fake tree).
pub(super) struct FakeRunner {
    pub(super) calls: RefCell<Vec<Call>>,
    answer: Answer,
}

impl FakeRunner {
    pub(super) fn new(answer: impl Fn(&str, &[&str]) -> CommandOutput + 'static) -> FakeRunner {
        FakeRunner {
            calls: RefCell::new(Vec::new()),
            answer: Box::new(answer),
        }
    }

    pub(super) fn programs(&self) -> Vec<String> {
        self.calls
            .borrow()
            .iter()
            .map(|c| c.program.clone())
            .collect()
    }

    pub(super) fn calls_of(&self, program: &str) -> Vec<Call> {
        let calls = self.calls.borrow();
        calls
            .iter()
            .filter(|c| c.program == program)
            .cloned()
            .collect()
    }
}

impl CommandRunner for FakeRunner {
    fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<CommandOutput, DeviceError> {
        self.calls.borrow_mut().push(Call {
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            stdin: stdin.map(str::to_string),
        });
        Ok((self.answer)(program, args))
    }
}

pub(super) fn exit(code: i32, stdout: &str, stderr: &str) -> CommandOutput {
    CommandOutput {
        code: Some(code),
        stdout: stdout.into(),
        stderr: stderr.into(),
    }
}

/// blkid's answer for a device with nothing on it.
fn nothing_found() -> CommandOutput {
    exit(2, "", "")
}

/// A fake `/` with sysfs, /dev, mountinfo and /run; the root file system is ext4 on sda1.
pub(super) struct FakeSystem {
    _dir: tempfile::TempDir,
    pub(super) paths: SystemPaths,
}

impl FakeSystem {
    pub(super) fn new() -> FakeSystem {
        let dir = tempfile::tempdir().unwrap();
        let paths = SystemPaths::under(dir.path());
        for sub in [block_dir(&paths), paths.dev.clone(), paths.run.clone()] {
            fs::create_dir_all(sub).unwrap();
        }
        fs::create_dir_all(paths.mountinfo.parent().unwrap()).unwrap();
        let system = FakeSystem { _dir: dir, paths };
        system.mountinfo("22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n");
        system.disk("sda", 20 * GIB_SECTORS, "8:0");
        system.partition("sda", "sda1", 1, 2048, 20 * GIB_SECTORS - 2048, "8:1");
        system
    }

    pub(super) fn mountinfo(&self, text: &str) {
        fs::write(&self.paths.mountinfo, text).unwrap();
    }

    pub(super) fn attr(&self, rel: &str, value: &str) {
        let path = block_dir(&self.paths).join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, format!("{value}\n")).unwrap();
    }

    pub(super) fn disk(&self, name: &str, sectors: u64, majmin: &str) {
        self.attr(&format!("{name}/size"), &sectors.to_string());
        self.attr(&format!("{name}/removable"), "0");
        self.attr(&format!("{name}/dev"), majmin);
    }

    pub(super) fn partition(
        &self,
        disk: &str,
        part: &str,
        number: u32,
        start: u64,
        size: u64,
        majmin: &str,
    ) {
        self.attr(&format!("{disk}/{part}/partition"), &number.to_string());
        self.attr(&format!("{disk}/{part}/start"), &start.to_string());
        self.attr(&format!("{disk}/{part}/size"), &size.to_string());
        self.attr(&format!("{disk}/{part}/dev"), majmin);
    }

    pub(super) fn node(&self, name: &str) -> String {
        self.paths.dev.join(name).display().to_string()
    }
}

pub(super) fn block_dir(paths: &SystemPaths) -> PathBuf {
    paths.sys.join("block")
}

/// A runner whose blkid answers per device node, and whose other programs succeed.
fn blkid_answers(answers: Vec<(String, CommandOutput)>) -> FakeRunner {
    FakeRunner::new(move |program, args| {
        if program != "blkid" {
            return exit(0, "", "");
        }
        let node = args.last().copied().unwrap_or_default();
        answers
            .iter()
            .find(|(n, _)| n == node)
            .map_or_else(|| exit(99, "", "unexpected device"), |(_, out)| out.clone())
    })
}

pub(super) fn contains(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|l| l.contains(needle))
}

// ---- data disk ------------------------------------------------------------------------------

#[test]
fn a_blank_disk_is_formatted_and_the_root_disk_is_not_probed() {
    let sys = FakeSystem::new();
    sys.disk("sdb", 100 * GIB_SECTORS, "8:16");
    let runner = blkid_answers(vec![(sys.node("sdb"), nothing_found())]);

    let lines = prepare_data_disk(&sys.paths, &runner).unwrap();

    assert!(contains(&lines, "holds the root file system"), "{lines:?}");
    assert!(
        contains(&lines, "formatted ext4, label ferry-data (102400 MiB)"),
        "{lines:?}"
    );
    let blkid = runner.calls_of("blkid");
    assert_eq!(blkid.len(), 1, "only sdb is probed");
    assert_eq!(blkid[0].args, ["-p", "-o", "export", &sys.node("sdb")]);
    let mkfs = runner.calls_of("mkfs.ext4");
    assert_eq!(mkfs.len(), 1);
    assert_eq!(
        mkfs[0].args,
        [
            "-q",
            "-F",
            "-L",
            "ferry-data",
            "-m",
            "0",
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1,nodiscard",
            &sys.node("sdb"),
        ]
    );
}

#[test]
fn a_disk_with_a_signature_is_left_alone() {
    let sys = FakeSystem::new();
    sys.disk("sdb", 10 * GIB_SECTORS, "8:16");
    sys.disk("sdc", 10 * GIB_SECTORS, "8:32");
    let runner = blkid_answers(vec![
        (
            sys.node("sdb"),
            exit(0, "DEVNAME=/dev/sdb\nTYPE=xfs\nUUID=1\n", ""),
        ),
        (
            sys.node("sdc"),
            exit(0, "DEVNAME=/dev/sdc\nPTTYPE=gpt\n", ""),
        ),
    ]);

    let lines = prepare_data_disk(&sys.paths, &runner).unwrap();

    assert!(
        contains(&lines, "sdb left alone: it carries TYPE=xfs"),
        "{lines:?}"
    );
    assert!(
        contains(&lines, "sdc left alone: it carries PTTYPE=gpt"),
        "{lines:?}"
    );
    assert!(contains(&lines, "no blank disk found"), "{lines:?}");
    assert!(runner.calls_of("mkfs.ext4").is_empty());
}

#[test]
fn the_root_disk_is_never_chosen_even_when_blkid_calls_it_blank() {
    let sys = FakeSystem::new();
    // The root is reached through /dev/root, a link, as some kernels mount it.
    sys.mountinfo("22 1 8:1 / / rw - ext4 /dev/root rw\n");
    fs::write(sys.paths.dev.join("sda1"), "").unwrap();
    std::os::unix::fs::symlink("sda1", sys.paths.dev.join("root")).unwrap();
    let runner = FakeRunner::new(|_, _| nothing_found());

    let lines = prepare_data_disk(&sys.paths, &runner).unwrap();

    assert!(contains(
        &lines,
        "sda left alone: it holds the root file system"
    ));
    assert!(runner.programs().is_empty(), "{:?}", runner.programs());
}

#[test]
fn without_a_known_root_disk_nothing_is_formatted() {
    let sys = FakeSystem::new();
    sys.mountinfo("22 1 0:99 / / rw - overlay overlay rw\n");
    sys.disk("sdb", 10 * GIB_SECTORS, "8:16");
    let runner = FakeRunner::new(|_, _| nothing_found());

    let err = prepare_data_disk(&sys.paths, &runner).unwrap_err();

    assert!(matches!(err, DeviceError::RootNotFound(_)), "{err}");
    assert!(!err.is_transient());
    assert!(runner.programs().is_empty());
}

#[test]
fn an_already_labelled_disk_is_left_alone_and_no_other_is_formatted() {
    let sys = FakeSystem::new();
    sys.disk("sdb", 10 * GIB_SECTORS, "8:16");
    sys.disk("sdc", 10 * GIB_SECTORS, "8:32");
    let runner = blkid_answers(vec![
        (sys.node("sdb"), nothing_found()),
        (
            sys.node("sdc"),
            exit(0, "LABEL=ferry-data\nTYPE=ext4\n", ""),
        ),
    ]);

    let lines = prepare_data_disk(&sys.paths, &runner).unwrap();

    assert!(contains(&lines, "sdc is ferry-data already"), "{lines:?}");
    assert!(runner.calls_of("mkfs.ext4").is_empty());
}

#[test]
fn an_existing_label_link_means_nothing_runs() {
    let sys = FakeSystem::new();
    sys.disk("sdb", 10 * GIB_SECTORS, "8:16");
    fs::create_dir_all(sys.paths.dev.join("disk/by-label")).unwrap();
    fs::write(sys.paths.dev.join("disk/by-label/ferry-data"), "").unwrap();
    let runner = FakeRunner::new(|_, _| nothing_found());

    let lines = prepare_data_disk(&sys.paths, &runner).unwrap();

    assert!(contains(&lines, "nothing to do"), "{lines:?}");
    assert!(runner.programs().is_empty());
}

#[test]
fn a_labelled_partition_counts_as_the_data_disk() {
    let sys = FakeSystem::new();
    sys.disk("sdb", 10 * GIB_SECTORS, "8:16");
    sys.partition("sdb", "sdb1", 1, 2048, GIB_SECTORS, "8:17");
    sys.disk("sdc", 10 * GIB_SECTORS, "8:32");
    let runner = blkid_answers(vec![
        (
            sys.node("sdb1"),
            exit(0, "LABEL=ferry-data\nTYPE=ext4\n", ""),
        ),
        (sys.node("sdc"), nothing_found()),
    ]);

    let lines = prepare_data_disk(&sys.paths, &runner).unwrap();

    assert!(contains(&lines, "sdb1 is ferry-data already"), "{lines:?}");
    assert!(runner.calls_of("mkfs.ext4").is_empty());
}

#[test]
fn blkid_failing_unexpectedly_skips_the_disk_with_its_reason() {
    let sys = FakeSystem::new();
    sys.disk("sdb", 10 * GIB_SECTORS, "8:16");
    sys.disk("vdc", 10 * GIB_SECTORS, "252:0");
    let runner = blkid_answers(vec![
        (sys.node("sdb"), exit(4, "", "blkid: I/O error\n")),
        (sys.node("vdc"), exit(2, "TYPE=junk\n", "")),
    ]);

    let lines = prepare_data_disk(&sys.paths, &runner).unwrap();

    assert!(
        contains(
            &lines,
            "blkid gave no clear answer (exit 4: blkid: I/O error)"
        ),
        "{lines:?}"
    );
    assert!(
        contains(
            &lines,
            "vdc left alone: blkid gave no clear answer (exit 2)"
        ),
        "{lines:?}"
    );
    assert!(runner.calls_of("mkfs.ext4").is_empty());
}

#[test]
fn removable_and_empty_disks_are_skipped_and_the_first_blank_one_is_used() {
    let sys = FakeSystem::new();
    sys.disk("sdb", 10 * GIB_SECTORS, "8:16");
    sys.attr("sdb/removable", "1");
    sys.disk("sdc", 0, "8:32");
    sys.disk("sdd", 10 * GIB_SECTORS, "8:48");
    sys.disk("sde", 10 * GIB_SECTORS, "8:64");
    sys.disk("loop0", 10 * GIB_SECTORS, "7:0");
    let runner = FakeRunner::new(|program, _| match program {
        "blkid" => nothing_found(),
        _ => exit(0, "", ""),
    });

    let lines = prepare_data_disk(&sys.paths, &runner).unwrap();

    assert!(
        contains(&lines, "sdb left alone: it is removable"),
        "{lines:?}"
    );
    assert!(
        contains(&lines, "sdc left alone: its size is 0"),
        "{lines:?}"
    );
    assert!(
        contains(&lines, "several blank disks (sdd, sde)"),
        "{lines:?}"
    );
    let mkfs = runner.calls_of("mkfs.ext4");
    assert_eq!(mkfs.len(), 1);
    assert_eq!(mkfs[0].args.last(), Some(&sys.node("sdd")));
    assert!(!runner
        .calls_of("blkid")
        .iter()
        .any(|c| c.args.contains(&sys.node("loop0"))));
}

#[test]
fn malformed_sysfs_numbers_are_a_clear_error_with_nothing_run() {
    let sys = FakeSystem::new();
    sys.disk("sdb", 10 * GIB_SECTORS, "8:16");
    sys.disk("sdc", 10 * GIB_SECTORS, "8:32");
    sys.attr("sdc/size", "12x4");
    let runner = FakeRunner::new(|_, _| nothing_found());

    let err = prepare_data_disk(&sys.paths, &runner).unwrap_err();

    assert!(matches!(&err, DeviceError::MalformedNumber { value, .. } if value == "12x4"));
    assert!(err.to_string().contains("sdc/size"), "{err}");
    assert!(runner.programs().is_empty(), "{:?}", runner.programs());
}

#[test]
fn a_failing_mkfs_is_an_error() {
    let sys = FakeSystem::new();
    sys.disk("sdb", 10 * GIB_SECTORS, "8:16");
    let runner = FakeRunner::new(|program, _| match program {
        "blkid" => nothing_found(),
        _ => exit(1, "", "mkfs.ext4: device busy\n"),
    });

    let err = prepare_data_disk(&sys.paths, &runner).unwrap_err();

    assert!(matches!(&err, DeviceError::CommandFailed { stderr, .. } if stderr.contains("busy")));
    assert!(err.is_transient());
}

#[test]
fn disk_names() {
    for good in ["sda", "sdab", "vdb", "nvme0n1", "nvme10n2"] {
        assert!(is_disk_name(good), "{good}");
    }
    for bad in [
        "sda1",
        "sd",
        "sr0",
        "loop0",
        "nvme0n1p1",
        "nvme0",
        "nvmen1",
        "dm-0",
        "vd",
    ] {
        assert!(!is_disk_name(bad), "{bad}");
    }
}

// ---- CD-ROM ---------------------------------------------------------------------------------

/// A `mount` that puts `files` into the folder it is given, and an `umount` that empties it.
fn iso_runner(files: Vec<(&'static str, String)>, umount_code: i32) -> FakeRunner {
    FakeRunner::new(move |program, args| {
        let dir = Path::new(args.last().copied().unwrap_or_default());
        match program {
            "mount" => {
                for (name, text) in &files {
                    fs::write(dir.join(name), text).unwrap();
                }
                exit(0, "", "")
            }
            "umount" if umount_code == 0 => {
                for (name, _) in &files {
                    fs::remove_file(dir.join(name)).unwrap();
                }
                exit(0, "", "")
            }
            _ => exit(umount_code, "", "umount: target is busy\n"),
        }
    })
}

#[test]
fn the_ovf_environment_is_copied_from_the_iso_and_used() {
    let sys = FakeSystem::new();
    sys.attr("sr0/size", "1000");
    let doc = vsphere_env(&[("ferry.hostname", "from-iso")]);
    let runner = iso_runner(vec![("ovf-env.xml", doc.clone())], 0);

    let scan = read_cdroms(&sys.paths, &runner);

    assert_eq!(scan.found.len(), 1, "{:?}", scan.lines);
    assert_eq!(scan.found[0].document, doc.as_bytes());
    assert_eq!(
        scan.found[0].source,
        format!("{}:ovf-env.xml", sys.node("sr0"))
    );
    let mount = &runner.calls_of("mount")[0];
    assert_eq!(
        &mount.args[..5],
        [
            "-t",
            "iso9660",
            "-o",
            "ro,nodev,nosuid,noexec",
            &sys.node("sr0")
        ]
    );
    assert!(Path::new(&mount.args[5]).starts_with(&sys.paths.run));
    assert_eq!(runner.calls_of("umount")[0].args, [mount.args[5].clone()]);
    assert_eq!(
        fs::read_dir(&sys.paths.run).unwrap().count(),
        0,
        "folder removed"
    );

    let found = find_environment(None, &scan.found, &[]).unwrap().unwrap();
    assert_eq!(plan_for(Some(&found)).hostname.as_deref(), Some("from-iso"));
    let guestinfo = vsphere_env(&[("ferry.hostname", "from-guestinfo")]);
    let found = find_environment(Some(&guestinfo), &scan.found, &[])
        .unwrap()
        .unwrap();
    assert_eq!(found.source, "guestinfo.ovfEnv");
}

#[test]
fn a_drive_without_a_medium_is_skipped_with_the_reason() {
    let sys = FakeSystem::new();
    sys.attr("sr0/size", "0");
    let runner =
        FakeRunner::new(|_, _| exit(32, "", "mount: /run/x: no medium found on /dev/sr0.\n"));

    let scan = read_cdroms(&sys.paths, &runner);

    assert!(scan.found.is_empty());
    assert!(
        contains(
            &scan.lines,
            "skipped: no medium or not an ISO9660 (exit 32: mount:"
        ),
        "{:?}",
        scan.lines
    );
    assert_eq!(runner.programs(), ["mount"], "nothing to unmount");
    assert_eq!(
        fs::read_dir(&sys.paths.run).unwrap().count(),
        0,
        "folder removed"
    );
}

#[test]
fn an_iso_without_the_file_or_with_an_oversized_one_gives_nothing() {
    let sys = FakeSystem::new();
    sys.attr("sr0/size", "1000");
    sys.attr("sr1/size", "1000");
    let runner = FakeRunner::new(|program, args| {
        let dir = Path::new(args.last().copied().unwrap_or_default());
        if program == "mount" && args.iter().any(|a| a.ends_with("sr1")) {
            fs::write(
                dir.join("ovf-env.xml"),
                vec![b' '; super::MAX_OVF_ENV_BYTES + 1],
            )
            .unwrap();
        }
        if program == "umount" {
            let _ = fs::remove_file(dir.join("ovf-env.xml"));
        }
        exit(0, "", "")
    });

    let scan = read_cdroms(&sys.paths, &runner);

    assert!(scan.found.is_empty());
    assert!(
        contains(&scan.lines, "sr0: no ovf-env.xml on it"),
        "{:?}",
        scan.lines
    );
    assert!(
        contains(&scan.lines, "sr1 skipped: the OVF environment is"),
        "{:?}",
        scan.lines
    );
}

#[test]
fn a_failed_unmount_leaves_the_folder_and_says_so() {
    let sys = FakeSystem::new();
    sys.attr("sr0/size", "1000");
    let runner = iso_runner(vec![("ovf-env.xml", vsphere_env(&[]))], 1);

    let scan = read_cdroms(&sys.paths, &runner);

    assert_eq!(scan.found.len(), 1);
    assert!(
        contains(&scan.lines, "still mounted at"),
        "{:?}",
        scan.lines
    );
    let left: Vec<_> = fs::read_dir(&sys.paths.run).unwrap().collect();
    assert_eq!(left.len(), 1, "a mounted folder is never removed");
}
