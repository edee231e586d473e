//! The agent registry the receiver consults: registration with the passphrase, admission of
//! certificate-bearing agents, and last-seen bookkeeping, all kept in [`State`]. It also revokes agents
//! (ending a live session) and rotates the registration passphrase. One-time enrollment tokens
//! (`registry_enroll.rs`) are accepted in place of the passphrase, once each.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use actors::registry::{AgentCredentials, AgentRegistry, Refusal};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::files::{self, PRIVATE_FILE_MODE};
use crate::mgmt::MgmtError;
use crate::secrets::{generate_passphrase, normalize_passphrase};
use crate::state::{now_rfc3339, AgentRecord, State, StateError};
use crate::tls::ApplianceTls;

#[path = "registry_enroll.rs"]
mod enroll;
pub use enroll::{
    EnrollmentRecord, Enrollments, IssuedEnrollment, DEFAULT_ENROLLMENT_TTL, ENROLLMENTS_TREE,
    ENROLLMENT_TOKEN_PREFIX, MAX_ENROLLMENT_TTL,
};

/// Longest hostname kept; longer ones are cut (the agent reports it, the appliance displays it).
const MAX_HOSTNAME_CHARS: usize = 255;
/// Symbols of a generated registration passphrase (as at first start: about 111 bits).
const GENERATED_SYMBOLS: usize = 24;
/// Bounds of an operator-chosen passphrase, counted after normalizing (case, spaces, dashes ignored).
pub const MIN_PASSPHRASE_CHARS: usize = 12;
pub const MAX_PASSPHRASE_CHARS: usize = 256;

/// Why a passphrase rotation failed. Nothing changed in any case: the old passphrase still works.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("passphrase: {0}")]
    Invalid(String),
    #[error(
        "the registry was not told where the passphrase file is, so a new one could not be kept"
    )]
    NoPassphraseFile,
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
}

impl From<RotateError> for MgmtError {
    fn from(err: RotateError) -> MgmtError {
        match err {
            RotateError::Invalid(message) => MgmtError::invalid("passphrase", message),
            RotateError::State(e) => e.into(),
            other => MgmtError::Internal(other.to_string()),
        }
    }
}

/// Agent registry backed by sled and the appliance CA.
pub struct Registry {
    state: State,
    tls: Arc<ApplianceTls>,
    /// SHA-256 of the normalized passphrase: comparing digests takes the same time whatever
    /// the length or content of the guess. Swapped by a rotation.
    passphrase_digest: RwLock<[u8; 32]>,
    /// Where the passphrase is kept, so a rotation survives a restart.
    passphrase_file: Option<PathBuf>,
    enrollments: Enrollments,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

fn digest(passphrase: &str) -> [u8; 32] {
    Sha256::digest(normalize_passphrase(passphrase).as_bytes()).into()
}

/// An operator-chosen passphrase: long enough to resist guessing, short enough to type, one line.
fn check_passphrase(given: &str) -> Result<(), RotateError> {
    if given.chars().any(char::is_control) {
        return Err(RotateError::Invalid(
            "must be one line without control characters".into(),
        ));
    }
    let n = normalize_passphrase(given).chars().count();
    if n < MIN_PASSPHRASE_CHARS {
        return Err(RotateError::Invalid(format!(
            "must have at least {MIN_PASSPHRASE_CHARS} characters besides spaces and dashes"
        )));
    }
    if given.chars().count() > MAX_PASSPHRASE_CHARS {
        return Err(RotateError::Invalid(format!(
            "must have at most {MAX_PASSPHRASE_CHARS} characters"
        )));
    }
    Ok(())
}

/// A hostname fit for storage and display: no control characters, bounded length.
fn clean_hostname(hostname: &str) -> String {
    let cleaned: String = hostname
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_HOSTNAME_CHARS)
        .collect();
    if cleaned.is_empty() {
        "(unnamed)".to_string()
    } else {
        cleaned
    }
}

/// A reported BIOS UUID fit for matching discovered VMs: its canonical lower-case form, or `None`.
/// Anything that is not a machine's UUID is dropped with a warning, never a reason to refuse the
/// registration: the agent works without it, only the VM match is lost.
fn clean_bios_uuid(reported: Option<&str>, hostname: &str) -> Option<String> {
    let reported = reported?;
    match uuid::Uuid::parse_str(reported) {
        // All zeros and all ones are what firmware reports when the machine has no UUID.
        Ok(u) if u.is_nil() || u.is_max() => {
            tracing::warn!(%hostname, bios_uuid = %u, "BIOS UUID dropped: a firmware placeholder");
            None
        }
        Ok(u) => Some(u.hyphenated().to_string()),
        Err(err) => {
            // Debug formatting: the text comes from the agent and may hold control characters.
            tracing::warn!(%hostname, bios_uuid = ?reported, %err, "BIOS UUID dropped: not a UUID");
            None
        }
    }
}

impl Registry {
    pub fn new(state: State, tls: Arc<ApplianceTls>, registration_passphrase: &str) -> Registry {
        Registry {
            enrollments: Enrollments::new(state.clone()),
            state,
            tls,
            passphrase_digest: RwLock::new(digest(registration_passphrase)),
            passphrase_file: None,
        }
    }

    /// Tells the registry which file holds the passphrase (`<data dir>/registration-passphrase`), so
    /// [`Registry::rotate_passphrase`] can replace it.
    pub fn with_passphrase_file(mut self, path: impl AsRef<Path>) -> Self {
        self.passphrase_file = Some(path.as_ref().to_path_buf());
        self
    }

    /// Revokes an agent (durably, audited as `actor` from `source`) and ends its live session, if any,
    /// through `hub`. Revoking twice is harmless and audited once.
    pub fn revoke(
        &self,
        hub: Option<&actors::hub::Hub>,
        agent_id: &str,
        actor: &str,
        source: &str,
    ) -> Result<AgentRecord, StateError> {
        let mut record = self
            .state
            .agent(agent_id)?
            .ok_or_else(|| StateError::UnknownAgent(agent_id.to_string()))?;
        if !record.revoked {
            record.revoked = true;
            self.state.put_agent(agent_id, &record)?;
            self.state.audit_as(
                actor,
                source,
                "agent_revoked",
                &format!("{agent_id} ({})", record.hostname),
            )?;
        }
        // Durable before the kick: the session's reconnect must find the agent revoked.
        self.state.flush()?;
        if hub.is_some_and(|h| h.disconnect(agent_id)) {
            tracing::info!(%agent_id, "revoked agent's live session ended");
        }
        Ok(record)
    }

    /// Replaces the registration passphrase with `new`, or with a generated one, and returns it (shown
    /// once). Registered agents keep working: they authenticate with their certificates. The file is
    /// replaced atomically (0600) before the new passphrase takes effect, so a failure changes nothing.
    pub fn rotate_passphrase(
        &self,
        new: Option<&str>,
        actor: &str,
        source: &str,
    ) -> Result<String, RotateError> {
        let passphrase = match new {
            Some(given) => {
                check_passphrase(given)?;
                given.trim().to_string()
            }
            None => generate_passphrase(GENERATED_SYMBOLS),
        };
        let path = self
            .passphrase_file
            .as_ref()
            .ok_or(RotateError::NoPassphraseFile)?;
        // Held across the write so two rotations cannot leave the file and the digest disagreeing.
        let mut current = self.passphrase_digest.write().expect("passphrase lock");
        files::replace_file(
            path,
            format!("{passphrase}\n").as_bytes(),
            PRIVATE_FILE_MODE,
        )
        .map_err(|source| RotateError::Io {
            path: path.clone(),
            source,
        })?;
        *current = digest(&passphrase);
        drop(current);
        let how = if new.is_some() {
            "set by the operator"
        } else {
            "generated"
        };
        self.state
            .audit_as(actor, source, "registration_passphrase_rotated", how)?;
        self.state.flush()?;
        tracing::info!(%actor, "registration passphrase rotated");
        Ok(passphrase)
    }

    /// The state this registry writes to (for listing and revoking agents through the API).
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Issues a one-time enrollment token for `for_vm`, valid for `ttl` (at most
    /// [`MAX_ENROLLMENT_TTL`]; [`DEFAULT_ENROLLMENT_TTL`] is the usual choice). [`AgentRegistry::register`]
    /// accepts it once in place of the passphrase. Audited as the system; use
    /// [`Enrollments::issue`] to name the user.
    pub fn issue_enrollment_token(
        &self,
        for_vm: &str,
        ttl: std::time::Duration,
    ) -> Result<String, StateError> {
        Ok(self
            .enrollments
            .issue(for_vm, ttl, "system", "local")?
            .token)
    }

    /// The enrollment token store (shared with the push-install jobs).
    pub fn enrollments(&self) -> &Enrollments {
        &self.enrollments
    }

    /// Checks a registration secret: the passphrase, else an enrollment token, which is marked used
    /// by `agent_id`. Returns the enrollment it used, if any.
    fn admit_registration(
        &self,
        offered: &str,
        agent_id: &str,
        hostname: &str,
    ) -> Result<Option<EnrollmentRecord>, Refusal> {
        if self.passphrase_matches(offered) {
            return Ok(None);
        }
        match self.enrollments.consume(offered, agent_id) {
            Ok(enroll::Use::Accepted(record)) => Ok(Some(record)),
            Ok(enroll::Use::Unknown) => {
                tracing::warn!(%hostname, "registration refused: wrong passphrase");
                Err(Refusal::BadPassphrase)
            }
            Ok(enroll::Use::Refused(record, why)) => {
                tracing::warn!(%hostname, enrollment = %record.id, why, "registration refused");
                let detail = format!("{} for vm {} ({hostname}): {why}", record.id, record.vm);
                if let Err(err) = self.state.audit("enrollment_token_refused", &detail) {
                    tracing::warn!(%err, "could not audit a refused enrollment token");
                }
                Err(Refusal::BadPassphrase)
            }
            Err(err) => {
                tracing::error!(%err, "enrollment token lookup failed");
                Err(Refusal::Internal("enrollment token lookup failed".into()))
            }
        }
    }

    fn passphrase_matches(&self, offered: &str) -> bool {
        let offered = digest(offered);
        let current = self.passphrase_digest.read().expect("passphrase lock");
        offered.ct_eq(&*current).into()
    }
}

impl AgentRegistry for Registry {
    fn register(
        &self,
        passphrase: &str,
        hostname: &str,
        bios_uuid: Option<&str>,
    ) -> Result<AgentCredentials, Refusal> {
        let hostname = clean_hostname(hostname);
        let agent_id = uuid::Uuid::new_v4().to_string();
        let enrollment = self.admit_registration(passphrase, &agent_id, &hostname)?;
        // From here on a failure gives the token back: the agent received nothing.
        let release = || {
            if enrollment.is_some() {
                self.enrollments.release(passphrase, &agent_id);
            }
        };
        let (cert_pem, key_pem) = match self.tls.issue_agent_cert(&agent_id) {
            Ok(issued) => issued,
            Err(e) => {
                release();
                return Err(Refusal::Internal(format!("issuing the certificate: {e:#}")));
            }
        };
        let how = match &enrollment {
            Some(e) => format!(" with enrollment {} for vm {}", e.id, e.vm),
            None => String::new(),
        };
        let record = AgentRecord {
            hostname: hostname.clone(),
            registered_at: now_rfc3339(),
            revoked: false,
            last_seen: None,
            bios_uuid: clean_bios_uuid(bios_uuid, &hostname),
        };
        let stored = self
            .state
            .put_agent(&agent_id, &record)
            .and_then(|()| {
                self.state
                    .audit("agent_registered", &format!("{agent_id} ({hostname}){how}"))
            })
            .and_then(|()| match &enrollment {
                Some(e) => self.state.audit(
                    "enrollment_token_used",
                    &format!("{} for vm {} by agent {agent_id} ({hostname})", e.id, e.vm),
                ),
                None => Ok(()),
            })
            // The agent keeps its certificate from now on; the appliance must not forget it.
            .and_then(|()| self.state.flush());
        if let Err(err) = stored {
            tracing::error!(%err, "could not record a new agent");
            release();
            return Err(Refusal::Internal("could not record the agent".into()));
        }
        tracing::info!(
            %agent_id,
            %hostname,
            bios_uuid = ?record.bios_uuid,
            enrollment = ?enrollment.map(|e| e.id),
            "agent registered"
        );
        Ok(AgentCredentials {
            agent_id,
            cert_pem,
            key_pem,
            ca_pem: self.tls.ca_pem().to_string(),
        })
    }

    fn admit(&self, agent_id: &str) -> Result<(), Refusal> {
        match self.state.agent(agent_id) {
            Ok(Some(record)) if record.revoked => Err(Refusal::Revoked(agent_id.to_string())),
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(Refusal::Unknown(agent_id.to_string())),
            Err(err) => {
                tracing::error!(%agent_id, %err, "agent lookup failed");
                Err(Refusal::Internal("agent lookup failed".into()))
            }
        }
    }

    fn identify(&self, cert_der: &[u8]) -> Option<String> {
        crate::tls::agent_id_from_cert(cert_der)
    }

    fn seen(&self, agent_id: &str, hostname: &str) {
        if let Err(err) = self.state.touch_agent(agent_id, &clean_hostname(hostname)) {
            tracing::warn!(%agent_id, %err, "could not record agent activity");
        }
    }
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
