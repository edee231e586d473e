//! The audit log as the API pages it.

use serde::{Deserialize, Serialize};

use super::{Core, MgmtError, Page, PageRequest};

#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditView {
    /// RFC 3339, UTC.
    pub at: String,
    /// A user name, `agent:<id>` or `system`.
    pub actor: String,
    /// The remote address, or `local`.
    pub source: String,
    pub event: String,
    pub detail: String,
}

impl Core {
    /// Newest first.
    pub fn audit_log(&self, page: PageRequest) -> Result<Page<AuditView>, MgmtError> {
        let (offset, limit) = page.resolve()?;
        let (events, total) = self.state.audit_page(offset, limit)?;
        Ok(Page {
            items: events
                .into_iter()
                .map(|e| AuditView {
                    at: e.at,
                    actor: e.actor,
                    source: e.source,
                    event: e.event,
                    detail: e.detail,
                })
                .collect(),
            total,
            limit,
            offset,
        })
    }
}
