//! User and token administration on [`super::Auth`] (docs/MANAGEMENT.md "Authentication").

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use time::{Duration, OffsetDateTime};

use super::credentials::{check_password, hash_password, shown, validate_token_name};
use super::{
    encode, new_user_record, parse_time, user_not_found, Auth, IssuedToken, Principal, Role,
    TokenKind, TokenView, UserRecord, UserView, ADMIN_TOKEN_FILE, ADMIN_USER, DEFAULT_API_TTL_DAYS,
    LOCAL_CLI_TOKEN, MAX_API_TTL_DAYS,
};
use crate::files;
use crate::mgmt::MgmtError;

impl Auth {
    pub fn list_users(&self) -> Result<Vec<UserView>, MgmtError> {
        let mut users: Vec<UserView> = self.all_users()?.iter().map(UserRecord::view).collect();
        users.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(users)
    }

    pub fn create_user(
        &self,
        by: &Principal,
        source: &str,
        name: &str,
        role: Role,
        password: &str,
    ) -> Result<UserView, MgmtError> {
        let record = new_user_record(name, role, password)?;
        let created = self.users()?.compare_and_swap(
            name.as_bytes(),
            None as Option<&[u8]>,
            Some(encode(&record)?),
        )?;
        if created.is_err() {
            return Err(MgmtError::Conflict(format!("user {name} already exists")));
        }
        self.audit(
            &by.user,
            source,
            "user_created",
            &format!("{name} (role {role})"),
        )?;
        self.state.flush()?;
        Ok(record.view())
    }

    /// Refuses a change that would leave no enabled admin besides `name`.
    fn ensure_other_admin(&self, name: &str, change: &str) -> Result<(), MgmtError> {
        if self
            .all_users()?
            .iter()
            .any(|u| u.name != name && u.is_enabled_admin())
        {
            return Ok(());
        }
        Err(MgmtError::Conflict(format!(
            "cannot {change} {name}: it is the last enabled admin; make another user admin first"
        )))
    }

    /// Changes role, password or disabled flag (each optional). A new password also signs the user
    /// out of their other sessions (not of the one making the change).
    pub fn update_user(
        &self,
        by: &Principal,
        source: &str,
        name: &str,
        role: Option<Role>,
        password: Option<&str>,
        disabled: Option<bool>,
    ) -> Result<UserView, MgmtError> {
        let new_hash = match password {
            Some(password) => {
                check_password(name, password)?;
                Some(hash_password(password)?)
            }
            None => None,
        };
        let _changes = self.lock_user_changes();
        let mut record = self.user(name)?.ok_or_else(|| user_not_found(name))?;
        let was_admin = record.is_enabled_admin();
        let mut changes = Vec::new();
        match role {
            Some(role) if role != record.role => {
                changes.push(format!("role {} -> {role}", record.role));
                record.role = role;
            }
            _ => {}
        }
        match disabled {
            Some(disabled) if disabled != record.disabled => {
                changes.push(if disabled { "disabled" } else { "enabled" }.to_string());
                record.disabled = disabled;
            }
            _ => {}
        }
        if let Some(hash) = &new_hash {
            changes.push("password changed".to_string());
            record.password_hash = hash.clone();
        }
        if changes.is_empty() {
            return Ok(record.view());
        }
        if was_admin && !record.is_enabled_admin() {
            self.ensure_other_admin(name, "demote or disable")?;
        }
        self.put_user(&record)?;
        if new_hash.is_some() {
            for (key, token) in self.all_tokens()? {
                if token.user == name && token.kind == TokenKind::Session && token.id != by.token_id
                {
                    self.mark_revoked(&key, token)?;
                }
            }
        }
        let detail = format!("{name}: {}", changes.join(", "));
        self.audit(&by.user, source, "user_updated", &detail)?;
        self.state.flush()?;
        Ok(record.view())
    }

    /// Deletes a user and their tokens (so a later user of the same name does not inherit them).
    pub fn delete_user(&self, by: &Principal, source: &str, name: &str) -> Result<(), MgmtError> {
        let _changes = self.lock_user_changes();
        let record = self.user(name)?.ok_or_else(|| user_not_found(name))?;
        if record.is_enabled_admin() {
            self.ensure_other_admin(name, "delete")?;
        }
        self.users()?.remove(name.as_bytes())?;
        let mut removed = 0;
        for (key, token) in self.all_tokens()? {
            if token.user == name {
                self.tokens()?.remove(key)?;
                removed += 1;
            }
        }
        let detail = format!("{name} (role {}, {removed} tokens removed)", record.role);
        self.audit(&by.user, source, "user_deleted", &detail)?;
        self.state.flush()?;
        Ok(())
    }

    /// Every token, newest first; expired sessions are left out.
    pub fn list_tokens(&self) -> Result<Vec<TokenView>, MgmtError> {
        let now = OffsetDateTime::now_utc();
        let mut tokens = Vec::new();
        for (_, token) in self.all_tokens()? {
            if token.kind == TokenKind::Session && token.expired(now)? {
                continue;
            }
            tokens.push((parse_time(&token.created_at)?, token.view()));
        }
        tokens.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.id.cmp(&b.1.id)));
        Ok(tokens.into_iter().map(|(_, view)| view).collect())
    }

    /// Creates an API token for `user` valid `ttl_days` (None: default 90; at most 730).
    pub fn create_api_token(
        &self,
        by: &Principal,
        source: &str,
        user: &str,
        name: &str,
        ttl_days: Option<u32>,
    ) -> Result<IssuedToken, MgmtError> {
        let days = ttl_days.unwrap_or(DEFAULT_API_TTL_DAYS);
        if days == 0 || days > MAX_API_TTL_DAYS {
            return Err(MgmtError::invalid(
                "ttl_days",
                format!("must be between 1 and {MAX_API_TTL_DAYS} days"),
            ));
        }
        validate_token_name(name)?;
        let expires = OffsetDateTime::now_utc() + Duration::days(i64::from(days));
        let issued = self.issue(user, TokenKind::Api, name, Some(expires))?;
        let detail = format!(
            "token {} ({}) for {}, expires {}",
            issued.id,
            shown(name),
            issued.user,
            issued.expires_at.as_deref().unwrap_or("never")
        );
        self.audit(&by.user, source, "token_created", &detail)?;
        self.state.flush()?;
        Ok(issued)
    }

    pub fn revoke_token(&self, by: &Principal, source: &str, id: &str) -> Result<(), MgmtError> {
        let (key, token) = self
            .find_token(id)?
            .ok_or_else(|| MgmtError::NotFound("there is no token with this id".to_string()))?;
        let detail = format!(
            "token {} ({}) of {}",
            token.id,
            shown(&token.name),
            token.user
        );
        if self.mark_revoked(&key, token)? {
            self.audit(&by.user, source, "token_revoked", &detail)?;
            self.state.flush()?;
        }
        Ok(())
    }

    /// Makes sure `<data dir>/admin-token` holds a working API token of `admin` (after setup).
    pub fn ensure_admin_token_file(&self, data_dir: &Path) -> Result<(), MgmtError> {
        let path = data_dir.join(ADMIN_TOKEN_FILE);
        let io_err = |what: &str, e: std::io::Error| {
            MgmtError::Internal(format!("{what} {}: {e}", path.display()))
        };
        match fs::read_to_string(&path) {
            Ok(text) => {
                let works = self.authenticate(text.trim());
                if works.is_ok_and(|p| p.role == Role::Admin && p.kind == TokenKind::Api) {
                    // Someone may have loosened the mode; the token is as good as the admin password.
                    fs::set_permissions(
                        &path,
                        fs::Permissions::from_mode(files::PRIVATE_FILE_MODE),
                    )
                    .map_err(|e| io_err("restricting", e))?;
                    return Ok(());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(error = %e, "cannot read {}; replacing it", path.display()),
        }
        let admin = self.user(ADMIN_USER)?.ok_or_else(|| {
            MgmtError::Internal(format!(
                "there is no user {ADMIN_USER}: finish setup before the CLI token can be created"
            ))
        })?;
        if !admin.is_enabled_admin() {
            return Err(MgmtError::Internal(format!(
                "user {ADMIN_USER} is disabled or not an admin: the CLI token cannot be created"
            )));
        }
        let issued = self.issue(ADMIN_USER, TokenKind::Api, LOCAL_CLI_TOKEN, None)?;
        let written = files::replace_file(
            &path,
            format!("{}\n", issued.token).as_bytes(),
            files::PRIVATE_FILE_MODE,
        );
        if let Err(e) = written {
            // A never-expiring token nobody holds is only a liability.
            if let Some((key, token)) = self.find_token(&issued.id)? {
                self.mark_revoked(&key, token)?;
            }
            return Err(io_err("writing", e));
        }
        // Earlier CLI tokens no longer have a file; a stray copy of one must not work for ever.
        for (key, token) in self.all_tokens()? {
            if token.user == ADMIN_USER
                && token.name == LOCAL_CLI_TOKEN
                && token.expires_at.is_none()
                && token.id != issued.id
            {
                self.mark_revoked(&key, token)?;
            }
        }
        let detail = format!(
            "token {} ({LOCAL_CLI_TOKEN:?}) for {ADMIN_USER}, expires never",
            issued.id
        );
        self.audit("system", "local", "token_created", &detail)?;
        self.state.flush()?;
        Ok(())
    }
}

#[cfg(test)]
#[path = "auth_admin_tests.rs"]
mod tests;
