//! `api_load`: seeds an appliance state with 1,000 protected machines, starts the release appliance on
//! it and loads `GET /api/v1/machines` over N keep-alive HTTPS connections, then prints requests per
//! second and latency percentiles against the management plane's targets (>= 5,000 req/s, p99 < 20 ms).
//!
//! It builds nothing: `cargo build --release -p appliance -p ferry-bench` first.
//!
//! `--demo` runs no benchmark: it seeds a small catalog of named servers with 24 hours of history,
//! starts the appliance on it and keeps it running until Ctrl-C or SIGTERM, to try the console.

#[path = "../api_load/mod.rs"]
mod api_load;

use anyhow::{Context, Result};
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser};
use std::path::{Path, PathBuf};
use std::time::Duration;

use api_load::conn::Connector;
use api_load::daemon::{self, write_private, Appliance};
use api_load::load::{self, Check, Pass, PassResult, Target};
use api_load::report::Report;
use api_load::{demo, procfs, seed};

/// Machines of a demo when `--machines` is not given.
const DEMO_MACHINES: u64 = 24;

#[derive(Debug, Parser)]
#[command(name = "api_load", version, about)]
struct Args {
    /// Machines in the seeded state [default with --demo: 24]
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    machines: u64,
    /// No benchmark: seed a demo catalog (named servers, 24 h of chart history), start the appliance
    /// on it, print the console's address and the admin password, and keep it running until Ctrl-C
    #[arg(long)]
    demo: bool,
    /// With --demo: the data folder, created (it must be absent or empty) and kept afterwards
    /// [default: <work dir>/data]
    #[arg(long, requires = "demo")]
    data_dir: Option<PathBuf>,
    /// Concurrent keep-alive HTTPS connections
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=4096))]
    connections: u64,
    /// Worker threads of the load generator's runtime
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
    client_threads: u64,
    /// Seconds of load before the measured window of each pass
    #[arg(long, default_value_t = 2.0)]
    warmup_secs: f64,
    /// Measured seconds of the main pass (the default page of 100 machines)
    #[arg(long, default_value_t = 10.0)]
    duration_secs: f64,
    /// Measured seconds of the whole-list pass (`?limit=1000`); 0 skips it
    #[arg(long, default_value_t = 5.0)]
    full_secs: f64,
    /// Measured seconds of each breakdown pass (`/healthz`, `/api/v1/session`, a page of 1); 0 skips them
    #[arg(long, default_value_t = 3.0)]
    breakdown_secs: f64,
    /// Seed of the generated catalog
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Folder holding the release `appliance` binary
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Work folder (data folder and log), kept afterwards [default: a temporary folder, removed]
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Folder the api-results-<date>.md file is written to (each run is appended)
    #[arg(long, default_value = "bench")]
    results_dir: PathBuf,
}

fn main() {
    let args = match parse_args(&Args::command().get_matches()) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    let result = if args.demo {
        demo::serve(demo::Options {
            machines: args.machines as usize,
            seed: args.seed,
            bin_dir: args.bin_dir,
            work_dir: args.work_dir,
            data_dir: args.data_dir,
        })
        .map(|()| true)
    } else {
        run(args)
    };
    match result {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("api_load: {e:#}");
            std::process::exit(1);
        }
    }
}

/// The arguments, with the demo's own default for `--machines`.
fn parse_args(matches: &clap::ArgMatches) -> Result<Args, clap::Error> {
    let mut args = Args::from_arg_matches(matches)?;
    if args.demo && matches.value_source("machines") == Some(ValueSource::DefaultValue) {
        args.machines = DEMO_MACHINES;
    }
    Ok(args)
}

fn seconds(what: &str, s: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| *d <= Duration::from_secs(3600))
        .with_context(|| format!("--{what} must be between 0 and 3600 seconds"))
}

/// Runs the benchmark; Ok(false) when it ran but an answer was wrong.
fn run(args: Args) -> Result<bool> {
    let warmup = seconds("warmup-secs", args.warmup_secs)?;
    let duration = seconds("duration-secs", args.duration_secs)?;
    let full = seconds("full-secs", args.full_secs)?;
    let breakdown = seconds("breakdown-secs", args.breakdown_secs)?;
    anyhow::ensure!(!duration.is_zero(), "--duration-secs must be more than 0");
    let started = time::OffsetDateTime::now_utc();
    let load_average = procfs::load_average();
    let temp;
    let work = match &args.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("ferry-api-load-")
                .tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let work = std::fs::canonicalize(&work)?;
    let bin_dir = std::fs::canonicalize(&args.bin_dir).unwrap_or(args.bin_dir.clone());
    let data_dir = work.join("data");
    let _ = std::fs::remove_dir_all(&data_dir);
    std::fs::create_dir_all(&data_dir)?;

    let machines = args.machines as usize;
    eprintln!("seeding {machines} machines in {}", data_dir.display());
    let plan = seed::plan(machines, appliance::mgmt::catalog::now_unix_ms(), args.seed);
    seed::write(&data_dir, &plan)?;
    let password_file = work.join("admin-password");
    write_private(&password_file, &daemon::strong_password())?;

    eprintln!("starting {}", bin_dir.join("appliance").display());
    let mut appliance = Appliance::start(
        &bin_dir,
        &data_dir,
        &password_file,
        &work.join("appliance.log"),
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads as usize)
        .enable_all()
        .build()?;
    let measured = runtime.block_on(async {
        let (token, ca) = appliance.wait_ready().await?;
        let target = Target {
            connector: Connector::new(&ca, appliance.addr())?,
            token,
            appliance_pid: appliance.pid,
            port: appliance.management_port,
        };
        let mut conns = Vec::new();
        for _ in 0..args.connections {
            conns.push(target.connector.connect().await?);
        }
        let (total, states) = load::protection_states(&mut conns[0], &target.token).await?;
        anyhow::ensure!(
            total == machines,
            "the appliance lists {total} machines, {machines} were seeded"
        );
        let passes = passes(machines, warmup, duration, full, breakdown);
        let mut results = Vec::new();
        for pass in &passes {
            eprintln!(
                "{}: {} connections, {:?} warm-up, {:?} measured",
                pass.label, args.connections, pass.warmup, pass.duration
            );
            let r = load::run(&mut conns, &target, pass).await?;
            eprintln!(
                "  {:.0} req/s, p99 {:.2} ms, {} errors",
                r.per_second(),
                r.quantile_ms(0.99),
                r.errors.total()
            );
            results.push(r);
        }
        Ok::<_, anyhow::Error>((states, results))
    });
    let peak_rss = vm_hwm_kib(appliance.pid);
    let measured = measured.and_then(|m| {
        appliance.check_running()?;
        Ok(m)
    });
    let (states, mut results) = match measured {
        Ok(m) => m,
        Err(e) => {
            return Err(e.context(format!(
                "the appliance's log is {} (last lines:\n{})",
                appliance.log.display(),
                appliance.last_lines()
            )))
        }
    };
    appliance.stop()?;
    runtime.shutdown_timeout(Duration::from_secs(5));

    let main = results.remove(0);
    let report = Report {
        started: started.format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute] UTC"
        ))?,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model: procfs::cpu_model(),
        load_average,
        appliance_version: appliance_version(&bin_dir),
        seeded: plan.seeded.clone(),
        states,
        connections: args.connections as usize,
        client_threads: args.client_threads as usize,
        main,
        others: results,
        appliance_peak_rss_kib: peak_rss,
    };
    let markdown = report.markdown();
    println!("{markdown}");
    let date = started.format(time::macros::format_description!("[year]-[month]-[day]"))?;
    let path = args.results_dir.join(format!("api-results-{date}.md"));
    std::fs::create_dir_all(&args.results_dir)?;
    append(&path, &markdown).with_context(|| format!("write {}", path.display()))?;
    eprintln!("results appended to {}", path.display());
    let errors: u64 = std::iter::once(&report.main)
        .chain(report.others.iter())
        .map(|r: &PassResult| r.errors.total())
        .sum();
    if errors > 0 {
        eprintln!("api_load: {errors} answers were wrong (see the table)");
    }
    Ok(errors == 0)
}

/// The main pass (the targets), the whole list, and the breakdown: TLS and HTTP alone (`/healthz`),
/// plus authentication (`/api/v1/session`), plus a list of one.
fn passes(
    machines: usize,
    warmup: Duration,
    duration: Duration,
    full: Duration,
    breakdown: Duration,
) -> Vec<Pass> {
    let page = |limit: usize| Check::Page {
        total: machines,
        items: limit.min(machines),
    };
    let mut passes = vec![Pass {
        label: "GET /api/v1/machines (page of 100)".into(),
        path: "/api/v1/machines".into(),
        bearer: true,
        warmup,
        duration,
        check: page(100),
    }];
    // Later passes reuse warm connections: a shorter warm-up is enough.
    let short = warmup.min(Duration::from_secs(1));
    if !full.is_zero() {
        passes.push(Pass {
            label: "GET /api/v1/machines?limit=1000 (whole list)".into(),
            path: "/api/v1/machines?limit=1000".into(),
            bearer: true,
            warmup: short,
            duration: full,
            check: page(1000),
        });
    }
    if !breakdown.is_zero() {
        for (label, path, bearer, check) in [
            ("GET /healthz (no auth)", "/healthz", false, Check::Json),
            (
                "GET /api/v1/session (auth only)",
                "/api/v1/session",
                true,
                Check::Json,
            ),
            (
                "GET /api/v1/machines?limit=1",
                "/api/v1/machines?limit=1",
                true,
                page(1),
            ),
        ] {
            passes.push(Pass {
                label: label.into(),
                path: path.into(),
                bearer,
                warmup: short,
                duration: breakdown,
                check,
            });
        }
    }
    passes
}

/// Appends a run to the day's results file, so every run of the day is kept.
fn append(path: &Path, markdown: &str) -> Result<()> {
    use std::io::Write;
    let fresh = !path.exists();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    if fresh {
        writeln!(
            f,
            "# Management API load (`target/release/api_load`)\n\nSee bench/README.md, \"API load (issue 3)\".\n"
        )?;
    }
    writeln!(f, "{markdown}")?;
    Ok(())
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line["VmHWM:".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn appliance_version(bin_dir: &Path) -> String {
    std::process::Command::new(bin_dir.join("appliance"))
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "appliance (version unknown)".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn arguments_are_consistent() {
        Args::command().debug_assert();
        let a = Args::try_parse_from(["api_load", "--connections", "8"]).unwrap();
        assert_eq!((a.connections, a.client_threads, a.machines), (8, 1, 1000));
        assert!(Args::try_parse_from(["api_load", "--http1"]).is_err());
        assert!(Args::try_parse_from(["api_load", "--connections", "0"]).is_err());
        assert!(Args::try_parse_from(["api_load", "--client-threads", "0"]).is_err());
        assert!(Args::try_parse_from(["api_load", "--machines", "x"]).is_err());
    }

    fn parse(argv: &[&str]) -> Result<Args, clap::Error> {
        parse_args(&Args::command().try_get_matches_from(argv)?)
    }

    #[test]
    fn the_demo_has_its_own_defaults() {
        let demo = parse(&["api_load", "--demo"]).unwrap();
        assert!(demo.demo && demo.data_dir.is_none());
        assert_eq!(demo.machines, DEMO_MACHINES);
        assert_eq!(
            parse(&["api_load", "--demo", "--machines", "5"])
                .unwrap()
                .machines,
            5
        );
        assert_eq!(parse(&["api_load"]).unwrap().machines, 1000);
        let dir = parse(&["api_load", "--demo", "--data-dir", "d"]).unwrap();
        assert_eq!(dir.data_dir, Some(PathBuf::from("d")));
        // --data-dir alone would be ignored by the benchmark: refused.
        assert!(parse(&["api_load", "--data-dir", "d"]).is_err());
        assert!(parse(&["api_load", "--demo", "--machines", "0"]).is_err());
        assert!(parse(&["api_load", "--demo", "--machines", "lots"]).is_err());
    }

    #[test]
    fn durations_are_checked() {
        assert_eq!(seconds("x", 2.5).unwrap(), Duration::from_millis(2500));
        assert!(seconds("x", -1.0).is_err());
        assert!(seconds("x", f64::NAN).is_err());
        assert!(seconds("x", 1e9).is_err());
    }

    #[test]
    fn passes_follow_the_options() {
        let s = Duration::from_secs(1);
        let all = passes(1000, s, s, s, s);
        assert_eq!(all.len(), 5);
        assert_eq!(all[0].path, "/api/v1/machines");
        assert_eq!(
            all[0].check,
            Check::Page {
                total: 1000,
                items: 100
            }
        );
        assert_eq!(
            all[1].check,
            Check::Page {
                total: 1000,
                items: 1000
            }
        );
        assert_eq!(
            passes(50, s, s, s, s)[0].check,
            Check::Page {
                total: 50,
                items: 50
            }
        );
        assert_eq!(passes(1000, s, s, Duration::ZERO, Duration::ZERO).len(), 1);
    }

    #[test]
    fn results_are_appended() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("api-results-2026-01-01.md");
        append(&p, "run one").unwrap();
        append(&p, "run two").unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("# Management API load"));
        assert!(text.find("run one").unwrap() < text.find("run two").unwrap());
        assert_eq!(text.matches("# Management API load").count(), 1);
    }
}
