//! The markdown the run prints and appends to `api-results-<date>.md`.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::load::PassResult;
use super::seed::Seeded;

/// The targets for `GET /api/v1/machines` with 1,000 machines.
pub const MIN_REQUESTS_PER_SEC: f64 = 5000.0;
pub const MAX_P99_MS: f64 = 20.0;

#[derive(Debug, Clone)]
pub struct Report {
    /// `YYYY-MM-DD HH:MM UTC`.
    pub started: String,
    pub cores: usize,
    pub cpu_model: String,
    pub load_average: Option<f64>,
    pub appliance_version: String,
    pub seeded: Seeded,
    pub states: BTreeMap<String, usize>,
    pub connections: usize,
    pub client_threads: usize,
    /// The measured pass the targets apply to (the default page).
    pub main: PassResult,
    /// The other passes: the whole list, and the breakdown.
    pub others: Vec<PassResult>,
    pub appliance_peak_rss_kib: Option<u64>,
}

fn pass_fail(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

impl Report {
    pub fn requests_ok(&self) -> bool {
        self.main.per_second() >= MIN_REQUESTS_PER_SEC
    }

    pub fn p99_ok(&self) -> bool {
        self.main.quantile_ms(0.99) < MAX_P99_MS
    }

    fn passes(&self) -> impl Iterator<Item = &PassResult> {
        std::iter::once(&self.main).chain(self.others.iter())
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = self.write(&mut s);
        s
    }

    fn write(&self, s: &mut String) -> std::fmt::Result {
        let load = self
            .load_average
            .map_or_else(|| "unknown".to_string(), |l| format!("{l:.2}"));
        let protocols: Vec<&str> = {
            let mut p: Vec<&str> = self.passes().map(|r| r.protocol.as_str()).collect();
            p.sort_unstable();
            p.dedup();
            p
        };
        let seeded = &self.seeded;
        let states = self
            .states
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        writeln!(s, "### API load run of {}\n", self.started)?;
        writeln!(
            s,
            "Machine: {} cores ({}), load average {load} at the start. Appliance: {}, release build; \
             management listener with 1 worker thread, {}. Load generator: `api_load`, {} \
             keep-alive HTTPS connections (opened once, hyper HTTP/1.1, no pool) on {} tokio worker thread(s), on the same \
             machine, closed loop (a connection sends its next request when it has read the answer).",
            self.cores,
            self.cpu_model,
            self.appliance_version,
            protocols.join(", "),
            self.connections,
            self.client_threads,
        )?;
        writeln!(
            s,
            "State: {} machines with {} disks and {} recovery points over the last day, {} registered \
             agents ({} revoked); protection states in the list: {states}.\n",
            seeded.machines, seeded.disks, seeded.points, seeded.agents, seeded.revoked
        )?;
        writeln!(
            s,
            "| pass | requests | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors | bytes/response |"
        )?;
        writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
        for r in self.passes() {
            writeln!(
                s,
                "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |",
                r.pass.label,
                r.requests(),
                r.per_second(),
                r.quantile_ms(0.5),
                r.quantile_ms(0.9),
                r.quantile_ms(0.99),
                r.quantile_ms(0.999),
                r.quantile_ms(1.0),
                r.errors.total(),
                r.bytes_per_response(),
            )?;
        }
        writeln!(
            s,
            "\nCPU time over each measured window (wall seconds; CPU seconds, 1.0 per second = one core busy):\n"
        )?;
        writeln!(
            s,
            "| pass | window s | appliance CPU s | appliance threads (CPU s) | load generator CPU s |"
        )?;
        writeln!(s, "|---|---:|---:|---|---:|")?;
        for r in self.passes() {
            let threads = r
                .cpu
                .appliance_threads
                .iter()
                .take(3)
                .map(|(name, secs)| format!("{name} {secs:.2}"))
                .collect::<Vec<_>>()
                .join(", ");
            writeln!(
                s,
                "| {} | {:.1} | {:.2} | {} | {:.2} |",
                r.pass.label, r.measured_secs, r.cpu.appliance_secs, threads, r.cpu.bench_secs
            )?;
        }
        let checked: u64 = self.passes().map(|r| r.checked).sum();
        let closed: usize = self.passes().map(|r| r.closed).sum();
        let established: Vec<String> = self.passes().map(|r| r.established.to_string()).collect();
        writeln!(
            s,
            "\nConnections held by the server in the middle of each window: {}; connections closed \
             during the passes: {closed} (0: every connection was kept alive and reused). Answers \
             parsed and checked (each connection's first of a pass, then one in 50): {checked}. \
             Appliance peak RSS: {}.\n",
            established.join(", "),
            self.appliance_peak_rss_kib
                .map_or_else(|| "unknown".to_string(), |k| format!("{} MiB", k / 1024)),
        )?;
        writeln!(
            s,
            "| target (GET /api/v1/machines, 1,000 machines) | measured | goal | result |"
        )?;
        writeln!(s, "|---|---:|---:|---|")?;
        writeln!(
            s,
            "| requests per second | {:.0} | >= {MIN_REQUESTS_PER_SEC:.0} | {} |",
            self.main.per_second(),
            pass_fail(self.requests_ok())
        )?;
        writeln!(
            s,
            "| p99 latency | {:.2} ms | < {MAX_P99_MS:.0} ms | {} |",
            self.main.quantile_ms(0.99),
            pass_fail(self.p99_ok())
        )?;
        for r in self.passes().filter(|r| r.errors.total() > 0) {
            writeln!(
                s,
                "\nErrors in {}: {:?} by status, {} transport, {} bad bodies, {} reconnections; first: {}",
                r.pass.label,
                r.errors.status,
                r.errors.transport,
                r.errors.bad_body,
                r.errors.reconnects,
                r.errors.first.as_deref().unwrap_or("")
            )?;
        }
        Ok(())
    }
}
