//! The staged root file system: a copy of the Debian tree with Ferry's overlay, binaries and the
//! machine-specific files a deployed appliance must not inherit from the build machine.

use crate::run;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct Inputs<'a> {
    pub work: &'a Path,
    pub rootfs: &'a Path,
    pub image_dir: &'a Path,
    pub appliance_bin: &'a Path,
    pub mobility_bin: &'a Path,
    pub version: &'a str,
}

#[derive(Debug)]
pub struct Stage {
    pub path: PathBuf,
    /// The root file system's UUID: fstab, GRUB and mke2fs must agree on it.
    pub root_uuid: String,
}

/// Units enabled in the image. ssh is installed but off (see packages.txt).
const ENABLE: &[&str] = &[
    "ferry-firstboot.service",
    "ferry-appliance.service",
    "ferry-console.service",
    "ferry-console.path",
    "var-lib-ferry.mount",
    "systemd-networkd.service",
    "systemd-resolved.service",
    "systemd-timesyncd.service",
];
const DISABLE: &[&str] = &["ssh.service", "ssh.socket"];
/// Package-maintenance timers make no sense on an image-based appliance.
const MASK: &[&str] = &[
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
];

pub fn prepare(inputs: &Inputs) -> Result<Stage> {
    let stage = inputs.work.join("stage");
    if stage.exists() {
        std::fs::remove_dir_all(&stage)?;
    }
    run::cmd(
        "cp",
        [
            "-a".as_ref(),
            "--reflink=auto".as_ref(),
            inputs.rootfs.as_os_str(),
            stage.as_os_str(),
        ],
    )?;
    let overlay = inputs.image_dir.join("overlay");
    run::cmd(
        "cp",
        [
            "-a".as_ref(),
            "--no-preserve=ownership".as_ref(),
            overlay.join(".").as_os_str(),
            stage.as_os_str(),
        ],
    )?;
    install_binary(inputs.appliance_bin, &stage.join("usr/lib/ferry/appliance"))?;
    install_binary(
        inputs.mobility_bin,
        &stage.join("usr/lib/ferry/agents/mobility-x86_64"),
    )?;
    write(
        &stage,
        "usr/lib/ferry/VERSION",
        &format!("{}\n", inputs.version),
    )?;
    let readme = inputs.image_dir.join("../README.md");
    if readme.is_file() {
        std::fs::create_dir_all(stage.join("usr/share/doc/ferry"))?;
        std::fs::copy(&readme, stage.join("usr/share/doc/ferry/README.md"))?;
    }

    let root_uuid = uuid_from(&format!("ferry-root-{}", inputs.version));
    machine_files(&stage, &root_uuid)?;
    for (verb, units) in [("enable", ENABLE), ("disable", DISABLE), ("mask", MASK)] {
        let mut args = vec![format!("--root={}", stage.display()), verb.to_string()];
        args.extend(units.iter().map(|u| u.to_string()));
        run::cmd("systemctl", &args).with_context(|| format!("systemctl {verb}"))?;
    }
    Ok(Stage {
        path: stage,
        root_uuid,
    })
}

/// Debug info is half of a debug build's size and useless on the appliance.
fn install_binary(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to.parent().context("no parent")?)?;
    if run::which("objcopy").is_some() {
        run::cmd(
            "objcopy",
            ["--strip-debug".as_ref(), from.as_os_str(), to.as_os_str()],
        )?;
    } else {
        std::fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn machine_files(stage: &Path, root_uuid: &str) -> Result<()> {
    write(stage, "etc/hostname", "ferry\n")?;
    write(
        stage,
        "etc/hosts",
        "127.0.0.1\tlocalhost\n127.0.1.1\tferry\n::1\t\tlocalhost ip6-localhost ip6-loopback\n",
    )?;
    write(
        stage,
        "etc/fstab",
        &format!("UUID={root_uuid} / ext4 defaults,noatime,errors=remount-ro 0 1\n"),
    )?;
    // Empty: systemd makes a machine id on first boot, so clones of one OVA differ.
    write(stage, "etc/machine-id", "")?;
    let _ = std::fs::remove_file(stage.join("var/lib/dbus/machine-id"));
    write(
        stage,
        "etc/apt/sources.list",
        "# The appliance is updated by deploying a new OVA; it has no package sources.\n",
    )?;
    let resolv = stage.join("etc/resolv.conf");
    let _ = std::fs::remove_file(&resolv);
    std::os::unix::fs::symlink("../run/systemd/resolve/stub-resolv.conf", &resolv)?;
    for entry in std::fs::read_dir(stage.join("etc/ssh"))? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
            std::fs::remove_file(entry.path())?;
        }
    }
    if stage.join("etc/ferry/firstboot.done").exists() {
        bail!("the overlay carries etc/ferry/firstboot.done: first boot would never run");
    }
    write(stage, "boot/grub/grub.cfg", &grub_cfg(root_uuid))?;
    Ok(())
}

/// The serial console comes first so QEMU's log shows boot; tty0, last, is the console vSphere
/// shows and where systemd writes.
pub fn grub_cfg(root_uuid: &str) -> String {
    format!(
        "set timeout=1\n\
         if serial --unit=0 --speed=115200; then\n  terminal_input --append serial\n  terminal_output --append serial\nfi\n\
         menuentry \"Ferry appliance\" {{\n  search --no-floppy --fs-uuid --set=root {root_uuid}\n  \
         linux /vmlinuz root=UUID={root_uuid} ro console=ttyS0,115200n8 console=tty0\n  initrd /initrd.img\n}}\n"
    )
}

fn write(stage: &Path, rel: &str, text: &str) -> Result<()> {
    let path = stage.join(rel);
    std::fs::create_dir_all(path.parent().context("no parent")?)?;
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

/// A version-4-shaped UUID derived from `seed`: the same version always gets the same file system
/// UUID, which keeps the build reproducible.
pub fn uuid_from(seed: &str) -> String {
    let mut b: [u8; 16] = Sha256::digest(seed.as_bytes())[..16]
        .try_into()
        .expect("16 bytes");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_uuid_is_stable_and_well_formed() {
        let a = uuid_from("ferry-root-0.1.0");
        assert_eq!(a, uuid_from("ferry-root-0.1.0"));
        assert_ne!(a, uuid_from("ferry-root-0.1.1"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4", "{a}");
        assert!("89ab".contains(&a[19..20]), "{a}");
    }

    #[test]
    fn grub_boots_the_root_by_uuid_on_both_consoles() {
        let cfg = grub_cfg("u-1");
        assert!(cfg.contains("--fs-uuid --set=root u-1"));
        assert!(cfg.contains("root=UUID=u-1 ro"));
        assert!(cfg.find("console=ttyS0").unwrap() < cfg.find("console=tty0").unwrap());
    }
}
