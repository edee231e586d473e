//! CLI commands that talk to the running daemon over its REST API: `status`, `agents list|revoke`,
//! `machines list`, `points list`, `token create`. Where a command also makes sense without a daemon
//! (agents, points), it falls back to the state database or the vault when the daemon does not answer.

use std::io::Write;

use serde_json::Value;

use crate::api_client::{ApiClient, ClientError};
use crate::points_cmd::human_bytes;

fn print_json(out: &mut impl Write, value: &impl serde::Serialize) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

/// Left-aligned columns sized to their widest cell.
fn table(out: &mut impl Write, header: &[&str], rows: &[Vec<String>]) -> anyhow::Result<()> {
    let widths: Vec<usize> = header
        .iter()
        .enumerate()
        .map(|(i, h)| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
                .max(h.len())
        })
        .collect();
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

/// `12m 5s`-style durations.
pub fn human_secs(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

pub async fn status(api: &ApiClient, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let status: Value = api.get("/api/v1/status").await?;
    if json {
        return print_json(out, &status);
    }
    writeln!(
        out,
        "{} {}  setup: {}  up {}",
        text(&status, "product"),
        text(&status, "version"),
        text(&status, "setup"),
        human_secs(status["uptime_secs"].as_u64().unwrap_or(0))
    )?;
    writeln!(
        out,
        "data path: {}  agents connected: {}  cache: {} of {}",
        if status["data_path_running"].as_bool() == Some(true) {
            "running"
        } else {
            "not running"
        },
        status["agents_connected"],
        human_bytes(status["cache_used_bytes"].as_u64().unwrap_or(0)),
        human_bytes(status["cache_limit_bytes"].as_u64().unwrap_or(0)),
    )?;
    if let Some(actors) = status["actors"].as_object() {
        for (name, health) in actors {
            writeln!(
                out,
                "  {name:<12} {:<10} restarts {}{}",
                text(health, "state"),
                health["restarts"],
                health["last_error"]
                    .as_str()
                    .map(|e| format!("  last error: {e}"))
                    .unwrap_or_default()
            )?;
        }
    }
    writeln!(out, "CA fingerprint: {}", text(&status, "ca_fingerprint"))?;
    Ok(())
}

pub async fn agents_list(api: &ApiClient, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let agents = api.get_all("/api/v1/agents").await?;
    if json {
        return print_json(out, &agents);
    }
    if agents.is_empty() {
        writeln!(out, "no agents registered")?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            vec![
                text(a, "id").to_string(),
                text(a, "hostname").to_string(),
                if a["revoked"].as_bool() == Some(true) {
                    "revoked"
                } else if a["connected"].as_bool() == Some(true) {
                    "connected"
                } else {
                    "active"
                }
                .to_string(),
                text(a, "registered_at").to_string(),
                a["last_seen"].as_str().unwrap_or("never").to_string(),
            ]
        })
        .collect();
    table(
        out,
        &["ID", "HOSTNAME", "STATUS", "REGISTERED", "LAST SEEN"],
        &rows,
    )
}

pub async fn agents_revoke(api: &ApiClient, id: &str, out: &mut impl Write) -> anyhow::Result<()> {
    let agent: Value = api
        .post(
            &format!("/api/v1/agents/{id}/revoke"),
            &serde_json::json!({}),
        )
        .await?;
    writeln!(out, "revoked agent {id} ({})", text(&agent, "hostname"))?;
    Ok(())
}

pub async fn machines_list(
    api: &ApiClient,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let machines = api.get_all("/api/v1/machines").await?;
    if json {
        return print_json(out, &machines);
    }
    if machines.is_empty() {
        writeln!(
            out,
            "no machines yet: register an agent and let it replicate"
        )?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = machines
        .iter()
        .map(|m| {
            vec![
                text(m, "name").to_string(),
                text(m, "id").to_string(),
                text(m, "state").replace('_', " "),
                m["rpo_seconds"]
                    .as_u64()
                    .map_or_else(|| "-".to_string(), human_secs),
                m["last_point"]["point_id"]
                    .as_str()
                    .unwrap_or("-")
                    .to_string(),
                format!(
                    "{}/s",
                    human_bytes(m["throughput_bytes_per_sec"].as_u64().unwrap_or(0))
                ),
                m["disks"].as_array().map_or(0, Vec::len).to_string(),
            ]
        })
        .collect();
    table(
        out,
        &[
            "NAME",
            "ID",
            "STATE",
            "RPO",
            "LAST POINT",
            "THROUGHPUT",
            "DISKS",
        ],
        &rows,
    )
}

/// `points list` through the daemon, in the same rows as the vault-direct listing.
pub async fn points_list(api: &ApiClient, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let points = api.get_all("/api/v1/points").await?;
    let summaries: Vec<vault::PointSummary> = points
        .iter()
        .map(|p| vault::PointSummary {
            machine_id: text(p, "machine_id").to_string(),
            point_id: text(p, "point_id").to_string(),
            kind: if text(p, "kind") == "app" {
                vault::PointKind::App
            } else {
                vault::PointKind::Crash
            },
            created_unix_ms: p["created_unix_ms"].as_u64().unwrap_or(0),
            disks: p["disks"]
                .as_array()
                .map(|d| {
                    d.iter()
                        .map(|d| {
                            (
                                text(d, "disk_id").to_string(),
                                d["size_bytes"].as_u64().unwrap_or(0),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect();
    crate::points_cmd::write_points(&crate::points_cmd::point_rows(&summaries), json, out)
}

pub async fn token_create(
    api: &ApiClient,
    name: &str,
    user: Option<&str>,
    ttl_days: Option<u32>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let token: Value = api
        .post(
            "/api/v1/tokens",
            &serde_json::json!({"name": name, "user": user, "ttl_days": ttl_days}),
        )
        .await?;
    writeln!(out, "{}", text(&token, "token"))?;
    eprintln!(
        "token {} for {} ({}), expires {}: shown once, keep it safe",
        text(&token, "id"),
        text(&token, "user"),
        text(&token, "role"),
        token["expires_at"].as_str().unwrap_or("never")
    );
    Ok(())
}

/// Whether an error means "no daemon here", so a command may fall back to working offline.
pub fn daemon_absent(err: &anyhow::Error) -> bool {
    matches!(
        err.downcast_ref::<ClientError>(),
        Some(ClientError::NotRunning(_))
    )
}
