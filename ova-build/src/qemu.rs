//! A VM with VMware-like hardware under QEMU's software emulation, for the boot test: i440FX with
//! SeaBIOS, a pvscsi controller with the OVA's two disks (behind throw-away qcow2 overlays), an IDE
//! CD-ROM holding the OVF environment ISO, and a vmxnet3 adapter on a user-mode network that reaches
//! nothing but the host's 127.0.0.1 port forwards.
//!
//! TCG, never KVM: on this project's machines /dev/kvm exists but guests die right after GRUB.

use crate::run;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

#[derive(Debug, Clone)]
pub struct Qemu {
    pub binary: PathBuf,
    /// `-L` firmware folders: a QEMU unpacked outside /usr looks for them beside its binary.
    pub firmware: Vec<PathBuf>,
}

impl Qemu {
    pub fn find(given: Option<&Path>) -> Result<Qemu> {
        let binary = given
            .map(Path::to_path_buf)
            .or_else(|| run::which("qemu-system-x86_64"))
            .or_else(|| {
                let local = PathBuf::from("target/qemu-root/usr/bin/qemu-system-x86_64");
                local.is_file().then_some(local)
            })
            .context(
                "qemu-system-x86_64 not found (scripts/image-tools.sh installs it; or --qemu)",
            )?;
        let firmware = if binary.starts_with("/usr/bin") {
            Vec::new()
        } else {
            [
                "/usr/share/qemu",
                "/usr/share/seabios",
                "/usr/lib/ipxe/qemu",
            ]
            .iter()
            .map(PathBuf::from)
            .filter(|dir| dir.is_dir())
            .collect()
        };
        Ok(Qemu { binary, firmware })
    }
}

/// A port forward from 127.0.0.1 on the host to an address and port in the guest.
#[derive(Debug, Clone)]
pub struct Forward {
    pub host_port: u16,
    pub guest: String,
    pub guest_port: u16,
}

#[derive(Debug)]
pub struct VmSpec<'a> {
    pub name: &'a str,
    pub dir: &'a Path,
    pub system_vmdk: &'a Path,
    /// The system disk as the VM sees it: larger than the VMDK's capacity to test root growth.
    pub system_bytes: u64,
    pub data_vmdk: &'a Path,
    pub env_iso: Option<&'a Path>,
    pub forwards: &'a [Forward],
    pub memory_mib: u32,
}

/// A running VM; dropping it stops QEMU (the process this tool started, by its handle).
#[derive(Debug)]
pub struct Vm {
    child: Child,
    pub serial_log: PathBuf,
}

impl Vm {
    pub fn start(qemu: &Qemu, spec: &VmSpec) -> Result<Vm> {
        let system = spec.dir.join(format!("{}-system.qcow2", spec.name));
        let data = spec.dir.join(format!("{}-data.qcow2", spec.name));
        overlay(spec.system_vmdk, &system, Some(spec.system_bytes))?;
        overlay(spec.data_vmdk, &data, None)?;
        let serial_log = spec.dir.join(format!("{}-serial.log", spec.name));
        let _ = std::fs::remove_file(&serial_log);
        let hostfwd: String = spec
            .forwards
            .iter()
            .map(|f| {
                format!(
                    ",hostfwd=tcp:127.0.0.1:{}-{}:{}",
                    f.host_port, f.guest, f.guest_port
                )
            })
            .collect();
        let mut cmd = Command::new(&qemu.binary);
        for dir in &qemu.firmware {
            cmd.arg("-L").arg(dir);
        }
        cmd.args(["-machine", "pc,accel=tcg", "-smp", "2", "-m"])
            .arg(spec.memory_mib.to_string())
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .arg("-serial")
            .arg(format!("file:{}", serial_log.display()))
            .args(["-device", "pvscsi,id=scsi0"])
            .arg("-drive")
            .arg(format!(
                "if=none,id=system,file={},format=qcow2",
                system.display()
            ))
            .args([
                "-device",
                "scsi-hd,drive=system,bus=scsi0.0,scsi-id=0,bootindex=0",
            ])
            .arg("-drive")
            .arg(format!(
                "if=none,id=data,file={},format=qcow2",
                data.display()
            ))
            .args(["-device", "scsi-hd,drive=data,bus=scsi0.0,scsi-id=1"])
            .arg("-netdev")
            .arg(format!("user,id=net0,restrict=on{hostfwd}"))
            .args(["-device", "vmxnet3,netdev=net0,romfile="]);
        if let Some(iso) = spec.env_iso {
            cmd.arg("-drive").arg(format!(
                "if=ide,index=2,media=cdrom,readonly=on,format=raw,file={}",
                iso.display()
            ));
        }
        let qemu_log = spec.dir.join(format!("{}-qemu.log", spec.name));
        let log = std::fs::File::create(&qemu_log)?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", qemu.binary.display()))?;
        Ok(Vm { child, serial_log })
    }

    /// Fails when QEMU has exited: no point waiting for a guest that is gone.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "QEMU exited ({status}); serial log: {}",
                self.serial_log.display()
            );
        }
        Ok(())
    }

    pub fn serial(&self) -> String {
        std::fs::read(&self.serial_log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A qcow2 overlay: the OVA's VMDK (or an earlier boot's disk) stays untouched, whatever the guest
/// writes.
fn overlay(backing: &Path, overlay: &Path, size: Option<u64>) -> Result<()> {
    let _ = std::fs::remove_file(overlay);
    let format = match backing.extension().and_then(|e| e.to_str()) {
        Some("qcow2") => "qcow2",
        _ => "vmdk",
    };
    let mut args = vec![
        "create".to_string(),
        "-q".into(),
        "-f".into(),
        "qcow2".into(),
        "-F".into(),
        format.into(),
        "-b".into(),
        backing.display().to_string(),
        overlay.display().to_string(),
    ];
    if let Some(size) = size {
        args.push(size.to_string());
    }
    run::cmd("qemu-img", &args).map(|_| ())
}

/// The OVF environment document as vSphere writes it for the ISO transport.
pub fn ovf_env(properties: &[(&str, String)]) -> String {
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <Environment xmlns=\"http://schemas.dmtf.org/ovf/environment/1\"\n     \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"\n     \
         xmlns:oe=\"http://schemas.dmtf.org/ovf/environment/1\"\n     \
         xmlns:ve=\"http://www.vmware.com/schema/ovfenv\"\n     \
         oe:id=\"\" ve:vCenterId=\"vm-1001\">\n   \
         <PlatformSection>\n      <Kind>VMware ESXi</Kind>\n      <Version>8.0.2</Version>\n      \
         <Vendor>VMware, Inc.</Vendor>\n      <Locale>en</Locale>\n   </PlatformSection>\n   \
         <PropertySection>\n",
    );
    for (key, value) in properties {
        xml.push_str(&format!(
            "         <Property oe:key=\"{}\" oe:value=\"{}\"/>\n",
            crate::ovf::escape(key),
            crate::ovf::escape(value)
        ));
    }
    xml.push_str(
        "   </PropertySection>\n   <ve:EthernetAdapterSection>\n      \
         <ve:Adapter ve:mac=\"00:50:56:aa:bb:cc\" ve:network=\"VM Network\" ve:unitNumber=\"7\"/>\n   \
         </ve:EthernetAdapterSection>\n</Environment>\n",
    );
    xml
}

/// An ISO9660 image with `ovf-env.xml`, labelled like vSphere's.
pub fn env_iso(dir: &Path, name: &str, document: &str) -> Result<PathBuf> {
    let src = dir.join(format!("{name}-env"));
    std::fs::create_dir_all(&src)?;
    std::fs::write(src.join("ovf-env.xml"), document)?;
    let iso = dir.join(format!("{name}-env.iso"));
    run::cmd(
        "genisoimage",
        [
            "-quiet".as_ref(),
            "-r".as_ref(),
            "-J".as_ref(),
            "-V".as_ref(),
            "OVF ENV".as_ref(),
            "-o".as_ref(),
            iso.as_os_str(),
            src.join("ovf-env.xml").as_os_str(),
        ],
    )?;
    Ok(iso)
}

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_escapes_values() {
        let xml = ovf_env(&[("ferry.admin_password", "a\"b<&>".into())]);
        assert!(xml.contains("oe:key=\"ferry.admin_password\" oe:value=\"a&quot;b&lt;&amp;&gt;\""));
        assert!(xml.starts_with("<?xml"));
        assert!(xml.contains("xmlns=\"http://schemas.dmtf.org/ovf/environment/1\""));
    }
}
