//! `ova-build --boot-test PATH.ova`: checks the OVA as vSphere would read it, then boots its disks
//! four times under QEMU, twice with an OVF environment on the CD-ROM the way vSphere's ISO transport
//! delivers it and twice without, and checks what first boot did. Exits 0 only when every check passed.
//!
//! - Boot "static": host name, static address, gateway and DNS, and an admin password. The forward
//!   goes to the static address, so an answer proves it applied; the serial console's login prompt
//!   shows the host name; the password's unattended setup completes; the system disk is 1 GiB larger
//!   than the VMDK so first boot grows the root file system; the blank data disk gets formatted; and
//!   the mobility agent on the host replicates a disk through the forwarded 9443 into the vault.
//! - Boot "bad address": an invalid address. First boot must fall back to DHCP with the reason on the
//!   console, the setup page must answer at the DHCP address, and setup must still be required.
//! - Boot "no environment": no CD-ROM. DHCP; the web setup completes with the token the console
//!   shows, and the banner then says setup is complete.
//! - Boot "upgrade": a new VM from the OVA with the static boot's data disk: set up, the old password
//!   and the old point, the disk left alone.

use crate::boot_checks::{self as check, https};
use crate::qemu::{self, Forward, Qemu, Vm, VmSpec};
use crate::{ova, run};
use anyhow::{bail, Context, Result};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Options {
    pub ova: PathBuf,
    pub work: PathBuf,
    pub mobility_bin: Option<PathBuf>,
    pub qemu: Option<PathBuf>,
    pub ovf_schema: Option<PathBuf>,
    pub timeout: Duration,
}

/// QEMU user networking hands the first DHCP lease out at this address.
const DHCP_ADDRESS: &str = "10.0.2.15";
const STATIC_ADDRESS: &str = "10.0.2.20";
const GROWTH_BYTES: u64 = 1 << 30;
/// Less than the OVF's 8 GiB: the test machine runs other things; the appliance needs far less.
const TEST_MEMORY_MIB: u32 = 2048;

pub fn run(opts: &Options) -> Result<()> {
    let started = Instant::now();
    run::require_tools(&["qemu-img", "genisoimage", "curl", "tar", "sha256sum"])?;
    let mobility = opts
        .mobility_bin
        .clone()
        .context("no mobility binary (build it, or pass --mobility-bin)")?;
    let qemu = Qemu::find(opts.qemu.as_deref())?;
    let dir = opts.work.join("boot-test");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(dir.join("ova"))?;
    let dir = std::fs::canonicalize(&dir)?;
    println!("== checking {}", opts.ova.display());
    let checked = ova::check(&opts.ova, &dir.join("ova"), opts.ovf_schema.as_deref())?;
    let [system, data] = checked.vmdks.as_slice() else {
        bail!(
            "expected two disks (system, data), found {}",
            checked.vmdks.len()
        );
    };
    let system_bytes = virtual_size(system)? + GROWTH_BYTES;

    let mut results = Vec::new();
    let mut failures = Vec::new();
    let carried = RefCell::new(None);
    let boots: [(&str, Boot); 4] = [
        ("static", boot_static),
        ("bad-address", boot_bad_address),
        ("no-environment", boot_without_environment),
        ("upgrade", boot_upgrade),
    ];
    for (name, boot) in boots {
        println!("== boot {name}");
        let ctx = BootContext {
            qemu: &qemu,
            dir: &dir,
            name,
            system,
            system_bytes,
            data,
            mobility: &mobility,
            timeout: opts.timeout,
            carried: &carried,
        };
        match boot(&ctx) {
            Ok(lines) => {
                for line in &lines {
                    println!("  ok: {line}");
                }
                results.extend(lines.into_iter().map(|l| format!("{name}: {l}")));
            }
            Err(err) => {
                println!("  FAILED: {err:#}");
                failures.push(format!("{name}: {err:#}"));
            }
        }
    }
    println!(
        "boot test: {} checks passed, {} boots failed, {:.0} s in all",
        results.len(),
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    if !failures.is_empty() {
        bail!("boot test failed:\n{}", failures.join("\n"));
    }
    Ok(())
}

/// One boot: the checks that passed, or the first that failed.
type Boot = fn(&BootContext) -> Result<Vec<String>>;

#[derive(Debug)]
struct BootContext<'a> {
    qemu: &'a Qemu,
    dir: &'a Path,
    name: &'a str,
    system: &'a Path,
    system_bytes: u64,
    data: &'a Path,
    mobility: &'a Path,
    timeout: Duration,
    /// What the static boot left for the upgrade boot: the admin password and the point.
    carried: &'a RefCell<Option<(String, String)>>,
}

impl BootContext<'_> {
    /// Without properties no CD-ROM is attached: a VM deployed without an OVF environment.
    fn boot(&self, properties: Option<&[(&str, String)]>, forwards: &[Forward]) -> Result<Vm> {
        self.boot_with_data(properties, forwards, self.data)
    }

    fn boot_with_data(
        &self,
        properties: Option<&[(&str, String)]>,
        forwards: &[Forward],
        data: &Path,
    ) -> Result<Vm> {
        let iso = match properties {
            Some(properties) => Some(qemu::env_iso(
                self.dir,
                self.name,
                &qemu::ovf_env(properties),
            )?),
            None => None,
        };
        Vm::start(
            self.qemu,
            &VmSpec {
                name: self.name,
                dir: self.dir,
                system_vmdk: self.system,
                system_bytes: self.system_bytes,
                data_vmdk: data,
                env_iso: iso.as_deref(),
                forwards,
                memory_mib: TEST_MEMORY_MIB,
            },
        )
    }
}

fn forwards(guest: &str) -> Result<(u16, u16, Vec<Forward>)> {
    let api = qemu::free_port()?;
    let data = qemu::free_port()?;
    let list = vec![
        Forward {
            host_port: api,
            guest: guest.into(),
            guest_port: 443,
        },
        Forward {
            host_port: data,
            guest: guest.into(),
            guest_port: 9443,
        },
    ];
    Ok((api, data, list))
}

fn boot_static(ctx: &BootContext) -> Result<Vec<String>> {
    let password = format!("Boot-{}", hex::encode(rand::random::<[u8; 8]>()));
    let hostname = "ferry-boot-static";
    let (api, data_port, fwd) = forwards(STATIC_ADDRESS)?;
    let mut vm = ctx.boot(
        Some(&[
            ("ferry.hostname", hostname.into()),
            ("ferry.ip", format!("{STATIC_ADDRESS}/24")),
            ("ferry.gateway", "10.0.2.2".into()),
            ("ferry.dns", "10.0.2.3".into()),
            ("ferry.admin_password", password.clone()),
        ]),
        &fwd,
    )?;
    let mut ok = Vec::new();
    let took = check::wait_https(&mut vm, api, "/api/v1/setup", 200, ctx.timeout)?;
    ok.push(format!(
        "setup API answered over HTTPS at the static address {STATIC_ADDRESS} after {:.0} s",
        took.as_secs_f64()
    ));
    check::wait_setup_complete(&mut vm, api, Duration::from_secs(180))?;
    let token = check::login(api, &password)?;
    ok.push("unattended setup from the admin password completed; admin signs in".into());
    // The console banner comes last: after the listener, once setup is known.
    let serial = check::wait_banner(&mut vm)?;
    let status = https(api, "GET", "/api/v1/status", Some(&token), None)?.json()?;
    let fingerprint = status["ca_fingerprint"]
        .as_str()
        .context("no ca_fingerprint")?;
    for (needle, what) in [
        (
            format!("network: static {STATIC_ADDRESS}/24"),
            "the static address applied".to_string(),
        ),
        (
            format!("{hostname} login:"),
            format!("host name {hostname} on the login prompt"),
        ),
        (
            "root file system grown".into(),
            "root file system grown into the enlarged disk".into(),
        ),
        (
            "label ferry-data".into(),
            "blank data disk formatted as ferry-data".into(),
        ),
        (
            fingerprint.to_string(),
            "the console banner shows the CA fingerprint".into(),
        ),
        (
            "Setup is complete".into(),
            "the console banner says setup is complete".into(),
        ),
    ] {
        check::expect_on_console(&vm, &serial, &needle, &what)?;
        ok.push(what);
    }
    let disk = ctx.dir.join("replicated.img");
    check::seeded_disk(&disk, 32, 5)?;
    let point = check::replicate(
        &mut vm,
        api,
        data_port,
        &token,
        ctx.mobility,
        ctx.dir,
        &disk,
    )?;
    ok.push(format!(
        "agent replicated 32 MiB through the forwarded 9443; point {point} is in the vault"
    ));
    *ctx.carried.borrow_mut() = Some((password, point));
    Ok(ok)
}

fn boot_bad_address(ctx: &BootContext) -> Result<Vec<String>> {
    let hostname = "ferry-boot-dhcp";
    let (api, _, fwd) = forwards(DHCP_ADDRESS)?;
    let mut vm = ctx.boot(
        Some(&[
            ("ferry.hostname", hostname.into()),
            ("ferry.ip", "10.0.2.300/24".into()),
            ("ferry.gateway", "10.0.2.2".into()),
        ]),
        &fwd,
    )?;
    let mut ok = Vec::new();
    let took = check::wait_https(&mut vm, api, "/setup", 200, ctx.timeout)?;
    ok.push(format!(
        "setup page answered at the DHCP address {DHCP_ADDRESS} after {:.0} s",
        took.as_secs_f64()
    ));
    let phase = check::phase(&https(api, "GET", "/api/v1/setup", None, None)?)?;
    if phase != "required" {
        bail!("without an admin password setup should be required, it is {phase}");
    }
    let serial = check::wait_banner(&mut vm)?;
    let reason = serial
        .lines()
        .find(|l| l.contains("network: DHCP ("))
        .context("no DHCP fallback line on the console")?
        .trim()
        .to_string();
    if !reason.contains("10.0.2.300") {
        bail!("the DHCP fallback's reason does not name the bad value: {reason}");
    }
    ok.push(format!(
        "bad address fell back to DHCP, the console says why: {reason}"
    ));
    for (needle, what) in [
        (
            format!("{hostname} login:"),
            "the valid host name still applied",
        ),
        (
            "/setup".to_string(),
            "the console banner shows the setup URL",
        ),
        (
            "and enter this setup token:".to_string(),
            "the console banner shows the setup token",
        ),
    ] {
        check::expect_on_console(&vm, &serial, &needle, what)?;
        ok.push(what.to_string());
    }
    Ok(ok)
}

/// No OVF environment at all (a deploy through a standalone host): DHCP, and the web setup finishes
/// the job with the setup token the console shows.
fn boot_without_environment(ctx: &BootContext) -> Result<Vec<String>> {
    let (api, _, fwd) = forwards(DHCP_ADDRESS)?;
    let mut vm = ctx.boot(None, &fwd)?;
    let mut ok = Vec::new();
    let took = check::wait_https(&mut vm, api, "/setup", 200, ctx.timeout)?;
    ok.push(format!(
        "setup page answered on DHCP after {:.0} s",
        took.as_secs_f64()
    ));
    let serial = check::wait_banner(&mut vm)?;
    if !serial.contains("OVF environment: none") {
        bail!("the console does not say that no OVF environment was found");
    }
    let token = setup_token(&serial).context("no setup token on the console")?;
    ok.push("no OVF environment: DHCP, and the console shows the setup token".into());
    let password = format!("Web-{}", hex::encode(rand::random::<[u8; 8]>()));
    let r = https(
        api,
        "POST",
        "/api/v1/setup",
        None,
        Some(&serde_json::json!({"token": token, "admin_password": password})),
    )?;
    if r.status != 200 {
        bail!(
            "setup with the console's token: HTTP {}: {}",
            r.status,
            r.body
        );
    }
    check::login(api, &password)?;
    ok.push("the web setup with the console's token completed; admin signs in".into());
    // ferry-console.path sees the admin token appear and the banner changes.
    check::wait_serial(&mut vm, "Setup is complete", Duration::from_secs(120))?;
    ok.push("the console banner turned to \"setup complete\"".into());
    Ok(ok)
}

/// An upgrade the vSphere way: a new appliance VM from the OVA, given the old appliance's data disk
/// (here the static boot's). First boot must leave that disk alone, and the appliance must come up
/// set up, with the old admin password and the old recovery point.
fn boot_upgrade(ctx: &BootContext) -> Result<Vec<String>> {
    let (password, point) = ctx
        .carried
        .borrow()
        .clone()
        .context("the static boot did not finish, so there is no data disk to carry over")?;
    let old_data = ctx.dir.join("static-data.qcow2");
    let (api, _, fwd) = forwards(DHCP_ADDRESS)?;
    let mut vm = ctx.boot_with_data(None, &fwd, &old_data)?;
    let mut ok = Vec::new();
    check::wait_https(&mut vm, api, "/api/v1/setup", 200, ctx.timeout)?;
    let phase = check::phase(&https(api, "GET", "/api/v1/setup", None, None)?)?;
    if phase != "complete" {
        bail!("with the old data disk setup should be complete, it is {phase}");
    }
    let token = check::login(api, &password)?;
    ok.push(
        "a new VM with the old data disk comes up set up; the old admin password signs in".into(),
    );
    if !check::point_listed(api, &token, &point)? {
        bail!("point {point} is not listed after the upgrade");
    }
    ok.push(format!("point {point} is still listed"));
    let kept_disk = check::wait_banner(&mut vm)?
        .lines()
        .any(|l| l.contains("data disk:") && l.contains("ferry-data") && l.contains("already"));
    if !kept_disk {
        bail!("first boot did not say it kept the existing data disk");
    }
    ok.push("first boot kept the existing ferry-data disk".into());
    Ok(ok)
}

/// The line after the banner's "enter this setup token:" (the newest banner's, if several).
fn setup_token(serial: &str) -> Option<String> {
    let lines: Vec<&str> = serial.lines().collect();
    let at = lines
        .iter()
        .rposition(|l| l.contains("and enter this setup token:"))?;
    let token = lines.get(at + 1)?.trim();
    (token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit())).then(|| token.to_string())
}

fn virtual_size(vmdk: &Path) -> Result<u64> {
    let info: serde_json::Value = serde_json::from_str(&run::cmd(
        "qemu-img",
        ["info".as_ref(), "--output=json".as_ref(), vmdk.as_os_str()],
    )?)?;
    info["virtual-size"]
        .as_u64()
        .context("qemu-img info gave no virtual-size")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_setup_token_is_read_from_the_newest_banner() {
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let serial = format!(
            "and enter this setup token:\r\n  {a}\r\nlogin: \nand enter this setup token:\n  {b}\n"
        );
        assert_eq!(super::setup_token(&serial), Some(b));
        assert_eq!(
            super::setup_token("and enter this setup token:\n  short\n"),
            None
        );
        assert_eq!(super::setup_token("and enter this setup token:"), None);
        assert_eq!(super::setup_token("nothing"), None);
    }
}
