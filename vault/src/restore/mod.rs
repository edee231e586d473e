//! Restore: a point's disk as a local raw, VHD or VMDK image.
//!
//! The block map is resolved first; chunks are grouped by pack and adjacent ones coalesced
//! into ranged GETs; ranges are fetched with bounded concurrency and opened on blocking
//! threads, each block written at its final position. The image is built under
//! `<out>.partial` and renamed only when every chunk has been authenticated and written, so a
//! failed restore leaves no image behind.
//!
//! A restore can be cancelled ([`Vault::restore_cancellable`]): the flag is checked before
//! each range is fetched, after each range is written and just before the rename, so a
//! cancelled restore stops within one range (at most 8 MiB per fetch in flight) and, like a
//! failed one, leaves neither the image nor the partial file.

mod vhd;
mod vmdk;

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::ObjectStoreExt;

use crate::index::PackId;
use crate::manifest::point_object;
use crate::{BlockRef, ChunkId, Vault, VaultError, BLOCK_SIZE};

/// Output image type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreFormat {
    /// Sparse raw image of exactly the disk size.
    Raw,
    /// Fixed VHD: raw image padded to a 1 MiB multiple plus the 512-byte footer (what Azure takes).
    Vhd,
    /// monolithicSparse VMDK with 64 KiB grains; zero blocks are not allocated.
    Vmdk,
}

#[derive(Clone, Debug)]
pub struct RestoreRequest {
    pub machine_id: String,
    pub disk_id: String,
    /// A point id, or `"latest"` for the newest point that has this disk.
    pub point_id: String,
    pub out: PathBuf,
    pub format: RestoreFormat,
    /// Ranged GETs in flight (and chunks being opened) at once; 0 counts as 1.
    pub parallelism: usize,
}

impl RestoreRequest {
    /// Whether `id` is usable as a machine, disk or point id (the alphabet object names
    /// allow: 1-128 of `A-Z a-z 0-9 - _ .`, not starting with `.`). Lets callers refuse a
    /// bad id before any store request.
    pub fn is_valid_id(id: &str) -> bool {
        crate::manifest::validate_id("id", id).is_ok()
    }

    /// The file the image is built in before it is renamed to `out` (`<out>.partial`).
    pub fn partial_path(&self) -> PathBuf {
        partial_path(&self.out)
    }

    /// [`RestoreRequest::partial_path`] of a request writing `out`.
    pub fn partial_path_of(out: &std::path::Path) -> PathBuf {
        partial_path(out)
    }
}

impl Vault {
    /// [`Vault::restore`] that stops once `cancel` is set, with [`VaultError::Cancelled`],
    /// removing the partial file. A cancel that comes after the rename is too late: the
    /// restore then succeeds.
    pub async fn restore_cancellable(
        &self,
        req: &RestoreRequest,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
        cancel: &AtomicBool,
    ) -> Result<RestoreStats, VaultError> {
        run_cancellable(self, req, progress, Some(cancel)).await
    }
}

fn check_cancel(cancel: Option<&AtomicBool>) -> Result<(), VaultError> {
    match cancel {
        Some(flag) if flag.load(Ordering::Acquire) => Err(VaultError::Cancelled),
        _ => Ok(()),
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RestoreStats {
    /// Disk size restored.
    pub bytes: u64,
    /// Distinct chunks fetched and opened.
    pub chunks: u64,
    /// Blocks that are zero (not fetched, not written).
    pub zero_blocks: u64,
    /// Bytes downloaded from the store.
    pub fetched_bytes: u64,
}

/// Gap between two chunks that is cheaper to download than to split the request.
const MAX_GAP: u64 = 64 * 1024;
/// Upper bound of one ranged GET (bounds memory: parallelism x this).
const MAX_RANGE: u64 = 8 << 20;

#[derive(Debug, Clone)]
struct ChunkJob {
    id: ChunkId,
    offset: u64,
    length: u32,
    blocks: Vec<u64>,
}

#[derive(Debug, Clone)]
struct RangeJob {
    pack: PackId,
    start: u64,
    end: u64,
    chunks: Vec<ChunkJob>,
}

/// Groups chunks by pack and merges neighbours into ranges of at most [`MAX_RANGE`] bytes.
fn coalesce(per_pack: HashMap<PackId, Vec<ChunkJob>>) -> Vec<RangeJob> {
    let mut packs: Vec<_> = per_pack.into_iter().collect();
    packs.sort_by_key(|(p, _)| *p);
    let mut out = Vec::new();
    for (pack, mut chunks) in packs {
        chunks.sort_by_key(|c| c.offset);
        let mut current: Option<RangeJob> = None;
        for c in chunks {
            let c_end = c.offset + u64::from(c.length);
            match current.as_mut() {
                Some(r)
                    if c.offset <= r.end + MAX_GAP && c_end.max(r.end) - r.start <= MAX_RANGE =>
                {
                    r.end = r.end.max(c_end);
                    r.chunks.push(c);
                }
                _ => {
                    out.extend(current.take());
                    current = Some(RangeJob {
                        pack,
                        start: c.offset,
                        end: c_end,
                        chunks: vec![c],
                    });
                }
            }
        }
        out.extend(current);
    }
    out
}

/// Where each block goes in the output file.
enum Layout {
    Flat,
    Vmdk(vmdk::VmdkLayout),
}

impl Layout {
    fn block_offset(&self, block: u64) -> u64 {
        match self {
            Layout::Flat => block * BLOCK_SIZE as u64,
            Layout::Vmdk(v) => v.grain_offset(block),
        }
    }
}

async fn latest_point(vault: &Vault, machine: &str, disk: &str) -> Result<String, VaultError> {
    vault
        .list_points()
        .await?
        .into_iter()
        .rfind(|p| p.machine_id == machine && p.disks.iter().any(|(d, _)| d == disk))
        .map(|p| p.point_id)
        .ok_or_else(|| {
            VaultError::NotFound(format!("no point of machine {machine} has disk {disk}"))
        })
}

pub(crate) async fn run(
    vault: &Vault,
    req: &RestoreRequest,
    progress: &(dyn Fn(u64, u64) + Send + Sync),
) -> Result<RestoreStats, VaultError> {
    run_cancellable(vault, req, progress, None).await
}

async fn run_cancellable(
    vault: &Vault,
    req: &RestoreRequest,
    progress: &(dyn Fn(u64, u64) + Send + Sync),
    cancel: Option<&AtomicBool>,
) -> Result<RestoreStats, VaultError> {
    let point_id = if req.point_id == "latest" {
        latest_point(vault, &req.machine_id, &req.disk_id).await?
    } else {
        req.point_id.clone()
    };
    let point_name = point_object(&req.machine_id, &point_id)?;
    let (size, map) = vault
        .resolve_disk_map(&req.machine_id, &point_id, &req.disk_id)
        .await?;

    let mut by_chunk: HashMap<ChunkId, Vec<u64>> = HashMap::new();
    let mut zero_blocks = 0u64;
    for (block, r) in map.iter().enumerate() {
        match r {
            BlockRef::Zero => zero_blocks += 1,
            BlockRef::Chunk(id) => by_chunk.entry(*id).or_default().push(block as u64),
        }
    }
    let mut per_pack: HashMap<PackId, Vec<ChunkJob>> = HashMap::new();
    if !by_chunk.is_empty() {
        let index = vault.load_chunk_index().await?;
        for (id, blocks) in by_chunk {
            let loc = index.get(&id).ok_or_else(|| {
                VaultError::integrity(
                    &point_name,
                    format!("chunk {} is in no index", hex::encode(id)),
                )
            })?;
            per_pack.entry(loc.pack).or_default().push(ChunkJob {
                id,
                offset: loc.offset,
                length: loc.length,
                blocks,
            });
        }
    }
    let chunks = per_pack.values().map(|v| v.len() as u64).sum();
    let ranges = coalesce(per_pack);
    let total: u64 = ranges
        .iter()
        .flat_map(|r| &r.chunks)
        .flat_map(|c| c.blocks.iter().map(|b| block_len(size, *b)))
        .sum();
    let fetched_bytes = ranges.iter().map(|r| r.end - r.start).sum();

    let partial = partial_path(&req.out);
    let file_name = req
        .out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "disk.vmdk".into());
    let result = async {
        check_cancel(cancel)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&partial)?;
        let layout = prepare(&file, req.format, size, &map, &file_name)?;
        drop(map);
        let file = Arc::new(file);
        let layout = Arc::new(layout);
        let mut done = 0u64;
        progress(0, total);
        futures::stream::iter(ranges)
            .map(|range| {
                let (file, layout) = (file.clone(), layout.clone());
                async move {
                    check_cancel(cancel)?;
                    fetch_and_write(vault, range, size, file, layout).await
                }
            })
            .buffer_unordered(req.parallelism.max(1))
            .try_for_each(|written| {
                done += written;
                progress(done, total);
                futures::future::ready(check_cancel(cancel))
            })
            .await?;
        let file = file.clone();
        tokio::task::spawn_blocking(move || file.sync_all())
            .await
            .map_err(|e| VaultError::Io(std::io::Error::other(e.to_string())))??;
        check_cancel(cancel)?;
        std::fs::rename(&partial, &req.out)?;
        Ok::<_, VaultError>(())
    }
    .await;
    if let Err(e) = result {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    Ok(RestoreStats {
        bytes: size,
        chunks,
        zero_blocks,
        fetched_bytes,
    })
}

fn partial_path(out: &std::path::Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Bytes of block `block` in a disk of `size` bytes (the last block may be short).
fn block_len(size: u64, block: u64) -> u64 {
    (size - block * BLOCK_SIZE as u64).min(BLOCK_SIZE as u64)
}

/// Sizes the file and writes the format's metadata; returns where blocks go.
fn prepare(
    file: &std::fs::File,
    format: RestoreFormat,
    size: u64,
    map: &[BlockRef],
    file_name: &str,
) -> Result<Layout, VaultError> {
    match format {
        RestoreFormat::Raw => {
            file.set_len(size)?;
            Ok(Layout::Flat)
        }
        RestoreFormat::Vhd => {
            let padded = vhd::padded_size(size);
            let footer = vhd::footer(padded, vhd::timestamp_now(), rand::random());
            file.set_len(padded + footer.len() as u64)?;
            file.write_all_at(&footer, padded)?;
            Ok(Layout::Flat)
        }
        RestoreFormat::Vmdk => {
            let allocated = map.iter().map(|b| matches!(b, BlockRef::Chunk(_)));
            let v = vmdk::VmdkLayout::plan(size, allocated, file_name, rand::random())
                .map_err(|reason| VaultError::format("vmdk output", reason))?;
            file.set_len(v.file_len())?;
            for (offset, bytes) in v.metadata() {
                file.write_all_at(&bytes, offset)?;
            }
            Ok(Layout::Vmdk(v))
        }
    }
}

/// Downloads one range, then opens and writes its chunks on a blocking thread.
/// Returns the bytes of disk written.
async fn fetch_and_write(
    vault: &Vault,
    range: RangeJob,
    size: u64,
    file: Arc<std::fs::File>,
    layout: Arc<Layout>,
) -> Result<u64, VaultError> {
    let name = range.pack.object_name();
    let bytes = match vault
        .store
        .get_range(&Path::from(name.as_str()), range.start..range.end)
        .await
    {
        Ok(b) => b,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(VaultError::integrity(name, "pack object is missing"))
        }
        Err(e) => return Err(e.into()),
    };
    if bytes.len() as u64 != range.end - range.start {
        return Err(VaultError::integrity(
            name,
            format!(
                "range {}..{} returned {} bytes (pack truncated?)",
                range.start,
                range.end,
                bytes.len()
            ),
        ));
    }
    let vault = vault.clone();
    tokio::task::spawn_blocking(move || {
        write_range(&vault, &name, &range, &bytes, size, &file, &layout)
    })
    .await
    .map_err(|e| VaultError::Io(std::io::Error::other(format!("restore worker: {e}"))))?
}

fn write_range(
    vault: &Vault,
    name: &str,
    range: &RangeJob,
    bytes: &Bytes,
    size: u64,
    file: &std::fs::File,
    layout: &Layout,
) -> Result<u64, VaultError> {
    let mut written = 0;
    for c in &range.chunks {
        let at = (c.offset - range.start) as usize;
        let sealed = &bytes[at..at + c.length as usize];
        let plain = vault.open_chunk(name, &c.id, sealed)?;
        for &block in &c.blocks {
            let len = block_len(size, block);
            // A shorter chunk means the block's tail is zero; a longer one cannot be right.
            if plain.len() as u64 > len {
                return Err(VaultError::integrity(
                    name,
                    format!(
                        "chunk {} has {} bytes, block {block} only {len}",
                        hex::encode(c.id),
                        plain.len()
                    ),
                ));
            }
            file.write_all_at(&plain, layout.block_offset(block))?;
            written += len;
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(offset: u64, length: u32) -> ChunkJob {
        ChunkJob {
            id: [offset as u8; 32],
            offset,
            length,
            blocks: vec![0],
        }
    }

    #[test]
    fn coalescing_merges_neighbours_within_limits() {
        let a = PackId([1; 16]);
        let b = PackId([2; 16]);
        let mut per_pack = HashMap::new();
        per_pack.insert(
            a,
            vec![job(100, 50), job(0, 100), job(150 + MAX_GAP + 1, 10)],
        );
        per_pack.insert(b, vec![job(0, 10)]);
        let ranges = coalesce(per_pack);
        let spans: Vec<_> = ranges
            .iter()
            .map(|r| (r.pack, r.start, r.end, r.chunks.len()))
            .collect();
        assert_eq!(
            spans,
            vec![
                (a, 0, 150, 2),
                (a, 150 + MAX_GAP + 1, 161 + MAX_GAP, 1),
                (b, 0, 10, 1)
            ]
        );
        let mut big = HashMap::new();
        let n = MAX_RANGE / 60_000 + 5;
        big.insert(a, (0..n).map(|i| job(i * 60_000, 60_000)).collect());
        let ranges = coalesce(big);
        assert_eq!(ranges.len(), 2);
        assert!(ranges.iter().all(|r| r.end - r.start <= MAX_RANGE));
        assert_eq!(ranges.iter().map(|r| r.chunks.len() as u64).sum::<u64>(), n);
    }

    #[test]
    fn block_lengths_and_partial_names() {
        assert_eq!(block_len(100_000, 0), BLOCK_SIZE as u64);
        assert_eq!(block_len(100_000, 1), 100_000 - BLOCK_SIZE as u64);
        assert_eq!(
            partial_path(std::path::Path::new("/x/disk.vhd")),
            PathBuf::from("/x/disk.vhd.partial")
        );
    }
}
