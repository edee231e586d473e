//! The state the API is measured against: 1,000 machines recorded through the appliance's own catalog
//! code, with disks, recovery points over the last day and registered agents, in a fresh data folder.

use anyhow::{Context, Result};
use appliance::mgmt::catalog::{rfc3339_of_ms, Catalog, DiskView, PointView};
use appliance::state::{AgentRecord, State};
use std::collections::BTreeMap;
use std::path::Path;

const GIB: u64 = 1 << 30;
/// Disk sizes seen on ordinary virtual machines: boot disks, data disks, a few large ones.
const DISK_SIZES_GIB: [u64; 10] = [40, 60, 80, 100, 128, 200, 256, 500, 1024, 2048];
const MINUTE_MS: u64 = 60_000;

/// What was seeded, for the report.
#[derive(Debug, Clone, Default)]
pub struct Seeded {
    pub machines: usize,
    pub disks: usize,
    pub points: usize,
    pub agents: usize,
    pub revoked: usize,
    /// Machines whose newest point is older than the RPO target (15 min) when seeded.
    pub stale: usize,
}

/// SplitMix64: a small seeded generator, so every run seeds the same catalog.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi` (the bias of the modulo is irrelevant here).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `percent`/100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}

/// A machine id shaped like the agent ids the registry issues (a UUID v4).
pub fn machine_id(rng: &mut SplitMix64) -> String {
    let (a, b) = (rng.next_u64(), rng.next_u64());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}

/// The catalog of `machines` machines as the appliance would hold it at `now_ms`: descriptors,
/// points (oldest first per machine) and agents.
pub struct Plan {
    pub machines: Vec<vault::MachineDescriptor>,
    pub points: Vec<PointView>,
    pub agents: BTreeMap<String, AgentRecord>,
    pub seeded: Seeded,
}

/// Builds the catalog deterministically from `seed`.
pub fn plan(machines: usize, now_ms: u64, seed: u64) -> Plan {
    let mut rng = SplitMix64::new(seed);
    let mut plan = Plan {
        machines: Vec::with_capacity(machines),
        points: Vec::new(),
        agents: BTreeMap::new(),
        seeded: Seeded::default(),
    };
    for n in 1..=machines {
        let id = machine_id(&mut rng);
        let name = format!("vm-{n:04}");
        let disks: Vec<DiskView> = (0..rng.range(1, 3))
            .map(|d| DiskView {
                disk_id: format!("disk{d}"),
                size_bytes: DISK_SIZES_GIB[rng.range(0, DISK_SIZES_GIB.len() as u64 - 1) as usize]
                    * GIB,
                label: format!("/dev/sd{}", char::from(b'a' + d as u8)),
            })
            .collect();
        // Most machines replicate every few minutes; a third have fallen behind (agent stopped,
        // machine powered off), by anything from 20 minutes to most of the day.
        let newest_age_ms = if rng.percent(67) {
            rng.range(5_000, 12 * MINUTE_MS)
        } else {
            plan.seeded.stale += 1;
            rng.range(20 * MINUTE_MS, 20 * 60 * MINUTE_MS)
        };
        let count = rng.range(1, 5);
        let mut at = now_ms.saturating_sub(newest_age_ms);
        let mut points = Vec::new();
        for _ in 0..count {
            points.push(PointView {
                machine_id: id.clone(),
                point_id: format!("{at:016x}"),
                kind: if rng.percent(20) { "app" } else { "crash" }.to_string(),
                created_at: rfc3339_of_ms(at),
                created_unix_ms: at,
                disks: disks.clone(),
            });
            // Older points of the day, 10 minutes to an hour apart.
            at = at.saturating_sub(rng.range(10 * MINUTE_MS, 60 * MINUTE_MS));
        }
        points.reverse();
        plan.seeded.points += points.len();
        plan.points.extend(points);
        plan.seeded.disks += disks.len();
        // Most machines have a registered agent; the rest are known from the vault only (machines
        // restored elsewhere, agents reinstalled under a new id). A few agents were revoked.
        if rng.percent(85) {
            let revoked = rng.percent(3);
            plan.seeded.agents += 1;
            plan.seeded.revoked += usize::from(revoked);
            let registered_ms = now_ms.saturating_sub(rng.range(2 * 86_400_000, 90 * 86_400_000));
            plan.agents.insert(
                id.clone(),
                AgentRecord {
                    hostname: name.clone(),
                    registered_at: rfc3339_of_ms(registered_ms),
                    revoked,
                    last_seen: Some(rfc3339_of_ms(now_ms.saturating_sub(newest_age_ms))),
                    bios_uuid: None,
                },
            );
        }
        plan.machines.push(vault::MachineDescriptor {
            machine_id: id,
            name,
            disks: disks
                .into_iter()
                .map(|d| vault::DiskDescriptor {
                    disk_id: d.disk_id,
                    size_bytes: d.size_bytes,
                    label: d.label,
                })
                .collect(),
        });
    }
    plan.seeded.machines = plan.machines.len();
    plan
}

/// Writes `plan` into the state of `data_dir` with the appliance's catalog, and closes the state so
/// the daemon can open it.
pub fn write(data_dir: &Path, plan: &Plan) -> Result<()> {
    let state = State::open(data_dir).context("opening the appliance state to seed it")?;
    for (id, agent) in &plan.agents {
        state
            .put_agent(id, agent)
            .with_context(|| format!("registering agent {id}"))?;
    }
    let catalog = Catalog::new(state.clone()).context("opening the catalog")?;
    catalog
        .record_machines(&plan.machines)
        .context("recording the machines")?;
    catalog
        .record_points(&plan.points)
        .context("recording the points")?;
    let listed = catalog
        .list(appliance::mgmt::PageRequest {
            limit: Some(1),
            offset: None,
        })
        .context("listing the seeded catalog")?;
    anyhow::ensure!(
        listed.total == plan.machines.len(),
        "the catalog lists {} machines after seeding {}",
        listed.total,
        plan.machines.len()
    );
    state.flush().context("flushing the seeded state")?;
    drop(catalog);
    drop(state);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_is_deterministic_and_realistic() {
        let now = 1_800_000_000_000;
        let a = plan(1000, now, 7);
        let b = plan(1000, now, 7);
        assert_eq!(a.machines, b.machines);
        assert_eq!(a.points, b.points);
        let s = &a.seeded;
        assert_eq!(s.machines, 1000);
        assert!((1000..=3000).contains(&s.disks), "{s:?}");
        assert!((1000..=5000).contains(&s.points), "{s:?}");
        assert!((250..=420).contains(&s.stale), "{s:?}");
        assert!((780..=920).contains(&s.agents) && s.revoked > 5, "{s:?}");
        assert_eq!(a.machines[0].name, "vm-0001");
        assert_eq!(a.machines[999].name, "vm-1000");
        let ids: std::collections::BTreeSet<_> = a.machines.iter().map(|m| &m.machine_id).collect();
        assert_eq!(ids.len(), 1000);
        for p in &a.points {
            assert!(p.created_unix_ms <= now && p.created_unix_ms > now - 2 * 86_400_000);
            assert_eq!(p.point_id.len(), 16);
        }
    }

    #[test]
    fn seeds_a_state_the_catalog_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = plan(50, appliance::mgmt::catalog::now_unix_ms(), 1);
        write(dir.path(), &p).unwrap();
        // Closed: the state opens again (as the daemon will), with every machine listed.
        let state = State::open(dir.path()).unwrap();
        let catalog = Catalog::new(state.clone()).unwrap();
        let page = catalog
            .list(appliance::mgmt::PageRequest {
                limit: Some(1000),
                offset: None,
            })
            .unwrap();
        assert_eq!(page.total, 50);
        assert_eq!(page.items[0].name, "vm-0001");
        assert_eq!(state.agents().unwrap().len(), p.seeded.agents);
    }
}
