//! The agent registry the receiver consults: registration with the passphrase, admission of
//! certificate-bearing agents, and last-seen bookkeeping, all kept in [`State`].

use std::sync::Arc;

use actors::registry::{AgentCredentials, AgentRegistry, Refusal};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::secrets::normalize_passphrase;
use crate::state::{now_rfc3339, AgentRecord, State};
use crate::tls::ApplianceTls;

/// Longest hostname kept; longer ones are cut (the agent reports it, the appliance displays it).
const MAX_HOSTNAME_CHARS: usize = 255;

/// Agent registry backed by sled and the appliance CA.
pub struct Registry {
    state: State,
    tls: Arc<ApplianceTls>,
    /// SHA-256 of the normalized passphrase: comparing digests takes the same time whatever
    /// the length or content of the guess.
    passphrase_digest: [u8; 32],
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

fn digest(passphrase: &str) -> [u8; 32] {
    Sha256::digest(normalize_passphrase(passphrase).as_bytes()).into()
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

impl Registry {
    pub fn new(state: State, tls: Arc<ApplianceTls>, registration_passphrase: &str) -> Registry {
        Registry {
            state,
            tls,
            passphrase_digest: digest(registration_passphrase),
        }
    }

    /// The state this registry writes to (for listing and revoking agents through the API).
    pub fn state(&self) -> &State {
        &self.state
    }

    fn passphrase_matches(&self, offered: &str) -> bool {
        digest(offered).ct_eq(&self.passphrase_digest).into()
    }
}

impl AgentRegistry for Registry {
    fn register(&self, passphrase: &str, hostname: &str) -> Result<AgentCredentials, Refusal> {
        let hostname = clean_hostname(hostname);
        if !self.passphrase_matches(passphrase) {
            tracing::warn!(%hostname, "registration refused: wrong passphrase");
            return Err(Refusal::BadPassphrase);
        }
        let agent_id = uuid::Uuid::new_v4().to_string();
        let (cert_pem, key_pem) = self
            .tls
            .issue_agent_cert(&agent_id)
            .map_err(|e| Refusal::Internal(format!("issuing the certificate: {e:#}")))?;
        let record = AgentRecord {
            hostname: hostname.clone(),
            registered_at: now_rfc3339(),
            revoked: false,
            last_seen: None,
        };
        let stored = self
            .state
            .put_agent(&agent_id, &record)
            .and_then(|()| {
                self.state
                    .audit("agent_registered", &format!("{agent_id} ({hostname})"))
            })
            // The agent keeps its certificate from now on; the appliance must not forget it.
            .and_then(|()| self.state.flush());
        if let Err(err) = stored {
            tracing::error!(%err, "could not record a new agent");
            return Err(Refusal::Internal("could not record the agent".into()));
        }
        tracing::info!(%agent_id, %hostname, "agent registered");
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
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;

    const PASSPHRASE: &str = "KMNP-QRTU-VWXY-3467-9ACD-EFGH";

    fn registry(dir: &std::path::Path) -> Registry {
        let tls = Arc::new(ApplianceTls::load_or_create(dir, &[]).unwrap());
        Registry::new(State::open(dir).unwrap(), tls, PASSPHRASE)
    }

    #[test]
    fn register_issues_a_cert_for_a_new_uuid_and_records_it() {
        let dir = tempfile::tempdir().unwrap();
        let reg = registry(dir.path());
        let creds = reg.register(PASSPHRASE, "db01.corp").unwrap();
        let id = uuid::Uuid::parse_str(&creds.agent_id).unwrap();
        assert_eq!(id.get_version_num(), 4);
        let der = CertificateDer::from_pem_slice(creds.cert_pem.as_bytes()).unwrap();
        assert_eq!(reg.identify(&der).as_deref(), Some(creds.agent_id.as_str()));
        assert_eq!(reg.identify(b"not a certificate"), None);
        assert!(creds.key_pem.contains("PRIVATE KEY"));
        assert_eq!(creds.ca_pem, reg.tls.ca_pem());
        let record = reg.state().agent(&creds.agent_id).unwrap().unwrap();
        assert_eq!(record.hostname, "db01.corp");
        assert!(!record.revoked);
        assert_eq!(
            reg.state().recent_audit(5).unwrap()[0].event,
            "agent_registered"
        );
        assert!(reg.admit(&creds.agent_id).is_ok());

        let other = reg.register(PASSPHRASE, "db02").unwrap();
        assert_ne!(other.agent_id, creds.agent_id);
    }

    #[test]
    fn passphrase_is_checked_leniently_on_form_strictly_on_content() {
        let dir = tempfile::tempdir().unwrap();
        let reg = registry(dir.path());
        assert!(reg
            .register("kmnp qrtu vwxy 3467 9acd efgh", "typed-by-hand")
            .is_ok());
        for wrong in [
            "",
            "KMNP-QRTU-VWXY-3467-9ACD-EFGG",
            "KMNP",
            "x".repeat(10_000).as_str(),
        ] {
            assert!(
                matches!(reg.register(wrong, "h"), Err(Refusal::BadPassphrase)),
                "{wrong:.20}"
            );
        }
        assert_eq!(reg.state().agents().unwrap().len(), 1);
    }

    #[test]
    fn admit_refuses_unknown_and_revoked_agents() {
        let dir = tempfile::tempdir().unwrap();
        let reg = registry(dir.path());
        assert!(matches!(reg.admit("nobody"), Err(Refusal::Unknown(_))));
        let creds = reg.register(PASSPHRASE, "h").unwrap();
        reg.state().revoke_agent(&creds.agent_id).unwrap();
        assert!(matches!(
            reg.admit(&creds.agent_id),
            Err(Refusal::Revoked(id)) if id == creds.agent_id
        ));
    }

    #[test]
    fn seen_records_last_contact_and_ignores_unknown_agents() {
        let dir = tempfile::tempdir().unwrap();
        let reg = registry(dir.path());
        let creds = reg.register(PASSPHRASE, "old-name").unwrap();
        reg.seen(&creds.agent_id, "new-name\u{7}");
        let record = reg.state().agent(&creds.agent_id).unwrap().unwrap();
        assert_eq!(record.hostname, "new-name");
        assert!(record.last_seen.is_some());
        reg.seen("ghost", "x");
        assert!(reg.state().agent("ghost").unwrap().is_none());
    }

    #[test]
    fn hostnames_are_cleaned() {
        assert_eq!(clean_hostname("  a\nb\t "), "ab");
        assert_eq!(clean_hostname(""), "(unnamed)");
        assert_eq!(clean_hostname(&"h".repeat(1000)).len(), MAX_HOSTNAME_CHARS);
    }
}
