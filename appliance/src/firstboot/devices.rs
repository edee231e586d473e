//! Block devices at first boot: the CD-ROM that may carry the OVF environment (vSphere's "iso"
//! transport), the blank data disk, and the root partition grown into a disk made larger.
//!
//! Every decision is a function over a sysfs tree ([`SystemPaths`]) and a [`CommandRunner`], so
//! tests drive them with temporary folders and a recording runner; [`SystemRunner`] runs the real
//! programs. Data is sacred: a disk is formatted only when `blkid` finds nothing on it.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{read_limited, FoundEnvironment, OVF_ENV_FILE_NAME};
use crate::files;

#[path = "root_disk.rs"]
mod root_disk;
pub use root_disk::{find_root, grow_root, parse_root_mount, RootDevice, MIN_GROWTH_BYTES};

/// The label the data disk's file system carries (var-lib-ferry.mount mounts it by this label).
pub const DATA_LABEL: &str = "ferry-data";
/// sysfs counts `size` and `start` in 512-byte units whatever the disk's real sector size.
const SYSFS_SECTOR: u64 = 512;
const MOUNT_DIR_MODE: u32 = 0o700;

/// Why a device step stopped. The variant says whether running again can help.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The kernel never writes this: retrying reads the same thing.
    #[error("{path}: {value:?} is not a number")]
    MalformedNumber { path: PathBuf, value: String },
    /// The numbers contradict each other (e.g. a partition ending past its disk): permanent.
    #[error("{0}")]
    Inconsistent(String),
    /// The root file system's device is not in sysfs: permanent for this boot.
    #[error("the root file system's device cannot be found: {0}")]
    RootNotFound(String),
    /// An I/O error: may pass (next boot).
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    /// The program is missing or could not start: retrying helps once it is installed.
    #[error("running {program}: {source}")]
    Spawn { program: String, source: io::Error },
    /// The program ran and refused: may pass, depending on its reason.
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        command: String,
        status: String,
        stderr: String,
    },
}

impl DeviceError {
    /// Whether the same step may succeed on a later run.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            DeviceError::Read { .. }
                | DeviceError::Spawn { .. }
                | DeviceError::CommandFailed { .. }
        )
    }
}

/// Where the system's views are: `/sys`, `/dev`, `/proc/self/mountinfo` and `/run` on the appliance.
#[derive(Debug, Clone)]
pub struct SystemPaths {
    pub sys: PathBuf,
    pub dev: PathBuf,
    pub mountinfo: PathBuf,
    pub run: PathBuf,
}

impl SystemPaths {
    /// The views under `root` (`/` for the real system).
    pub fn under(root: &Path) -> SystemPaths {
        SystemPaths {
            sys: root.join("sys"),
            dev: root.join("dev"),
            mountinfo: root.join("proc/self/mountinfo"),
            run: root.join("run"),
        }
    }

    fn block(&self) -> PathBuf {
        self.sys.join("block")
    }

    fn node(&self, name: &str) -> String {
        self.dev.join(name).display().to_string()
    }
}

/// What a program did: its exit code (`None` when killed by a signal) and its output.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CommandOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    fn status(&self) -> String {
        self.code
            .map_or_else(|| "killed by a signal".into(), |c| format!("exit {c}"))
    }

    fn reason(&self) -> String {
        let first = self.stderr.lines().find(|l| !l.trim().is_empty());
        match first {
            Some(line) => format!("{}: {}", self.status(), line.trim()),
            None => self.status(),
        }
    }
}

/// Runs a program to completion with `stdin` (none when `None`) and captures its output.
pub trait CommandRunner {
    fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<CommandOutput, DeviceError>;
}

/// Runs the real programs. Not unit tested (formatting and repartitioning need real disks);
/// `ova-build --boot-test` runs it on the appliance VM's disks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRunner;

impl CommandRunner for SystemRunner {
    fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<CommandOutput, DeviceError> {
        let spawn_error = |source| DeviceError::Spawn {
            program: program.into(),
            source,
        };
        let mut child = Command::new(program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_error)?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // Dropping the pipe closes it, so the program sees the end of its input.
            pipe.write_all(input.as_bytes()).map_err(spawn_error)?;
        }
        let output = child.wait_with_output().map_err(spawn_error)?;
        Ok(CommandOutput {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

/// Runs and requires exit 0.
fn run_checked(
    runner: &dyn CommandRunner,
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<CommandOutput, DeviceError> {
    let output = runner.run(program, args, stdin)?;
    if output.success() {
        return Ok(output);
    }
    Err(DeviceError::CommandFailed {
        command: std::iter::once(program)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" "),
        status: output.status(),
        stderr: output.stderr.trim().to_string(),
    })
}

fn read_attr(path: &Path) -> Result<String, DeviceError> {
    std::fs::read_to_string(path)
        .map(|text| text.trim().to_string())
        .map_err(|source| DeviceError::Read {
            path: path.to_path_buf(),
            source,
        })
}

fn read_number(path: &Path) -> Result<u64, DeviceError> {
    let value = read_attr(path)?;
    value.parse().map_err(|_| DeviceError::MalformedNumber {
        path: path.to_path_buf(),
        value,
    })
}

fn mib(sectors: u64) -> u64 {
    sectors.saturating_mul(SYSFS_SECTOR) >> 20
}

/// Names in `dir`, sorted, for the entries `keep` accepts.
fn names_in(dir: &Path, keep: impl Fn(&str) -> bool) -> Result<Vec<String>, DeviceError> {
    let entries = std::fs::read_dir(dir).map_err(|source| DeviceError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| keep(name))
        .collect();
    names.sort();
    Ok(names)
}

/// The partitions of `disk`: its sysfs subfolders that have a `partition` attribute.
fn partitions_of(paths: &SystemPaths, disk: &str) -> Result<Vec<String>, DeviceError> {
    let dir = paths.block().join(disk);
    names_in(&dir, |name| dir.join(name).join("partition").is_file())
}

fn starts_then_digits(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
}

fn starts_then_letters(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_lowercase()))
}

/// Whole disks a data disk can be: SCSI/SATA, virtio and NVMe namespaces.
pub fn is_disk_name(name: &str) -> bool {
    if starts_then_letters(name, "sd") || starts_then_letters(name, "vd") {
        return true;
    }
    // nvme<controller>n<namespace>, without a partition suffix.
    name.strip_prefix("nvme")
        .and_then(|rest| rest.split_once('n'))
        .is_some_and(|(ctrl, ns)| {
            [ctrl, ns]
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        })
}

// ---------------------------------------------------------------------------------------------
// CD-ROM

/// The OVF environments found on CD-ROMs, and one line per device for the console.
#[derive(Debug, Default)]
pub struct CdromScan {
    pub found: Vec<FoundEnvironment>,
    pub lines: Vec<String>,
}

/// Mounts each CD-ROM (`sr*`) read-only in a fresh folder under the run dir, copies out
/// `ovf-env.xml`, unmounts and removes the folder. A drive without a medium is skipped.
pub fn read_cdroms(paths: &SystemPaths, runner: &dyn CommandRunner) -> CdromScan {
    let mut scan = CdromScan::default();
    let drives = match names_in(&paths.block(), |name| starts_then_digits(name, "sr")) {
        Ok(drives) => drives,
        Err(err) => {
            scan.lines.push(format!("CD-ROM: not searched: {err}"));
            return scan;
        }
    };
    for drive in drives {
        let node = paths.node(&drive);
        match read_cdrom(paths, runner, &node, &mut scan.lines) {
            Ok(Some(found)) => {
                scan.lines
                    .push(format!("CD-ROM {node}: {OVF_ENV_FILE_NAME} found"));
                scan.found.push(found);
            }
            Ok(None) => scan
                .lines
                .push(format!("CD-ROM {node}: no {OVF_ENV_FILE_NAME} on it")),
            Err(reason) => scan.lines.push(format!("CD-ROM {node} skipped: {reason}")),
        }
    }
    scan
}

fn read_cdrom(
    paths: &SystemPaths,
    runner: &dyn CommandRunner,
    node: &str,
    lines: &mut Vec<String>,
) -> Result<Option<FoundEnvironment>, String> {
    let dir = paths
        .run
        .join(format!("ferry-cdrom-{}", uuid::Uuid::new_v4().simple()));
    files::create_dir_all(&dir, MOUNT_DIR_MODE)
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let dir_text = dir.display().to_string();
    let mount_options = ["-t", "iso9660", "-o", "ro,nodev,nosuid,noexec"];
    let mount_args: Vec<&str> = mount_options.into_iter().chain([node, &dir_text]).collect();
    let mounted = match runner.run("mount", &mount_args, None) {
        Ok(out) if out.success() => Ok(()),
        Ok(out) => Err(format!("no medium or not an ISO9660 ({})", out.reason())),
        Err(err) => Err(err.to_string()),
    };
    if let Err(reason) = mounted {
        let _ = std::fs::remove_dir(&dir);
        return Err(reason);
    }
    let file = dir.join(OVF_ENV_FILE_NAME);
    let read = if file.is_file() {
        read_limited(&file)
            .map(|document| {
                Some(FoundEnvironment {
                    source: format!("{node}:{OVF_ENV_FILE_NAME}"),
                    document,
                })
            })
            .map_err(|e| e.to_string())
    } else {
        Ok(None)
    };
    match runner.run("umount", &[&dir_text], None) {
        // remove_dir, never remove_dir_all: should the unmount have silently failed, the
        // medium's files stay untouched.
        Ok(out) if out.success() => {
            let _ = std::fs::remove_dir(&dir);
        }
        Ok(out) => lines.push(format!(
            "CD-ROM {node}: still mounted at {dir_text} ({})",
            out.reason()
        )),
        Err(err) => lines.push(format!(
            "CD-ROM {node}: still mounted at {dir_text} ({err})"
        )),
    }
    read
}

// ---------------------------------------------------------------------------------------------
// Data disk

/// What `blkid -p` says about a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Exit 2, no output: no partition table, no file system.
    Blank,
    /// Already the data disk.
    Labelled,
    /// Anything else: left alone, with the reason.
    LeaveAlone(String),
}

/// Reads `blkid -p -o export` output and exit code. Only "exit 2 and silent" is blank.
pub fn classify_blkid(output: &CommandOutput) -> Probe {
    let values: Vec<(&str, &str)> = output
        .stdout
        .lines()
        .filter_map(|line| line.split_once('='))
        .collect();
    match output.code {
        Some(2) if output.stdout.trim().is_empty() => Probe::Blank,
        Some(0) if values.contains(&("LABEL", DATA_LABEL)) => Probe::Labelled,
        Some(0) => {
            let signature: Vec<String> = values
                .iter()
                .filter(|(key, _)| matches!(*key, "TYPE" | "PTTYPE" | "LABEL" | "USAGE"))
                .map(|(key, value)| format!("{key}={value}"))
                .collect();
            if signature.is_empty() {
                Probe::LeaveAlone("blkid found something it did not name".into())
            } else {
                Probe::LeaveAlone(format!("it carries {}", signature.join(" ")))
            }
        }
        _ => Probe::LeaveAlone(format!("blkid gave no clear answer ({})", output.reason())),
    }
}

struct DiskFacts {
    name: String,
    removable: bool,
    sectors: u64,
    partitions: Vec<String>,
}

/// Formats the first blank disk as ext4 labelled `ferry-data`, unless a disk carries that label
/// already. Returns one line per decision. sysfs is read in full before anything runs, so a
/// malformed attribute stops the step with nothing done.
pub fn prepare_data_disk(
    paths: &SystemPaths,
    runner: &dyn CommandRunner,
) -> Result<Vec<String>, DeviceError> {
    let by_label = paths.dev.join("disk/by-label").join(DATA_LABEL);
    if by_label.exists() {
        return Ok(vec![format!(
            "data disk: {} exists already; nothing to do",
            by_label.display()
        )]);
    }
    // Without knowing the root disk nothing is formatted, whatever blkid says.
    let root = find_root(paths)?;
    let mut facts = Vec::new();
    for name in names_in(&paths.block(), is_disk_name)? {
        let dir = paths.block().join(&name);
        facts.push(DiskFacts {
            removable: read_number(&dir.join("removable"))? != 0,
            sectors: read_number(&dir.join("size"))?,
            partitions: partitions_of(paths, &name)?,
            name,
        });
    }

    let mut lines = Vec::new();
    let mut blank = Vec::new();
    for disk in &facts {
        let node = paths.node(&disk.name);
        let skip = if disk.name == root.disk {
            Some("it holds the root file system".to_string())
        } else if disk.removable {
            Some("it is removable".into())
        } else if disk.sectors == 0 {
            Some("its size is 0".into())
        } else {
            None
        };
        if let Some(reason) = skip {
            lines.push(format!("data disk: {node} left alone: {reason}"));
            continue;
        }
        // A labelled partition counts too: someone made the data disk by hand.
        for part in &disk.partitions {
            let part_node = paths.node(part);
            let probe = runner.run("blkid", &["-p", "-o", "export", &part_node], None)?;
            if classify_blkid(&probe) == Probe::Labelled {
                lines.push(format!("data disk: {part_node} is {DATA_LABEL} already"));
                return Ok(lines);
            }
        }
        if !disk.partitions.is_empty() {
            let parts = disk.partitions.join(", ");
            lines.push(format!(
                "data disk: {node} left alone: it has partitions ({parts})"
            ));
            continue;
        }
        let probe = runner.run("blkid", &["-p", "-o", "export", &node], None)?;
        match classify_blkid(&probe) {
            Probe::Blank => blank.push(disk),
            Probe::Labelled => {
                lines.push(format!("data disk: {node} is {DATA_LABEL} already"));
                return Ok(lines);
            }
            Probe::LeaveAlone(reason) => {
                lines.push(format!("data disk: {node} left alone: {reason}"));
            }
        }
    }

    let Some(chosen) = blank.first() else {
        lines.push("data disk: no blank disk found; nothing formatted".into());
        return Ok(lines);
    };
    let node = paths.node(&chosen.name);
    if blank.len() > 1 {
        let names: Vec<&str> = blank.iter().map(|d| d.name.as_str()).collect();
        lines.push(format!(
            "data disk: several blank disks ({}); using the first, {node}",
            names.join(", ")
        ));
    }
    run_checked(
        runner,
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-L",
            DATA_LABEL,
            "-m",
            "0",
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1,nodiscard",
            &node,
        ],
        None,
    )?;
    lines.push(format!(
        "data disk: {node} formatted ext4, label {DATA_LABEL} ({} MiB)",
        mib(chosen.sectors)
    ));
    Ok(lines)
}
