//! The data every tool gets: one ext4 image of real files (kept pristine) and one seeded change
//! of 5% of its 64 KiB blocks, written with real-file content that is not in the image.

use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The block size of Ferry's change tracking and of the change the benchmark makes.
pub const BLOCK: u64 = 64 * 1024;

/// Folders the change content is read from, in order; files that were copied into the image
/// are skipped, so the changed blocks are new data for every tool.
const CHANGE_SOURCES: [&str; 6] = [
    "/usr/share",
    "/usr/include",
    "/usr/libexec",
    "/usr/bin",
    "/usr/sbin",
    "/usr/lib",
];

/// The prepared workload, in the work folder.
#[derive(Debug, Clone)]
pub struct Workload {
    pub pristine: PathBuf,
    pub image_bytes: u64,
    /// Bytes of real files copied into the file system.
    pub files_bytes: u64,
    /// Concatenated change content; block i of the change is `pool[i*BLOCK..(i+1)*BLOCK]`.
    pub pool: PathBuf,
    /// Image blocks the change overwrites, ascending.
    pub changed_blocks: Vec<u64>,
    pub changed_sha256: String,
}

/// Which blocks of a `block_count`-block image a change of `percent` % overwrites: distinct,
/// spread uniformly at random by a seeded generator, ascending.
pub fn plan_change(block_count: u64, percent: f64, seed: u64) -> Vec<u64> {
    let count = ((block_count as f64) * percent / 100.0).round() as u64;
    let count = count.min(block_count);
    let mut rng = SplitMix64(seed);
    // Floyd's sampling: `count` distinct values without materializing all block numbers.
    let mut chosen = HashSet::with_capacity(count as usize);
    for j in (block_count - count)..block_count {
        let t = rng.next() % (j + 1);
        if !chosen.insert(t) {
            chosen.insert(j);
        }
    }
    let mut blocks: Vec<u64> = chosen.into_iter().collect();
    blocks.sort_unstable();
    blocks
}

/// A small, well-mixed, seedable generator (SplitMix64); the change must be reproducible.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Writes the change into `img` in place and makes it durable.
pub fn apply_change(img: &Path, blocks: &[u64], pool: &Path) -> Result<()> {
    let mut src = std::fs::File::open(pool).with_context(|| format!("open {}", pool.display()))?;
    ensure!(
        src.metadata()?.len() >= blocks.len() as u64 * BLOCK,
        "change pool {} is too small",
        pool.display()
    );
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .open(img)
        .with_context(|| format!("open {} for writing", img.display()))?;
    let mut buf = vec![0u8; BLOCK as usize];
    for &block in blocks {
        src.read_exact(&mut buf)?;
        dst.seek(SeekFrom::Start(block * BLOCK))?;
        dst.write_all(&buf)?;
    }
    dst.sync_all()?;
    Ok(())
}

/// Copies the pristine image to `dst` (replacing it) and makes the copy durable.
pub fn fresh_copy(pristine: &Path, dst: &Path) -> Result<()> {
    let _ = std::fs::remove_file(dst);
    std::fs::copy(pristine, dst)
        .with_context(|| format!("copy {} to {}", pristine.display(), dst.display()))?;
    std::fs::File::open(dst)?.sync_all()?;
    Ok(())
}

/// SHA-256 of a file, hex.
pub fn sha256_file(p: &Path) -> Result<String> {
    let mut f = std::fs::File::open(p).with_context(|| format!("open {}", p.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Names and sizes of the files `collect_real_files` copied (it names a copy `<n>-<name>`).
fn copied_files(files_dir: &Path) -> HashSet<(String, u64)> {
    let mut set = HashSet::new();
    for path in walk_files(files_dir) {
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        let original = name.split_once('-').map(|(_, rest)| rest).unwrap_or(&name);
        if let Ok(md) = std::fs::metadata(&path) {
            set.insert((original.to_string(), md.len()));
        }
    }
    set
}

/// Regular files under `dir`, sorted, without following symbolic links.
fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Fills `pool` with `bytes` of content from real files on this machine that are not among the
/// image's files; block-sized pieces that are all zeros are skipped (they would not be a change
/// any tool has to store).
fn write_change_pool(pool: &Path, bytes: u64, image_files: &HashSet<(String, u64)>) -> Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(pool)?);
    let mut written = 0u64;
    let mut carry: Vec<u8> = Vec::with_capacity(2 * BLOCK as usize);
    for source in CHANGE_SOURCES {
        for path in walk_files(Path::new(source)) {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let Ok(md) = std::fs::metadata(&path) else {
                continue;
            };
            if md.len() == 0 || md.len() > 32 << 20 || image_files.contains(&(name, md.len())) {
                continue;
            }
            let Ok(data) = std::fs::read(&path) else {
                continue;
            };
            carry.extend_from_slice(&data);
            while carry.len() >= BLOCK as usize {
                let piece: Vec<u8> = carry.drain(..BLOCK as usize).collect();
                if piece.iter().any(|&b| b != 0) {
                    out.write_all(&piece)?;
                    written += BLOCK;
                }
                if written >= bytes {
                    out.flush()?;
                    return Ok(());
                }
            }
        }
    }
    bail!("found only {written} of {bytes} bytes of change content on this machine")
}

/// Builds the workload in `work` (or reuses the one a previous run left there with the same
/// sizes and seed): the pristine image, the change pool and both checksums.
pub fn prepare(
    work: &Path,
    size_mib: u64,
    files_mib: u64,
    percent: f64,
    seed: u64,
) -> Result<Workload> {
    let pristine = work.join("pristine.img");
    let pool = work.join("change-pool.bin");
    let marker = work.join("workload.json");
    let image_bytes = size_mib << 20;
    let changed_blocks = plan_change(image_bytes / BLOCK, percent, seed);
    let key = serde_json::json!({
        "size_mib": size_mib, "files_mib": files_mib, "percent": percent, "seed": seed,
    });
    if let Ok(text) = std::fs::read_to_string(&marker) {
        let saved: serde_json::Value = serde_json::from_str(&text)?;
        if saved.get("key") == Some(&key) && pristine.exists() && pool.exists() {
            eprintln!("reusing the workload in {}", work.display());
            let pristine_sha256: String =
                saved["pristine_sha256"].as_str().unwrap_or_default().into();
            ensure!(
                sha256_file(&pristine)? == pristine_sha256,
                "{} changed since it was made; remove {} to make a new one",
                pristine.display(),
                marker.display()
            );
            return Ok(Workload {
                pristine,
                image_bytes,
                files_bytes: saved["files_bytes"].as_u64().unwrap_or(0),
                pool,
                changed_blocks,
                changed_sha256: saved["changed_sha256"].as_str().unwrap_or_default().into(),
            });
        }
    }
    let _ = std::fs::remove_file(&marker);
    let files = work.join("files");
    let _ = std::fs::remove_dir_all(&files);
    std::fs::create_dir_all(&files)?;
    eprintln!("copying {files_mib} MiB of real files");
    let files_bytes = ferry_tests::image::collect_real_files(&files, files_mib << 20)?;
    eprintln!("making the {size_mib} MiB ext4 image");
    ferry_tests::image::make_ext4(&pristine, size_mib, &files)?;
    ensure!(
        std::fs::metadata(&pristine)?.len() == image_bytes,
        "mke2fs made an image of an unexpected size"
    );
    eprintln!(
        "collecting change content ({} blocks)",
        changed_blocks.len()
    );
    write_change_pool(
        &pool,
        changed_blocks.len() as u64 * BLOCK,
        &copied_files(&files),
    )?;
    std::fs::remove_dir_all(&files)?;
    let pristine_sha256 = sha256_file(&pristine)?;
    let scratch = work.join("changed-check.img");
    fresh_copy(&pristine, &scratch)?;
    apply_change(&scratch, &changed_blocks, &pool)?;
    let changed_sha256 = sha256_file(&scratch)?;
    std::fs::remove_file(&scratch)?;
    let saved = serde_json::json!({
        "key": key, "files_bytes": files_bytes,
        "pristine_sha256": pristine_sha256, "changed_sha256": changed_sha256,
    });
    std::fs::write(&marker, serde_json::to_vec_pretty(&saved)?)?;
    Ok(Workload {
        pristine,
        image_bytes,
        files_bytes,
        pool,
        changed_blocks,
        changed_sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_plan_is_seeded_distinct_and_sized() {
        let a = plan_change(16384, 5.0, 7);
        assert_eq!(a.len(), 819);
        assert_eq!(a, plan_change(16384, 5.0, 7));
        assert_ne!(a, plan_change(16384, 5.0, 8));
        assert!(a.windows(2).all(|w| w[0] < w[1]), "sorted and distinct");
        assert!(*a.last().unwrap() < 16384);
        // Spread over the image, not bunched at one end.
        let low = a.iter().filter(|&&b| b < 8192).count();
        assert!((300..520).contains(&low), "{low} of 819 in the first half");
        assert_eq!(plan_change(10, 100.0, 1), (0..10).collect::<Vec<_>>());
        assert!(plan_change(10, 0.0, 1).is_empty());
    }

    #[test]
    fn apply_change_writes_pool_blocks_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("img");
        let pool = dir.path().join("pool");
        std::fs::write(&img, vec![0u8; 8 * BLOCK as usize]).unwrap();
        let mut pool_bytes = vec![1u8; BLOCK as usize];
        pool_bytes.extend(vec![2u8; BLOCK as usize]);
        std::fs::write(&pool, &pool_bytes).unwrap();
        apply_change(&img, &[2, 5], &pool).unwrap();
        let data = std::fs::read(&img).unwrap();
        let block = |i: usize| &data[i * BLOCK as usize..(i + 1) * BLOCK as usize];
        assert!(block(2).iter().all(|&b| b == 1));
        assert!(block(5).iter().all(|&b| b == 2));
        assert!([0, 1, 3, 4, 6, 7]
            .iter()
            .all(|&i| block(i).iter().all(|&b| b == 0)));
        assert!(
            apply_change(&img, &[0, 1, 2], &pool).is_err(),
            "pool too small"
        );
    }

    #[test]
    fn change_pool_skips_image_files_and_zero_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let pool = dir.path().join("pool");
        write_change_pool(&pool, 4 * BLOCK, &HashSet::new()).unwrap();
        let data = std::fs::read(&pool).unwrap();
        assert_eq!(data.len() as u64, 4 * BLOCK);
        assert!(data
            .chunks(BLOCK as usize)
            .all(|b| b.iter().any(|&x| x != 0)));
    }

    #[test]
    fn copied_file_names_drop_the_counter() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("00")).unwrap();
        std::fs::write(dir.path().join("00/12-libfoo-1.so"), b"abc").unwrap();
        let set = copied_files(dir.path());
        assert!(set.contains(&("libfoo-1.so".to_string(), 3)));
    }
}
