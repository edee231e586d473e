//! The steps every tool goes through on the same bytes: back up the pristine image, apply the
//! seeded change, back up again, restore the latest backup and check it bit for bit.

use anyhow::{ensure, Result};
use std::path::{Path, PathBuf};

use crate::procs::Timed;
use crate::report::ToolRun;
use crate::workload::{apply_change, fresh_copy, sha256_file, Workload};

/// A backup or replication tool under measurement.
pub trait Tool {
    fn name(&self) -> &str;
    /// Name and version, as shown in the table.
    fn version(&self) -> String;
    /// Backs up (replicates) `img`; `first` tells the initial run from the incremental one.
    fn backup(&mut self, img: &Path, first: bool) -> Result<Timed>;
    /// Restores the latest backup of `img` into the empty folder `dir`; returns the restored file.
    fn restore(&mut self, img: &Path, dir: &Path) -> Result<(Timed, PathBuf)>;
    /// Bytes its repository holds.
    fn stored_bytes(&self) -> u64;
    /// Stops what it left running and removes its repository; returns a daemon's peak RSS in KiB.
    fn finish(&mut self) -> Result<Option<u64>>;
}

/// Runs the four steps for `tool` in `work`, with a fresh copy of the pristine image.
pub fn measure(tool: &mut dyn Tool, work: &Path, workload: &Workload) -> Result<ToolRun> {
    let name = tool.name().to_string();
    let disk = work.join(format!("{name}-disk.img"));
    fresh_copy(&workload.pristine, &disk)?;
    eprintln!("{name}: initial backup");
    let initial = tool.backup(&disk, true)?;
    apply_change(&disk, &workload.changed_blocks, &workload.pool)?;
    eprintln!("{name}: incremental backup");
    let incremental = tool.backup(&disk, false)?;
    let restore_dir = work.join(format!("{name}-restore"));
    let _ = std::fs::remove_dir_all(&restore_dir);
    std::fs::create_dir_all(&restore_dir)?;
    eprintln!("{name}: restore");
    let (restore, restored) = tool.restore(&disk, &restore_dir)?;
    let restored_sha = sha256_file(&restored)?;
    ensure!(
        restored_sha == workload.changed_sha256,
        "{name}: the restored image {} differs from the changed image (sha256 {restored_sha}, expected {})",
        restored.display(),
        workload.changed_sha256
    );
    let stored_bytes = tool.stored_bytes();
    let server_peak_rss_kib = tool.finish()?;
    let _ = std::fs::remove_dir_all(&restore_dir);
    let _ = std::fs::remove_file(&disk);
    Ok(ToolRun {
        version: tool.version(),
        name,
        initial,
        incremental,
        restore,
        stored_bytes,
        server_peak_rss_kib,
    })
}
