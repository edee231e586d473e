//! The two virtual disks: the system disk (MBR, one ext4 partition, GRUB for BIOS) and the blank
//! data disk that first boot formats. Nothing is loop-mounted: mke2fs fills the partition straight
//! from the staged folder, and GRUB's boot sectors are written into the image file.
//!
//! System disk layout (512-byte sectors):
//!
//! ```text
//! sector 0          boot.img code (bytes 0..440, NOPs at 0x66) + the MBR partition table
//! sectors 1..2047   core.img: GRUB with the modules to find the root by UUID and read ext4
//! sector 2048..end  partition 1: ext4 "ferry-root", bootable
//! ```

use crate::run;
use crate::stage::Stage;
use anyhow::{bail, Context, Result};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub const SYSTEM_DISK_BYTES: u64 = 4 << 30;
/// Thin: only what the appliance writes takes space on the datastore.
pub const DATA_DISK_BYTES: u64 = 64 << 30;
const PARTITION_START_SECTOR: u64 = 2048;
const SECTOR: u64 = 512;
/// Where GRUB's boot.img keeps the "boot drive check" jump that grub-bios-setup replaces with
/// two NOPs, so BIOSes that pass a wrong drive number still boot.
const BOOT_DRIVE_CHECK: u64 = 0x66;
const GRUB_MODULES: &[&str] = &[
    "biosdisk",
    "part_msdos",
    "ext2",
    "search",
    "search_fs_uuid",
    "normal",
    "linux",
    "boot",
    "serial",
    "terminal",
    "echo",
    "test",
    "configfile",
];

#[derive(Debug, Clone)]
pub struct DiskFile {
    pub vmdk: PathBuf,
    pub capacity: u64,
}

#[derive(Debug)]
pub struct Disks {
    pub system: DiskFile,
    pub data: DiskFile,
}

pub fn build(work: &Path, stage: &Stage) -> Result<Disks> {
    let raw = work.join("system.raw");
    let _ = std::fs::remove_file(&raw);
    std::fs::File::create(&raw)?.set_len(SYSTEM_DISK_BYTES)?;
    run::cmd_in(
        None,
        "sfdisk",
        ["-q".as_ref(), raw.as_os_str()],
        Some(format!("label: dos\nstart={PARTITION_START_SECTOR}, type=83, bootable\n").as_bytes()),
    )?;
    let offset = PARTITION_START_SECTOR * SECTOR;
    run::cmd(
        "mke2fs",
        [
            "-q".into(),
            "-F".into(),
            "-t".into(),
            "ext4".into(),
            "-L".into(),
            "ferry-root".into(),
            "-U".into(),
            stage.root_uuid.clone(),
            "-E".into(),
            format!("offset={offset},nodiscard"),
            "-d".into(),
            stage.path.display().to_string(),
            raw.display().to_string(),
            format!("{}k", (SYSTEM_DISK_BYTES - offset) / 1024),
        ],
    )?;
    install_grub(work, &raw, &stage.root_uuid)?;

    let system = work.join("ferry-system.vmdk");
    let data = work.join("ferry-data.vmdk");
    for old in [&system, &data] {
        let _ = std::fs::remove_file(old);
    }
    run::cmd(
        "qemu-img",
        [
            "convert".as_ref(),
            "-f".as_ref(),
            "raw".as_ref(),
            "-O".as_ref(),
            "vmdk".as_ref(),
            "-o".as_ref(),
            "subformat=streamOptimized,adapter_type=lsilogic".as_ref(),
            raw.as_os_str(),
            system.as_os_str(),
        ],
    )?;
    run::cmd(
        "qemu-img",
        [
            "create".into(),
            "-q".into(),
            "-f".into(),
            "vmdk".into(),
            "-o".into(),
            "subformat=streamOptimized,adapter_type=lsilogic".into(),
            data.display().to_string(),
            DATA_DISK_BYTES.to_string(),
        ],
    )?;
    std::fs::remove_file(&raw)?;
    Ok(Disks {
        system: DiskFile {
            vmdk: system,
            capacity: SYSTEM_DISK_BYTES,
        },
        data: DiskFile {
            vmdk: data,
            capacity: DATA_DISK_BYTES,
        },
    })
}

/// What grub-install does for a BIOS disk, without the block device it insists on.
fn install_grub(work: &Path, raw: &Path, root_uuid: &str) -> Result<()> {
    let early = work.join("grub-early.cfg");
    std::fs::write(
        &early,
        format!(
            "search --no-floppy --fs-uuid --set=root {root_uuid}\nset prefix=($root)/boot/grub\n"
        ),
    )?;
    let core = work.join("grub-core.img");
    let mut args: Vec<String> = ["-O", "i386-pc", "-p", "/boot/grub"]
        .map(String::from)
        .to_vec();
    args.extend([
        "-o".into(),
        core.display().to_string(),
        "-c".into(),
        early.display().to_string(),
    ]);
    args.extend(GRUB_MODULES.iter().map(|m| m.to_string()));
    run::cmd("grub-mkimage", &args)?;
    let core_img = std::fs::read(&core)?;
    let boot_img = std::fs::read("/usr/lib/grub/i386-pc/boot.img")
        .context("reading GRUB's boot.img (package grub-pc-bin)")?;
    write_boot_sectors(raw, &boot_img, &core_img)
}

/// Writes boot.img's code into the MBR (keeping the partition table) and core.img into the gap
/// before the partition.
pub fn write_boot_sectors(raw: &Path, boot_img: &[u8], core_img: &[u8]) -> Result<()> {
    if boot_img.len() < 440 {
        bail!("boot.img is {} bytes, expected 512", boot_img.len());
    }
    let gap = (PARTITION_START_SECTOR - 1) * SECTOR;
    if core_img.len() as u64 > gap {
        bail!(
            "GRUB's core.img is {} bytes; the gap before the partition holds {gap}",
            core_img.len()
        );
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(raw)
        .with_context(|| format!("opening {}", raw.display()))?;
    file.write_all(&boot_img[..440])?;
    file.seek(SeekFrom::Start(BOOT_DRIVE_CHECK))?;
    file.write_all(&[0x90, 0x90])?;
    file.seek(SeekFrom::Start(SECTOR))?;
    file.write_all(core_img)?;
    file.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_sectors_keep_the_partition_table() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("d.raw");
        let mut image = vec![0u8; 4096 * 512];
        image[446..510].fill(0xAB); // the partition table
        image[510] = 0x55;
        image[511] = 0xAA;
        std::fs::write(&raw, &image).unwrap();
        let boot = vec![0x11u8; 512];
        let core = vec![0x22u8; 3 * 512 + 7];
        write_boot_sectors(&raw, &boot, &core).unwrap();
        let got = std::fs::read(&raw).unwrap();
        assert!(got[..0x66].iter().all(|&b| b == 0x11));
        assert_eq!(&got[0x66..0x68], &[0x90, 0x90]);
        assert!(got[0x68..440].iter().all(|&b| b == 0x11));
        assert!(
            got[446..510].iter().all(|&b| b == 0xAB),
            "partition table kept"
        );
        assert_eq!(&got[510..512], &[0x55, 0xAA]);
        assert!(got[512..512 + core.len()].iter().all(|&b| b == 0x22));
        assert_eq!(got[512 + core.len()], 0);
    }

    #[test]
    fn a_core_image_over_the_gap_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("d.raw");
        std::fs::write(&raw, vec![0u8; 1 << 20]).unwrap();
        let err = write_boot_sectors(&raw, &[0; 512], &vec![0; 2047 * 512 + 1]).unwrap_err();
        assert!(err.to_string().contains("gap"), "{err}");
        assert!(write_boot_sectors(&raw, &[0; 100], &[0; 10]).is_err());
    }
}
