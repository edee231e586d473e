//! What the kernel says about the run: CPU time of processes and threads, TCP connections of a port,
//! and the machine.

use std::collections::{BTreeMap, BTreeSet};

/// Clock ticks per second of `/proc/*/stat` times: `getconf CLK_TCK`, 100 on every Linux we run on.
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// (name, utime + stime in ticks) of a `/proc/.../stat` line. The name is in parentheses and may
/// itself contain spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_stat(text: &str) -> Option<(String, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text.get(open + 1..close)?.to_string();
    // After ")": state(3) ppid(4) ... utime(14) stime(15); index 0 is the state.
    let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

/// CPU ticks of a process (all its threads, exited ones included).
pub fn process_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text).map(|(_, t)| t)
}

/// CPU ticks of each live thread of a process: tid -> (name, ticks).
pub fn thread_ticks(pid: u32) -> BTreeMap<u32, (String, u64)> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        if let Some(stat) = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|t| parse_stat(&t))
        {
            out.insert(tid, stat);
        }
    }
    out
}

/// CPU ticks spent by each thread name between two samples, largest first (threads of one name, such
/// as a pool's, are added up).
pub fn thread_delta(
    before: &BTreeMap<u32, (String, u64)>,
    after: &BTreeMap<u32, (String, u64)>,
) -> Vec<(String, u64)> {
    let mut by_name: BTreeMap<String, u64> = BTreeMap::new();
    for (tid, (name, ticks)) in after {
        let was = before.get(tid).map_or(0, |(_, t)| *t);
        *by_name.entry(name.clone()).or_default() += ticks.saturating_sub(was);
    }
    let mut v: Vec<(String, u64)> = by_name.into_iter().filter(|(_, t)| *t > 0).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

/// TCP sockets of `/proc/net/tcp` text with `port` at either end: (state, local, remote) with the
/// state as the kernel's hex code (`01` established, `06` time-wait).
pub fn sockets_of_port(text: &str, port: u16) -> Vec<(String, String, String)> {
    let port_of = |addr: &str| {
        addr.rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (local, remote, state) = (*f.get(1)?, *f.get(2)?, *f.get(3)?);
            (port_of(local) == Some(port) || port_of(remote) == Some(port))
                .then(|| (state.to_string(), local.to_string(), remote.to_string()))
        })
        .collect()
}

fn tcp_table() -> String {
    let mut text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    // IPv6 sockets have the same columns; the header line is skipped per file.
    if let Ok(v6) = std::fs::read_to_string("/proc/net/tcp6") {
        text.push_str(v6.split_once('\n').map_or("", |(_, rest)| rest));
    }
    text
}

/// Connections to the server port: established ones on the server's side.
pub fn established_at_server(port: u16) -> usize {
    sockets_of_port(&tcp_table(), port)
        .iter()
        .filter(|(state, local, _)| {
            state == "01"
                && local
                    .rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                    == Some(port)
        })
        .count()
}

/// Closed connections of `port` still in TIME_WAIT (60 s on Linux, longer than a pass): a client that
/// reconnects leaves one per closed connection.
pub fn time_wait(port: u16) -> BTreeSet<(String, String)> {
    sockets_of_port(&tcp_table(), port)
        .into_iter()
        .filter(|(state, _, _)| state == "06")
        .map(|(_, l, r)| (l, r))
        .collect()
}

/// The CPU model from `/proc/cpuinfo`.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_lines() {
        let line = "1234 (actix-rt|system:0) S 1 2 3 4 5 6 7 8 9 10 250 30 0 0 20 0 4 0 1 2 3";
        assert_eq!(parse_stat(line), Some(("actix-rt|system:0".into(), 280)));
        let odd = "7 (a) b (c)) R 1 2 3 4 5 6 7 8 9 10 1 2 0 0";
        assert_eq!(parse_stat(odd), Some(("a) b (c)".into(), 3)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
        assert_eq!(parse_stat("1 (x) S 1 2 3 4 5 6 7 8 9 10 u v"), None);
    }

    #[test]
    fn reads_own_cpu_time() {
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed().as_millis() < 100 {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(process_ticks(std::process::id()).is_some_and(|t| t > 0));
        let threads = thread_ticks(std::process::id());
        assert!(!threads.is_empty());
    }

    #[test]
    fn thread_delta_adds_names() {
        let before = BTreeMap::from([(1, ("w".to_string(), 10)), (2, ("w".to_string(), 5))]);
        let after = BTreeMap::from([
            (1, ("w".to_string(), 30)),
            (2, ("w".to_string(), 6)),
            (3, ("io".to_string(), 4)),
            (4, ("idle".to_string(), 0)),
        ]);
        assert_eq!(
            thread_delta(&before, &after),
            vec![("w".to_string(), 21), ("io".to_string(), 4)]
        );
    }

    #[test]
    fn finds_sockets_of_a_port() {
        let text = "  sl  local_address rem_address   st tx_queue\n\
            0: 0100007F:1F90 00000000:0000 0A 0\n\
            1: 0100007F:1F90 0100007F:C350 01 0\n\
            2: 0100007F:C350 0100007F:1F90 01 0\n\
            3: 0100007F:C351 0100007F:1F90 06 0\n\
            4: 0100007F:0050 0100007F:C352 01 0\n\
            bad line\n";
        let s = sockets_of_port(text, 8080);
        assert_eq!(s.len(), 4);
        assert_eq!(s.iter().filter(|(st, _, _)| st == "06").count(), 1);
        assert!(sockets_of_port(text, 1).is_empty());
    }
}
