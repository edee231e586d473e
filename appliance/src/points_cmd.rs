//! `appliance points list` and `appliance restore`: read the vault directly, so they work
//! while the daemon runs and on a machine that only has the vault URL and passphrase.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use vault::{PointKind, PointSummary, RestoreFormat, RestoreRequest, Vault};

use crate::cli::{ImageFormat, RestoreArgs};

/// Chunk fetches in flight when `--parallelism` is not given (and for restore jobs).
pub const DEFAULT_RESTORE_PARALLELISM: usize = 8;
/// Progress redraws at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// One line of `points list`: a disk of a point of a machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PointRow {
    pub machine: String,
    pub disk: String,
    pub point: String,
    /// RFC 3339, UTC.
    pub created: String,
    pub created_unix_ms: u64,
    /// "crash" or "app".
    pub kind: &'static str,
    pub size_bytes: u64,
}

fn kind_name(kind: &PointKind) -> &'static str {
    match kind {
        PointKind::Crash => "crash",
        PointKind::App => "app",
    }
}

fn rfc3339_from_unix_ms(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("@{ms}ms"))
}

/// Flattens point summaries into rows ordered by machine, disk, time, point.
pub fn point_rows(points: &[PointSummary]) -> Vec<PointRow> {
    let mut rows: Vec<PointRow> = points
        .iter()
        .flat_map(|p| {
            p.disks.iter().map(move |(disk, size)| PointRow {
                machine: p.machine_id.clone(),
                disk: disk.clone(),
                point: p.point_id.clone(),
                created: rfc3339_from_unix_ms(p.created_unix_ms),
                created_unix_ms: p.created_unix_ms,
                kind: kind_name(&p.kind),
                size_bytes: *size,
            })
        })
        .collect();
    rows.sort_by(|a, b| {
        (&a.machine, &a.disk, a.created_unix_ms, &a.point).cmp(&(
            &b.machine,
            &b.disk,
            b.created_unix_ms,
            &b.point,
        ))
    });
    rows
}

/// Writes rows as a JSON array or an aligned table.
pub fn write_points(rows: &[PointRow], json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    if json {
        serde_json::to_writer_pretty(&mut *out, rows)?;
        writeln!(out)?;
        return Ok(());
    }
    if rows.is_empty() {
        writeln!(out, "no recovery points")?;
        return Ok(());
    }
    let width = |title: &str, f: &dyn Fn(&PointRow) -> usize| {
        rows.iter().map(f).max().unwrap_or(0).max(title.len())
    };
    let wm = width("MACHINE", &|r| r.machine.chars().count());
    let wd = width("DISK", &|r| r.disk.chars().count());
    let wp = width("POINT", &|r| r.point.chars().count());
    let wc = width("CREATED", &|r| r.created.len());
    writeln!(
        out,
        "{:<wm$}  {:<wd$}  {:<wp$}  {:<wc$}  {:<5}  {:>12}",
        "MACHINE", "DISK", "POINT", "CREATED", "KIND", "SIZE"
    )?;
    for r in rows {
        writeln!(
            out,
            "{:<wm$}  {:<wd$}  {:<wp$}  {:<wc$}  {:<5}  {:>12}",
            r.machine,
            r.disk,
            r.point,
            r.created,
            r.kind,
            human_bytes(r.size_bytes)
        )?;
    }
    Ok(())
}

/// `12.0 GiB`-style sizes for tables.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `points list`.
pub async fn list(vault: &Vault, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let points = vault.list_points().await?;
    write_points(&point_rows(&points), json, out)
}

/// Why a point argument names nothing restorable (the CLI and restore jobs share it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PointLookupError {
    #[error("point {point} of machine {machine} has no disk {disk}")]
    NoDisk {
        machine: String,
        point: String,
        disk: String,
    },
    #[error("machine {machine} has no point {point}")]
    NoPoint { machine: String, point: String },
    #[error("machine {machine} has no point with disk {disk}")]
    NoPointWithDisk { machine: String, disk: String },
}

/// The point id a `--point` argument names: itself, or for "latest" the newest point of the
/// machine that holds the disk (ties broken by the larger point id).
pub fn resolve_point(
    points: &[PointSummary],
    machine: &str,
    disk: &str,
    wanted: &str,
) -> Result<String, PointLookupError> {
    let holding: Vec<&PointSummary> = points
        .iter()
        .filter(|p| p.machine_id == machine && p.disks.iter().any(|(d, _)| d == disk))
        .collect();
    if wanted != "latest" {
        if holding.iter().any(|p| p.point_id == wanted) {
            return Ok(wanted.to_string());
        }
        if points
            .iter()
            .any(|p| p.machine_id == machine && p.point_id == wanted)
        {
            return Err(PointLookupError::NoDisk {
                machine: machine.into(),
                point: wanted.into(),
                disk: disk.into(),
            });
        }
        return Err(PointLookupError::NoPoint {
            machine: machine.into(),
            point: wanted.into(),
        });
    }
    holding
        .into_iter()
        .max_by(|a, b| (a.created_unix_ms, &a.point_id).cmp(&(b.created_unix_ms, &b.point_id)))
        .map(|p| p.point_id.clone())
        .ok_or_else(|| PointLookupError::NoPointWithDisk {
            machine: machine.into(),
            disk: disk.into(),
        })
}

fn restore_format(format: ImageFormat) -> RestoreFormat {
    match format {
        ImageFormat::Raw => RestoreFormat::Raw,
        ImageFormat::Vhd => RestoreFormat::Vhd,
        ImageFormat::Vmdk => RestoreFormat::Vmdk,
    }
}

/// Draws `done/total` on one terminal line, at most every [`PROGRESS_EVERY`].
struct ProgressLine {
    started: Instant,
    last_draw: Mutex<Option<Instant>>,
}

impl ProgressLine {
    fn draw(&self, done: u64, total: u64) {
        let now = Instant::now();
        let Ok(mut last) = self.last_draw.lock() else {
            return;
        };
        let finished = total > 0 && done >= total;
        if !finished && last.is_some_and(|t| now.duration_since(t) < PROGRESS_EVERY) {
            return;
        }
        *last = Some(now);
        let percent = if total == 0 {
            100.0
        } else {
            done as f64 * 100.0 / total as f64
        };
        let rate = mb_per_s(done, now.duration_since(self.started));
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r{percent:5.1}%  {} of {}  {rate:.1} MB/s   ",
            human_bytes(done),
            human_bytes(total)
        );
        let _ = err.flush();
    }
}

fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        0.0
    } else {
        bytes as f64 / 1e6 / secs
    }
}

/// `restore`: writes the disk image, with progress on stderr when it is a terminal, then
/// prints a summary on stdout.
pub async fn restore(
    vault: &Vault,
    args: &RestoreArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    if args.out.exists() && !args.force {
        bail!(
            "{} exists; pass --force to overwrite it",
            args.out.display()
        );
    }
    let points = vault.list_points().await?;
    let point_id =
        resolve_point(&points, &args.machine, &args.disk, &args.point).map_err(|e| match e {
            PointLookupError::NoPoint { .. } => anyhow!("{e} (see `appliance points list`)"),
            other => other.into(),
        })?;
    let request = RestoreRequest {
        machine_id: args.machine.clone(),
        disk_id: args.disk.clone(),
        point_id: point_id.clone(),
        out: args.out.clone(),
        format: restore_format(args.format),
        parallelism: args
            .parallelism
            .map_or(DEFAULT_RESTORE_PARALLELISM, usize::from),
    };
    let started = Instant::now();
    let progress = ProgressLine {
        started,
        last_draw: Mutex::new(None),
    };
    let on_terminal = std::io::stderr().is_terminal();
    let report = |done: u64, total: u64| {
        if on_terminal {
            progress.draw(done, total);
        }
    };
    let result = vault.restore(&request, &report).await;
    if on_terminal {
        eprintln!();
    }
    let stats = result.with_context(|| {
        format!(
            "restoring {}/{} point {point_id} to {}",
            args.machine,
            args.disk,
            args.out.display()
        )
    })?;
    let elapsed = started.elapsed();
    writeln!(
        out,
        "restored {} disk {} point {} to {} ({}): {} bytes in {:.1} s, {:.1} MB/s",
        args.machine,
        args.disk,
        point_id,
        display_path(&args.out),
        format!("{:?}", args.format).to_lowercase(),
        stats.bytes,
        elapsed.as_secs_f64(),
        mb_per_s(stats.bytes, elapsed)
    )?;
    Ok(())
}

fn display_path(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
#[path = "points_cmd_tests.rs"]
mod tests;
