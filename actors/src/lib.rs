//! The appliance's data path as a supervised actor tree: receiver (port 9443 sessions and the durable
//! cache), compressor (blocks -> sealed chunks) and uploader (packs, index, points into the vault).
//! This crate knows nothing of HTTP or sled: agent identity comes in through [`AgentRegistry`].

pub mod blockmap;
pub mod cache;
pub mod compress;
pub mod discovery;
pub mod hub;
pub mod machines;
pub mod push;
pub mod ratelimit;
pub mod receiver;
pub mod registry;
pub mod segment;
pub mod session;
pub mod state_file;
pub mod stats;
pub mod tree;
pub mod upload;

pub use registry::{AgentCredentials, AgentRegistry, Refusal};
pub use tree::{DataPath, DataPathConfig, FaultInjection, Health};

/// Errors of the data path.
#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    /// The local cache or block map could not be read or written (disk full, I/O error). Retrying may help
    /// once space is freed.
    #[error("cache: {0}")]
    Cache(String),
    #[error("vault: {0}")]
    Vault(#[from] vault::VaultError),
}

impl ActorError {
    pub fn is_retryable(&self) -> bool {
        match self {
            ActorError::Cache(_) => true,
            ActorError::Vault(e) => e.is_retryable(),
        }
    }
}
