//! `ferry-bench`: replicates one disk image of real files with Ferry, restic and borg, the same
//! bytes and the same change for each, and prints how fast each was against Ferry's targets.
//!
//! It builds nothing: Ferry's release binaries must exist (`cargo build --release -p appliance
//! -p mobility`). restic and borg are installed with apt-get when missing.

mod ferry;
mod limits;
mod peers;
mod procs;
mod report;
mod tool;
mod workload;

use anyhow::{Context, Result};
use clap::Parser;
use std::path::{Path, PathBuf};

use crate::report::Report;

#[derive(Debug, Parser)]
#[command(name = "ferry-bench", version, about)]
struct Args {
    /// Size of the disk image in MiB
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(16..=65536))]
    size_mib: u64,
    /// MiB of real files copied into the image [default: 700/1024 of --size-mib]
    #[arg(long)]
    files_mib: Option<u64>,
    /// Percent of the image's 64 KiB blocks the change overwrites
    #[arg(long, default_value_t = 5.0)]
    change_percent: f64,
    /// Seed of the change's block choice
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Folder holding the release `appliance` and `mobility` binaries
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Work folder, kept afterwards; a workload of the same parameters left there is reused
    /// [default: a temporary folder, removed afterwards]
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Folder the results-<date>.md file is written to
    #[arg(long, default_value = "bench")]
    results_dir: PathBuf,
    /// Do not measure Ferry
    #[arg(long)]
    skip_ferry: bool,
    /// Do not measure restic and borg
    #[arg(long)]
    skip_peers: bool,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("ferry-bench: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    anyhow::ensure!(
        args.change_percent > 0.0 && args.change_percent <= 100.0,
        "--change-percent must be in (0, 100]"
    );
    let files_mib = args.files_mib.unwrap_or(args.size_mib * 700 / 1024);
    let started = time::OffsetDateTime::now_utc();
    let load_average = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok());
    let temp;
    let work = match &args.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => {
            temp = tempfile::Builder::new().prefix("ferry-bench-").tempdir()?;
            temp.path().to_path_buf()
        }
    };
    // restic and borg record the absolute path of what they back up.
    let work = std::fs::canonicalize(&work)?;
    let bin_dir = std::fs::canonicalize(&args.bin_dir).unwrap_or(args.bin_dir.clone());
    if !args.skip_peers {
        procs::ensure_peers_installed()?;
    }

    let workload = workload::prepare(
        &work,
        args.size_mib,
        files_mib,
        args.change_percent,
        args.seed,
    )?;
    eprintln!("measuring single-core limits");
    let limits = limits::measure(&workload.pristine)?;

    let ferry = if args.skip_ferry {
        None
    } else {
        let mut ferry = ferry::Ferry::start(&bin_dir, &work)?;
        Some(tool::measure(&mut ferry, &work, &workload)?)
    };
    let mut peers = Vec::new();
    if !args.skip_peers {
        let mut restic = peers::Restic::init(&work)?;
        peers.push(tool::measure(&mut restic, &work, &workload)?);
        let mut borg = peers::Borg::init(&work)?;
        peers.push(tool::measure(&mut borg, &work, &workload)?);
    }

    let report = Report {
        started: started.format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute] UTC"
        ))?,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        load_average,
        image_bytes: workload.image_bytes,
        files_bytes: workload.files_bytes,
        changed_blocks: workload.changed_blocks.len(),
        block_bytes: workload::BLOCK,
        percent: args.change_percent,
        seed: args.seed,
        limits,
        ferry,
        peers,
    };
    let markdown = report.markdown();
    println!("{markdown}");
    let date = started.format(time::macros::format_description!("[year]-[month]-[day]"))?;
    let path = results_path(&args.results_dir, &date, args.size_mib);
    std::fs::create_dir_all(&args.results_dir)?;
    std::fs::write(&path, &markdown).with_context(|| format!("write {}", path.display()))?;
    eprintln!("results written to {}", path.display());
    Ok(())
}

/// `results-<date>.md` for a full-size run; trial sizes get their own file so they never replace it.
fn results_path(dir: &Path, date: &str, size_mib: u64) -> PathBuf {
    if size_mib == 1024 {
        dir.join(format!("results-{date}.md"))
    } else {
        dir.join(format!("results-{date}-{size_mib}mib.md"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn arguments_are_consistent() {
        Args::command().debug_assert();
        let a = Args::try_parse_from(["ferry-bench", "--size-mib", "256", "--skip-ferry"]).unwrap();
        assert_eq!(a.size_mib, 256);
        assert!(a.skip_ferry && !a.skip_peers);
        assert!(Args::try_parse_from(["ferry-bench", "--size-mib", "1"]).is_err());
    }

    #[test]
    fn trial_sizes_do_not_replace_the_full_result() {
        let d = Path::new("bench");
        assert_eq!(
            results_path(d, "2026-11-26", 1024),
            d.join("results-2026-11-26.md")
        );
        assert_eq!(
            results_path(d, "2026-11-26", 256),
            d.join("results-2026-11-26-256mib.md")
        );
    }
}
