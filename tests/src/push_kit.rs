//! Helpers the push-install end-to-end tests share: a disk image to replicate, the agents folder, a
//! job's log, and stopping an agent a failed test left running.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::bin;

/// 16 MiB of seeded pseudo-random data with zero runs (the agent skips those), like a small disk.
pub fn seeded_image(path: &Path, mut seed: u64) {
    let mut data = vec![0u8; 16 << 20];
    for (i, chunk) in data.chunks_mut(64 << 10).enumerate() {
        if i % 5 == 3 {
            continue;
        }
        for b in chunk.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
    }
    std::fs::write(path, data).unwrap();
}

/// `<dir>/mobility-<this arch>`: the agent binary the tests built, where push installs take it from.
pub fn agents_dir(dir: &Path) -> PathBuf {
    let agents = dir.join("agents");
    std::fs::create_dir_all(&agents).unwrap();
    let dst = agents.join(format!("mobility-{}", std::env::consts::ARCH));
    if std::fs::hard_link(bin("mobility"), &dst).is_err() {
        std::fs::copy(bin("mobility"), &dst).unwrap();
    }
    agents
}

pub fn lines(job: &Value) -> Vec<&str> {
    job["log"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

pub fn agent_alive(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("ferry-mobility"))
        .unwrap_or(false)
}

/// Stops the agent the install started, should the test fail before the uninstall did.
pub struct AgentGuard(pub PathBuf);

impl Drop for AgentGuard {
    fn drop(&mut self) {
        let Ok(text) = std::fs::read_to_string(&self.0) else {
            return;
        };
        if let Ok(pid) = text.trim().parse::<u32>() {
            if agent_alive(pid) {
                crate::signal(pid, "KILL");
            }
        }
    }
}
