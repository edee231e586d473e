//! The result table and the targets Ferry is held to. A missed target is reported, not an error:
//! this is a benchmark, not a test.

use std::fmt::Write;

use crate::limits::Limits;
use crate::procs::Timed;

const MB: f64 = 1e6;
const MIB: f64 = 1024.0 * 1024.0;

/// Ferry's initial sync and restore must be this many times faster than the faster peer's.
pub const SPEEDUP_TARGET: f64 = 1.5;
/// Ferry's incremental sync may take at most this fraction of the faster peer's second backup.
pub const INCREMENTAL_TIME_TARGET: f64 = 1.0 / 3.0;
/// Ferry's initial sync must reach this fraction of the slower single-core stage.
pub const LIMIT_FRACTION_TARGET: f64 = 0.6;
/// The appliance's peak resident memory must stay at or below this many MiB.
pub const APPLIANCE_RSS_TARGET_MIB: f64 = 512.0;

/// One tool's measurements on the workload.
#[derive(Debug, Clone)]
pub struct ToolRun {
    pub name: String,
    pub version: String,
    pub initial: Timed,
    pub incremental: Timed,
    pub restore: Timed,
    /// Bytes the repository (vault) holds after both backups.
    pub stored_bytes: u64,
    /// The daemon's peak memory (Ferry's appliance), if the tool has one.
    pub server_peak_rss_kib: Option<u64>,
}

impl ToolRun {
    /// Peak memory of the backup client (the agent for Ferry) over both backups.
    pub fn client_peak_rss_kib(&self) -> Option<u64> {
        self.initial.peak_rss_kib.max(self.incremental.peak_rss_kib)
    }
}

/// Everything one benchmark run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// When the run started, e.g. "2026-11-26 14:03 UTC".
    pub started: String,
    pub cores: usize,
    /// `/proc/loadavg`'s 1-minute figure at the start: the machine may be shared.
    pub load_average: Option<f64>,
    pub image_bytes: u64,
    pub files_bytes: u64,
    pub changed_blocks: usize,
    pub block_bytes: u64,
    pub percent: f64,
    pub seed: u64,
    pub limits: Limits,
    pub ferry: Option<ToolRun>,
    pub peers: Vec<ToolRun>,
}

/// Outcome of one target.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub what: &'static str,
    pub value: String,
    pub goal: String,
    /// None when it could not be computed (a tool was skipped).
    pub pass: Option<bool>,
}

fn rate(bytes: u64, t: &Timed) -> f64 {
    bytes as f64 / t.seconds.max(1e-9) / MB
}

impl Report {
    fn rate(&self, t: &Timed) -> f64 {
        rate(self.image_bytes, t)
    }

    fn faster_peer_by<F: Fn(&ToolRun) -> f64>(&self, key: F) -> Option<(&ToolRun, f64)> {
        self.peers
            .iter()
            .map(|p| (p, key(p)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// The targets, each with its measured value and whether it passed.
    pub fn targets(&self) -> Vec<Target> {
        let mut out = Vec::new();
        let ferry = self.ferry.as_ref();
        let speedup = |what, key: &dyn Fn(&ToolRun) -> f64| {
            let ratio = ferry
                .zip(self.faster_peer_by(key))
                .map(|(f, (p, peer_rate))| {
                    let r = key(f) / peer_rate;
                    (format!("{r:.2}x ({})", p.name), r >= SPEEDUP_TARGET)
                });
            Target {
                what,
                value: ratio.as_ref().map_or("n/a".into(), |r| r.0.clone()),
                goal: format!(">= {SPEEDUP_TARGET}x"),
                pass: ratio.map(|r| r.1),
            }
        };
        out.push(speedup("initial sync speed / faster peer", &|t| {
            self.rate(&t.initial)
        }));
        out.push(speedup("restore speed / faster peer", &|t| {
            self.rate(&t.restore)
        }));

        let incremental = ferry
            .zip(self.faster_peer_by(|p| -p.incremental.seconds))
            .map(|(f, (p, _))| {
                let r = f.incremental.seconds / p.incremental.seconds.max(1e-9);
                (format!("{r:.2} ({})", p.name), r <= INCREMENTAL_TIME_TARGET)
            });
        out.push(Target {
            what: "incremental time / faster peer's",
            value: incremental.as_ref().map_or("n/a".into(), |r| r.0.clone()),
            goal: "<= 0.33".into(),
            pass: incremental.map(|r| r.1),
        });

        let fraction = ferry.map(|f| {
            let r = self.image_bytes as f64
                / f.initial.seconds.max(1e-9)
                / self.limits.slower_bytes_per_s();
            (format!("{:.0}%", r * 100.0), r >= LIMIT_FRACTION_TARGET)
        });
        out.push(Target {
            what: "initial sync / single-core limit",
            value: fraction.as_ref().map_or("n/a".into(), |r| r.0.clone()),
            goal: format!(">= {:.0}%", LIMIT_FRACTION_TARGET * 100.0),
            pass: fraction.map(|r| r.1),
        });

        let rss = ferry.and_then(|f| f.server_peak_rss_kib).map(|kib| {
            let mib = kib as f64 / 1024.0;
            (format!("{mib:.0} MiB"), mib <= APPLIANCE_RSS_TARGET_MIB)
        });
        out.push(Target {
            what: "appliance peak RSS",
            value: rss.as_ref().map_or("n/a".into(), |r| r.0.clone()),
            goal: format!("<= {APPLIANCE_RSS_TARGET_MIB:.0} MiB"),
            pass: rss.map(|r| r.1),
        });
        out
    }

    /// The whole report as Markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "## Benchmark run of {}\n", self.started);
        let _ = writeln!(
            s,
            "Image: {:.0} MiB ext4 holding {:.0} MiB of real files; change: {} blocks of {} KiB \
             ({}% of the image, {:.1} MiB, seed {}), real-file content not in the image. \
             Machine: {} cores, load average {} at the start. MB = 10^6 bytes; every speed is the image size divided by the wall \
             time of the step.\n",
            self.image_bytes as f64 / MIB,
            self.files_bytes as f64 / MIB,
            self.changed_blocks,
            self.block_bytes / 1024,
            self.percent,
            (self.changed_blocks as u64 * self.block_bytes) as f64 / MIB,
            self.seed,
            self.cores,
            self.load_average.map_or("unknown".into(), |l| format!("{l:.2}")),
        );
        let _ = writeln!(
            s,
            "| tool | initial sync MB/s (s) | incremental MB/s (s) | restore MB/s (s) | stored MiB | client peak RSS MiB | appliance peak RSS MiB |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
        for t in self.ferry.iter().chain(self.peers.iter()) {
            let mib =
                |kib: Option<u64>| kib.map_or("-".into(), |k| format!("{:.0}", k as f64 / 1024.0));
            let _ = writeln!(
                s,
                "| {} | {:.0} ({:.1}) | {:.0} ({:.1}) | {:.0} ({:.1}) | {:.0} | {} | {} |",
                t.version,
                self.rate(&t.initial),
                t.initial.seconds,
                self.rate(&t.incremental),
                t.incremental.seconds,
                self.rate(&t.restore),
                t.restore.seconds,
                t.stored_bytes as f64 / MIB,
                mib(t.client_peak_rss_kib()),
                mib(t.server_peak_rss_kib),
            );
        }
        let l = &self.limits;
        let _ = writeln!(
            s,
            "\nSingle-core limits over the image's {:.0} MiB of non-zero 64 KiB blocks: lz4_flex block \
             compression {:.0} MB/s (output {:.0}% of input), XChaCha20-Poly1305 seal {:.0} MB/s as the vault \
             seals (aws-lc ChaCha20-Poly1305 under an HChaCha20 subkey; the portable RustCrypto crate: \
             {:.0} MB/s).\n",
            l.input_bytes as f64 / MIB,
            l.lz4_bytes_per_s / MB,
            l.lz4_ratio * 100.0,
            l.seal_bytes_per_s / MB,
            l.seal_portable_bytes_per_s / MB,
        );
        let _ = writeln!(s, "| target | measured | goal | result |");
        let _ = writeln!(s, "|---|---:|---:|---|");
        for t in self.targets() {
            let result = match t.pass {
                Some(true) => "pass",
                Some(false) => "FAIL",
                None => "not measured",
            };
            let _ = writeln!(s, "| {} | {} | {} | {} |", t.what, t.value, t.goal, result);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timed(seconds: f64, rss_mib: u64) -> Timed {
        Timed {
            seconds,
            peak_rss_kib: Some(rss_mib * 1024),
        }
    }

    fn tool(
        name: &str,
        initial: f64,
        incremental: f64,
        restore: f64,
        server: Option<u64>,
    ) -> ToolRun {
        ToolRun {
            name: name.into(),
            version: format!("{name} 1.0"),
            initial: timed(initial, 50),
            incremental: timed(incremental, 60),
            restore: timed(restore, 10),
            stored_bytes: 400 << 20,
            server_peak_rss_kib: server.map(|m| m * 1024),
        }
    }

    fn report(ferry: Option<ToolRun>) -> Report {
        Report {
            started: "2026-11-26 12:00 UTC".into(),
            cores: 2,
            load_average: Some(0.5),
            image_bytes: 1_000_000_000,
            files_bytes: 700 << 20,
            changed_blocks: 819,
            block_bytes: 65536,
            percent: 5.0,
            seed: 1,
            limits: Limits {
                input_bytes: 700 << 20,
                lz4_bytes_per_s: 800e6,
                lz4_ratio: 0.4,
                seal_bytes_per_s: 1500e6,
                seal_portable_bytes_per_s: 1300e6,
            },
            ferry,
            peers: vec![
                tool("restic", 10.0, 6.0, 4.0, None),
                tool("borg", 8.0, 9.0, 5.0, None),
            ],
        }
    }

    #[test]
    fn targets_compare_with_the_faster_peer() {
        // 1e9 bytes: ferry 2 s = 500 MB/s; borg 8 s = 125 MB/s is the faster initial peer.
        let r = report(Some(tool("ferry", 2.0, 1.5, 2.0, Some(300))));
        let t = r.targets();
        assert_eq!(t[0].value, "4.00x (borg)");
        assert_eq!(t[0].pass, Some(true));
        // restore: restic 4 s is faster; 4 / 2 = 2x.
        assert_eq!(t[1].value, "2.00x (restic)");
        assert_eq!(t[1].pass, Some(true));
        // incremental: restic 6 s is faster; 1.5 / 6 = 0.25.
        assert_eq!(t[2].value, "0.25 (restic)");
        assert_eq!(t[2].pass, Some(true));
        // 500 MB/s of an 800 MB/s limit.
        assert_eq!(t[3].value, "62%");
        assert_eq!(t[3].pass, Some(true));
        assert_eq!(t[4].value, "300 MiB");
        assert_eq!(t[4].pass, Some(true));
    }

    #[test]
    fn missed_targets_fail_and_missing_ferry_is_not_measured() {
        let r = report(Some(tool("ferry", 7.0, 2.5, 3.0, Some(600))));
        let passes: Vec<_> = r.targets().iter().map(|t| t.pass).collect();
        assert_eq!(passes, vec![Some(false); 5]);
        let r = report(None);
        assert!(r
            .targets()
            .iter()
            .all(|t| t.pass.is_none() && t.value == "n/a"));
        let md = r.markdown();
        assert!(
            md.contains("| restic 1.0 | 100 (10.0) | 167 (6.0) | 250 (4.0) | 400 | 60 | - |"),
            "{md}"
        );
        assert!(md.contains("not measured"));
    }

    #[test]
    fn markdown_has_every_tool_and_target() {
        let md = report(Some(tool("ferry", 2.0, 1.5, 2.0, Some(300)))).markdown();
        for needle in [
            "ferry 1.0",
            "restic 1.0",
            "borg 1.0",
            "appliance peak RSS",
            "| pass |",
            "lz4_flex",
        ] {
            assert!(md.contains(needle), "{needle} missing:\n{md}");
        }
        assert!(!md.contains("FAIL"));
    }
}
