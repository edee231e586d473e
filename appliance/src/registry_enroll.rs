//! One-time enrollment tokens: a secret the appliance issues for one VM (a push install writes it into
//! the guest), which [`super::Registry`] accepts once in place of the registration passphrase, before it
//! expires. The agent passes it like a passphrase (`--passphrase-file`), so it needs no change.
//!
//! Sled tree `enrollments`: key = SHA-256 of the token (the secret itself is never stored), value = an
//! [`EnrollmentRecord`] as JSON in the state record envelope. Using a token is a compare-and-swap on its
//! record, so two registrations racing with one token cannot both win.

use std::time::Duration;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::state::{decode_record, encode_record, State, StateError};

pub const ENROLLMENTS_TREE: &str = "enrollments";
/// Every token starts with this (so logs and people can tell it from a passphrase).
pub const ENROLLMENT_TOKEN_PREFIX: &str = "fen_";
pub const DEFAULT_ENROLLMENT_TTL: Duration = Duration::from_secs(3600);
/// Longest validity a caller may ask for.
pub const MAX_ENROLLMENT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Records that expired this long ago are dropped when a new token is issued.
const KEEP_EXPIRED: Duration = Duration::from_secs(30 * 24 * 3600);
/// Longest VM label kept.
const MAX_VM_CHARS: usize = 256;

/// What the appliance remembers about an enrollment token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentRecord {
    /// Public id (`enr_<16 hex>`): safe to show and to write into the guest.
    pub id: String,
    /// The VM the token was issued for (vCenter id + moref, or a free label).
    pub vm: String,
    /// RFC 3339, UTC.
    pub created: String,
    pub expires: String,
    /// The agent that registered with it; set once.
    pub used_by: Option<String>,
    pub used_at: Option<String>,
    /// Withdrawn before use (its job was cancelled or interrupted).
    #[serde(default)]
    pub revoked: bool,
}

/// A freshly issued token: the only time its secret is visible.
#[derive(Clone)]
pub struct IssuedEnrollment {
    pub id: String,
    pub token: String,
    pub expires: String,
}

impl std::fmt::Debug for IssuedEnrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedEnrollment")
            .field("id", &self.id)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// How an offered token fared.
#[derive(Debug)]
pub(crate) enum Use {
    /// Not a token this appliance issued.
    Unknown,
    /// Issued, but expired, used already or revoked: the reason, for the log and the audit.
    Refused(EnrollmentRecord, &'static str),
    /// Now marked used by the agent.
    Accepted(EnrollmentRecord),
}

/// The enrollment token store. Cheap to clone.
#[derive(Clone)]
pub struct Enrollments {
    state: State,
}

impl std::fmt::Debug for Enrollments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrollments").finish_non_exhaustive()
    }
}

fn key_of(token: &str) -> [u8; 32] {
    Sha256::digest(token.trim().as_bytes()).into()
}

fn parse_time(tree: &'static str, key: &[u8], at: &str) -> Result<OffsetDateTime, StateError> {
    OffsetDateTime::parse(at, &Rfc3339).map_err(|e| StateError::Corrupt {
        tree,
        key: hex::encode(key),
        reason: format!("time {at:?}: {e}"),
    })
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339)
        .expect("RFC 3339 formats every UTC time")
}

fn decode(key: &[u8], raw: &[u8]) -> Result<EnrollmentRecord, StateError> {
    let corrupt = |reason: String| StateError::Corrupt {
        tree: ENROLLMENTS_TREE,
        key: hex::encode(key),
        reason,
    };
    let body = decode_record(raw).map_err(corrupt)?;
    serde_json::from_slice(body).map_err(|e| corrupt(e.to_string()))
}

fn encode(record: &EnrollmentRecord) -> Vec<u8> {
    encode_record(&serde_json::to_vec(record).expect("enrollment records always serialize"))
}

/// A VM label fit for storage: one line, bounded.
fn clean_vm(vm: &str) -> String {
    let cleaned: String = vm
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_VM_CHARS)
        .collect();
    if cleaned.is_empty() {
        "(unnamed)".into()
    } else {
        cleaned
    }
}

impl Enrollments {
    pub fn new(state: State) -> Enrollments {
        Enrollments { state }
    }

    fn tree(&self) -> Result<sled::Tree, StateError> {
        Ok(self.state.db().open_tree(ENROLLMENTS_TREE)?)
    }

    /// Issues a token for `vm`, valid for `ttl` (capped at [`MAX_ENROLLMENT_TTL`]), audited as `actor`
    /// from `source`. Durable before it returns: the guest may use it at once.
    pub fn issue(
        &self,
        vm: &str,
        ttl: Duration,
        actor: &str,
        source: &str,
    ) -> Result<IssuedEnrollment, StateError> {
        let tree = self.tree()?;
        let now = OffsetDateTime::now_utc();
        self.prune(&tree, now)?;
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let token = format!("{ENROLLMENT_TOKEN_PREFIX}{}", hex::encode(secret));
        let mut id = [0u8; 8];
        rand::rng().fill_bytes(&mut id);
        let ttl = ttl.min(MAX_ENROLLMENT_TTL);
        let record = EnrollmentRecord {
            id: format!("enr_{}", hex::encode(id)),
            vm: clean_vm(vm),
            created: rfc3339(now),
            expires: rfc3339(now + ttl),
            used_by: None,
            used_at: None,
            revoked: false,
        };
        tree.insert(key_of(&token), encode(&record))?;
        self.state.audit_as(
            actor,
            source,
            "enrollment_token_issued",
            &format!(
                "{} for vm {}, expires {}",
                record.id, record.vm, record.expires
            ),
        )?;
        self.state.flush()?;
        Ok(IssuedEnrollment {
            id: record.id,
            token,
            expires: record.expires,
        })
    }

    /// The record with public id `id`.
    pub fn get(&self, id: &str) -> Result<Option<EnrollmentRecord>, StateError> {
        Ok(self.find(id)?.map(|(_, record)| record))
    }

    /// The enrollment an agent registered with (which VM it is), if it used one.
    pub fn for_agent(&self, agent_id: &str) -> Result<Option<EnrollmentRecord>, StateError> {
        for entry in self.tree()?.iter() {
            let (key, raw) = entry?;
            let record = decode(&key, &raw)?;
            if record.used_by.as_deref() == Some(agent_id) {
                return Ok(Some(record));
            }
        }
        Ok(None)
    }

    fn find(&self, id: &str) -> Result<Option<(sled::IVec, EnrollmentRecord)>, StateError> {
        for entry in self.tree()?.iter() {
            let (key, raw) = entry?;
            let record = decode(&key, &raw)?;
            if record.id == id {
                return Ok(Some((key, record)));
            }
        }
        Ok(None)
    }

    /// Withdraws an unused token (its job ended without it). Returns whether it was withdrawn now; a
    /// used, unknown or already revoked token is left as it is.
    pub fn revoke(&self, id: &str) -> Result<bool, StateError> {
        let tree = self.tree()?;
        loop {
            let Some((key, record)) = self.find(id)? else {
                return Ok(false);
            };
            if record.used_by.is_some() || record.revoked {
                return Ok(false);
            }
            let old = encode(&record);
            let new = EnrollmentRecord {
                revoked: true,
                ..record.clone()
            };
            if tree
                .compare_and_swap(&key, Some(old), Some(encode(&new)))?
                .is_ok()
            {
                self.state.audit(
                    "enrollment_token_revoked",
                    &format!("{} for vm {}", record.id, record.vm),
                )?;
                self.state.flush()?;
                return Ok(true);
            }
        }
    }

    /// Marks the token `offered` used by `agent_id`, if it is a valid, unused, unexpired one.
    pub(crate) fn consume(&self, offered: &str, agent_id: &str) -> Result<Use, StateError> {
        let tree = self.tree()?;
        let key = key_of(offered);
        loop {
            let Some(raw) = tree.get(key)? else {
                return Ok(Use::Unknown);
            };
            let record = decode(&key, &raw)?;
            let now = OffsetDateTime::now_utc();
            if record.revoked {
                return Ok(Use::Refused(record, "revoked"));
            }
            if record.used_by.is_some() {
                return Ok(Use::Refused(record, "already used"));
            }
            if parse_time(ENROLLMENTS_TREE, &key, &record.expires)? <= now {
                return Ok(Use::Refused(record, "expired"));
            }
            let used = EnrollmentRecord {
                used_by: Some(agent_id.to_string()),
                used_at: Some(rfc3339(now)),
                ..record
            };
            if tree
                .compare_and_swap(key, Some(raw), Some(encode(&used)))?
                .is_ok()
            {
                return Ok(Use::Accepted(used));
            }
        }
    }

    /// Undoes [`Enrollments::consume`] when the registration failed after it (the agent got nothing).
    pub(crate) fn release(&self, offered: &str, agent_id: &str) {
        let key = key_of(offered);
        let undo = || -> Result<(), StateError> {
            let tree = self.tree()?;
            let Some(raw) = tree.get(key)? else {
                return Ok(());
            };
            let record = decode(&key, &raw)?;
            if record.used_by.as_deref() == Some(agent_id) {
                let free = EnrollmentRecord {
                    used_by: None,
                    used_at: None,
                    ..record
                };
                let _ = tree.compare_and_swap(key, Some(raw), Some(encode(&free)))?;
            }
            Ok(())
        };
        if let Err(err) = undo() {
            tracing::error!(%err, "could not release an enrollment token after a failed registration");
        }
    }

    /// Drops records that expired long ago (unused) or were used long ago.
    fn prune(&self, tree: &sled::Tree, now: OffsetDateTime) -> Result<(), StateError> {
        for entry in tree.iter() {
            let (key, raw) = entry?;
            let Ok(record) = decode(&key, &raw) else {
                continue;
            };
            let Ok(expires) = parse_time(ENROLLMENTS_TREE, &key, &record.expires) else {
                continue;
            };
            if expires + KEEP_EXPIRED < now {
                tree.remove(key)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "registry_enroll_tests.rs"]
mod tests;
