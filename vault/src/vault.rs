//! The `Vault` handle: keys in memory plus the object store.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload};

use crate::chunk::VaultKeys;
use crate::crypto::{
    decode_config, encode_config, new_salt, open_envelope, random_nonce, seal_envelope, KdfParams,
    MasterKeys,
};
use crate::index::{decode_index_plain, encode_index_plain, PackId, INDEX_MAGIC};
use crate::manifest::{
    block_count, decode_point_plain, decode_point_summary, encode_point_plain, machine_object,
    point_object, validate_point, DiskMap, MachineDescriptor, PointManifest, PointSummary,
    MACHINE_MAGIC, MAX_DISK_BLOCKS, POINT_MAGIC,
};
use crate::pack::{
    decode_footer_plain, decode_trailer, FinishedPack, PackWriter, FOOTER_MAGIC, TRAILER_LEN,
};
use crate::restore::{RestoreRequest, RestoreStats};
use crate::{BlockRef, ChunkId, ChunkIndex, IndexEntry, VaultError};

const CONFIG_OBJECT: &str = "config";
/// Concurrent GETs when reading many small objects (indexes, manifests).
const LIST_FETCH_CONCURRENCY: usize = 8;

/// An open vault. Cheap to clone; all clones share the store and the keys.
#[derive(Clone)]
pub struct Vault {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) keys: Arc<VaultKeys>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("store", &self.store.to_string())
            .finish_non_exhaustive()
    }
}

enum Put {
    Created,
    AlreadyExists,
}

fn join_error(e: tokio::task::JoinError) -> VaultError {
    VaultError::Io(std::io::Error::other(format!("worker task failed: {e}")))
}

impl Vault {
    /// Whether a `config` object exists.
    pub async fn is_initialized(store: &Arc<dyn ObjectStore>) -> Result<bool, VaultError> {
        match store.head(&Path::from(CONFIG_OBJECT)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates a new vault: fresh random master keys, wrapped by `passphrase`.
    pub async fn create(
        store: Arc<dyn ObjectStore>,
        passphrase: &str,
        kdf: KdfParams,
    ) -> Result<Vault, VaultError> {
        Self::create_with_keys(store, passphrase, kdf, MasterKeys::generate()?).await
    }

    pub(crate) async fn create_with_keys(
        store: Arc<dyn ObjectStore>,
        passphrase: &str,
        kdf: KdfParams,
        keys: MasterKeys,
    ) -> Result<Vault, VaultError> {
        if Self::is_initialized(&store).await? {
            return Err(VaultError::AlreadyInitialized);
        }
        let salt = new_salt()?;
        let pass = zeroize::Zeroizing::new(passphrase.to_string());
        let (keys, config) = tokio::task::spawn_blocking(move || {
            let config = encode_config(&keys, &pass, kdf, salt, random_nonce());
            config.map(|c| (keys, c))
        })
        .await
        .map_err(join_error)??;
        let vault = Vault {
            store,
            keys: Arc::new(VaultKeys::new(&keys)),
        };
        match vault.put_create(CONFIG_OBJECT, Bytes::from(config)).await? {
            Put::Created => Ok(vault),
            Put::AlreadyExists => Err(VaultError::AlreadyInitialized),
        }
    }

    /// Opens an existing vault with its passphrase.
    pub async fn open(store: Arc<dyn ObjectStore>, passphrase: &str) -> Result<Vault, VaultError> {
        let config = match store.get(&Path::from(CONFIG_OBJECT)).await {
            Ok(r) => r.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Err(VaultError::NotInitialized),
            Err(e) => return Err(e.into()),
        };
        let pass = zeroize::Zeroizing::new(passphrase.to_string());
        let keys = tokio::task::spawn_blocking(move || decode_config(&config, &pass))
            .await
            .map_err(join_error)??;
        Ok(Vault {
            store,
            keys: Arc::new(VaultKeys::new(&keys)),
        })
    }

    /// The store this vault lives in.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Keyed BLAKE3 of a block: its dedup name.
    pub fn chunk_id(&self, plain: &[u8]) -> ChunkId {
        self.keys.chunk_id(plain)
    }

    /// Compresses and encrypts one block (at most `BLOCK_SIZE` bytes). CPU only.
    pub fn seal_chunk(&self, id: &ChunkId, plain: &[u8]) -> Vec<u8> {
        self.keys.seal_chunk(id, plain)
    }

    /// Like [`Vault::seal_chunk`], appending the sealed chunk to `out`; returns its length. Sealing many
    /// chunks into one buffer and handing slices of it to [`PackWriter::add_sealed`] copies nothing.
    pub fn seal_chunk_into(&self, id: &ChunkId, plain: &[u8], out: &mut Vec<u8>) -> usize {
        self.keys.seal_chunk_into(id, plain, out)
    }

    /// Authenticates, decompresses and re-checks the id of a sealed chunk read from `object`.
    pub fn open_chunk(
        &self,
        object: &str,
        id: &ChunkId,
        sealed: &[u8],
    ) -> Result<Vec<u8>, VaultError> {
        self.keys.open_chunk(object, id, sealed)
    }

    pub fn new_pack(&self) -> PackWriter {
        PackWriter::new(self.keys.clone())
    }

    /// Uploads a pack (create-only). Repeating the same pack after an unclear failure is safe.
    pub async fn put_pack(&self, pack: FinishedPack) -> Result<Vec<IndexEntry>, VaultError> {
        let name = pack.object_name();
        let payload: PutPayload = pack.parts.iter().cloned().collect();
        match self.put_payload_create(&name, payload).await? {
            Put::Created => {}
            Put::AlreadyExists => {
                let existing = self.get_bytes(&name).await?;
                if existing != pack.to_bytes() {
                    return Err(VaultError::integrity(
                        name,
                        "a different pack with this id exists",
                    ));
                }
            }
        }
        Ok(pack.entries)
    }

    /// Reads a pack's own list of chunks (for index rebuilds and checks).
    pub async fn read_pack_footer(&self, pack: &PackId) -> Result<Vec<IndexEntry>, VaultError> {
        let name = pack.object_name();
        let path = Path::from(name.as_str());
        let len = match self.store.head(&path).await {
            Ok(meta) => meta.size,
            Err(object_store::Error::NotFound { .. }) => return Err(VaultError::NotFound(name)),
            Err(e) => return Err(e.into()),
        };
        if len < TRAILER_LEN as u64 {
            return Err(VaultError::integrity(
                name,
                format!("pack of {len} bytes has no trailer"),
            ));
        }
        let tail = self
            .store
            .get_range(&path, len - TRAILER_LEN as u64..len)
            .await?;
        let t = decode_trailer(&tail, len).map_err(|e| VaultError::integrity(&name, e.0))?;
        let footer = self
            .store
            .get_range(
                &path,
                t.footer_offset..t.footer_offset + u64::from(t.footer_len),
            )
            .await?;
        let plain = open_envelope(&self.keys.cipher, FOOTER_MAGIC, &name, &footer)?;
        let entries = decode_footer_plain(&plain, t.footer_offset)
            .map_err(|e| VaultError::integrity(&name, e.0))?;
        if entries.len() != t.chunk_count as usize {
            return Err(VaultError::integrity(
                &name,
                "trailer and footer disagree on the chunk count",
            ));
        }
        let hex = pack.to_hex();
        Ok(entries
            .into_iter()
            .map(|(chunk, offset, length)| IndexEntry {
                chunk,
                pack: hex.clone(),
                offset,
                length,
            })
            .collect())
    }

    /// Writes one index object holding `entries` (call after their packs are stored).
    pub async fn put_index(&self, entries: &[IndexEntry]) -> Result<(), VaultError> {
        let name = format!("index/{}", PackId::random().to_hex());
        let plain = encode_index_plain(entries)?;
        let sealed = seal_envelope(
            &self.keys.cipher,
            INDEX_MAGIC,
            &name,
            &plain,
            random_nonce(),
        );
        match self.put_create(&name, Bytes::from(sealed)).await? {
            Put::Created => Ok(()),
            Put::AlreadyExists => Err(VaultError::integrity(name, "random index name collided")),
        }
    }

    /// Reads every index object into one map.
    pub async fn load_chunk_index(&self) -> Result<ChunkIndex, VaultError> {
        let names = self.list_names("index").await?;
        let mut index = ChunkIndex::new();
        let mut fetched = futures::stream::iter(names)
            .map(|name| async move {
                let sealed = self.get_bytes(&name).await?;
                let plain = open_envelope(&self.keys.cipher, INDEX_MAGIC, &name, &sealed)?;
                decode_index_plain(&plain).map_err(|e| VaultError::integrity(&name, e.0))
            })
            .buffer_unordered(LIST_FETCH_CONCURRENCY);
        while let Some(entries) = fetched.try_next().await? {
            for e in &entries {
                index.insert_entry(e)?;
            }
        }
        Ok(index)
    }

    /// Writes (or replaces) a machine descriptor.
    pub async fn put_machine(&self, m: &MachineDescriptor) -> Result<(), VaultError> {
        let name = machine_object(&m.machine_id)?;
        let json = serde_json::to_vec(m).map_err(|e| VaultError::format(&name, e.to_string()))?;
        let sealed = seal_envelope(
            &self.keys.cipher,
            MACHINE_MAGIC,
            &name,
            &json,
            random_nonce(),
        );
        self.store
            .put_opts(
                &Path::from(name.as_str()),
                PutPayload::from(sealed),
                PutMode::Overwrite.into(),
            )
            .await?;
        Ok(())
    }

    /// All machine descriptors, sorted by machine id.
    pub async fn list_machines(&self) -> Result<Vec<MachineDescriptor>, VaultError> {
        let names = self.list_names("machines").await?;
        let mut machines: Vec<MachineDescriptor> = futures::stream::iter(names)
            .map(|name| async move {
                let sealed = self.get_bytes(&name).await?;
                let plain = open_envelope(&self.keys.cipher, MACHINE_MAGIC, &name, &sealed)?;
                let m: MachineDescriptor = serde_json::from_slice(&plain)
                    .map_err(|e| VaultError::integrity(&name, format!("machine JSON: {e}")))?;
                if machine_object(&m.machine_id).ok().as_deref() != Some(name.as_str()) {
                    return Err(VaultError::integrity(
                        &name,
                        "machine id does not match the name",
                    ));
                }
                Ok(m)
            })
            .buffer_unordered(LIST_FETCH_CONCURRENCY)
            .try_collect()
            .await?;
        machines.sort_by(|a, b| a.machine_id.cmp(&b.machine_id));
        Ok(machines)
    }

    /// Stores a point manifest (create-only). Storing an identical manifest again is a no-op;
    /// a different manifest under an existing point id is an error.
    pub async fn put_point(&self, p: &PointManifest) -> Result<(), VaultError> {
        let name = point_object(&p.machine_id, &p.point_id)?;
        validate_point(p, &name)?;
        let plain = encode_point_plain(p).map_err(|e| VaultError::format(&name, e.0))?;
        let sealed = seal_envelope(
            &self.keys.cipher,
            POINT_MAGIC,
            &name,
            &plain,
            random_nonce(),
        );
        match self.put_create(&name, Bytes::from(sealed)).await? {
            Put::Created => Ok(()),
            Put::AlreadyExists => {
                let existing = self.get_point(&p.machine_id, &p.point_id).await?;
                if &existing == p {
                    Ok(())
                } else {
                    Err(VaultError::format(
                        name,
                        "a different point with this id exists",
                    ))
                }
            }
        }
    }

    /// Summaries of every point of every machine, sorted by machine, then creation time.
    pub async fn list_points(&self) -> Result<Vec<PointSummary>, VaultError> {
        let names = self.list_names("points").await?;
        let mut points: Vec<PointSummary> = futures::stream::iter(names)
            .map(|name| async move {
                let plain = self.open_point_object(&name).await?;
                let s =
                    decode_point_summary(&plain).map_err(|e| VaultError::integrity(&name, e.0))?;
                check_point_name(&name, &s.machine_id, &s.point_id)?;
                Ok::<_, VaultError>(s)
            })
            .buffer_unordered(LIST_FETCH_CONCURRENCY)
            .try_collect()
            .await?;
        points.sort_by(|a, b| {
            (&a.machine_id, a.created_unix_ms, &a.point_id).cmp(&(
                &b.machine_id,
                b.created_unix_ms,
                &b.point_id,
            ))
        });
        Ok(points)
    }

    /// One point manifest, as stored (delta maps are not resolved).
    pub async fn get_point(
        &self,
        machine: &str,
        point_id: &str,
    ) -> Result<PointManifest, VaultError> {
        let name = point_object(machine, point_id)?;
        let plain = self.open_point_object(&name).await?;
        let p = decode_point_plain(&plain, MAX_DISK_BLOCKS)
            .map_err(|e| VaultError::integrity(&name, e.0))?;
        check_point_name(&name, &p.machine_id, &p.point_id)?;
        Ok(p)
    }

    async fn open_point_object(&self, name: &str) -> Result<Vec<u8>, VaultError> {
        let sealed = self.get_bytes(name).await?;
        open_envelope(&self.keys.cipher, POINT_MAGIC, name, &sealed)
    }

    /// A disk's complete block map at a point: follows parents back to a full map and applies
    /// the deltas forward. Returns the disk size at this point and one entry per block.
    pub async fn resolve_disk_map(
        &self,
        machine: &str,
        point_id: &str,
        disk_id: &str,
    ) -> Result<(u64, Vec<BlockRef>), VaultError> {
        let mut deltas: Vec<(u64, Vec<(u64, BlockRef)>)> = Vec::new();
        let mut seen = HashSet::new();
        let mut current = point_id.to_string();
        let mut child: Option<String> = None;
        let (base_size, mut map) = loop {
            let name = point_object(machine, &current)?;
            if !seen.insert(current.clone()) {
                return Err(VaultError::integrity(name, "parent chain loops"));
            }
            let point = match self.get_point(machine, &current).await {
                Err(VaultError::NotFound(_)) if child.is_some() => {
                    return Err(VaultError::integrity(
                        point_object(machine, child.as_deref().unwrap_or_default())?,
                        format!("parent point {current} is missing"),
                    ))
                }
                other => other?,
            };
            let Some(disk) = point.disks.into_iter().find(|d| d.disk_id == disk_id) else {
                return Err(match child {
                    None => VaultError::NotFound(format!("disk {disk_id} in {name}")),
                    Some(_) => VaultError::integrity(
                        name,
                        format!("disk {disk_id} missing from a parent point"),
                    ),
                });
            };
            match disk.map {
                DiskMap::Full(map) => break (disk.size_bytes, map),
                DiskMap::Delta(entries) => {
                    deltas.push((disk.size_bytes, entries));
                    let parent = point.parent.ok_or_else(|| {
                        VaultError::integrity(&name, "delta map without a parent")
                    })?;
                    child = Some(std::mem::replace(&mut current, parent));
                }
            }
        };
        let mut size = base_size;
        for (delta_size, entries) in deltas.into_iter().rev() {
            size = delta_size;
            map.resize(block_count(size) as usize, BlockRef::Zero);
            for (index, block) in entries {
                // validate_point and the decoder both keep indexes below the block count.
                map[index as usize] = block;
            }
        }
        Ok((size, map))
    }

    /// Writes a disk image of a point to a local file (see [`RestoreRequest`]).
    pub async fn restore(
        &self,
        req: &RestoreRequest,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<RestoreStats, VaultError> {
        crate::restore::run(self, req, progress).await
    }

    pub(crate) async fn get_bytes(&self, name: &str) -> Result<Bytes, VaultError> {
        match self.store.get(&Path::from(name)).await {
            Ok(r) => Ok(r.bytes().await?),
            Err(object_store::Error::NotFound { .. }) => {
                Err(VaultError::NotFound(name.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn put_create(&self, name: &str, bytes: Bytes) -> Result<Put, VaultError> {
        self.put_payload_create(name, PutPayload::from(bytes)).await
    }

    async fn put_payload_create(&self, name: &str, payload: PutPayload) -> Result<Put, VaultError> {
        match self
            .store
            .put_opts(&Path::from(name), payload, PutMode::Create.into())
            .await
        {
            Ok(_) => Ok(Put::Created),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Put::AlreadyExists),
            Err(e) => Err(e.into()),
        }
    }

    async fn list_names(&self, prefix: &str) -> Result<Vec<String>, VaultError> {
        let metas: Vec<_> = self
            .store
            .list(Some(&Path::from(prefix)))
            .try_collect()
            .await?;
        Ok(metas.into_iter().map(|m| m.location.to_string()).collect())
    }
}

fn check_point_name(name: &str, machine_id: &str, point_id: &str) -> Result<(), VaultError> {
    if point_object(machine_id, point_id).ok().as_deref() == Some(name) {
        Ok(())
    } else {
        Err(VaultError::integrity(
            name,
            "manifest ids do not match the object name",
        ))
    }
}

#[cfg(test)]
#[path = "vault_tests.rs"]
mod tests;
