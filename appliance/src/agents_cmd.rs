//! `appliance agents list|revoke`: read and change the agent registry in the state database.
//! sled allows one process at a time, so these fail with a clear message while the daemon runs.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::state::{AgentRecord, State};

#[derive(Serialize)]
struct AgentRow<'a> {
    id: &'a str,
    #[serde(flatten)]
    record: &'a AgentRecord,
}

fn open_existing(data_dir: &Path) -> anyhow::Result<State> {
    if !crate::state::state_dir(data_dir).exists() {
        anyhow::bail!(
            "no appliance state in {}: start the appliance once, or pass --config",
            data_dir.display()
        );
    }
    Ok(State::open(data_dir)?)
}

/// Prints every agent, as a table or a JSON array.
pub fn list(data_dir: &Path, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let agents = open_existing(data_dir)?.agents()?;
    write_agents(&agents, json, out)
}

fn write_agents(
    agents: &[(String, AgentRecord)],
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    if json {
        let rows: Vec<AgentRow<'_>> = agents
            .iter()
            .map(|(id, record)| AgentRow { id, record })
            .collect();
        serde_json::to_writer_pretty(&mut *out, &rows)?;
        writeln!(out)?;
        return Ok(());
    }
    if agents.is_empty() {
        writeln!(out, "no agents registered")?;
        return Ok(());
    }
    let host_width = agents
        .iter()
        .map(|(_, r)| r.hostname.chars().count())
        .max()
        .unwrap_or(0)
        .max("HOSTNAME".len());
    writeln!(
        out,
        "{:<36}  {:<host_width$}  {:<7}  {:<25}  LAST SEEN",
        "ID", "HOSTNAME", "STATUS", "REGISTERED"
    )?;
    for (id, r) in agents {
        writeln!(
            out,
            "{:<36}  {:<host_width$}  {:<7}  {:<25}  {}",
            id,
            r.hostname,
            if r.revoked { "revoked" } else { "active" },
            r.registered_at,
            r.last_seen.as_deref().unwrap_or("never")
        )?;
    }
    Ok(())
}

/// Revokes an agent; prints what was done.
pub fn revoke(data_dir: &Path, agent_id: &str, out: &mut impl Write) -> anyhow::Result<()> {
    let state = open_existing(data_dir)?;
    let was_revoked = state.agent(agent_id)?.is_some_and(|r| r.revoked);
    let record = state.revoke_agent(agent_id)?;
    if was_revoked {
        writeln!(
            out,
            "agent {agent_id} ({}) was already revoked",
            record.hostname
        )?;
    } else {
        writeln!(out, "revoked agent {agent_id} ({})", record.hostname)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(dir: &Path) {
        let state = State::open(dir).unwrap();
        state
            .put_agent(
                "11111111-2222-4333-8444-555555555555",
                &AgentRecord {
                    hostname: "db01".into(),
                    registered_at: "2026-01-02T03:04:05Z".into(),
                    revoked: false,
                    last_seen: None,
                    bios_uuid: None,
                },
            )
            .unwrap();
        state.flush().unwrap();
    }

    #[test]
    fn list_prints_table_and_json() {
        let dir = tempfile::tempdir().unwrap();
        seed(dir.path());
        let mut table = Vec::new();
        list(dir.path(), false, &mut table).unwrap();
        let table = String::from_utf8(table).unwrap();
        assert!(table.starts_with("ID"), "{table}");
        assert!(table.contains("db01") && table.contains("active") && table.contains("never"));

        let mut json = Vec::new();
        list(dir.path(), true, &mut json).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value[0]["id"], "11111111-2222-4333-8444-555555555555");
        assert_eq!(value[0]["hostname"], "db01");
        assert_eq!(value[0]["revoked"], false);
    }

    #[test]
    fn revoke_then_list_shows_revoked() {
        let dir = tempfile::tempdir().unwrap();
        seed(dir.path());
        let mut out = Vec::new();
        revoke(dir.path(), "11111111-2222-4333-8444-555555555555", &mut out).unwrap();
        revoke(dir.path(), "11111111-2222-4333-8444-555555555555", &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("revoked agent") && text.contains("already revoked"));
        let mut table = Vec::new();
        list(dir.path(), false, &mut table).unwrap();
        assert!(String::from_utf8(table).unwrap().contains("revoked"));
        let err = revoke(dir.path(), "nope", &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn running_daemon_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let _daemon = State::open(dir.path()).unwrap();
        let err = revoke(dir.path(), "x", &mut Vec::new()).unwrap_err();
        assert!(
            err.to_string()
                .contains("the daemon is running; stop it or use the API"),
            "{err}"
        );
    }

    #[test]
    fn missing_state_is_reported_without_creating_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = list(dir.path(), false, &mut Vec::new()).unwrap_err();
        assert!(
            err.to_string().contains("start the appliance once"),
            "{err}"
        );
        assert!(!crate::state::state_dir(dir.path()).exists());
    }

    #[test]
    fn empty_registry_says_so() {
        let mut out = Vec::new();
        write_agents(&[], false, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "no agents registered\n");
    }
}
