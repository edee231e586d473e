//! The root file system's device, and growing it into a disk made larger.

use super::{
    mib, names_in, partitions_of, read_attr, read_number, run_checked, CommandRunner, DeviceError,
    SystemPaths, SYSFS_SECTOR,
};

/// Less free space than this after the root partition is not worth a repartition.
pub const MIN_GROWTH_BYTES: u64 = 16 << 20;

/// The block device the root file system is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootDevice {
    /// The whole disk, e.g. `sda`.
    pub disk: String,
    /// The partition, e.g. `sda1`; `None` when the file system fills the whole disk.
    pub partition: Option<String>,
    pub fstype: String,
}

/// The root mount in mountinfo (the last one, should `/` be mounted over): its `major:minor`,
/// file system type and source.
pub fn parse_root_mount(mountinfo: &str) -> Option<(String, String, String)> {
    mountinfo.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(4) != Some(&"/") {
            return None;
        }
        // Optional fields end at the lone "-"; type and source follow it.
        let sep = fields.iter().skip(6).position(|f| *f == "-")? + 6;
        let fstype = fields.get(sep + 1)?;
        let source = fields.get(sep + 2)?;
        Some((
            fields.get(2)?.to_string(),
            fstype.to_string(),
            source.to_string(),
        ))
    })
}

/// Finds the root file system's partition and disk: by the mount's source (following
/// `/dev/root` or `/dev/disk/by-uuid/...` links), else by its `major:minor` in sysfs.
pub fn find_root(paths: &SystemPaths) -> Result<RootDevice, DeviceError> {
    let mountinfo = read_attr(&paths.mountinfo)?;
    let (majmin, fstype, source) = parse_root_mount(&mountinfo)
        .ok_or_else(|| DeviceError::RootNotFound("no `/` in mountinfo".into()))?;
    let by_name = source.strip_prefix("/dev/").and_then(|rel| {
        let node = paths.dev.join(rel);
        let target = std::fs::canonicalize(&node).unwrap_or(node);
        target.file_name()?.to_str().map(str::to_string)
    });
    let disks = names_in(&paths.block(), |_| true)?;
    let mut by_number = None;
    for disk in &disks {
        if by_name.as_deref() == Some(disk.as_str()) {
            return Ok(root_device(disk, None, fstype));
        }
        let disk_dir = paths.block().join(disk);
        if read_attr(&disk_dir.join("dev")).ok().as_deref() == Some(majmin.as_str()) {
            by_number = Some((disk.clone(), None));
        }
        for part in partitions_of(paths, disk)? {
            if by_name.as_deref() == Some(part.as_str()) {
                return Ok(root_device(disk, Some(part), fstype));
            }
            if read_attr(&disk_dir.join(&part).join("dev")).ok().as_deref() == Some(&majmin) {
                by_number = Some((disk.clone(), Some(part)));
            }
        }
    }
    match by_number {
        Some((disk, part)) => Ok(root_device(&disk, part, fstype)),
        None => Err(DeviceError::RootNotFound(format!(
            "neither {source} nor device {majmin} is in {}",
            paths.block().display()
        ))),
    }
}

fn root_device(disk: &str, partition: Option<String>, fstype: String) -> RootDevice {
    RootDevice {
        disk: disk.to_string(),
        partition,
        fstype,
    }
}

/// Grows the root partition (when last on its disk with at least [`MIN_GROWTH_BYTES`] free after
/// it) and then its ext file system, online. Returns the line for the console.
pub fn grow_root(paths: &SystemPaths, runner: &dyn CommandRunner) -> Result<String, DeviceError> {
    let root = find_root(paths)?;
    let Some(part) = root.partition else {
        return Ok(format!(
            "root file system: fills the whole disk {}; not grown",
            root.disk
        ));
    };
    let disk_dir = paths.block().join(&root.disk);
    let part_dir = disk_dir.join(&part);
    let number = read_number(&part_dir.join("partition"))?;
    let start = read_number(&part_dir.join("start"))?;
    let sectors = read_number(&part_dir.join("size"))?;
    let disk_sectors = read_number(&disk_dir.join("size"))?;
    let mut later = Vec::new();
    for other in partitions_of(paths, &root.disk)? {
        if other != part && read_number(&disk_dir.join(&other).join("start"))? > start {
            later.push(other);
        }
    }
    let end = start
        .checked_add(sectors)
        .filter(|end| *end <= disk_sectors)
        .ok_or_else(|| {
            DeviceError::Inconsistent(format!(
                "{part} (start {start}, size {sectors}) ends past {} ({disk_sectors} sectors)",
                root.disk
            ))
        })?;
    if !matches!(root.fstype.as_str(), "ext2" | "ext3" | "ext4") {
        return Ok(format!(
            "root file system: {} cannot be grown online by resize2fs; not grown",
            root.fstype
        ));
    }
    if !later.is_empty() {
        return Ok(format!(
            "root file system: {part} is not the last partition on {} ({} follow); not grown",
            root.disk,
            later.join(", ")
        ));
    }
    let free = (disk_sectors - end) * SYSFS_SECTOR;
    if free < MIN_GROWTH_BYTES {
        return Ok(format!(
            "root file system: {} MiB free after {part}, under {} MiB; not grown",
            free >> 20,
            MIN_GROWTH_BYTES >> 20
        ));
    }

    let disk_node = paths.node(&root.disk);
    let part_node = paths.node(&part);
    let number = number.to_string();
    // The kernel keeps using the mounted partition; partx tells it the new end afterwards.
    run_checked(
        runner,
        "sfdisk",
        &["--no-reread", "--no-tell-kernel", "-N", &number, &disk_node],
        Some(", +\n"),
    )?;
    run_checked(runner, "partx", &["-u", "--nr", &number, &disk_node], None)?;
    let grown = read_number(&part_dir.join("size"))?;
    if grown <= sectors {
        return Err(DeviceError::Inconsistent(format!(
            "after sfdisk and partx the kernel still sees {part} at {} MiB",
            mib(grown)
        )));
    }
    run_checked(runner, "resize2fs", &[&part_node], None)?;
    Ok(format!(
        "root file system grown from {} to {} MiB",
        mib(sectors),
        mib(grown)
    ))
}
