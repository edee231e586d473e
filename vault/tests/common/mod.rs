//! Shared test helpers: a local vault, synthetic disks, and an uploader that behaves like
//! the appliance's (zero-skip, dedup, packs, then indexes, then points).
#![allow(dead_code)]

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use vault::{
    open_store, BlockRef, ChunkIndex, DiskMap, DiskPoint, KdfParams, ObjectStore, PointKind,
    PointManifest, RestoreFormat, RestoreRequest, RestoreStats, StoreOptions, Vault, VaultError,
    BLOCK_SIZE,
};

pub const BS: usize = BLOCK_SIZE;
pub const PASS: &str = "correct horse battery staple";

pub struct LocalVault {
    pub dir: tempfile::TempDir,
    pub store: Arc<dyn ObjectStore>,
    pub vault: Vault,
}

impl LocalVault {
    pub fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("vault")
    }
    pub fn out(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

pub async fn local_vault() -> LocalVault {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("vault");
    let store = open_store(root.to_str().unwrap(), &StoreOptions::default()).unwrap();
    let vault = Vault::create(store.clone(), PASS, KdfParams::fast_for_tests())
        .await
        .unwrap();
    LocalVault { dir, store, vault }
}

/// A disk with every kind of block: zero, random, compressible, repeated, partly zero.
pub fn make_disk(seed: u64, size: usize) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut disk = vec![0u8; size];
    let blocks = size.div_ceil(BS);
    for b in 0..blocks {
        let start = b * BS;
        let end = (start + BS).min(size);
        if b % 6 == 3 && b >= 3 {
            // A duplicate of an earlier block: exercises dedup.
            disk.copy_within(start - 2 * BS..start - 2 * BS + (end - start), start);
            continue;
        }
        let block = &mut disk[start..end];
        match b % 6 {
            0 => {} // zero
            1 | 4 => rng.fill_bytes(block),
            2 => {
                let word: u8 = rng.random();
                for (i, x) in block.iter_mut().enumerate() {
                    *x = word.wrapping_add((i / 100) as u8);
                }
            }
            _ => {
                let half = block.len() / 2;
                rng.fill_bytes(&mut block[..half]);
            }
        }
    }
    disk
}

/// Changes some blocks and resizes the disk.
pub fn mutate(disk: &[u8], seed: u64, new_size: usize) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = disk.to_vec();
    out.resize(new_size, 0);
    let blocks = new_size.div_ceil(BS);
    for _ in 0..blocks / 3 + 1 {
        let b = rng.random_range(0..blocks);
        let start = b * BS;
        let end = (start + BS).min(new_size);
        if rng.random_bool(0.3) {
            out[start..end].fill(0);
        } else {
            rng.fill_bytes(&mut out[start..end]);
        }
    }
    out
}

/// Uploads like the appliance does and keeps the chunk index for dedup.
pub struct Uploader {
    pub index: ChunkIndex,
    pub max_pack: usize,
}

impl Uploader {
    pub async fn new(vault: &Vault) -> Self {
        Uploader {
            index: vault.load_chunk_index().await.unwrap(),
            max_pack: 256 * 1024,
        }
    }

    pub async fn upload(&mut self, vault: &Vault, disk: &[u8]) -> Vec<BlockRef> {
        let mut map = Vec::new();
        let mut pack = vault.new_pack();
        let mut in_pack = HashSet::new();
        for block in disk.chunks(BS) {
            if block.iter().all(|b| *b == 0) {
                map.push(BlockRef::Zero);
                continue;
            }
            let id = vault.chunk_id(block);
            map.push(BlockRef::Chunk(id));
            if self.index.contains(&id) || !in_pack.insert(id) {
                continue;
            }
            pack.add(id, &vault.seal_chunk(&id, block));
            if pack.len() >= self.max_pack {
                let full = std::mem::replace(&mut pack, vault.new_pack());
                self.flush(vault, full).await;
            }
        }
        if !pack.is_empty() {
            self.flush(vault, pack).await;
        }
        map
    }

    async fn flush(&mut self, vault: &Vault, pack: vault::PackWriter) {
        let entries = vault.put_pack(pack.finish()).await.unwrap();
        vault.put_index(&entries).await.unwrap();
        for e in &entries {
            self.index.insert_entry(e).unwrap();
        }
    }
}

pub fn delta(old: &[BlockRef], new: &[BlockRef]) -> Vec<(u64, BlockRef)> {
    (0..new.len())
        .filter(|i| old.get(*i) != Some(&new[*i]))
        .map(|i| (i as u64, new[i]))
        .collect()
}

pub fn point(
    machine: &str,
    id: &str,
    parent: Option<&str>,
    created: u64,
    disks: Vec<DiskPoint>,
) -> PointManifest {
    PointManifest {
        machine_id: machine.into(),
        point_id: id.into(),
        parent: parent.map(str::to_string),
        kind: PointKind::Crash,
        bookmark_id: created,
        created_unix_ms: created,
        disks,
    }
}

pub fn disk_point(disk_id: &str, size: usize, map: DiskMap) -> DiskPoint {
    DiskPoint {
        disk_id: disk_id.into(),
        size_bytes: size as u64,
        seq: 1,
        map,
    }
}

pub async fn restore(
    vault: &Vault,
    machine: &str,
    disk: &str,
    point_id: &str,
    format: RestoreFormat,
    out: &Path,
    parallelism: usize,
) -> Result<RestoreStats, VaultError> {
    let req = RestoreRequest {
        machine_id: machine.into(),
        disk_id: disk.into(),
        point_id: point_id.into(),
        out: out.to_path_buf(),
        format,
        parallelism,
    };
    vault.restore(&req, &|_, _| {}).await
}

/// All object files under a LocalFileSystem root, as (object name, path).
/// Uploads `image` and stores it as the one full point `m`/`p` of disk `d`; returns its block map.
pub async fn store_single_point(lv: &LocalVault, image: &[u8]) -> Vec<BlockRef> {
    let map = Uploader::new(&lv.vault)
        .await
        .upload(&lv.vault, image)
        .await;
    let p = point(
        "m",
        "p",
        None,
        1,
        vec![disk_point("d", image.len(), DiskMap::Full(map.clone()))],
    );
    lv.vault.put_point(&p).await.unwrap();
    map
}

pub fn object_files(root: &Path) -> Vec<(String, std::path::PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let name = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((name, p));
            }
        }
    }
    out.sort();
    out
}

pub fn read_file(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}
