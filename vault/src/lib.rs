//! The recovery-point store ("vault"): encrypted, compressed, deduplicated disk images in an
//! object store (Azure Blob, S3 or a local folder).
//!
//! ## Objects
//!
//! ```text
//! config                          magic+version, Argon2id parameters + salt, master keys
//!                                 wrapped by the passphrase (layout: `crypto`)
//! packs/<2 hex>/<pack id hex>     sealed chunks, sealed footer, trailer (layout: `pack`, `chunk`)
//! index/<random id hex>           sealed chunk id -> (pack, offset, length) list (layout: `index`)
//! machines/<machine id>           sealed machine descriptor, JSON inside (layout: `manifest`)
//! points/<machine id>/<point id>  sealed point manifest, binary (layout: `manifest`)
//! ```
//!
//! Two master keys live only in memory: a data key (XChaCha20-Poly1305, for every sealed
//! object) and a chunk-id key (keyed BLAKE3, naming chunks by content without revealing it).
//! Names of packs and indexes are random; machine and point ids are the caller's opaque ids.
//! Every failure to authenticate or parse an object is [`VaultError::Integrity`] naming it.
//!
//! Upload order for crash safety: `put_pack`, then `put_index` with its entries, then
//! `put_point`. Everything except machine descriptors is written with `PutMode::Create`.

use std::sync::Arc;

mod chunk;
mod codec;
mod crypto;
mod error;
mod index;
mod manifest;
mod pack;
mod restore;
mod store;
mod vault;

#[doc(hidden)]
pub mod fuzzing;

pub use chunk::{xchacha_seal_in_place, CHUNK_OVERHEAD};
pub use crypto::KdfParams;
pub use error::VaultError;
pub use index::{ChunkIndex, IndexEntry, Location, PackId};
pub use manifest::{
    block_count, DiskDescriptor, DiskMap, DiskPoint, MachineDescriptor, PointKind, PointManifest,
    PointSummary, MAX_DISK_BYTES,
};
pub use pack::{FinishedPack, PackWriter};
pub use restore::{RestoreFormat, RestoreRequest, RestoreStats};
pub use store::{ensure_azure_container, open_store, probe_write, StoreOptions};
pub use vault::Vault;

pub use object_store::ObjectStore;

/// Bytes of disk per chunk; the last block of a disk may be shorter.
pub const BLOCK_SIZE: usize = 65536;

/// Keyed BLAKE3 of a block's plaintext.
pub type ChunkId = [u8; 32];

/// What a disk block holds in a point.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BlockRef {
    /// All zeros; not stored.
    Zero,
    Chunk(ChunkId),
}

/// Shorthand for the store handle every API takes.
pub type Store = Arc<dyn ObjectStore>;
