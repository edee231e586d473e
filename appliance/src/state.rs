//! The appliance's local state in sled at `<data_dir>/state`: trees `settings`, `agents`
//! and `audit`.
//!
//! ## Record layout
//!
//! Every value in every tree is one record:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 2 | magic `b"FS"` (Ferry state) |
//! | 2 | 1 | record version, 1 |
//! | 3 | n | body: UTF-8 JSON (`agents`, `audit`) or UTF-8 text (`settings`) |
//!
//! Keys: `settings` by setting name, `agents` by agent id (UTF-8), `audit` by a big-endian
//! u64 sequence number (so iteration is in time order).
//!
//! Only appliance bookkeeping lives here. Replicated data and anything needed to restore lives
//! in the vault, so losing this directory loses agent registrations, never recovery points.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// First bytes of every stored value.
pub const RECORD_MAGIC: [u8; 2] = *b"FS";
/// Record version this build writes and reads.
pub const RECORD_VERSION: u8 = 1;
const RECORD_HEADER_LEN: usize = 3;

const SETTINGS_TREE: &str = "settings";
const AGENTS_TREE: &str = "agents";
const AUDIT_TREE: &str = "audit";

/// Where the sled database lives in a data dir.
pub fn state_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("state")
}

/// A state-store failure.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Another process (normally the running daemon) holds the database.
    #[error("the state database {0} is in use: the daemon is running; stop it or use the API")]
    Locked(PathBuf),
    #[error("state database: {0}")]
    Sled(#[from] sled::Error),
    #[error("state record {key:?} in tree {tree} is corrupt: {reason}")]
    Corrupt {
        tree: &'static str,
        key: String,
        reason: String,
    },
    #[error("agent {0} is not registered")]
    UnknownAgent(String),
}

/// What the appliance remembers about a registered agent (stored as JSON under its id).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub hostname: String,
    /// RFC 3339, UTC.
    pub registered_at: String,
    pub revoked: bool,
    /// RFC 3339, UTC; `None` until the agent's first replication session.
    pub last_seen: Option<String>,
    /// The SMBIOS UUID the agent reported at registration (lower-case 8-4-4-4-12), which discovery
    /// matches to a vCenter VM. Absent from records of agents that did not report one, and from
    /// every record written before the field existed (hence the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bios_uuid: Option<String>,
}

/// One audit event (stored as JSON under a big-endian u64 sequence, so the tree is in order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// RFC 3339, UTC.
    pub at: String,
    /// Who: a user name, `agent:<id>` or `system`. Empty in events written before users existed.
    #[serde(default)]
    pub actor: String,
    /// From where: the remote address, or `local`.
    #[serde(default)]
    pub source: String,
    pub event: String,
    pub detail: String,
}

/// Wraps a record body in the header.
pub fn encode_record(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEADER_LEN + body.len());
    out.extend_from_slice(&RECORD_MAGIC);
    out.push(RECORD_VERSION);
    out.extend_from_slice(body);
    out
}

/// The body of a stored record, or why it is not one.
pub fn decode_record(raw: &[u8]) -> Result<&[u8], String> {
    if raw.len() < RECORD_HEADER_LEN {
        return Err(format!(
            "record of {} bytes is shorter than its header",
            raw.len()
        ));
    }
    if raw[..2] != RECORD_MAGIC {
        return Err(format!("bad magic {:02x?}", &raw[..2]));
    }
    if raw[2] != RECORD_VERSION {
        return Err(format!(
            "record version {} is not supported (this build reads {RECORD_VERSION})",
            raw[2]
        ));
    }
    Ok(&raw[RECORD_HEADER_LEN..])
}

fn decode_json<T: serde::de::DeserializeOwned>(
    tree: &'static str,
    key: String,
    raw: &[u8],
) -> Result<T, StateError> {
    let corrupt = |reason: String| StateError::Corrupt {
        tree,
        key: key.clone(),
        reason,
    };
    let body = decode_record(raw).map_err(corrupt)?;
    serde_json::from_slice(body).map_err(|e| corrupt(e.to_string()))
}

/// The current time in RFC 3339, UTC.
pub fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .expect("RFC 3339 formats every UTC time")
}

/// The open state database. Cloning is cheap and shares the database.
#[derive(Clone)]
pub struct State {
    db: sled::Db,
    settings: sled::Tree,
    agents: sled::Tree,
    audit: sled::Tree,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").finish_non_exhaustive()
    }
}

fn is_lock_error(err: &sled::Error) -> bool {
    // sled 0.34 reports a held file lock only as an Io error with this message.
    matches!(err, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

impl State {
    /// Opens (or creates) `<data_dir>/state`. Fails with [`StateError::Locked`] while another
    /// process has it open.
    pub fn open(data_dir: &Path) -> Result<State, StateError> {
        let path = state_dir(data_dir);
        let db = sled::Config::new().path(&path).open().map_err(|err| {
            if is_lock_error(&err) {
                StateError::Locked(path.clone())
            } else {
                StateError::Sled(err)
            }
        })?;
        Ok(State {
            settings: db.open_tree(SETTINGS_TREE)?,
            agents: db.open_tree(AGENTS_TREE)?,
            audit: db.open_tree(AUDIT_TREE)?,
            db,
        })
    }

    /// The database, for modules that keep their own trees (users, tokens, setup, machines).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<(), StateError> {
        self.db.flush()?;
        Ok(())
    }

    pub fn setting(&self, key: &str) -> Result<Option<String>, StateError> {
        let Some(raw) = self.settings.get(key)? else {
            return Ok(None);
        };
        let corrupt = |reason: String| StateError::Corrupt {
            tree: SETTINGS_TREE,
            key: key.to_string(),
            reason,
        };
        let body = decode_record(&raw).map_err(corrupt)?;
        String::from_utf8(body.to_vec())
            .map(Some)
            .map_err(|e| corrupt(e.to_string()))
    }

    pub fn set_setting(&self, key: &str, value: &str) -> Result<(), StateError> {
        self.settings.insert(key, encode_record(value.as_bytes()))?;
        Ok(())
    }

    pub fn agent(&self, agent_id: &str) -> Result<Option<AgentRecord>, StateError> {
        match self.agents.get(agent_id)? {
            Some(raw) => decode_agent(agent_id, &raw).map(Some),
            None => Ok(None),
        }
    }

    /// Every registered agent (revoked ones included), ordered by id.
    pub fn agents(&self) -> Result<Vec<(String, AgentRecord)>, StateError> {
        self.agents
            .iter()
            .map(|entry| {
                let (key, raw) = entry?;
                let id = String::from_utf8_lossy(&key).into_owned();
                let record = decode_agent(&id, &raw)?;
                Ok((id, record))
            })
            .collect()
    }

    pub fn put_agent(&self, agent_id: &str, record: &AgentRecord) -> Result<(), StateError> {
        let json = serde_json::to_vec(record).expect("agent records always serialize");
        self.agents.insert(agent_id, encode_record(&json))?;
        Ok(())
    }

    /// Marks an agent revoked (durably) and audits it. Revoking twice is harmless.
    pub fn revoke_agent(&self, agent_id: &str) -> Result<AgentRecord, StateError> {
        let mut record = self
            .agent(agent_id)?
            .ok_or_else(|| StateError::UnknownAgent(agent_id.to_string()))?;
        if !record.revoked {
            record.revoked = true;
            self.put_agent(agent_id, &record)?;
            self.audit(
                "agent_revoked",
                &format!("{agent_id} ({})", record.hostname),
            )?;
        }
        self.flush()?;
        Ok(record)
    }

    /// Records the agent's hostname and the current time as its last sighting.
    pub fn touch_agent(&self, agent_id: &str, hostname: &str) -> Result<(), StateError> {
        let Some(mut record) = self.agent(agent_id)? else {
            return Err(StateError::UnknownAgent(agent_id.to_string()));
        };
        record.last_seen = Some(now_rfc3339());
        if !hostname.is_empty() {
            record.hostname = hostname.to_string();
        }
        self.put_agent(agent_id, &record)
    }

    /// Appends an audit event done by the appliance itself.
    pub fn audit(&self, event: &str, detail: &str) -> Result<(), StateError> {
        self.audit_as("system", "local", event, detail)
    }

    /// Appends an audit event: who (`actor`) did what from where (`source`).
    pub fn audit_as(
        &self,
        actor: &str,
        source: &str,
        event: &str,
        detail: &str,
    ) -> Result<(), StateError> {
        let seq = self.db.generate_id()?;
        let entry = AuditEvent {
            at: now_rfc3339(),
            actor: actor.to_string(),
            source: source.to_string(),
            event: event.to_string(),
            detail: detail.to_string(),
        };
        let json = serde_json::to_vec(&entry).expect("audit events always serialize");
        self.audit.insert(seq.to_be_bytes(), encode_record(&json))?;
        Ok(())
    }

    /// One page of the audit log, newest first, and the number of events in all.
    pub fn audit_page(
        &self,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<AuditEvent>, usize), StateError> {
        let events = self
            .audit
            .iter()
            .rev()
            .skip(offset)
            .take(limit)
            .map(|entry| {
                let (key, raw) = entry?;
                decode_json(AUDIT_TREE, hex::encode(&key), &raw)
            })
            .collect::<Result<_, _>>()?;
        Ok((events, self.audit.len()))
    }

    /// The most recent `limit` audit events, oldest first.
    pub fn recent_audit(&self, limit: usize) -> Result<Vec<AuditEvent>, StateError> {
        let mut events: Vec<AuditEvent> = self
            .audit
            .iter()
            .rev()
            .take(limit)
            .map(|entry| {
                let (key, raw) = entry?;
                decode_json(AUDIT_TREE, hex::encode(&key), &raw)
            })
            .collect::<Result<_, _>>()?;
        events.reverse();
        Ok(events)
    }
}

fn decode_agent(agent_id: &str, raw: &[u8]) -> Result<AgentRecord, StateError> {
    decode_json(AGENTS_TREE, agent_id.to_string(), raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(hostname: &str) -> AgentRecord {
        AgentRecord {
            hostname: hostname.into(),
            registered_at: now_rfc3339(),
            revoked: false,
            last_seen: None,
            bios_uuid: None,
        }
    }

    #[test]
    fn agent_record_bytes_are_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).unwrap();
        let r = AgentRecord {
            hostname: "db01".into(),
            registered_at: "2026-01-02T03:04:05Z".into(),
            revoked: false,
            last_seen: None,
            bios_uuid: None,
        };
        state.put_agent("a1", &r).unwrap();
        let stored = state.agents.get("a1").unwrap().unwrap();
        let mut expected = b"FS\x01".to_vec();
        expected.extend_from_slice(
            br#"{"hostname":"db01","registered_at":"2026-01-02T03:04:05Z","revoked":false,"last_seen":null}"#,
        );
        assert_eq!(stored.as_ref(), expected.as_slice());
        assert_eq!(state.agent("a1").unwrap().as_ref(), Some(&r));

        // With a BIOS UUID the field follows the others; without one, it is left out (above).
        let r = AgentRecord {
            bios_uuid: Some("42172e0b-9a4c-4c3f-8d2e-0123456789ab".into()),
            ..r
        };
        state.put_agent("a2", &r).unwrap();
        let stored = state.agents.get("a2").unwrap().unwrap();
        let mut expected = b"FS\x01".to_vec();
        expected.extend_from_slice(
            br#"{"hostname":"db01","registered_at":"2026-01-02T03:04:05Z","revoked":false,"last_seen":null,"bios_uuid":"42172e0b-9a4c-4c3f-8d2e-0123456789ab"}"#,
        );
        assert_eq!(stored.as_ref(), expected.as_slice());
        assert_eq!(state.agent("a2").unwrap(), Some(r));
    }

    #[test]
    fn records_written_before_the_bios_uuid_still_decode() {
        // The exact bytes an appliance without the field stored (as pinned above before it existed).
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).unwrap();
        let old = [
            &b"FS\x01"[..],
            br#"{"hostname":"db01","registered_at":"2026-01-02T03:04:05Z","revoked":true,"#,
            br#""last_seen":"2026-01-03T00:00:00Z"}"#,
        ]
        .concat();
        state.agents.insert("old", &old[..]).unwrap();
        let record = state.agent("old").unwrap().unwrap();
        assert_eq!(
            record,
            AgentRecord {
                hostname: "db01".into(),
                registered_at: "2026-01-02T03:04:05Z".into(),
                revoked: true,
                last_seen: Some("2026-01-03T00:00:00Z".into()),
                bios_uuid: None,
            }
        );
        // Rewriting it (a revoke, a sighting) keeps the old layout byte for byte.
        state.put_agent("old", &record).unwrap();
        assert_eq!(state.agents.get("old").unwrap().unwrap().as_ref(), &old[..]);
        // A BIOS UUID of the wrong JSON type is a corrupt record, not a panic.
        state
            .agents
            .insert(
                "bad",
                encode_record(
                    br#"{"hostname":"h","registered_at":"t","revoked":false,"last_seen":null,"bios_uuid":7}"#,
                ),
            )
            .unwrap();
        assert!(matches!(
            state.agent("bad"),
            Err(StateError::Corrupt { .. })
        ));
    }

    #[test]
    fn setting_and_audit_bytes_are_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).unwrap();
        state.set_setting("k", "v").unwrap();
        assert_eq!(
            state.settings.get("k").unwrap().unwrap().as_ref(),
            b"FS\x01v"
        );
        state.audit("e", "d").unwrap();
        let (key, value) = state.audit.iter().next().unwrap().unwrap();
        assert_eq!(key.len(), 8, "big-endian u64 sequence");
        assert!(value.starts_with(b"FS\x01{\"at\":\""));
        assert!(value.ends_with(b"\",\"event\":\"e\",\"detail\":\"d\"}"));
    }

    #[test]
    fn bad_records_are_refused_with_a_reason() {
        assert_eq!(decode_record(b"FS\x01body").unwrap(), b"body");
        assert_eq!(decode_record(b"FS\x01").unwrap(), b"");
        for (raw, reason) in [
            (&b""[..], "shorter than its header"),
            (&b"FS"[..], "shorter than its header"),
            (&b"XS\x01{}"[..], "bad magic"),
            (&b"FS\x02{}"[..], "version 2 is not supported"),
        ] {
            let err = decode_record(raw).unwrap_err();
            assert!(err.contains(reason), "{raw:?}: {err}");
        }
        // Random bytes and flipped bytes of a valid record never panic.
        let valid = encode_record(
            br#"{"hostname":"h","registered_at":"t","revoked":false,"last_seen":null}"#,
        );
        for i in 0..valid.len() {
            let mut flipped = valid.clone();
            flipped[i] ^= 0x5a;
            let _ = decode_agent("x", &flipped);
            let _ = decode_agent("x", &valid[..i]);
        }
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let len = (seed % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = decode_agent("x", &bytes);
        }
        assert!(decode_agent("x", &valid).is_ok());
    }

    #[test]
    fn agents_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let state = State::open(dir.path()).unwrap();
            state.put_agent("b", &record("host-b")).unwrap();
            state.put_agent("a", &record("host-a")).unwrap();
            state.flush().unwrap();
        }
        let state = State::open(dir.path()).unwrap();
        let agents = state.agents().unwrap();
        let ids: Vec<&str> = agents.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(agents[0].1.hostname, "host-a");
        assert_eq!(state.agent("zzz").unwrap(), None);
    }

    #[test]
    fn revoke_marks_and_audits_once() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).unwrap();
        state.put_agent("a", &record("host-a")).unwrap();
        assert!(state.revoke_agent("a").unwrap().revoked);
        assert!(state.agent("a").unwrap().unwrap().revoked);
        state.revoke_agent("a").unwrap();
        let audit = state.recent_audit(10).unwrap();
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].event, "agent_revoked");
        assert!(matches!(
            state.revoke_agent("nobody"),
            Err(StateError::UnknownAgent(_))
        ));
    }

    #[test]
    fn touch_updates_last_seen_and_hostname() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).unwrap();
        state.put_agent("a", &record("old")).unwrap();
        state.touch_agent("a", "new").unwrap();
        let r = state.agent("a").unwrap().unwrap();
        assert_eq!(r.hostname, "new");
        assert!(r.last_seen.is_some());
        assert!(state.touch_agent("ghost", "x").is_err());
    }

    #[test]
    fn audit_keeps_order_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).unwrap();
        for i in 0..5 {
            state.audit("e", &i.to_string()).unwrap();
        }
        let details: Vec<String> = state
            .recent_audit(3)
            .unwrap()
            .into_iter()
            .map(|e| e.detail)
            .collect();
        assert_eq!(details, ["2", "3", "4"]);
    }

    #[test]
    fn settings_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).unwrap();
        assert_eq!(state.setting("k").unwrap(), None);
        state.set_setting("k", "v").unwrap();
        assert_eq!(state.setting("k").unwrap().as_deref(), Some("v"));
    }

    #[test]
    fn corrupt_agent_record_is_reported_not_panicked() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).unwrap();
        state
            .agents
            .insert("bad", encode_record(b"{not json"))
            .unwrap();
        state
            .agents
            .insert("old", &b"{\"hostname\":\"h\"}"[..])
            .unwrap();
        let err = state.agent("old").unwrap_err();
        assert!(err.to_string().contains("bad magic"), "{err}");
        let err = state.agent("bad").unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
        assert!(state.agents().is_err());
    }

    #[test]
    fn second_open_reports_the_running_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let _held = State::open(dir.path()).unwrap();
        let err = State::open(dir.path()).unwrap_err();
        assert!(matches!(err, StateError::Locked(_)), "{err}");
        assert!(err
            .to_string()
            .contains("the daemon is running; stop it or use the API"));
    }
}
