//! The vCenter plugin's part of a stored vCenter: its role table (which of the vCenter's users gets
//! which Ferry role) and what verifying a plugin session or registering the plugin needs of it.

use std::collections::BTreeMap;

use actors::discovery::{Credentials, TlsTrust};

use super::{not_found, trust_of, validate, VcenterView, Vcenters};
use crate::mgmt::auth::{Principal, Role};
use crate::mgmt::MgmtError;

/// Bounds of a role table: a table is a handful of groups of admins, not a user directory.
const MAX_ROLE_ENTRIES: usize = 200;
const MAX_USER_CHARS: usize = 256;

/// What the plugin needs of a stored vCenter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginTarget {
    pub id: String,
    /// `https://host[:port]/sdk`.
    pub url: String,
    /// The pinned certificate thumbprint: a plugin session is only checked with the vCenter that
    /// presents it.
    pub thumbprint: String,
    pub roles: BTreeMap<String, Role>,
}

impl PluginTarget {
    pub fn trust(&self) -> TlsTrust {
        trust_of(&self.thumbprint)
    }

    /// `https://host[:port]`: where the vSphere Client that frames the plugin pages is served from.
    pub fn origin(&self) -> &str {
        self.url.strip_suffix("/sdk").unwrap_or(&self.url)
    }
}

/// A role table as stored: user names trimmed, none empty, control characters or overlong.
pub(super) fn check(roles: &BTreeMap<String, Role>) -> Result<BTreeMap<String, Role>, MgmtError> {
    if roles.len() > MAX_ROLE_ENTRIES {
        return Err(MgmtError::invalid(
            "plugin_roles",
            format!("at most {MAX_ROLE_ENTRIES} entries"),
        ));
    }
    let mut checked = BTreeMap::new();
    for (user, role) in roles {
        let name = user.trim();
        if name.is_empty()
            || name.chars().count() > MAX_USER_CHARS
            || name.chars().any(char::is_control)
        {
            return Err(MgmtError::invalid(
                "plugin_roles",
                format!(
                    "{user:?} is not a vCenter user name (DOMAIN\\user, at most \
                     {MAX_USER_CHARS} characters) or *"
                ),
            ));
        }
        if checked.insert(name.to_string(), *role).is_some() {
            return Err(MgmtError::invalid(
                "plugin_roles",
                format!("{name:?} is given twice"),
            ));
        }
    }
    Ok(checked)
}

/// For the audit log.
pub(super) fn describe(roles: &BTreeMap<String, Role>) -> String {
    let entries: Vec<String> = roles
        .iter()
        .map(|(user, role)| format!("{user}={}", role.as_str()))
        .collect();
    format!("plugin roles {{{}}}", entries.join(", "))
}

impl Vcenters {
    /// Replaces the plugin's role table; no login to the vCenter is needed for that.
    pub(super) fn set_plugin_roles(
        &self,
        by: &Principal,
        source: &str,
        id: &str,
        roles: BTreeMap<String, Role>,
    ) -> Result<VcenterView, MgmtError> {
        let record = {
            let _write = self.inner.write.lock().expect("vcenter write lock");
            let mut record = self.record(id)?.ok_or_else(|| not_found(id))?;
            record.plugin_roles = roles;
            self.put(&record)?;
            record
        };
        self.inner.state.audit_as(
            &by.user,
            source,
            "vcenter_updated",
            &format!("{id} {}: {}", record.url, describe(&record.plugin_roles)),
        )?;
        self.inner.state.flush()?;
        Ok(self.view(record))
    }

    /// The vCenter a plugin call names: by Ferry id, or by its origin (`https://host[:port]`).
    pub fn plugin_target(&self, id_or_origin: &str) -> Result<Option<PluginTarget>, MgmtError> {
        let record = if id_or_origin.starts_with("https://") {
            let Ok(url) = validate::normalize_url(id_or_origin) else {
                return Ok(None);
            };
            self.records()?.into_iter().find(|r| r.url == url)
        } else {
            self.record(id_or_origin)?
        };
        Ok(record.map(|r| PluginTarget {
            id: r.id,
            url: r.url,
            thumbprint: r.thumbprint,
            roles: r.plugin_roles,
        }))
    }

    /// Every stored vCenter's origin: who may frame the plugin pages.
    pub fn plugin_origins(&self) -> Result<Vec<String>, MgmtError> {
        Ok(self
            .records()?
            .into_iter()
            .map(|r| r.url.strip_suffix("/sdk").unwrap_or(&r.url).to_string())
            .collect())
    }

    /// A vCenter and its stored login: registering the plugin acts as that user.
    pub(crate) fn plugin_login(&self, id: &str) -> Result<(PluginTarget, Credentials), MgmtError> {
        let record = self.record(id)?.ok_or_else(|| not_found(id))?;
        let credentials = self.target(&record)?.credentials;
        let target = PluginTarget {
            id: record.id,
            url: record.url,
            thumbprint: record.thumbprint,
            roles: record.plugin_roles,
        };
        Ok((target, credentials))
    }
}
