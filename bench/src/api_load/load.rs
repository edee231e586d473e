//! The load generator: N keep-alive HTTPS connections, each a loop of one GET after another (closed
//! loop: a connection sends its next request when the previous answer is read), every latency kept.

use anyhow::{Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::conn::{Conn, Connector};
use super::procfs;

/// Each connection checks its first answer of a pass and then one in this many, so parsing on the
/// client stays a small part of its work.
const CHECK_EVERY: u64 = 50;
/// An answer slower than this counts as a failed request (the connection is then opened again).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What a checked answer must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Any JSON document.
    Json,
    /// A list page with this `total` and this many items.
    Page { total: usize, items: usize },
}

/// One measured pass over one URL path.
#[derive(Debug, Clone)]
pub struct Pass {
    pub label: String,
    pub path: String,
    pub bearer: bool,
    pub warmup: Duration,
    pub duration: Duration,
    pub check: Check,
}

/// Where the load goes.
#[derive(Debug, Clone)]
pub struct Target {
    pub connector: Connector,
    pub token: String,
    pub appliance_pid: u32,
    pub port: u16,
}

/// What went wrong in a pass (all zero in a good run).
#[derive(Debug, Clone, Default)]
pub struct Errors {
    pub status: BTreeMap<u16, u64>,
    /// Requests that got no answer (the connection failed; the task reconnects).
    pub transport: u64,
    pub bad_body: u64,
    /// Connections the tasks had to open again after a failure.
    pub reconnects: u64,
    pub first: Option<String>,
}

impl Errors {
    pub fn total(&self) -> u64 {
        self.status.values().sum::<u64>() + self.transport + self.bad_body
    }

    fn note(&mut self, what: String) {
        if self.first.is_none() {
            self.first = Some(what);
        }
    }

    fn merge(&mut self, other: Errors) {
        for (code, n) in other.status {
            *self.status.entry(code).or_default() += n;
        }
        self.transport += other.transport;
        self.reconnects += other.reconnects;
        self.bad_body += other.bad_body;
        if self.first.is_none() {
            self.first = other.first;
        }
    }
}

/// CPU seconds over the measured window.
#[derive(Debug, Clone, Default)]
pub struct Cpu {
    pub appliance_secs: f64,
    pub bench_secs: f64,
    /// Appliance threads by name, seconds, largest first.
    pub appliance_threads: Vec<(String, f64)>,
}

/// The outcome of one pass.
#[derive(Debug, Clone)]
pub struct PassResult {
    pub pass: Pass,
    /// Microseconds, sorted, of the requests sent and answered inside the measured window.
    pub latencies_us: Vec<u64>,
    pub measured_secs: f64,
    /// Body bytes of the measured requests.
    pub body_bytes: u64,
    /// Errors over the whole pass, warm-up included.
    pub errors: Errors,
    pub checked: u64,
    pub protocol: String,
    pub cpu: Cpu,
    /// Connections the server held in the middle of the window.
    pub established: usize,
    /// Connections closed during the pass (new TIME_WAIT sockets of the port): 0 when every connection
    /// was kept alive.
    pub closed: usize,
}

impl PassResult {
    pub fn requests(&self) -> usize {
        self.latencies_us.len()
    }

    pub fn per_second(&self) -> f64 {
        self.requests() as f64 / self.measured_secs
    }

    /// The `q` quantile (0..=1) in milliseconds: the smallest latency at least `q` of the requests
    /// did not exceed.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        quantile_us(&self.latencies_us, q) as f64 / 1000.0
    }

    pub fn bytes_per_response(&self) -> u64 {
        self.body_bytes / (self.requests().max(1) as u64)
    }
}

/// The `q` quantile of sorted values (nearest rank); 0 for none.
pub fn quantile_us(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[derive(Deserialize)]
struct PageShape {
    items: Vec<serde::de::IgnoredAny>,
    total: usize,
}

/// Why `body` does not pass `check`, if it does not.
pub fn body_problem(check: Check, body: &[u8]) -> Option<String> {
    match check {
        Check::Json => serde_json::from_slice::<serde::de::IgnoredAny>(body)
            .err()
            .map(|e| format!("not JSON: {e}")),
        Check::Page { total, items } => match serde_json::from_slice::<PageShape>(body) {
            Err(e) => Some(format!("not a list page: {e}")),
            Ok(p) if p.total != total || p.items.len() != items => Some(format!(
                "expected total {total} with {items} items, got total {} with {} items",
                p.total,
                p.items.len()
            )),
            Ok(_) => None,
        },
    }
}

struct Worker {
    conn: Option<Conn>,
    latencies_us: Vec<u64>,
    body_bytes: u64,
    errors: Errors,
    checked: u64,
}

async fn worker(
    conn: Conn,
    connector: Connector,
    path: Arc<str>,
    token: Option<Arc<str>>,
    check: Check,
    measure_from: Instant,
    until: Instant,
) -> Worker {
    let mut w = Worker {
        conn: Some(conn),
        latencies_us: Vec::new(),
        body_bytes: 0,
        errors: Errors::default(),
        checked: 0,
    };
    // Answers until the next check; the first answer is checked.
    let mut until_check = 0u64;
    loop {
        let start = Instant::now();
        if start >= until {
            break;
        }
        let conn = match w.conn.as_mut() {
            Some(conn) => conn,
            None => match connector.connect().await {
                Ok(conn) => {
                    w.errors.reconnects += 1;
                    w.conn.insert(conn)
                }
                Err(e) => {
                    w.errors.transport += 1;
                    w.errors.note(format!("reconnecting: {e:#}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, conn.get(&path, token.as_deref()))
            .await
            .unwrap_or_else(|_| {
                Err(anyhow::anyhow!(
                    "GET {path}: no answer within {REQUEST_TIMEOUT:?}"
                ))
            });
        let done = Instant::now();
        let (status, body) = match answer {
            Ok(a) => a,
            Err(e) => {
                w.errors.transport += 1;
                w.errors.note(format!("{e:#}"));
                w.conn = None;
                continue;
            }
        };
        if status != 200 {
            *w.errors.status.entry(status).or_default() += 1;
            w.errors.note(format!(
                "GET {path}: {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ));
            continue;
        }
        if until_check == 0 {
            until_check = CHECK_EVERY;
            w.checked += 1;
            if let Some(problem) = body_problem(check, &body) {
                w.errors.bad_body += 1;
                w.errors.note(format!("GET {path}: {problem}"));
            }
        }
        until_check -= 1;
        if start >= measure_from && done <= until {
            w.latencies_us
                .push(done.duration_since(start).as_micros() as u64);
            w.body_bytes += body.len() as u64;
        }
    }
    w
}

struct Sample {
    appliance: Option<u64>,
    bench: Option<u64>,
    threads: BTreeMap<u32, (String, u64)>,
}

fn sample(pid: u32) -> Sample {
    Sample {
        appliance: procfs::process_ticks(pid),
        bench: procfs::process_ticks(std::process::id()),
        threads: procfs::thread_ticks(pid),
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// Runs `pass` with one task per connection on the current runtime; the connections are handed back
/// for the next pass (a connection that failed is replaced).
pub async fn run(conns: &mut Vec<Conn>, target: &Target, pass: &Pass) -> Result<PassResult> {
    let closed_before = procfs::time_wait(target.port);
    let measure_from = Instant::now() + pass.warmup;
    let until = measure_from + pass.duration;
    // CPU is sampled on a plain thread, on time even while the runtime's threads are saturated.
    let pid = target.appliance_pid;
    let port = target.port;
    let sampler = std::thread::spawn(move || {
        sleep_until(measure_from);
        let first = sample(pid);
        sleep_until(measure_from + (until - measure_from) / 2);
        let established = procfs::established_at_server(port);
        sleep_until(until);
        (first, sample(pid), established)
    });
    let path: Arc<str> = pass.path.as_str().into();
    let token: Option<Arc<str>> = pass.bearer.then(|| target.token.as_str().into());
    let protocol = conns
        .first()
        .map(|c| c.protocol.clone())
        .unwrap_or_default();
    let tasks: Vec<_> = conns
        .drain(..)
        .map(|conn| {
            tokio::spawn(worker(
                conn,
                target.connector.clone(),
                path.clone(),
                token.clone(),
                pass.check,
                measure_from,
                until,
            ))
        })
        .collect();
    let mut latencies_us = Vec::new();
    let mut body_bytes = 0;
    let mut errors = Errors::default();
    let mut checked = 0;
    for task in tasks {
        let w = task.await.context("a load task panicked")?;
        if let Some(conn) = w.conn {
            conns.push(conn);
        } else {
            conns.push(target.connector.connect().await?);
        }
        latencies_us.extend(w.latencies_us);
        body_bytes += w.body_bytes;
        errors.merge(w.errors);
        checked += w.checked;
    }
    latencies_us.sort_unstable();
    let (first, last, established) = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("the CPU sampler panicked"))?;
    let ticks = procfs::clock_ticks();
    let secs = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => b.saturating_sub(a) as f64 / ticks,
        _ => 0.0,
    };
    let cpu = Cpu {
        appliance_secs: secs(first.appliance, last.appliance),
        bench_secs: secs(first.bench, last.bench),
        appliance_threads: procfs::thread_delta(&first.threads, &last.threads)
            .into_iter()
            .map(|(name, t)| (name, t as f64 / ticks))
            .collect(),
    };
    let closed = procfs::time_wait(port).difference(&closed_before).count();
    Ok(PassResult {
        pass: pass.clone(),
        latencies_us,
        measured_secs: pass.duration.as_secs_f64(),
        body_bytes,
        errors,
        checked,
        protocol,
        cpu,
        established,
        closed,
    })
}

#[derive(Deserialize)]
struct StateItem {
    state: String,
}

#[derive(Deserialize)]
struct StatesPage {
    items: Vec<StateItem>,
    total: usize,
}

/// The whole machine list once: its total and how many machines are in each protection state.
pub async fn protection_states(
    conn: &mut Conn,
    token: &str,
) -> Result<(usize, BTreeMap<String, usize>)> {
    let path = "/api/v1/machines?limit=1000";
    let (status, body) = conn.get(path, Some(token)).await?;
    anyhow::ensure!(
        status == 200,
        "GET {path}: {status}: {}",
        String::from_utf8_lossy(&body[..body.len().min(300)])
    );
    let page: StatesPage =
        serde_json::from_slice(&body).with_context(|| format!("GET {path}: not a machine list"))?;
    let mut states = BTreeMap::new();
    for item in page.items {
        *states.entry(item.state).or_default() += 1;
    }
    Ok((page.total, states))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile_us(&v, 0.5), 50);
        assert_eq!(quantile_us(&v, 0.99), 99);
        assert_eq!(quantile_us(&v, 0.999), 100);
        assert_eq!(quantile_us(&v, 1.0), 100);
        assert_eq!(quantile_us(&v, 0.0), 1);
        assert_eq!(quantile_us(&[], 0.5), 0);
        assert_eq!(quantile_us(&[7], 0.99), 7);
    }

    #[test]
    fn checks_bodies() {
        let page = br#"{"items":[{"a":1},{"b":2}],"total":1000,"limit":2,"offset":0}"#;
        assert_eq!(
            body_problem(
                Check::Page {
                    total: 1000,
                    items: 2
                },
                page
            ),
            None
        );
        assert!(body_problem(
            Check::Page {
                total: 999,
                items: 2
            },
            page
        )
        .is_some());
        assert!(body_problem(
            Check::Page {
                total: 1000,
                items: 3
            },
            page
        )
        .is_some());
        assert!(body_problem(Check::Page { total: 1, items: 0 }, b"{\"code\":\"x\"}").is_some());
        assert!(body_problem(Check::Page { total: 1, items: 0 }, b"<html>").is_some());
        assert_eq!(body_problem(Check::Json, br#"{"status":"ok"}"#), None);
        assert!(body_problem(Check::Json, b"{truncated").is_some());
    }

    #[test]
    fn errors_add_up() {
        let mut a = Errors::default();
        a.status.insert(500, 2);
        a.note("first".into());
        let mut b = Errors {
            transport: 1,
            reconnects: 1,
            bad_body: 1,
            ..Errors::default()
        };
        b.status.insert(500, 1);
        b.status.insert(401, 1);
        b.note("second".into());
        a.merge(b);
        assert_eq!(a.total(), 6);
        assert_eq!(a.first.as_deref(), Some("first"));
    }
}
