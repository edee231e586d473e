//! `discovery_bench`: full discovery of a vcsim with 2,000 VMs by Ferry's vSphere client against
//! pyvmomi's property collector retrieval of the same properties, in one run, alternating round by
//! round; prints both medians and minima and the ratio against the target (pyvmomi / Ferry >= 2x)
//! and appends the same markdown to `bench/discovery-results-<date>.md`.
//!
//! It builds nothing but vcsim (through `scripts/vcsim.sh`); pyvmomi runs from the virtualenv
//! `scripts/install-test-deps.sh` makes. The vcsim is stopped at the end, on an error, and on
//! Ctrl-C or SIGTERM.

#[path = "../discovery_bench/mod.rs"]
mod discovery_bench;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};

use discovery_bench::compare::{check_same, PropertySet};
use discovery_bench::ferry::{self, FerryRound, Target};
use discovery_bench::pyvmomi::{self, PyRound, Runner};
use discovery_bench::report::Report;
use discovery_bench::vcsim::{govmomi_version, Vcsim};

/// The user vcsim accepts (with a password generated per run).
const USERNAME: &str = "ferry-bench";

#[derive(Debug, Parser)]
#[command(name = "discovery_bench", version, about)]
struct Args {
    /// Clusters of the vcsim (VMs = clusters x --vms-per-cluster)
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    clusters: u32,
    /// VMs per cluster
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    vms_per_cluster: u32,
    /// Measured rounds of each client
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
    /// Unmeasured rounds of each client before the measured ones
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=10))]
    warmup: u32,
    /// Worker threads of the tokio runtime Ferry's client runs on [default: the cores]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    threads: Option<u32>,
    /// The virtualenv holding pyvmomi [default: the one scripts/install-test-deps.sh makes]
    #[arg(long)]
    venv: Option<PathBuf>,
    /// Work folder (vcsim's state and password file) [default: a temporary folder, removed]
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Folder the discovery-results-<date>.md file is written to (each run is appended)
    #[arg(long, default_value = "bench")]
    results_dir: PathBuf,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("discovery_bench: {e:#}");
        std::process::exit(1);
    }
}

/// What the measured rounds produced.
struct Measured {
    ferry: Vec<FerryRound>,
    pyvmomi: Vec<PyRound>,
    ferry_properties: PropertySet,
}

fn run(args: Args) -> Result<()> {
    let started = time::OffsetDateTime::now_utc();
    let load_average = load_average();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = args.threads.map_or(cores, |t| t as usize);
    let expected = (args.clusters * args.vms_per_cluster) as usize;
    let root = ferry_tests::root();
    let venv = args
        .venv
        .clone()
        .unwrap_or_else(ferry_tests::web_harness::venv_dir);
    let python = venv.join("bin/python");
    if !python.exists() {
        bail!(
            "{} is missing: run scripts/install-test-deps.sh (it makes the pyvmomi virtualenv)",
            python.display()
        );
    }
    let temp;
    let work = match &args.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("ferry-discovery-bench-")
                .tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let work = std::fs::canonicalize(&work)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    // Handlers first, so a signal during vcsim's start is not lost: the run then ends by
    // returning, and dropping the Vcsim stops it.
    let (mut interrupt, mut terminate) = {
        let _guard = runtime.enter();
        (
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        )
    };

    let flags: Vec<String> = [
        "-cluster".to_string(),
        args.clusters.to_string(),
        "-vm".to_string(),
        args.vms_per_cluster.to_string(),
    ]
    .into();
    eprintln!(
        "starting vcsim with {expected} VMs ({} clusters x {})",
        args.clusters, args.vms_per_cluster
    );
    let password = password();
    let mut vcsim = Vcsim::start(&root, &work, &flags, USERNAME, &password)?;
    eprintln!(
        "vcsim serves {} (pid {}): {}",
        vcsim.url,
        vcsim.pid,
        vcsim.inventory_line().unwrap_or_default()
    );
    let target = Target {
        url: vcsim.url.clone(),
        credentials: vsphere::Credentials {
            username: USERNAME.into(),
            password: password.clone(),
        },
        thumbprint: vcsim.thumbprint_sha256.clone(),
    };
    let runner = Runner {
        python,
        scripts: pyvmomi::scripts_dir(&root),
        port: vcsim.port,
        username: USERNAME.into(),
        password,
        thumbprint: vcsim.thumbprint_sha256.clone(),
        properties: vsphere::inventory::VM_PROPERTIES
            .iter()
            .map(|p| p.to_string())
            .collect(),
    };
    let measured = runtime.block_on(async {
        tokio::select! {
            m = measure(&target, &runner, &args, expected) => m,
            _ = interrupt.recv() => Err(anyhow::anyhow!("interrupted (SIGINT)")),
            _ = terminate.recv() => Err(anyhow::anyhow!("terminated (SIGTERM)")),
        }
    });
    let inventory = vcsim.inventory_line();
    // Stopped on every path: explicitly here, by the drop when `?` returns early.
    let stopped = vcsim.stop();
    let measured = measured?;
    stopped?;
    runtime.shutdown_timeout(Duration::from_secs(5));

    let first = &measured.pyvmomi[0];
    let report = Report {
        started: started.format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute] UTC"
        ))?,
        cores,
        cpu_model: cpu_model(),
        load_average,
        vcsim: govmomi_version(),
        inventory,
        vms: expected,
        rounds: args.rounds as usize,
        warmup: args.warmup as usize,
        ferry_threads: threads,
        pyvmomi_versions: first.versions.clone(),
        ferry_connect: measured.ferry.iter().map(|r| r.connect).collect(),
        ferry_retrieval: measured.ferry.iter().map(|r| r.retrieval).collect(),
        pyvmomi_retrieval: measured.pyvmomi.iter().map(|r| r.retrieval).collect(),
        pyvmomi_wall: measured.pyvmomi.iter().map(|r| r.wall).collect(),
        ferry_properties: measured.ferry_properties,
        pyvmomi_properties: first.properties.clone(),
        pyvmomi_script_properties: first.script_properties.clone(),
        bench_peak_rss_kib: pyvmomi::vm_hwm_kib(std::process::id()),
        pyvmomi_peak_rss_kib: measured.pyvmomi.iter().filter_map(|r| r.peak_rss_kib).max(),
    };
    let markdown = report.markdown();
    println!("{markdown}");
    let date = started.format(time::macros::format_description!("[year]-[month]-[day]"))?;
    let path = args
        .results_dir
        .join(format!("discovery-results-{date}.md"));
    std::fs::create_dir_all(&args.results_dir)?;
    append(&path, &markdown).with_context(|| format!("write {}", path.display()))?;
    eprintln!("results appended to {}", path.display());
    Ok(())
}

/// The warm-up and measured rounds, Ferry then pyvmomi in each; every round's inventories are
/// compared.
async fn measure(
    target: &Target,
    runner: &Runner,
    args: &Args,
    expected: usize,
) -> Result<Measured> {
    let ferry_properties = ferry::returned_properties(target).await?;
    let mut ferry = Vec::new();
    let mut py = Vec::new();
    let total = args.warmup + args.rounds;
    for round in 0..total {
        let label = if round < args.warmup {
            format!("warm-up {}/{}", round + 1, args.warmup)
        } else {
            format!("round {}/{}", round + 1 - args.warmup, args.rounds)
        };
        let f = ferry::round(target).await?;
        eprintln!(
            "{label}: Ferry connect {:.3} s, list_vms {:.3} s ({} VMs)",
            f.connect.as_secs_f64(),
            f.retrieval.as_secs_f64(),
            f.vms.len()
        );
        let p = runner.round().await?;
        eprintln!(
            "{label}: pyvmomi retrieval {:.3} s ({} VMs; process {:.3} s)",
            p.retrieval.as_secs_f64(),
            p.vms.len(),
            p.wall.as_secs_f64()
        );
        check_same(&f.vms, &p.vms, expected).with_context(|| label.clone())?;
        if p.properties.requested != ferry_properties.requested {
            bail!(
                "pyvmomi requested {:?}, Ferry {:?}",
                p.properties.requested,
                ferry_properties.requested
            );
        }
        if round >= args.warmup {
            ferry.push(f);
            py.push(p);
        }
    }
    Ok(Measured {
        ferry,
        pyvmomi: py,
        ferry_properties,
    })
}

/// A password for this run's vcsim only (it listens on loopback and is gone afterwards).
fn password() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("bench-{:x}-{nanos:x}", std::process::id())
}

fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// Appends a run to the day's results file, so every run of the day is kept.
fn append(path: &std::path::Path, markdown: &str) -> Result<()> {
    use std::io::Write;
    let fresh = !path.exists();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    if fresh {
        writeln!(
            f,
            "# vCenter discovery: Ferry against pyvmomi (`target/release/discovery_bench`)\n\n\
             See bench/README.md, \"Discovery (issue 4)\".\n"
        )?;
    }
    writeln!(f, "{markdown}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn arguments_are_consistent() {
        Args::command().debug_assert();
        let a = Args::try_parse_from(["discovery_bench"]).unwrap();
        assert_eq!(
            (a.clusters, a.vms_per_cluster, a.rounds, a.warmup),
            (4, 500, 5, 1)
        );
        assert!(a.threads.is_none() && a.venv.is_none());
        for bad in [
            &["--rounds", "0"][..],
            &["--clusters", "0"],
            &["--vms-per-cluster", "x"],
            &["--warmup", "-1"],
            &["--threads", "0"],
            &["--pyvmomi-props", "name"],
        ] {
            let argv: Vec<&str> = std::iter::once("discovery_bench")
                .chain(bad.iter().copied())
                .collect();
            assert!(Args::try_parse_from(&argv).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn results_are_appended() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("discovery-results-2026-01-01.md");
        append(&p, "run one").unwrap();
        append(&p, "run two").unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("# vCenter discovery"));
        assert!(text.find("run one").unwrap() < text.find("run two").unwrap());
        assert_eq!(text.matches("# vCenter discovery").count(), 1);
    }

    #[test]
    fn the_machine_is_described() {
        assert!(!cpu_model().is_empty());
        assert!(load_average().is_some_and(|l| l >= 0.0));
        assert_ne!(password(), password_later());
    }

    fn password_later() -> String {
        std::thread::sleep(Duration::from_millis(1));
        password()
    }
}
