//! `ova-build`: turns Ferry's binaries and `image/` into the appliance OVA, and boot-tests an OVA
//! under QEMU with software emulation.
//!
//! ```text
//! ova-build --out DIR [--appliance-bin PATH] [--mobility-bin PATH]   -> prints DIR/ferry-<version>.ova last
//! ova-build --boot-test PATH.ova [--mobility-bin PATH]               -> exit 0 only when every check passed
//! ```
//!
//! The slow step, the Debian root file system, is kept in the work folder and reused while its inputs
//! (package list, suite, mirrors, build options) are unchanged.

use anyhow::{bail, Context, Result};
use clap::Parser;
use std::path::PathBuf;

mod boot_checks;
mod boot_test;
mod disk;
mod ova;
mod ovf;
mod qemu;
mod rootfs;
mod run;
mod stage;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Build Ferry's appliance OVA, or boot-test one under QEMU"
)]
struct Cli {
    /// Build the OVA into this folder (DIR/ferry-<version>.ova).
    #[arg(long, value_name = "DIR", conflicts_with = "boot_test")]
    out: Option<PathBuf>,
    /// Boot this OVA under QEMU and check first boot, the setup page and a replication.
    #[arg(long, value_name = "PATH.ova")]
    boot_test: Option<PathBuf>,
    /// The appliance binary to put in the image [default: target/release/appliance].
    #[arg(long, value_name = "PATH")]
    appliance_bin: Option<PathBuf>,
    /// The x86_64 mobility agent: put in the image for push install, and run by the boot test
    /// [default: target/release/mobility].
    #[arg(long, value_name = "PATH")]
    mobility_bin: Option<PathBuf>,
    /// Where the root file system and intermediate files are kept between runs.
    #[arg(long, value_name = "DIR", default_value = "target/ova-work")]
    work: PathBuf,
    /// The project's image definition (package list, overlay, OVF template).
    #[arg(long, value_name = "DIR", default_value = "image")]
    image_dir: PathBuf,
    /// Debootstrap the root file system again even when its inputs are unchanged.
    #[arg(long)]
    rebuild_rootfs: bool,
    /// Add open-vm-tools (the guestinfo transport; 48 MiB more).
    #[arg(long)]
    with_vm_tools: bool,
    /// Folder with the DMTF OVF schema (dsp8023_1.1.1.xsd and what it imports); validation is
    /// skipped with a notice when absent [default: $FERRY_OVF_SCHEMA, else ../shared/ovf-schema].
    #[arg(long, value_name = "DIR")]
    ovf_schema: Option<PathBuf>,
    /// qemu-system-x86_64 to boot with [default: $FERRY_QEMU, else the one on PATH].
    #[arg(long, value_name = "PATH")]
    qemu: Option<PathBuf>,
    /// Seconds to wait for each boot to answer.
    #[arg(long, default_value_t = 600)]
    boot_timeout: u64,
}

fn main() {
    let cli = Cli::parse();
    let result = match (&cli.out, &cli.boot_test) {
        (Some(out), None) => build(&cli, out),
        (None, Some(ova)) => boot_test::run(&boot_options(&cli, ova)),
        _ => Err(anyhow::anyhow!("give --out DIR or --boot-test PATH.ova")),
    };
    if let Err(err) = result {
        eprintln!("ova-build: error: {err:#}");
        std::process::exit(1);
    }
}

fn build(cli: &Cli, out: &std::path::Path) -> Result<()> {
    let started = std::time::Instant::now();
    let appliance_bin = binary(&cli.appliance_bin, "appliance")?;
    let mobility_bin = binary(&cli.mobility_bin, "mobility")?;
    std::fs::create_dir_all(&cli.work)
        .with_context(|| format!("creating {}", cli.work.display()))?;
    let work = std::fs::canonicalize(&cli.work)?;
    let image_dir = std::fs::canonicalize(&cli.image_dir)
        .with_context(|| format!("the image folder {}", cli.image_dir.display()))?;
    run::require_tools(&[
        "mmdebstrap",
        "sfdisk",
        "mke2fs",
        "grub-mkimage",
        "qemu-img",
        "tar",
    ])?;

    let mut timings = run::Timings::default();
    let packages = rootfs::read_packages(&image_dir.join("packages.txt"), cli.with_vm_tools)?;
    let rootfs = timings.step("rootfs", || {
        rootfs::ensure(&work, &packages, cli.rebuild_rootfs)
    })?;
    let version = env!("CARGO_PKG_VERSION");
    let stage = timings.step("stage", || {
        stage::prepare(&stage::Inputs {
            work: &work,
            rootfs: &rootfs.path,
            image_dir: &image_dir,
            appliance_bin: &appliance_bin,
            mobility_bin: &mobility_bin,
            version,
        })
    })?;
    let disks = timings.step("disks", || disk::build(&work, &stage))?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let out = std::fs::canonicalize(out)?;
    let ova = timings.step("ova", || {
        ova::assemble(&ova::Inputs {
            out: &out,
            work: &work,
            template: &image_dir.join("ferry.ovf.in"),
            eula: &image_dir.join("EULA.txt"),
            version,
            disks: &disks,
        })
    })?;
    let schema = schema_dir(&cli.ovf_schema);
    timings.step("validate", || ova::validate(&ova, schema.as_deref()))?;

    let size = std::fs::metadata(&ova.path)?.len();
    println!(
        "root file system: {} ({}); OVA: {} bytes ({:.1} MB)",
        if rootfs.reused { "reused" } else { "built" },
        rootfs.inputs_digest,
        size,
        size as f64 / 1e6
    );
    timings.print(started.elapsed());
    if size >= 200_000_000 {
        eprintln!("warning: the OVA is over the 200 MB target");
    }
    // The interface scripts rely on: the OVA's path is the last line.
    println!("{}", ova.path.display());
    Ok(())
}

fn boot_options(cli: &Cli, ova: &std::path::Path) -> boot_test::Options {
    boot_test::Options {
        ova: ova.to_path_buf(),
        work: cli.work.clone(),
        mobility_bin: cli.mobility_bin.clone().or_else(|| {
            ["target/release/mobility", "target/debug/mobility"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
        }),
        qemu: cli
            .qemu
            .clone()
            .or_else(|| std::env::var_os("FERRY_QEMU").map(PathBuf::from)),
        ovf_schema: schema_dir(&cli.ovf_schema),
        timeout: std::time::Duration::from_secs(cli.boot_timeout),
    }
}

/// A binary given on the command line, else the release build's.
fn binary(given: &Option<PathBuf>, name: &str) -> Result<PathBuf> {
    let path = given
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/release").join(name));
    if !path.is_file() {
        bail!(
            "the {name} binary {} does not exist; build it (cargo build --release) or pass --{name}-bin",
            path.display()
        );
    }
    Ok(path)
}

fn schema_dir(given: &Option<PathBuf>) -> Option<PathBuf> {
    given
        .clone()
        .or_else(|| std::env::var_os("FERRY_OVF_SCHEMA").map(PathBuf::from))
        .or_else(|| Some(PathBuf::from("../shared/ovf-schema")))
        .filter(|dir| dir.join("dsp8023_1.1.1.xsd").is_file())
}
