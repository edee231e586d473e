//! `/metrics` in the Prometheus text exposition format 0.0.4.

use crate::mgmt::Core;
use actix_web::{web, HttpResponse};
use actors::tree::{ActorHealth, ActorState, Shared};
use std::collections::BTreeMap;
use std::fmt::Write;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Everything `/metrics` shows, read at one moment.
#[derive(Debug, Clone)]
pub struct MetricsSnapshot {
    /// Monotonic data-path counters, by their `Stats` name.
    pub counters: Vec<(&'static str, u64)>,
    pub cache_used_bytes: u64,
    pub cache_limit_bytes: u64,
    pub agents_connected: u64,
    pub actors: BTreeMap<&'static str, ActorHealth>,
}

impl MetricsSnapshot {
    pub fn read(shared: &Shared) -> MetricsSnapshot {
        MetricsSnapshot {
            counters: shared.stats.snapshot(),
            cache_used_bytes: shared.cache.used_bytes(),
            cache_limit_bytes: shared.cache.max_bytes(),
            agents_connected: shared.hub.connected().len() as u64,
            actors: shared.health.snapshot(),
        }
    }
}

fn counter_help(name: &str) -> &'static str {
    match name {
        "bytes_received" => "Extent payload bytes received from agents.",
        "extents_durable" => "Extents written durably to the cache and acknowledged.",
        "bytes_compressed_in" => "Bytes read from the cache by the compressor.",
        "bytes_uploaded" => "Sealed pack bytes uploaded to the vault.",
        "points_committed" => "Recovery points committed to the vault.",
        "sessions_refused" => "Agent sessions refused (unknown, revoked or malformed).",
        "actor_restarts" => "Supervisor restarts of data-path actors, all actors together.",
        _ => "Data-path counter.",
    }
}

/// Label values may hold any text; the format escapes backslash, double quote and newline.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The exposition text; every family carries HELP and TYPE, every name starts with `ferry_`.
pub fn render_metrics(snapshot: &MetricsSnapshot) -> String {
    let mut out = String::new();
    for (name, value) in &snapshot.counters {
        let metric = format!("ferry_{name}_total");
        family(&mut out, &metric, "counter", counter_help(name));
        let _ = writeln!(out, "{metric} {value}");
    }
    let gauges = [
        (
            "ferry_cache_used_bytes",
            "Bytes the durable cache holds.",
            snapshot.cache_used_bytes,
        ),
        (
            "ferry_cache_limit_bytes",
            "Bytes the durable cache may hold (cache_max_bytes).",
            snapshot.cache_limit_bytes,
        ),
        (
            // Everything in the cache is data not yet committed to the vault.
            "ferry_upload_backlog_bytes",
            "Bytes received but not yet committed to the vault.",
            snapshot.cache_used_bytes,
        ),
        (
            "ferry_agents_connected",
            "Agents with an open session.",
            snapshot.agents_connected,
        ),
    ];
    for (metric, help, value) in gauges {
        family(&mut out, metric, "gauge", help);
        let _ = writeln!(out, "{metric} {value}");
    }
    family(
        &mut out,
        "ferry_actor_restart_count",
        "gauge",
        "Supervisor restarts of each data-path actor since the appliance started.",
    );
    for (actor, health) in &snapshot.actors {
        let label = escape_label(actor);
        let _ = writeln!(
            out,
            "ferry_actor_restart_count{{actor=\"{label}\"}} {}",
            health.restarts
        );
    }
    family(
        &mut out,
        "ferry_actor_up",
        "gauge",
        "1 while the data-path actor is running, else 0.",
    );
    for (actor, health) in &snapshot.actors {
        let label = escape_label(actor);
        let up = u8::from(health.state == ActorState::Running);
        let _ = writeln!(out, "ferry_actor_up{{actor=\"{label}\"}} {up}");
    }
    out
}

pub(super) async fn metrics(core: web::Data<Core>) -> HttpResponse {
    let mut text = match core.running() {
        Some(running) => render_metrics(&MetricsSnapshot::read(&running.shared)),
        None => String::new(),
    };
    render_management(&mut text, &core);
    HttpResponse::Ok().content_type(CONTENT_TYPE).body(text)
}

/// Families the management core knows: setup state and RPO per machine.
fn render_management(out: &mut String, core: &Core) {
    family(
        out,
        "ferry_setup_complete",
        "gauge",
        "1 once the first-boot setup is complete.",
    );
    let _ = writeln!(
        out,
        "ferry_setup_complete {}",
        u8::from(core.setup.is_complete())
    );
    let rpos = core.catalog.rpo_per_machine();
    family(
        out,
        "ferry_machine_rpo_seconds",
        "gauge",
        "Seconds since the machine's last recovery point (absent before the first point).",
    );
    for (machine, rpo) in rpos {
        if let Some(rpo) = rpo {
            let _ = writeln!(
                out,
                "ferry_machine_rpo_seconds{{machine=\"{}\"}} {rpo}",
                escape_label(&machine)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MetricsSnapshot {
        MetricsSnapshot {
            counters: vec![("bytes_received", 42), ("actor_restarts", 1)],
            cache_used_bytes: 7,
            cache_limit_bytes: 100,
            agents_connected: 2,
            actors: BTreeMap::from([
                (
                    "receiver",
                    ActorHealth {
                        state: ActorState::Running,
                        restarts: 0,
                        last_error: None,
                    },
                ),
                (
                    "uploader",
                    ActorHealth {
                        state: ActorState::Restarting,
                        restarts: 1,
                        last_error: Some("boom".into()),
                    },
                ),
            ]),
        }
    }

    #[test]
    fn renders_the_exact_exposition_text() {
        let text = render_metrics(&sample());
        let expected = "\
# HELP ferry_bytes_received_total Extent payload bytes received from agents.
# TYPE ferry_bytes_received_total counter
ferry_bytes_received_total 42
# HELP ferry_actor_restarts_total Supervisor restarts of data-path actors, all actors together.
# TYPE ferry_actor_restarts_total counter
ferry_actor_restarts_total 1
# HELP ferry_cache_used_bytes Bytes the durable cache holds.
# TYPE ferry_cache_used_bytes gauge
ferry_cache_used_bytes 7
# HELP ferry_cache_limit_bytes Bytes the durable cache may hold (cache_max_bytes).
# TYPE ferry_cache_limit_bytes gauge
ferry_cache_limit_bytes 100
# HELP ferry_upload_backlog_bytes Bytes received but not yet committed to the vault.
# TYPE ferry_upload_backlog_bytes gauge
ferry_upload_backlog_bytes 7
# HELP ferry_agents_connected Agents with an open session.
# TYPE ferry_agents_connected gauge
ferry_agents_connected 2
# HELP ferry_actor_restart_count Supervisor restarts of each data-path actor since the appliance started.
# TYPE ferry_actor_restart_count gauge
ferry_actor_restart_count{actor=\"receiver\"} 0
ferry_actor_restart_count{actor=\"uploader\"} 1
# HELP ferry_actor_up 1 while the data-path actor is running, else 0.
# TYPE ferry_actor_up gauge
ferry_actor_up{actor=\"receiver\"} 1
ferry_actor_up{actor=\"uploader\"} 0
";
        assert_eq!(text, expected);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
