//! Agents as the management plane shows and changes them: list, revoke (which also ends a live
//! session), and rotation of the registration passphrase.

use serde::{Deserialize, Serialize};

use super::auth::Principal;
use super::{Core, MgmtError, Page, PageRequest};

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentView {
    /// The agent id (also the machine id of what it replicates).
    pub id: String,
    pub hostname: String,
    /// RFC 3339, UTC.
    pub registered_at: String,
    pub revoked: bool,
    /// RFC 3339, UTC; absent until its first replication session.
    pub last_seen: Option<String>,
    /// A replication session is open right now.
    pub connected: bool,
    /// The BIOS UUID the agent reported (matches the VM's `config.uuid` in vCenter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bios_uuid: Option<String>,
}

/// A new registration passphrase (shown once).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PassphraseView {
    pub passphrase: String,
}

impl Core {
    pub fn agents(&self, page: PageRequest) -> Result<Page<AgentView>, MgmtError> {
        let connected = self
            .running()
            .map(|r| r.shared.hub.connected())
            .unwrap_or_default();
        let all = self
            .state
            .agents()?
            .into_iter()
            .map(|(id, r)| AgentView {
                connected: connected.binary_search(&id).is_ok(),
                id,
                hostname: r.hostname,
                registered_at: r.registered_at,
                revoked: r.revoked,
                last_seen: r.last_seen,
                bios_uuid: r.bios_uuid,
            })
            .collect();
        page.apply(all)
    }

    pub fn agent(&self, id: &str) -> Result<AgentView, MgmtError> {
        let record = self
            .state
            .agent(id)?
            .ok_or_else(|| MgmtError::NotFound(format!("no agent {id}")))?;
        let connected = self
            .running()
            .is_some_and(|r| r.shared.hub.connected().iter().any(|a| a == id));
        Ok(AgentView {
            id: id.to_string(),
            hostname: record.hostname,
            registered_at: record.registered_at,
            revoked: record.revoked,
            last_seen: record.last_seen,
            connected,
            bios_uuid: record.bios_uuid,
        })
    }

    /// Revokes an agent: its certificate stops being admitted and a live session ends now.
    pub fn revoke_agent(
        &self,
        by: &Principal,
        source: &str,
        id: &str,
    ) -> Result<AgentView, MgmtError> {
        self.agent(id)?;
        match self.running() {
            Some(r) => {
                r.registry
                    .revoke(Some(&r.shared.hub), id, &by.user, source)?;
            }
            None => {
                self.state.revoke_agent(id)?;
            }
        }
        self.catalog.refresh();
        self.agent(id)
    }

    /// Replaces the registration passphrase (a given one, or a generated one). Registered agents keep
    /// working; only new registrations need the new passphrase.
    pub fn rotate_registration_passphrase(
        &self,
        by: &Principal,
        source: &str,
        new: Option<&str>,
    ) -> Result<PassphraseView, MgmtError> {
        let running = self.require_running()?;
        let passphrase = running.registry.rotate_passphrase(new, &by.user, source)?;
        Ok(PassphraseView { passphrase })
    }
}
