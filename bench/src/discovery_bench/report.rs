//! The markdown the run prints and appends to `discovery-results-<date>.md`.

use std::fmt::Write;
use std::time::Duration;

use super::compare::PropertySet;

/// The target: pyvmomi's retrieval time over Ferry's, medians.
pub const MIN_RATIO: f64 = 2.0;

/// Median and minimum of a series of times, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
}

impl Stats {
    /// None for an empty series. The median of an even count is the mean of the middle two.
    pub fn of(times: &[Duration]) -> Option<Stats> {
        let mut s: Vec<f64> = times.iter().map(Duration::as_secs_f64).collect();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = match n {
            0 => return None,
            _ if n % 2 == 1 => s[n / 2],
            _ => (s[n / 2 - 1] + s[n / 2]) / 2.0,
        };
        Some(Stats { median, min: s[0] })
    }
}

/// One measured series: what it is and its times in round order.
#[derive(Debug, Clone)]
pub struct Series {
    pub client: &'static str,
    pub what: String,
    pub times: Vec<Duration>,
}

#[derive(Debug, Clone)]
pub struct Report {
    /// `YYYY-MM-DD HH:MM UTC`.
    pub started: String,
    pub cores: usize,
    pub cpu_model: String,
    pub load_average: Option<f64>,
    pub vcsim: String,
    pub inventory: Option<String>,
    pub vms: usize,
    pub rounds: usize,
    pub warmup: usize,
    pub ferry_threads: usize,
    pub pyvmomi_versions: String,
    pub ferry_connect: Vec<Duration>,
    pub ferry_retrieval: Vec<Duration>,
    pub pyvmomi_retrieval: Vec<Duration>,
    pub pyvmomi_wall: Vec<Duration>,
    pub ferry_properties: PropertySet,
    pub pyvmomi_properties: PropertySet,
    /// `PROPS` of `pyvmomi_inventory.py` as it is, which the bench replaces.
    pub pyvmomi_script_properties: Vec<String>,
    pub bench_peak_rss_kib: Option<u64>,
    pub pyvmomi_peak_rss_kib: Option<u64>,
}

fn pass_fail(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(
        || "unknown".into(),
        |k| format!("{:.0} MiB", k as f64 / 1024.0),
    )
}

fn list(items: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let v: Vec<String> = items
        .into_iter()
        .map(|p| format!("`{}`", p.as_ref()))
        .collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn sum(a: &[Duration], b: &[Duration]) -> Vec<Duration> {
    a.iter().zip(b).map(|(x, y)| *x + *y).collect()
}

impl Report {
    fn median(times: &[Duration]) -> f64 {
        Stats::of(times).map_or(f64::NAN, |s| s.median)
    }

    /// pyvmomi's median retrieval over Ferry's median retrieval and parse: the target's ratio.
    pub fn ratio(&self) -> f64 {
        Self::median(&self.pyvmomi_retrieval) / Self::median(&self.ferry_retrieval)
    }

    /// The same with Ferry's connect and login counted too (pyvmomi's are not).
    pub fn ratio_with_connect(&self) -> f64 {
        Self::median(&self.pyvmomi_retrieval)
            / Self::median(&sum(&self.ferry_connect, &self.ferry_retrieval))
    }

    /// NaN (no rounds) fails.
    pub fn passed(&self) -> bool {
        self.ratio() >= MIN_RATIO
    }

    pub fn series(&self) -> Vec<Series> {
        vec![
            Series {
                client: "Ferry",
                what: "connect + login (`Client::connect`)".into(),
                times: self.ferry_connect.clone(),
            },
            Series {
                client: "Ferry",
                what: "retrieval + parse (`list_vms`)".into(),
                times: self.ferry_retrieval.clone(),
            },
            Series {
                client: "Ferry",
                what: "both".into(),
                times: sum(&self.ferry_connect, &self.ferry_retrieval),
            },
            Series {
                client: "pyvmomi",
                what: "retrieval + records (`--time`)".into(),
                times: self.pyvmomi_retrieval.clone(),
            },
            Series {
                client: "pyvmomi",
                what: "whole process (start, imports, login, retrieval, JSON out)".into(),
                times: self.pyvmomi_wall.clone(),
            },
        ]
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
        writeln!(s, "### Discovery run of {}\n", self.started)?;
        writeln!(
            s,
            "Machine: {} cores ({}), load average {load} at the start. vCenter: vcsim ({}) on \
             127.0.0.1 with {} VMs{}. Ferry: the `vsphere` crate, release build, in the bench \
             process (tokio, {} worker threads). pyvmomi: {}, `scripts/pyvmomi_inventory.py` in \
             a new process per round. {} measured rounds after {} warm-up, alternating Ferry and \
             pyvmomi.\n",
            self.cores,
            self.cpu_model,
            self.vcsim,
            self.vms,
            self.inventory
                .as_deref()
                .map_or_else(String::new, |i| format!(" (vcsim: {i})")),
            self.ferry_threads,
            self.pyvmomi_versions,
            self.rounds,
            self.warmup,
        )?;
        writeln!(
            s,
            "| client | timed | median s | min s | rounds s |\n|---|---|---:|---:|---|"
        )?;
        for series in self.series() {
            let Some(st) = Stats::of(&series.times) else {
                continue;
            };
            let rounds: Vec<String> = series
                .times
                .iter()
                .map(|t| format!("{:.3}", t.as_secs_f64()))
                .collect();
            writeln!(
                s,
                "| {} | {} | {:.3} | {:.3} | {} |",
                series.client,
                series.what,
                st.median,
                st.min,
                rounds.join(", ")
            )?;
        }
        writeln!(s)?;
        let f = &self.ferry_properties;
        let p = &self.pyvmomi_properties;
        let same = if f.requested == p.requested {
            "the same list"
        } else {
            "DIFFERENT lists"
        };
        writeln!(
            s,
            "Properties requested ({same}): Ferry {} ({}); pyvmomi {} ({}).  ",
            f.requested.len(),
            list(&f.requested),
            p.requested.len(),
            list(&p.requested)
        )?;
        let extra: Vec<&String> = f
            .requested
            .iter()
            .filter(|r| !self.pyvmomi_script_properties.contains(r))
            .collect();
        writeln!(
            s,
            "`pyvmomi_inventory.py` itself asks for {} ({}); the bench sets its `PROPS` to Ferry's \
             list, which adds {}.  ",
            self.pyvmomi_script_properties.len(),
            list(&self.pyvmomi_script_properties),
            list(extra)
        )?;
        writeln!(
            s,
            "Properties the server returned (over all VMs; vcsim leaves out unset ones): Ferry {} \
             ({}), missingSet {}; pyvmomi {} ({}), missingSet {}.\n",
            f.returned.len(),
            list(&f.returned),
            list(&f.missing),
            p.returned.len(),
            list(&p.returned),
            list(&p.missing)
        )?;
        writeln!(
            s,
            "Inventory check: in every round both clients listed the {} VMs, with the same \
             managed object ids, names and BIOS UUIDs.\n",
            self.vms
        )?;
        writeln!(
            s,
            "| target | measured | goal | result |\n|---|---:|---:|---|\n\
             | pyvmomi retrieval / Ferry retrieval + parse (medians) | {:.2}x | >= {MIN_RATIO}x | {} |\n",
            self.ratio(),
            pass_fail(self.passed())
        )?;
        writeln!(
            s,
            "With Ferry's connect and login counted as well (pyvmomi's are not): {:.2}x. Peak RSS: \
             the bench process (Ferry's client runs in it) {}; pyvmomi's process {} (largest of \
             the rounds).",
            self.ratio_with_connect(),
            mib(self.bench_peak_rss_kib),
            mib(self.pyvmomi_peak_rss_kib)
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|m| Duration::from_millis(*m)).collect()
    }

    fn props(names: &[&str]) -> PropertySet {
        PropertySet {
            requested: names.iter().map(|s| s.to_string()).collect(),
            returned: names.iter().map(|s| s.to_string()).collect(),
            missing: Default::default(),
        }
    }

    fn report(ferry: &[u64], py: &[u64]) -> Report {
        Report {
            started: "2026-01-01 00:00 UTC".into(),
            cores: 2,
            cpu_model: "CPU".into(),
            load_average: Some(1.0),
            vcsim: "govmomi 0.24".into(),
            inventory: Some("2000 VMs".into()),
            vms: 2000,
            rounds: ferry.len(),
            warmup: 1,
            ferry_threads: 2,
            pyvmomi_versions: "pyvmomi 9".into(),
            ferry_connect: ms(&vec![10; ferry.len()]),
            ferry_retrieval: ms(ferry),
            pyvmomi_retrieval: ms(py),
            pyvmomi_wall: ms(&vec![5000; py.len()]),
            ferry_properties: props(&["name", "config.uuid"]),
            pyvmomi_properties: props(&["name", "config.uuid"]),
            pyvmomi_script_properties: vec!["name".into()],
            bench_peak_rss_kib: Some(40 * 1024),
            pyvmomi_peak_rss_kib: None,
        }
    }

    #[test]
    fn medians_and_minima() {
        let s = Stats::of(&ms(&[300, 100, 200])).unwrap();
        assert_eq!((s.median, s.min), (0.2, 0.1));
        let s = Stats::of(&ms(&[400, 100, 200, 300])).unwrap();
        assert!((s.median - 0.25).abs() < 1e-12 && s.min == 0.1);
        assert_eq!(Stats::of(&[]), None);
    }

    #[test]
    fn the_target_is_the_ratio_of_medians() {
        let r = report(&[500, 400, 900], &[2000, 1000, 1200]);
        assert!((r.ratio() - 2.4).abs() < 1e-9);
        assert!(r.passed());
        assert!((r.ratio_with_connect() - 1200.0 / 510.0).abs() < 1e-9);
        let md = r.markdown();
        assert!(md.contains("| 2.40x | >= 2x | PASS |"), "{md}");
        assert!(md.contains("0.500, 0.400, 0.900"), "{md}");
        assert!(md.contains("(the same list)") && md.contains("40 MiB") && md.contains("unknown"));
        assert!(md.contains("itself asks for 1 (`name`)") && md.contains("adds `config.uuid`"));

        let slow = report(&[700, 700, 700], &[1200, 1300, 1400]);
        assert!(!slow.passed());
        assert!(slow.markdown().contains("| 1.86x | >= 2x | FAIL |"));
    }

    #[test]
    fn no_rounds_or_different_properties_show() {
        let empty = report(&[], &[]);
        assert!(!empty.passed(), "NaN must not pass");
        assert!(empty.markdown().contains("FAIL"));
        let mut r = report(&[1], &[2]);
        r.pyvmomi_properties = props(&["name"]);
        assert!(r.markdown().contains("DIFFERENT lists"));
    }
}
