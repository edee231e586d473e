//! Guest credential sets: named guest logins (a user with a password or a private key) that push
//! installs refer to by id, so an operator types a root password once instead of with every job, a
//! fleet of VMs shares one login, and a job interrupted by a restart can run again on its own (its
//! secret is still there).
//!
//! The secret is sealed like vCenter passwords (XChaCha20-Poly1305 under `<data dir>/credentials.key`,
//! never in sled; see `vcenter_seal`), with the associated data `guest-credential:<id>` so a sealed
//! secret moved onto another record does not open. Answers never carry the secret.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::auth::Principal;
use super::vcenters::seal::CredentialKey;
use super::{MgmtError, Page, PageRequest};
use crate::state::{decode_record, encode_record, now_rfc3339, State, StateError};

pub const GUEST_CREDENTIALS_TREE: &str = "guest_credentials";
/// More than any site names; keeps a runaway script from filling the state database.
pub const MAX_CREDENTIALS: usize = 1000;
const MAX_NAME: usize = 64;
const MAX_USERNAME: usize = 64;
const MAX_SECRET: usize = 1024;
const MAX_PRIVATE_KEY: usize = 16 << 10;

/// How the guest login proves itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    Password,
    PrivateKey,
}

/// The secret part, as given and as sealed (JSON inside the seal).
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum GuestSecret {
    Password {
        password: String,
    },
    PrivateKey {
        /// OpenSSH or PEM private key.
        private_key: String,
        passphrase: Option<String>,
    },
}

impl std::fmt::Debug for GuestSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets, not even in debug output.
        f.write_str(match self {
            GuestSecret::Password { .. } => "Password(..)",
            GuestSecret::PrivateKey { .. } => "PrivateKey(..)",
        })
    }
}

impl GuestSecret {
    fn kind(&self) -> CredentialKind {
        match self {
            GuestSecret::Password { .. } => CredentialKind::Password,
            GuestSecret::PrivateKey { .. } => CredentialKind::PrivateKey,
        }
    }

    fn validate(&self) -> Result<(), MgmtError> {
        match self {
            GuestSecret::Password { password } => {
                if password.is_empty() || password.len() > MAX_SECRET {
                    return Err(MgmtError::invalid(
                        "auth.password",
                        format!("must be 1 to {MAX_SECRET} bytes"),
                    ));
                }
            }
            GuestSecret::PrivateKey {
                private_key,
                passphrase,
            } => {
                if private_key.len() > MAX_PRIVATE_KEY {
                    return Err(MgmtError::invalid(
                        "auth.private_key",
                        format!("longer than {MAX_PRIVATE_KEY} bytes"),
                    ));
                }
                if passphrase.as_ref().is_some_and(|p| p.len() > MAX_SECRET) {
                    return Err(MgmtError::invalid(
                        "auth.passphrase",
                        format!("longer than {MAX_SECRET} bytes"),
                    ));
                }
                // A key that cannot be read (or a wrong passphrase) is refused now, not at 3 a.m.
                // when a job first uses it.
                actors::push::ssh::check_private_key(private_key, passphrase.as_deref())
                    .map_err(|e| MgmtError::invalid("auth.private_key", e.to_string()))?;
            }
        }
        Ok(())
    }
}

/// A credential set as requested.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGuestCredential {
    /// Unique label, e.g. `linux-root`.
    pub name: String,
    /// The guest user to log in as.
    pub username: String,
    pub auth: GuestSecret,
}

/// A change to a credential set; absent fields stay.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GuestCredentialUpdate {
    pub name: Option<String>,
    pub username: Option<String>,
    pub auth: Option<GuestSecret>,
}

/// A credential set as the API shows it (never the secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GuestCredentialView {
    pub id: String,
    pub name: String,
    pub username: String,
    pub kind: CredentialKind,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct CredentialRecord {
    #[serde(flatten)]
    view: GuestCredentialView,
    secret_sealed: String,
}

/// The credential sets. Cheap to clone.
#[derive(Clone)]
pub struct GuestCredentials {
    state: State,
    tree: sled::Tree,
    data_dir: PathBuf,
    key: Arc<Mutex<Option<CredentialKey>>>,
    /// Serialises check-then-write (unique names, the count limit).
    write: Arc<Mutex<()>>,
}

impl std::fmt::Debug for GuestCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestCredentials").finish_non_exhaustive()
    }
}

fn aad(id: &str) -> String {
    format!("guest-credential:{id}")
}

fn not_found(id: &str) -> MgmtError {
    MgmtError::NotFound(format!("no guest credential {id}"))
}

fn check_name(name: &str) -> Result<String, MgmtError> {
    let name = name.trim();
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ' '));
    if !ok {
        return Err(MgmtError::invalid(
            "name",
            format!("1 to {MAX_NAME} characters: letters, digits, space, '-', '_' or '.'"),
        ));
    }
    Ok(name.to_string())
}

fn check_username(username: &str) -> Result<String, MgmtError> {
    // The same rule a Linux user name follows, loosely: the name ends up on a command line.
    let ok = !username.is_empty()
        && username.len() <= MAX_USERNAME
        && !username.starts_with('-')
        && username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | '\\' | '$'));
    if !ok {
        return Err(MgmtError::invalid(
            "username",
            format!("1 to {MAX_USERNAME} characters: letters, digits, '-', '_', '.', '@', '\\' or '$'; not starting with '-'"),
        ));
    }
    Ok(username.to_string())
}

impl GuestCredentials {
    pub fn new(state: State, data_dir: PathBuf) -> Result<GuestCredentials, MgmtError> {
        let tree = state.db().open_tree(GUEST_CREDENTIALS_TREE)?;
        Ok(GuestCredentials {
            state,
            tree,
            data_dir,
            key: Arc::new(Mutex::new(None)),
            write: Arc::new(Mutex::new(())),
        })
    }

    fn key(&self) -> Result<CredentialKey, MgmtError> {
        let mut key = self.key.lock().expect("credential key lock");
        if let Some(key) = key.as_ref() {
            return Ok(key.clone());
        }
        let loaded = CredentialKey::load_or_create(&self.data_dir)?;
        *key = Some(loaded.clone());
        Ok(loaded)
    }

    fn records(&self) -> Result<Vec<CredentialRecord>, MgmtError> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            let (k, v) = item?;
            out.push(decode(&k, &v)?);
        }
        out.sort_by(|a, b| a.view.name.cmp(&b.view.name));
        Ok(out)
    }

    fn record(&self, id: &str) -> Result<CredentialRecord, MgmtError> {
        match self.tree.get(id.as_bytes())? {
            Some(raw) => Ok(decode(id.as_bytes(), &raw)?),
            None => Err(not_found(id)),
        }
    }

    fn put(&self, record: &CredentialRecord) -> Result<(), MgmtError> {
        let body = serde_json::to_vec(record).expect("credential records always serialize");
        self.tree
            .insert(record.view.id.as_bytes(), encode_record(&body))?;
        Ok(())
    }

    fn seal(&self, id: &str, secret: &GuestSecret) -> Result<String, MgmtError> {
        let json = serde_json::to_string(secret).expect("secrets always serialize");
        Ok(self.key()?.seal(&aad(id), &json))
    }

    pub fn list(&self, page: PageRequest) -> Result<Page<GuestCredentialView>, MgmtError> {
        page.apply(self.records()?.into_iter().map(|r| r.view).collect())
    }

    pub fn get(&self, id: &str) -> Result<GuestCredentialView, MgmtError> {
        Ok(self.record(id)?.view)
    }

    /// The login a job uses: the user name and the opened secret.
    pub fn resolve(&self, id: &str) -> Result<(String, GuestSecret), MgmtError> {
        let record = self.record(id)?;
        let json = self
            .key()?
            .open(&aad(id), &record.secret_sealed)
            .map_err(|_| {
                MgmtError::Internal(format!(
                    "the secret of guest credential {id} ({}) cannot be opened: credentials.key is \
                     not the key it was sealed with, or the record was altered; set it again \
                     (PATCH /api/v1/guest-credentials/{id})",
                    record.view.name
                ))
            })?;
        let secret: GuestSecret = serde_json::from_str(&json).map_err(|e| {
            MgmtError::Internal(format!(
                "guest credential {id}: sealed secret unreadable: {e}"
            ))
        })?;
        Ok((record.view.username, secret))
    }

    pub fn add(
        &self,
        by: &Principal,
        source: &str,
        new: NewGuestCredential,
    ) -> Result<GuestCredentialView, MgmtError> {
        let name = check_name(&new.name)?;
        let username = check_username(&new.username)?;
        new.auth.validate()?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let record = CredentialRecord {
            secret_sealed: self.seal(&id, &new.auth)?,
            view: GuestCredentialView {
                id: id.clone(),
                name: name.clone(),
                username: username.clone(),
                kind: new.auth.kind(),
                created_by: by.user.clone(),
                created_at: now_rfc3339(),
                updated_at: None,
            },
        };
        {
            let _write = self.write.lock().expect("credential write lock");
            let existing = self.records()?;
            if existing.len() >= MAX_CREDENTIALS {
                return Err(MgmtError::Conflict(format!(
                    "{MAX_CREDENTIALS} guest credentials exist; remove unused ones first"
                )));
            }
            if existing.iter().any(|r| r.view.name == name) {
                return Err(MgmtError::Conflict(format!(
                    "a guest credential named {name:?} exists"
                )));
            }
            self.put(&record)?;
        }
        self.state.audit_as(
            &by.user,
            source,
            "guest_credential_added",
            &format!("{id} {name:?} (user {username}, {:?})", record.view.kind),
        )?;
        self.state.flush()?;
        Ok(record.view)
    }

    pub fn update(
        &self,
        by: &Principal,
        source: &str,
        id: &str,
        change: GuestCredentialUpdate,
    ) -> Result<GuestCredentialView, MgmtError> {
        let name = change.name.as_deref().map(check_name).transpose()?;
        let username = change.username.as_deref().map(check_username).transpose()?;
        if let Some(auth) = &change.auth {
            auth.validate()?;
        }
        if name.is_none() && username.is_none() && change.auth.is_none() {
            return Err(MgmtError::BadRequest(
                "nothing to change: send name, username or auth".into(),
            ));
        }
        let view = {
            let _write = self.write.lock().expect("credential write lock");
            let mut record = self.record(id)?;
            if let Some(name) = &name {
                if self
                    .records()?
                    .iter()
                    .any(|r| r.view.name == *name && r.view.id != id)
                {
                    return Err(MgmtError::Conflict(format!(
                        "a guest credential named {name:?} exists"
                    )));
                }
                record.view.name = name.clone();
            }
            if let Some(username) = username {
                record.view.username = username;
            }
            if let Some(auth) = &change.auth {
                record.secret_sealed = self.seal(id, auth)?;
                record.view.kind = auth.kind();
            }
            record.view.updated_at = Some(now_rfc3339());
            self.put(&record)?;
            record.view
        };
        let what = match (&change.auth, &change.name, &change.username) {
            (Some(_), _, _) => "secret changed",
            _ => "renamed or user changed",
        };
        self.state.audit_as(
            &by.user,
            source,
            "guest_credential_updated",
            &format!("{id} {:?} (user {}): {what}", view.name, view.username),
        )?;
        self.state.flush()?;
        Ok(view)
    }

    pub fn remove(&self, by: &Principal, source: &str, id: &str) -> Result<(), MgmtError> {
        let record = {
            let _write = self.write.lock().expect("credential write lock");
            let record = self.record(id)?;
            self.tree.remove(id.as_bytes())?;
            record
        };
        self.state.audit_as(
            &by.user,
            source,
            "guest_credential_removed",
            &format!("{id} {:?}", record.view.name),
        )?;
        self.state.flush()?;
        Ok(())
    }
}

fn decode(key: &[u8], raw: &[u8]) -> Result<CredentialRecord, StateError> {
    let corrupt = |reason: String| StateError::Corrupt {
        tree: GUEST_CREDENTIALS_TREE,
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
    };
    let body = decode_record(raw).map_err(corrupt)?;
    serde_json::from_slice(body).map_err(|e| corrupt(e.to_string()))
}

#[cfg(test)]
#[path = "guest_credentials_tests.rs"]
mod tests;
