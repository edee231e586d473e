//! `/healthz` (liveness) and `/readyz` (every actor running and the vault answering).

use actix_web::{web, HttpResponse};
use actors::tree::{ActorHealth, ActorState};
use std::collections::BTreeMap;
use std::time::Duration;

/// A vault that has not answered by then counts as unreachable; probes must answer quickly.
pub const VAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What `/readyz` reports: each actor's health and the outcome of the vault probe.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub actors: BTreeMap<&'static str, ActorHealth>,
    /// `None` when the vault answered and holds a vault; otherwise why not.
    pub vault_error: Option<String>,
}

impl Readiness {
    /// Ready when there is at least one actor, all are running, and the vault probe found no error.
    pub fn judge(
        actors: BTreeMap<&'static str, ActorHealth>,
        vault_error: Option<String>,
    ) -> Readiness {
        let actors_running =
            !actors.is_empty() && actors.values().all(|h| h.state == ActorState::Running);
        Readiness {
            ready: actors_running && vault_error.is_none(),
            actors,
            vault_error,
        }
    }
}

pub(super) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

pub(super) async fn readyz(core: web::Data<crate::mgmt::Core>) -> HttpResponse {
    let Some(running) = core.running() else {
        let reason = if core.setup.is_complete() {
            "the data path is starting"
        } else {
            "setup required: finish the first-boot setup"
        };
        return HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"ready": false, "reason": reason}));
    };
    let shared = &running.shared;
    let vault_error = probe_vault(&shared.vault).await;
    let readiness = Readiness::judge(shared.health.snapshot(), vault_error);
    let mut response = if readiness.ready {
        HttpResponse::Ok()
    } else {
        HttpResponse::ServiceUnavailable()
    };
    response.json(&readiness)
}

async fn probe_vault(vault: &vault::Vault) -> Option<String> {
    let probe = vault::Vault::is_initialized(vault.store());
    match tokio::time::timeout(VAULT_PROBE_TIMEOUT, probe).await {
        Ok(Ok(true)) => None,
        Ok(Ok(false)) => Some("the vault holds no vault configuration".into()),
        Ok(Err(err)) => Some(format!("vault unreachable: {err}")),
        Err(_) => Some(format!(
            "vault did not answer within {} s",
            VAULT_PROBE_TIMEOUT.as_secs()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(state: ActorState) -> ActorHealth {
        ActorHealth {
            state,
            restarts: 0,
            last_error: None,
        }
    }

    #[test]
    fn ready_only_when_every_actor_runs_and_the_vault_answers() {
        let running = BTreeMap::from([
            ("receiver", actor(ActorState::Running)),
            ("uploader", actor(ActorState::Running)),
        ]);
        assert!(Readiness::judge(running.clone(), None).ready);
        assert!(!Readiness::judge(running.clone(), Some("down".into())).ready);
        let mut restarting = running;
        restarting.insert("compressor", actor(ActorState::Restarting));
        assert!(!Readiness::judge(restarting, None).ready);
        assert!(!Readiness::judge(BTreeMap::new(), None).ready);
    }

    #[test]
    fn the_report_names_what_is_not_ready() {
        let actors = BTreeMap::from([("uploader", actor(ActorState::Starting))]);
        let body = serde_json::to_value(Readiness::judge(actors, Some("vault x".into()))).unwrap();
        assert_eq!(body["ready"], false);
        assert_eq!(body["actors"]["uploader"]["state"], "starting");
        assert_eq!(body["vault_error"], "vault x");
    }
}
