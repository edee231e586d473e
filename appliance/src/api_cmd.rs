//! CLI commands that talk to the running daemon over its REST API: `status`, `agents list|revoke`,
//! `machines list`, `points list`, `token create`. Where a command also makes sense without a daemon
//! (agents, points), it falls back to the state database or the vault when the daemon does not answer.

use std::io::Write;

use serde_json::Value;

use crate::api_client::{ApiClient, ClientError};
use crate::points_cmd::human_bytes;

#[path = "api_cmd_vms.rs"]
mod vms;
pub use vms::{protect_request, vms_protect, vms_unprotect};

pub(crate) fn print_json(
    out: &mut impl Write,
    value: &impl serde::Serialize,
) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

pub(crate) fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

/// Left-aligned columns sized to their widest cell.
pub(crate) fn table(
    out: &mut impl Write,
    header: &[&str],
    rows: &[Vec<String>],
) -> anyhow::Result<()> {
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

/// A vCenter password from a file: the file's content without one trailing newline (spaces are
/// significant in a password, so nothing else is trimmed).
pub fn read_password_file(path: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the password file {}", path.display()))?;
    let password = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    if password.is_empty() {
        anyhow::bail!("the password file {} is empty", path.display());
    }
    Ok(password.to_string())
}

/// What `vcenter add` sends.
pub struct NewVcenterArgs<'a> {
    pub url: &'a str,
    pub username: &'a str,
    pub password: &'a str,
    pub thumbprint: &'a str,
}

/// A path segment with everything but unreserved characters percent-encoded.
pub(crate) fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub async fn vcenter_add(
    api: &ApiClient,
    new: &NewVcenterArgs<'_>,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let vcenter: Value = api
        .post(
            "/api/v1/vcenters",
            &serde_json::json!({
                "url": new.url,
                "username": new.username,
                "password": new.password,
                "thumbprint": new.thumbprint,
            }),
        )
        .await?;
    if json {
        return print_json(out, &vcenter);
    }
    writeln!(
        out,
        "added vCenter {} ({}); discovering its VMs: `appliance vms list --vcenter {}`",
        text(&vcenter, "id"),
        text(&vcenter, "url"),
        text(&vcenter, "id")
    )?;
    Ok(())
}

pub async fn vcenter_update(
    api: &ApiClient,
    id: &str,
    body: &Value,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    // Only the fields given: PATCH leaves the rest as it is.
    let body: serde_json::Map<String, Value> = body
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if body.is_empty() {
        anyhow::bail!("nothing to change: give --username, --password-file or --thumbprint");
    }
    let vcenter: Value = api.patch(&format!("/api/v1/vcenters/{id}"), &body).await?;
    writeln!(
        out,
        "updated vCenter {} ({}): health {}",
        text(&vcenter, "id"),
        text(&vcenter, "url"),
        text(&vcenter, "health")
    )?;
    Ok(())
}

pub async fn vcenter_remove(api: &ApiClient, id: &str, out: &mut impl Write) -> anyhow::Result<()> {
    api.delete(&format!("/api/v1/vcenters/{id}")).await?;
    writeln!(out, "removed vCenter {id} and its inventory")?;
    Ok(())
}

fn vcenter_rows(vcenters: &[Value]) -> Vec<Vec<String>> {
    vcenters
        .iter()
        .map(|v| {
            vec![
                text(v, "id").to_string(),
                text(v, "url").to_string(),
                text(v, "username").to_string(),
                text(v, "health").to_string(),
                v["vm_count"].as_u64().unwrap_or(0).to_string(),
                v["last_sync"].as_str().unwrap_or("never").to_string(),
                v["last_error"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect()
}

pub async fn vcenter_list(api: &ApiClient, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let vcenters = api.get_all("/api/v1/vcenters").await?;
    if json {
        return print_json(out, &vcenters);
    }
    if vcenters.is_empty() {
        writeln!(out, "no vCenters: add one with `appliance vcenter add`")?;
        return Ok(());
    }
    table(
        out,
        &["ID", "URL", "USER", "HEALTH", "VMS", "LAST SYNC", "ERROR"],
        &vcenter_rows(&vcenters),
    )
}

fn vm_rows(vms: &[Value]) -> Vec<Vec<String>> {
    vms.iter()
        .map(|vm| {
            let disks = vm["disks"].as_array().cloned().unwrap_or_default();
            let disk_bytes: u64 = disks
                .iter()
                .map(|d| d["capacity_bytes"].as_u64().unwrap_or(0))
                .sum();
            let ips: Vec<&str> = vm["guest_ips"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            vec![
                text(vm, "name").to_string(),
                text(vm, "vcenter_id").to_string(),
                text(vm, "moref").to_string(),
                text(vm, "power_state").to_string(),
                if ips.is_empty() {
                    "-".to_string()
                } else {
                    ips.join(",")
                },
                format!("{} ({})", disks.len(), human_bytes(disk_bytes)),
                vm["agent_id"].as_str().unwrap_or("-").to_string(),
            ]
        })
        .collect()
}

/// `vms list`: the VMs of one vCenter, or of every vCenter.
pub async fn vms_list(
    api: &ApiClient,
    vcenter: Option<&str>,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let ids: Vec<String> = match vcenter {
        Some(id) => vec![id.to_string()],
        None => api
            .get_all("/api/v1/vcenters")
            .await?
            .iter()
            .map(|v| text(v, "id").to_string())
            .collect(),
    };
    let mut vms = Vec::new();
    for id in &ids {
        vms.extend(
            api.get_all(&format!("/api/v1/vcenters/{}/vms", segment(id)))
                .await?,
        );
    }
    if json {
        return print_json(out, &vms);
    }
    if vms.is_empty() {
        writeln!(out, "no VMs discovered")?;
        return Ok(());
    }
    table(
        out,
        &["NAME", "VCENTER", "MOREF", "POWER", "IPS", "DISKS", "AGENT"],
        &vm_rows(&vms),
    )
}

#[cfg(test)]
mod vcenter_tests {
    use super::*;

    #[test]
    fn password_files_keep_spaces_and_lose_one_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, " s3cret \n").unwrap();
        assert_eq!(read_password_file(&path).unwrap(), " s3cret ");
        std::fs::write(&path, "a\r\n").unwrap();
        assert_eq!(read_password_file(&path).unwrap(), "a");
        std::fs::write(&path, "\n").unwrap();
        let err = read_password_file(&path).unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
        let err = read_password_file(&dir.path().join("missing")).unwrap_err();
        assert!(
            err.to_string().contains("reading the password file"),
            "{err}"
        );
    }

    #[test]
    fn segments_are_escaped() {
        assert_eq!(segment("abc-1_2.3"), "abc-1_2.3");
        assert_eq!(segment("a/b?c"), "a%2Fb%3Fc");
    }

    #[test]
    fn rows_show_vcenters_and_vms() {
        let vcenters = vec![serde_json::json!({
            "id": "v1", "url": "https://vc/sdk", "username": "u", "health": "unhealthy",
            "vm_count": 3, "last_sync": null, "last_error": "refused"
        })];
        assert_eq!(
            vcenter_rows(&vcenters),
            vec![vec![
                "v1",
                "https://vc/sdk",
                "u",
                "unhealthy",
                "3",
                "never",
                "refused"
            ]]
        );
        let vms = vec![serde_json::json!({
            "name": "db", "vcenter_id": "v1", "moref": "vm-7", "power_state": "poweredOn",
            "guest_ips": ["10.0.0.5", "fe80::1"],
            "disks": [{"capacity_bytes": 1073741824u64}, {"capacity_bytes": 1073741824u64}],
            "agent_id": "agent-1"
        })];
        let rows = vm_rows(&vms);
        assert_eq!(
            rows[0][..5],
            ["db", "v1", "vm-7", "poweredOn", "10.0.0.5,fe80::1"]
        );
        assert!(rows[0][5].starts_with("2 ("), "{:?}", rows[0]);
        assert_eq!(rows[0][6], "agent-1");
        let bare = vm_rows(&[serde_json::json!({"name": "x"})]);
        assert_eq!(bare[0][4], "-");
        assert_eq!(bare[0][6], "-");
    }
}
