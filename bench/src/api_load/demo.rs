//! `api_load --demo`: a small catalog that looks like a real site (named servers, most protected, a few
//! behind, one disconnected, one revoked) with a point every five minutes and 24 hours of chart history,
//! so the console can be tried and photographed without agents.

use anyhow::{Context, Result};
use appliance::mgmt::catalog::{rfc3339_of_ms, Catalog, DiskView, PointView, Sample, HISTORY_SECS};
use appliance::state::{encode_record, AgentRecord, State};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::conn::Connector;
use super::daemon::{self, write_private, Appliance};
use super::load;
use super::seed::{machine_id, Plan, SplitMix64};

const GIB: u64 = 1 << 30;
const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 60 * MINUTE_MS;
const DAY_MS: u64 = 24 * HOUR_MS;
/// Agents replicate continuously and cut a point about every five minutes: the RPO is a saw-tooth.
const POINT_EVERY_MS: u64 = 5 * MINUTE_MS;
/// The catalog's `history` tree (see the table in appliance/src/mgmt/catalog.rs).
const HISTORY_TREE: &str = "history";
/// A demo machine has a point every five minutes of the day: 1,000 are 300,000 points.
pub const MAX_MACHINES: usize = 1000;

/// What happened to a machine's replication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Story {
    /// Replicating: the newest point is minutes old.
    Protected,
    /// Protected now, but its agent lost the connection for this many minutes earlier in the day (and
    /// caught up afterwards).
    Interrupted(u64),
    /// The agent stopped this many minutes ago (without a connected agent the console shows it as
    /// disconnected; connections are live facts of the data path, not stored).
    Behind(u64),
    /// The agent has been gone for hours.
    Disconnected,
    /// The agent was revoked days ago; the machine's old points are kept.
    Revoked,
}

/// The demo's machines: name, story, disk sizes in GiB, typical throughput in MB/s. Ordered so that a
/// small `--machines` still shows every story.
const MACHINES: [(&str, Story, &[u64], u64); 24] = [
    ("sql-prod-01", Story::Interrupted(38), &[100, 1024], 18),
    ("fileserver", Story::Interrupted(22), &[80, 2048], 9),
    ("dc-01", Story::Protected, &[60], 1),
    ("web-03", Story::Protected, &[40], 2),
    ("sql-test-01", Story::Behind(26), &[100, 500], 6),
    ("print-01", Story::Disconnected, &[40], 1),
    ("legacy-erp", Story::Revoked, &[128, 500], 4),
    ("web-01", Story::Protected, &[40], 2),
    ("web-02", Story::Protected, &[40], 2),
    ("dc-02", Story::Protected, &[60], 1),
    ("sql-prod-02", Story::Protected, &[100, 1024], 15),
    ("exchange-01", Story::Interrupted(17), &[128, 1024], 11),
    ("app-01", Story::Protected, &[80, 200], 4),
    ("app-02", Story::Protected, &[80, 200], 4),
    ("build-01", Story::Behind(48), &[256], 7),
    ("crm-prod", Story::Protected, &[100, 256], 5),
    ("erp-prod", Story::Protected, &[128, 500], 8),
    ("git-01", Story::Protected, &[200], 3),
    ("hr-payroll", Story::Protected, &[100], 2),
    ("jump-host", Story::Protected, &[40], 1),
    ("monitoring", Story::Protected, &[200], 5),
    ("sharepoint-01", Story::Protected, &[100, 1024], 7),
    ("vpn-gw", Story::Protected, &[40], 1),
    ("backup-proxy", Story::Protected, &[60, 256], 3),
];

/// Name, story, disks and throughput of the `n`th machine (from 0); beyond the named ones, protected
/// `vm-025`, `vm-026`, ...
fn machine(n: usize) -> (String, Story, Vec<u64>, u64) {
    match MACHINES.get(n) {
        Some((name, story, disks, mbps)) => (name.to_string(), *story, disks.to_vec(), *mbps),
        None => (format!("vm-{:03}", n + 1), Story::Protected, vec![80], 2),
    }
}

/// The machines' catalog at `now_ms` plus, per machine id, its per-minute history of the last 24 h.
pub struct Demo {
    pub plan: Plan,
    pub history: BTreeMap<String, Vec<(u64, Sample)>>,
}

/// Builds the demo catalog deterministically from `seed`.
pub fn plan(machines: usize, now_ms: u64, seed: u64) -> Demo {
    let mut rng = SplitMix64::new(seed);
    let mut plan = Plan {
        machines: Vec::with_capacity(machines),
        points: Vec::new(),
        agents: BTreeMap::new(),
        seeded: Default::default(),
    };
    let mut history = BTreeMap::new();
    for n in 0..machines {
        let (name, story, sizes, mbps) = machine(n);
        let id = machine_id(&mut rng);
        let disks: Vec<DiskView> = sizes
            .iter()
            .enumerate()
            .map(|(d, gib)| DiskView {
                disk_id: format!("disk{d}"),
                size_bytes: gib * GIB,
                label: format!("/dev/sd{}", char::from(b'a' + d as u8)),
            })
            .collect();
        let (times, gap) = point_times(story, now_ms, &mut rng);
        for (i, at) in times.iter().enumerate() {
            plan.points.push(PointView {
                machine_id: id.clone(),
                point_id: format!("{at:016x}"),
                // An application-consistent point once an hour, crash-consistent ones between.
                kind: if i % 12 == 0 { "app" } else { "crash" }.to_string(),
                created_at: rfc3339_of_ms(*at),
                created_unix_ms: *at,
                disks: disks.clone(),
            });
        }
        plan.seeded.points += times.len();
        plan.seeded.disks += disks.len();
        if !matches!(story, Story::Protected | Story::Interrupted(_)) {
            plan.seeded.stale += 1;
        }
        let revoked = story == Story::Revoked;
        plan.seeded.agents += 1;
        plan.seeded.revoked += usize::from(revoked);
        let registered_ms = now_ms.saturating_sub(rng.range(20, 400) * DAY_MS);
        plan.agents.insert(
            id.clone(),
            AgentRecord {
                hostname: name.clone(),
                registered_at: rfc3339_of_ms(registered_ms),
                revoked,
                last_seen: times.last().map(|t| rfc3339_of_ms(*t)),
                bios_uuid: None,
            },
        );
        history.insert(
            id.clone(),
            samples(&times, gap, story, mbps, now_ms, &mut rng),
        );
        plan.machines.push(vault::MachineDescriptor {
            machine_id: id,
            name,
            disks: disks
                .into_iter()
                .map(|d| vault::DiskDescriptor {
                    disk_id: d.disk_id,
                    size_bytes: d.size_bytes,
                    label: d.label,
                })
                .collect(),
        });
    }
    plan.seeded.machines = plan.machines.len();
    Demo { plan, history }
}

/// The creation times of a machine's points, oldest first: about every five minutes while its agent
/// replicated, reaching back past the 24 h of the charts (so the RPO is known at their start); and
/// the interruption of an [`Story::Interrupted`] machine (start and end, ms).
fn point_times(story: Story, now_ms: u64, rng: &mut SplitMix64) -> (Vec<u64>, Option<(u64, u64)>) {
    let (newest, oldest, every) = match story {
        Story::Protected | Story::Interrupted(_) => (
            now_ms.saturating_sub(rng.range(20_000, 4 * MINUTE_MS)),
            now_ms.saturating_sub(DAY_MS + 2 * POINT_EVERY_MS),
            POINT_EVERY_MS,
        ),
        Story::Behind(minutes) => (
            now_ms.saturating_sub(minutes * MINUTE_MS),
            now_ms.saturating_sub(DAY_MS + 2 * POINT_EVERY_MS),
            POINT_EVERY_MS,
        ),
        Story::Disconnected => (
            now_ms.saturating_sub(6 * HOUR_MS + 17 * MINUTE_MS),
            now_ms.saturating_sub(DAY_MS + 2 * POINT_EVERY_MS),
            POINT_EVERY_MS,
        ),
        // Hourly points in the day before the revocation, three days ago.
        Story::Revoked => (
            now_ms.saturating_sub(3 * DAY_MS),
            now_ms.saturating_sub(4 * DAY_MS),
            HOUR_MS,
        ),
    };
    let mut times = Vec::new();
    let mut at = newest;
    while at >= oldest && at > 0 {
        times.push(at);
        // A point takes as long as its changes need: a little jitter around the interval.
        let jitter = rng.range(0, every / 5);
        at = at.saturating_sub(every - every / 10 + jitter);
    }
    times.reverse();
    let gap = match story {
        Story::Interrupted(minutes) => {
            let start = now_ms.saturating_sub(rng.range(4 * 60, 20 * 60) * MINUTE_MS);
            Some((start, start + minutes * MINUTE_MS))
        }
        _ => None,
    };
    if let Some((start, end)) = gap {
        times.retain(|t| *t < start || *t > end);
    }
    (times, gap)
}

/// One sample per minute over the last 24 h (minute number, sample): the RPO from the points, and a
/// throughput that follows the working day around the machine's typical rate while it replicated.
fn samples(
    times: &[u64],
    gap: Option<(u64, u64)>,
    story: Story,
    mbps: u64,
    now_ms: u64,
    rng: &mut SplitMix64,
) -> Vec<(u64, Sample)> {
    let last = times.last().copied();
    let minutes = HISTORY_SECS / 60;
    (0..minutes)
        .rev()
        .map(|back| {
            let at = now_ms.saturating_sub(back * MINUTE_MS);
            let newest = times.partition_point(|t| *t <= at);
            let rpo_seconds = newest
                .checked_sub(1)
                .map(|i| at.saturating_sub(times[i]) / 1000);
            // A protected machine's agent is sending the changes of its next point right now.
            let replicating = match story {
                Story::Protected => true,
                Story::Interrupted(_) => gap.is_none_or(|(start, end)| at < start || at > end),
                Story::Revoked => false,
                Story::Behind(_) | Story::Disconnected => last.is_some_and(|l| at <= l),
            };
            let throughput = if replicating {
                let hour = (at % DAY_MS) as f64 / HOUR_MS as f64;
                // Busiest in the afternoon (UTC), quiet at night, plus a nightly maintenance job
                // around 01:30 that changes many blocks.
                let day = 0.25 + 0.75 * bell(hour, 14.0, 4.5);
                let night = 1.4 * bell(hour, 1.5, 0.4);
                // After an interruption the agent sends what changed meanwhile: a decaying surge.
                let catch_up = match gap {
                    Some((_, end)) if at > end => {
                        2.0 * (-((at - end) as f64 / (20 * MINUTE_MS) as f64)).exp()
                    }
                    _ => 0.0,
                };
                let noise = 0.8 + rng.range(0, 40) as f64 / 100.0;
                ((day + night + catch_up) * noise * mbps as f64 * 1e6) as u64
            } else {
                0
            };
            (
                at / MINUTE_MS,
                Sample {
                    at_unix: at / 1000,
                    rpo_seconds,
                    throughput_bytes_per_sec: throughput,
                },
            )
        })
        .collect()
}

/// A bell curve of height 1 around `centre` (hours of the day, wrapping at midnight).
fn bell(hour: f64, centre: f64, width: f64) -> f64 {
    let d = (hour - centre).abs();
    let d = d.min(24.0 - d);
    (-(d / width).powi(2)).exp()
}

/// Writes the demo into the state of `data_dir`: the catalog through [`super::seed::write`], the history
/// straight into the catalog's `history` tree (the catalog records history only from live data path
/// samples), then reads one machine's history back through the catalog so a changed layout fails here
/// rather than leaving the charts empty.
pub fn write(data_dir: &Path, demo: &Demo) -> Result<()> {
    super::seed::write(data_dir, &demo.plan)?;
    let state = State::open(data_dir).context("opening the appliance state to seed history")?;
    let tree = state
        .db()
        .open_tree(HISTORY_TREE)
        .context("opening the history tree")?;
    for (id, samples) in &demo.history {
        for (minute, sample) in samples {
            let mut key = format!("{id}/").into_bytes();
            key.extend_from_slice(&minute.to_be_bytes());
            let body = serde_json::to_vec(sample)?;
            tree.insert(key, encode_record(&body))
                .with_context(|| format!("writing the history of {id}"))?;
        }
    }
    let catalog = Catalog::new(state.clone()).context("opening the catalog")?;
    for (id, samples) in &demo.history {
        let read = catalog
            .get(id)
            .with_context(|| format!("reading machine {id} back"))?
            .history;
        // The oldest minute or two may fall out of the 24 h window while this runs.
        anyhow::ensure!(
            read.len() + 2 >= samples.len(),
            "the catalog reads {} history samples of machine {id} after {} were written: its \
             history layout changed, update bench/src/api_load/demo.rs",
            read.len(),
            samples.len()
        );
    }
    state.flush().context("flushing the seeded state")?;
    Ok(())
}

/// What `--demo` was asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub machines: usize,
    pub seed: u64,
    /// Where the release `appliance` is.
    pub bin_dir: PathBuf,
    /// Log and password file (and the data folder unless `data_dir`); None: a temporary folder.
    pub work_dir: Option<PathBuf>,
    /// The data folder, kept afterwards; None: `<work dir>/data`.
    pub data_dir: Option<PathBuf>,
}

/// `--demo`: seeds the demo catalog, starts the appliance on it, prints how to sign in and serves until
/// Ctrl-C or SIGTERM, then stops the appliance.
pub fn serve(args: Options) -> Result<()> {
    let machines = args.machines;
    anyhow::ensure!(
        machines <= MAX_MACHINES,
        "--demo seeds at most {MAX_MACHINES} machines (each has a day of points)"
    );
    let temp;
    let work = match &args.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => {
            temp = tempfile::Builder::new().prefix("ferry-demo-").tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let work = std::fs::canonicalize(&work)?;
    let bin_dir = std::fs::canonicalize(&args.bin_dir).unwrap_or(args.bin_dir.clone());
    let data_dir = match &args.data_dir {
        Some(dir) => fresh_dir(dir)?,
        None => {
            let dir = work.join("data");
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)?;
            dir
        }
    };
    let demo = plan(machines, appliance::mgmt::catalog::now_unix_ms(), args.seed);
    write(&data_dir, &demo)?;
    let password = daemon::strong_password();
    let password_file = work.join("admin-password");
    write_private(&password_file, &password)?;
    let log = work.join("appliance.log");
    let mut appliance = Appliance::start(&bin_dir, &data_dir, &password_file, &log)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let served: Result<&str> = runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        // Installed before the appliance is ready, so a Ctrl-C while it starts also stops it.
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let (token, ca) = tokio::select! {
            ready = appliance.wait_ready() => ready?,
            _ = interrupt.recv() => return Ok("SIGINT"),
            _ = terminate.recv() => return Ok("SIGTERM"),
        };
        let mut conn = Connector::new(&ca, appliance.addr())?.connect().await?;
        let (total, states) = load::protection_states(&mut conn, &token).await?;
        drop(conn);
        anyhow::ensure!(
            total == machines,
            "the appliance lists {total} machines, {machines} were seeded"
        );
        let states: Vec<String> = states.iter().map(|(s, n)| format!("{n} {s}")).collect();
        println!("Ferry demo: {total} machines ({})", states.join(", "));
        println!(
            "  console:  https://127.0.0.1:{}/",
            appliance.management_port
        );
        println!("  user:     admin");
        println!("  password: {password}");
        println!("  data dir: {}", data_dir.display());
        println!("  log:      {}", log.display());
        println!(
            "The seeded points age from now on: a machine shows as disconnected 15 minutes after \
             its newest point. Ctrl-C or SIGTERM stops the appliance."
        );
        loop {
            tokio::select! {
                _ = interrupt.recv() => return Ok("SIGINT"),
                _ = terminate.recv() => return Ok("SIGTERM"),
                _ = tokio::time::sleep(Duration::from_secs(1)) => appliance.check_running()?,
            }
        }
    });
    let signal = served.map_err(|e| {
        e.context(format!(
            "the appliance's log is {} (last lines:\n{})",
            log.display(),
            appliance.last_lines()
        ))
    })?;
    eprintln!("{signal}: stopping the appliance");
    appliance.stop()?;
    match &args.data_dir {
        Some(dir) => eprintln!("stopped; the data folder {} is kept", dir.display()),
        None if args.work_dir.is_some() => eprintln!("stopped; {} is kept", work.display()),
        None => eprintln!("stopped; the temporary data folder is removed"),
    }
    Ok(())
}

/// Creates `dir` for a demo's data folder: absent or empty, never a folder with something in it.
pub fn fresh_dir(dir: &Path) -> Result<PathBuf> {
    if let Ok(mut entries) = std::fs::read_dir(dir) {
        anyhow::ensure!(
            entries.next().is_none(),
            "{} is not empty: the demo seeds a fresh data folder (remove it or choose another)",
            dir.display()
        );
    } else {
        anyhow::ensure!(
            !dir.exists(),
            "{} exists and is not a folder",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(std::fs::canonicalize(dir)?)
}

#[cfg(test)]
#[path = "demo_tests.rs"]
mod tests;
