//! What the receiver needs to know about agents, without knowing where that knowledge lives
//! (the appliance keeps it in sled; tests keep it in memory).

/// Credentials handed to a newly registered agent.
#[derive(Clone, Debug)]
pub struct AgentCredentials {
    pub agent_id: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

/// Why a registration or a session was refused. The message goes back to the agent.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("wrong registration passphrase")]
    BadPassphrase,
    #[error("agent {0} has been revoked")]
    Revoked(String),
    #[error("agent {0} is not registered with this appliance")]
    Unknown(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// The appliance's registry of agents. Called from the receiver's connection tasks, so it must be
/// cheap and thread-safe; blocking briefly (sled, rcgen) is acceptable.
pub trait AgentRegistry: Send + Sync + 'static {
    /// Checks the registration passphrase, records a new agent and issues its client certificate.
    /// `bios_uuid` is what the agent reported of its machine's SMBIOS UUID, unchecked (`None` from
    /// agents that could not read it and from agents older than the field); a registry keeps it only
    /// if it is a UUID, and never refuses a registration over it.
    fn register(
        &self,
        passphrase: &str,
        hostname: &str,
        bios_uuid: Option<&str>,
    ) -> Result<AgentCredentials, Refusal>;
    /// Decides whether an agent that presented a valid client certificate for `agent_id` may replicate.
    fn admit(&self, agent_id: &str) -> Result<(), Refusal>;
    /// The agent id a client certificate (DER) was issued for, if this appliance's CA issued it.
    /// The TLS layer has already verified the chain; this only reads the identity.
    fn identify(&self, cert_der: &[u8]) -> Option<String>;
    /// Records that an agent connected (hostname, disks) for status and listing.
    fn seen(&self, agent_id: &str, hostname: &str);
}
