//! The catalog's writes: machines and points as the vault and the data path report them. Each works
//! without [`Catalog::attach`] (the benchmark seeds a data folder with them before the daemon starts).

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use super::*;

/// Whether point `a` is newer than `b` (creation time, then id).
fn newer(a: &PointView, b: Option<&PointView>) -> bool {
    b.is_none_or(|b| (a.created_unix_ms, &a.point_id) > (b.created_unix_ms, &b.point_id))
}

fn check_point(p: &PointView) -> Result<(), MgmtError> {
    if !valid_id(&p.machine_id) {
        return Err(MgmtError::invalid("machine_id", "not a valid machine id"));
    }
    if !valid_id(&p.point_id) {
        return Err(MgmtError::invalid("point_id", "not a valid point id"));
    }
    if p.kind != "crash" && p.kind != "app" {
        return Err(MgmtError::invalid("kind", "must be crash or app"));
    }
    Ok(())
}

impl Catalog {
    /// Records (or updates) a machine as the vault describes it. Works without [`Catalog::attach`].
    pub fn record_machine(&self, m: &vault::MachineDescriptor) -> Result<(), MgmtError> {
        self.record_machines(std::slice::from_ref(m))
    }

    /// [`Catalog::record_machine`] for many, rebuilding the lists once.
    pub fn record_machines(&self, machines: &[vault::MachineDescriptor]) -> Result<(), MgmtError> {
        if let Some(bad) = machines.iter().find(|m| !valid_id(&m.machine_id)) {
            return Err(MgmtError::invalid(
                "machine_id",
                format!("{:?} is not a valid machine id", bad.machine_id),
            ));
        }
        let mut data = self.lock();
        let now_unix = now_unix_ms() / 1000;
        let (mut result, mut changed) = (Ok(()), false);
        for m in machines {
            let mut record = self.record_for(&mut data, &m.machine_id, now_unix);
            let name = clean_name(&m.name);
            if !name.is_empty() {
                record.name = name;
            }
            if !m.disks.is_empty() {
                record.disks = m
                    .disks
                    .iter()
                    .map(|d| DiskView {
                        disk_id: d.disk_id.clone(),
                        size_bytes: d.size_bytes,
                        label: d.label.clone(),
                    })
                    .collect();
            }
            match self.store_record(&mut data, record) {
                Ok(c) => changed |= c,
                Err(err) => {
                    result = Err(err);
                    break;
                }
            }
        }
        // Reconciliation mostly finds what is known already: the lists are rebuilt only for news.
        if changed {
            self.rebuild(&data);
        }
        result
    }

    /// Records one recovery point (a no-op when it is already there). Works without [`Catalog::attach`].
    pub fn record_point(&self, p: &PointView) -> Result<(), MgmtError> {
        self.record_points(std::slice::from_ref(p))
    }

    /// [`Catalog::record_point`] for many, rebuilding the lists once.
    pub fn record_points(&self, points: &[PointView]) -> Result<(), MgmtError> {
        for p in points {
            check_point(p)?;
        }
        let mut data = self.lock();
        let now_unix = now_unix_ms() / 1000;
        let (mut result, mut changed) = (Ok(()), false);
        for p in points {
            match self.insert_point(&mut data, p, now_unix) {
                Ok(c) => changed |= c,
                Err(err) => {
                    result = Err(err);
                    break;
                }
            }
        }
        if changed {
            self.rebuild(&data);
        }
        result
    }

    /// The machine's record to change: the stored one, or a fresh one (also replacing a corrupt one,
    /// which is logged when it was loaded).
    pub(super) fn record_for(&self, data: &mut Data, id: &str, now_unix: u64) -> MachineRecord {
        data.records
            .get(id)
            .cloned()
            .unwrap_or_else(|| MachineRecord {
                id: id.to_string(),
                first_seen_unix: now_unix,
                ..MachineRecord::default()
            })
    }

    /// Stores the record when it differs from the one kept; true when it did.
    pub(super) fn store_record(
        &self,
        data: &mut Data,
        record: MachineRecord,
    ) -> Result<bool, MgmtError> {
        if data.records.get(&record.id) == Some(&record) && !data.corrupt.contains_key(&record.id) {
            return Ok(false);
        }
        self.inner
            .machines
            .insert(record.id.as_bytes(), encode(&record))?;
        data.corrupt.remove(&record.id);
        data.records.insert(record.id.clone(), record);
        Ok(true)
    }

    /// Stores a point not stored yet; true when it was new.
    pub(super) fn insert_point(
        &self,
        data: &mut Data,
        p: &PointView,
        now_unix: u64,
    ) -> Result<bool, MgmtError> {
        let key = point_key(&p.machine_id, &p.point_id);
        if self.inner.points.contains_key(&key)? {
            return Ok(false);
        }
        let mut record = self.record_for(data, &p.machine_id, now_unix);
        let mut p = p.clone();
        fill_labels(&mut p, &record.disks);
        if record.disks.is_empty() {
            record.disks = p.disks.clone();
        }
        record.points += 1;
        if newer(&p, record.last_point.as_ref()) {
            record.last_point = Some(p.clone());
        }
        // One transaction: a crash never leaves a point counted but not stored, or indexed but not stored.
        let (value, index_key, machine_value) = (encode(&p), by_time_key(&p), encode(&record));
        let trees = (
            &self.inner.points,
            &self.inner.by_time,
            &self.inner.machines,
        );
        trees
            .transaction(|(points, by_time, machines)| {
                points.insert(key.as_slice(), value.as_slice())?;
                by_time.insert(index_key.as_slice(), &[][..])?;
                machines.insert(record.id.as_bytes(), machine_value.as_slice())?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e: TransactionError<()>| match e {
                TransactionError::Storage(e) => MgmtError::from(e),
                TransactionError::Abort(()) => MgmtError::Internal("catalog write aborted".into()),
            })?;
        data.corrupt.remove(&record.id);
        data.records.insert(record.id.clone(), record);
        Ok(true)
    }
}
