//! The agent's state directory (default `$HOME/.local/share/ferry-mobility`, mode 0700):
//!
//! ```text
//! registration.json   {"format":"ferry-mobility-registration","version":1,agent_id,appliance,hostname,
//!                      ca_fingerprint,registered_at_unix}
//! cert.pem            the agent's client certificate (from Registered)
//! key.pem             its private key, mode 0600
//! ca.pem              the appliance CA, the only trust anchor for `run`
//! disks.json          {"format":"ferry-mobility-disks","version":1,"disks":[{path,disk_id}]}: stable ids
//!                     "disk0", "disk1", ... in first-seen order
//! bookmark.json       {"format":"ferry-mobility-bookmark","version":1,"last_bookmark_id":N}
//! status.json         written by `run`, read by `status` (see status.rs)
//! trackers/<disk_id>.trk   the hash tracker of each disk (layout in tracker.rs)
//! ```
//!
//! Small files are replaced atomically (write a temporary file, fsync, rename).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

const REGISTRATION_FORMAT: &str = "ferry-mobility-registration";
const DISKS_FORMAT: &str = "ferry-mobility-disks";
const BOOKMARK_FORMAT: &str = "ferry-mobility-bookmark";
const STATE_VERSION: u32 = 1;

/// What `register` stores besides the PEM files.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Registration {
    pub format: String,
    pub version: u32,
    pub agent_id: String,
    /// HOST:PORT of the appliance's replication listener.
    pub appliance: String,
    pub hostname: String,
    pub ca_fingerprint: String,
    pub registered_at_unix: u64,
}

/// The credentials of a registered agent.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DiskEntry {
    pub path: String,
    pub disk_id: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct DisksFile {
    format: String,
    version: u32,
    disks: Vec<DiskEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct BookmarkFile {
    format: String,
    version: u32,
    last_bookmark_id: u64,
}

pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The state directory of one agent.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// `$HOME/.local/share/ferry-mobility`.
    pub fn default_root() -> Result<PathBuf> {
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .context("HOME is not set; pass --state-dir")?;
        Ok(PathBuf::from(home).join(".local/share/ferry-mobility"))
    }

    /// Uses `root` (created with mode 0700 if missing), or the default.
    pub fn open(root: Option<&Path>) -> Result<StateDir> {
        let root = match root {
            Some(r) => r.to_path_buf(),
            None => Self::default_root()?,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root.join("trackers"))
            .with_context(|| format!("creating state directory {}", root.display()))?;
        Ok(StateDir { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn tracker_path(&self, disk_id: &str) -> PathBuf {
        self.root.join("trackers").join(format!("{disk_id}.trk"))
    }

    pub fn status_path(&self) -> PathBuf {
        self.root.join("status.json")
    }

    /// Writes `bytes` to `name` atomically with the given mode.
    pub fn write_atomic(&self, name: &str, bytes: &[u8], mode: u32) -> Result<()> {
        let dest = self.root.join(name);
        let tmp = self.root.join(format!(".{name}.tmp"));
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, &dest).with_context(|| format!("replacing {}", dest.display()))?;
        Ok(())
    }

    fn read_json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        let path = self.root.join(name);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(
                serde_json::from_slice(&bytes)
                    .with_context(|| format!("parsing {}", path.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Stores a fresh registration. A new identity is a new machine on the appliance, whose disks
    /// read as zeros there, so every tracker is deleted (the next run is a full sync).
    pub fn save_registration(&self, reg: &Registration, creds: &Credentials) -> Result<()> {
        self.write_atomic("cert.pem", creds.cert_pem.as_bytes(), 0o644)?;
        self.write_atomic("key.pem", creds.key_pem.as_bytes(), 0o600)?;
        self.write_atomic("ca.pem", creds.ca_pem.as_bytes(), 0o644)?;
        let trackers = self.root.join("trackers");
        for entry in fs::read_dir(&trackers)? {
            let p = entry?.path();
            if p.extension().is_some_and(|e| e == "trk") {
                fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
            }
        }
        self.write_atomic("registration.json", &serde_json::to_vec_pretty(reg)?, 0o644)
    }

    pub fn new_registration(
        agent_id: &str,
        appliance: &str,
        hostname: &str,
        fp: &str,
    ) -> Registration {
        Registration {
            format: REGISTRATION_FORMAT.into(),
            version: STATE_VERSION,
            agent_id: agent_id.into(),
            appliance: appliance.into(),
            hostname: hostname.into(),
            ca_fingerprint: fp.into(),
            registered_at_unix: unix_millis() / 1000,
        }
    }

    /// The stored registration, or `None` if this agent never registered.
    pub fn registration(&self) -> Result<Option<Registration>> {
        let reg: Option<Registration> = self.read_json("registration.json")?;
        if let Some(r) = &reg {
            if r.format != REGISTRATION_FORMAT || r.version != STATE_VERSION {
                bail!(
                    "registration.json has format {} version {}",
                    r.format,
                    r.version
                );
            }
        }
        Ok(reg)
    }

    pub fn credentials(&self) -> Result<Credentials> {
        let read = |n: &str| {
            fs::read_to_string(self.root.join(n))
                .with_context(|| format!("reading {}", self.root.join(n).display()))
        };
        Ok(Credentials {
            cert_pem: read("cert.pem")?,
            key_pem: read("key.pem")?,
            ca_pem: read("ca.pem")?,
        })
    }

    /// The stable disk id of each path, assigning "diskN" to paths never seen before.
    pub fn disk_ids(&self, paths: &[String]) -> Result<Vec<String>> {
        let mut file: DisksFile = self.read_json("disks.json")?.unwrap_or(DisksFile {
            format: DISKS_FORMAT.into(),
            version: STATE_VERSION,
            disks: Vec::new(),
        });
        if file.format != DISKS_FORMAT || file.version != STATE_VERSION {
            bail!(
                "disks.json has format {} version {}",
                file.format,
                file.version
            );
        }
        let mut changed = false;
        let mut ids = Vec::with_capacity(paths.len());
        for p in paths {
            if let Some(e) = file.disks.iter().find(|e| &e.path == p) {
                ids.push(e.disk_id.clone());
                continue;
            }
            let id = format!("disk{}", file.disks.len());
            file.disks.push(DiskEntry {
                path: p.clone(),
                disk_id: id.clone(),
            });
            ids.push(id);
            changed = true;
        }
        if changed {
            self.write_atomic("disks.json", &serde_json::to_vec_pretty(&file)?, 0o644)?;
        }
        Ok(ids)
    }

    /// A new bookmark id: unix milliseconds, strictly greater than any id handed out before, even
    /// across restarts and clock steps (it is persisted before use).
    pub fn next_bookmark_id(&self) -> Result<u64> {
        let last = self
            .read_json::<BookmarkFile>("bookmark.json")?
            .map(|b| b.last_bookmark_id)
            .unwrap_or(0);
        let id = unix_millis().max(last + 1);
        let file = BookmarkFile {
            format: BOOKMARK_FORMAT.into(),
            version: STATE_VERSION,
            last_bookmark_id: id,
        };
        self.write_atomic("bookmark.json", &serde_json::to_vec(&file)?, 0o644)?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn disk_ids_are_stable_in_first_seen_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::open(Some(dir.path())).unwrap();
        assert_eq!(
            s.disk_ids(&["/a".into(), "/b".into()]).unwrap(),
            ["disk0", "disk1"]
        );
        assert_eq!(
            s.disk_ids(&["/c".into(), "/a".into()]).unwrap(),
            ["disk2", "disk0"]
        );
        let s = StateDir::open(Some(dir.path())).unwrap();
        assert_eq!(s.disk_ids(&["/b".into()]).unwrap(), ["disk1"]);
    }

    #[test]
    fn bookmark_ids_strictly_increase() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::open(Some(dir.path())).unwrap();
        let far = unix_millis() + 1_000_000;
        s.write_atomic(
            "bookmark.json",
            format!(r#"{{"format":"{BOOKMARK_FORMAT}","version":1,"last_bookmark_id":{far}}}"#)
                .as_bytes(),
            0o644,
        )
        .unwrap();
        let a = s.next_bookmark_id().unwrap();
        let b = s.next_bookmark_id().unwrap();
        assert_eq!(a, far + 1);
        assert_eq!(b, far + 2);
    }

    #[test]
    fn registration_round_trips_with_a_private_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::open(Some(dir.path())).unwrap();
        assert!(s.registration().unwrap().is_none());
        fs::write(s.tracker_path("disk0"), b"old").unwrap();
        let reg = StateDir::new_registration("ag-1", "127.0.0.1:9443", "h", "ab");
        let creds = Credentials {
            cert_pem: "C".into(),
            key_pem: "K".into(),
            ca_pem: "A".into(),
        };
        s.save_registration(&reg, &creds).unwrap();
        assert_eq!(s.registration().unwrap().unwrap(), reg);
        assert_eq!(s.credentials().unwrap().key_pem, "K");
        let mode = fs::metadata(dir.path().join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            !s.tracker_path("disk0").exists(),
            "a new identity starts trackers over"
        );
    }
}
