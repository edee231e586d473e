//! The machine list as JSON without serializing it per request: each item's JSON is kept in three
//! parts around the two values that depend on the time of the request (`state`, `rpo_seconds`), so a
//! page is a few memory copies. The output is byte for byte what serializing [`Catalog::list`]'s page
//! gives (a test compares them).

use super::*;

fn to_json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("catalog views always serialize")
}

/// `{..,"state":` | `,..,"rpo_seconds":` | `,..}` in [`MachineView`]'s field order.
pub(super) fn parts(v: &MachineView) -> [String; 3] {
    [
        format!(
            "{{\"id\":{},\"name\":{},\"state\":",
            to_json(&v.id),
            to_json(&v.name)
        ),
        format!(
            ",\"agent_connected\":{},\"disks\":{},\"last_point\":{},\"rpo_seconds\":",
            v.agent_connected,
            to_json(&v.disks),
            to_json(&v.last_point)
        ),
        format!(
            ",\"throughput_bytes_per_sec\":{},\"bytes_received\":{},\"points\":{}}}",
            v.throughput_bytes_per_sec, v.bytes_received, v.points
        ),
    ]
}

fn state_json(s: ProtectionState) -> &'static str {
    match s {
        ProtectionState::InitialSync => "\"initial_sync\"",
        ProtectionState::Protected => "\"protected\"",
        ProtectionState::RpoExceeded => "\"rpo_exceeded\"",
        ProtectionState::Disconnected => "\"disconnected\"",
        ProtectionState::Revoked => "\"revoked\"",
    }
}

impl Catalog {
    /// [`Catalog::list`]'s page, serialized: the fast path for `GET /api/v1/machines`.
    pub fn list_json(&self, page: PageRequest) -> Result<Vec<u8>, MgmtError> {
        use std::io::Write;
        let (offset, limit) = page.resolve()?;
        let snapshot = self.snapshot();
        if let Some(err) = &snapshot.error {
            return Err(MgmtError::Internal(format!("machine catalog: {err}")));
        }
        let now = now_unix_ms();
        let items = || snapshot.items.iter().skip(offset).take(limit);
        let size: usize = items()
            .map(|l| l.json.iter().map(String::len).sum::<usize>() + 40)
            .sum();
        let mut out = Vec::with_capacity(size + 64);
        out.extend_from_slice(b"{\"items\":[");
        for (n, l) in items().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            let rpo = l.last_point_ms.map(|ms| now.saturating_sub(ms) / 1000);
            let state = protection(l.revoked, l.view.agent_connected, rpo);
            out.extend_from_slice(l.json[0].as_bytes());
            out.extend_from_slice(state_json(state).as_bytes());
            out.extend_from_slice(l.json[1].as_bytes());
            match rpo {
                Some(r) => write!(out, "{r}").expect("writing to memory"),
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(l.json[2].as_bytes());
        }
        let total = snapshot.items.len();
        write!(
            out,
            "],\"total\":{total},\"limit\":{limit},\"offset\":{offset}}}"
        )
        .expect("writing to memory");
        Ok(out)
    }
}
