//! What `GET /api/v1/status` reports: versions, setup phase, the data path's health and counters.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::setup::SetupPhase;
use super::Core;

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ActorView {
    /// `starting`, `running`, `restarting` or `stopped`.
    pub state: String,
    pub restarts: u32,
    pub last_error: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatusView {
    pub product: String,
    pub version: String,
    /// Wire protocol versions the data listener speaks.
    pub wire_protocol: u8,
    pub uptime_secs: u64,
    pub setup: SetupPhase,
    /// The data path (receiver, compressor, uploader) is running.
    pub data_path_running: bool,
    pub actors: BTreeMap<String, ActorView>,
    pub agents_connected: u64,
    pub cache_used_bytes: u64,
    pub cache_limit_bytes: u64,
    /// Data-path counters since start (`bytes_received`, `bytes_uploaded`, ...).
    pub counters: BTreeMap<String, u64>,
    pub ca_fingerprint: String,
}

impl Core {
    pub fn status(&self) -> StatusView {
        let running = self.running();
        let mut view = StatusView {
            product: "Ferry".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            wire_protocol: wire::WIRE_VERSION,
            uptime_secs: self.started.elapsed().as_secs(),
            setup: self.setup.phase(),
            data_path_running: running.is_some(),
            actors: BTreeMap::new(),
            agents_connected: 0,
            cache_used_bytes: 0,
            cache_limit_bytes: 0,
            counters: BTreeMap::new(),
            ca_fingerprint: self.tls.ca_fingerprint(),
        };
        if let Some(running) = running {
            let shared = &running.shared;
            view.actors = shared
                .health
                .snapshot()
                .into_iter()
                .map(|(name, h)| {
                    let state = serde_json::to_value(h.state)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default();
                    (
                        name.to_string(),
                        ActorView {
                            state,
                            restarts: h.restarts,
                            last_error: h.last_error,
                        },
                    )
                })
                .collect();
            view.agents_connected = shared.hub.connected().len() as u64;
            view.cache_used_bytes = shared.cache.used_bytes();
            view.cache_limit_bytes = shared.cache.max_bytes();
            view.counters = shared
                .stats
                .snapshot()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
        }
        view
    }
}
