//! Users, roles, session and API tokens, login rate limiting and CSRF tokens (docs/MANAGEMENT.md
//! "Authentication"). No secret is ever stored: tokens are keyed by the SHA-256 of their secret and
//! passwords are argon2id hashes.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use super::login_limit::{self, LoginLimiter};
use super::MgmtError;
use crate::state::{decode_record, encode_record, State};

// User and token administration: a second `impl Auth`, in its own file to keep each file short.
#[path = "auth_admin.rs"]
mod admin;
// Password hashing and rules, user and token names, secret generation.
#[path = "auth_credentials.rs"]
mod credentials;

use credentials::{
    check_password, dummy_hash, hash_secret, new_secret, random_bytes, secret_kind, shown,
};
pub use credentials::{hash_password, validate_user_name, verify_password};

const USERS_TREE: &str = "users";
const TOKENS_TREE: &str = "tokens";
const CSRF_KEY_SETTING: &str = "csrf_key";
/// The CLI's token file in the data dir.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// The user setup creates.
pub const ADMIN_USER: &str = "admin";
/// Name of the API token in [`ADMIN_TOKEN_FILE`].
pub const LOCAL_CLI_TOKEN: &str = "local-cli";
pub const SESSION_PREFIX: &str = "fss_";
pub const API_PREFIX: &str = "fat_";
pub const SESSION_HOURS: i64 = 12;
pub const DEFAULT_API_TTL_DAYS: u32 = 90;
pub const MAX_API_TTL_DAYS: u32 = 730;
pub const MIN_PASSWORD_CHARS: usize = 12;
pub const MAX_PASSWORD_CHARS: usize = 1024;
pub const MAX_NAME_CHARS: usize = 64;

const MALFORMED: &str =
    "malformed token: expected a session (fss_...) or API (fat_...) token issued by this appliance";
const UNKNOWN: &str = "unknown token: sign in again or use a valid API token";
const EXPIRED: &str = "the token has expired: sign in again or create a new API token";
const REVOKED: &str = "the token was revoked (signed out or revoked by an administrator)";
const DISABLED: &str = "the token's user is disabled";
const BAD_LOGIN: &str = "wrong user name or password";

/// What a user may do. Ordered: each role can do everything the ones before it can.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    Session,
    Api,
}

/// Who is calling, after their token was checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub user: String,
    pub role: Role,
    /// Public id of the token used (never the secret).
    pub token_id: String,
    pub kind: TokenKind,
}

/// A freshly issued token: the only time its secret is visible.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IssuedToken {
    pub id: String,
    pub token: String,
    pub user: String,
    pub role: Role,
    pub kind: TokenKind,
    /// RFC 3339, UTC; absent for tokens that never expire.
    pub expires_at: Option<String>,
}

/// A user as the API shows it (never the hash).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserView {
    pub name: String,
    pub role: Role,
    pub created_at: String,
    pub disabled: bool,
}

/// A token as the API shows it (never the secret).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenView {
    pub id: String,
    pub user: String,
    pub kind: TokenKind,
    pub name: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked: bool,
}

/// A `users` record (field order is the stored JSON's).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct UserRecord {
    name: String,
    role: Role,
    password_hash: String,
    created_at: String,
    disabled: bool,
}

impl UserRecord {
    fn view(&self) -> UserView {
        UserView {
            name: self.name.clone(),
            role: self.role,
            created_at: self.created_at.clone(),
            disabled: self.disabled,
        }
    }

    fn is_enabled_admin(&self) -> bool {
        self.role == Role::Admin && !self.disabled
    }
}

/// A `tokens` record, stored under the hex SHA-256 of the secret.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct TokenRecord {
    id: String,
    user: String,
    kind: TokenKind,
    name: String,
    created_at: String,
    expires_at: Option<String>,
    revoked: bool,
}

impl TokenRecord {
    fn view(&self) -> TokenView {
        TokenView {
            id: self.id.clone(),
            user: self.user.clone(),
            kind: self.kind,
            name: self.name.clone(),
            created_at: self.created_at.clone(),
            expires_at: self.expires_at.clone(),
            revoked: self.revoked,
        }
    }

    fn expired(&self, now: OffsetDateTime) -> Result<bool, MgmtError> {
        match &self.expires_at {
            Some(at) => Ok(parse_time(at)? <= now),
            None => Ok(false),
        }
    }
}

struct Shared {
    users: OnceLock<sled::Tree>,
    tokens: OnceLock<sled::Tree>,
    limiter: LoginLimiter,
    /// Serializes user changes and token issuing: the last-admin checks read every user, and a user's
    /// deletion removes their tokens, so neither may interleave with another change.
    user_changes: Mutex<()>,
    csrf_key: OnceLock<[u8; 32]>,
}

/// Authentication service over the `users` and `tokens` trees. Cheap to clone.
#[derive(Clone)]
pub struct Auth {
    state: State,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the CSRF key.
        f.debug_struct("Auth").finish_non_exhaustive()
    }
}

fn fmt_time(t: OffsetDateTime) -> Result<String, MgmtError> {
    t.format(&Rfc3339)
        .map_err(|e| MgmtError::Internal(format!("formatting a time: {e}")))
}

fn parse_time(s: &str) -> Result<OffsetDateTime, MgmtError> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map_err(|e| MgmtError::Internal(format!("appliance state: bad time {s:?}: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, MgmtError> {
    let json = serde_json::to_vec(value)
        .map_err(|e| MgmtError::Internal(format!("encoding a record: {e}")))?;
    Ok(encode_record(&json))
}

fn decode<T: serde::de::DeserializeOwned>(tree: &str, raw: &[u8]) -> Result<T, MgmtError> {
    let corrupt = |e: String| {
        MgmtError::Internal(format!("appliance state: a {tree} record is corrupt: {e}"))
    };
    let body = decode_record(raw).map_err(corrupt)?;
    serde_json::from_slice(body).map_err(|e| corrupt(e.to_string()))
}

fn new_user_record(name: &str, role: Role, password: &str) -> Result<UserRecord, MgmtError> {
    validate_user_name(name)?;
    check_password(name, password)?;
    Ok(UserRecord {
        name: name.to_string(),
        role,
        password_hash: hash_password(password)?,
        created_at: fmt_time(OffsetDateTime::now_utc())?,
        disabled: false,
    })
}

fn user_not_found(name: &str) -> MgmtError {
    MgmtError::NotFound(format!("user {} does not exist", shown(name)))
}

impl Auth {
    pub fn new(state: State) -> Auth {
        // Computed now, so that the first login of an unknown name is not slower than later ones.
        let _ = dummy_hash();
        Auth {
            state,
            shared: Arc::new(Shared {
                users: OnceLock::new(),
                tokens: OnceLock::new(),
                limiter: LoginLimiter::default(),
                user_changes: Mutex::new(()),
                csrf_key: OnceLock::new(),
            }),
        }
    }

    /// The `users` tree key and value of a new user, for setup's sled transaction.
    pub fn user_entry(
        name: &str,
        role: Role,
        password: &str,
    ) -> Result<(Vec<u8>, Vec<u8>), MgmtError> {
        let record = new_user_record(name, role, password)?;
        Ok((name.as_bytes().to_vec(), encode(&record)?))
    }

    fn tree<'a>(
        &self,
        cell: &'a OnceLock<sled::Tree>,
        name: &str,
    ) -> Result<&'a sled::Tree, MgmtError> {
        if let Some(tree) = cell.get() {
            return Ok(tree);
        }
        let tree = self.state.db().open_tree(name)?;
        Ok(cell.get_or_init(|| tree))
    }

    fn users(&self) -> Result<&sled::Tree, MgmtError> {
        self.tree(&self.shared.users, USERS_TREE)
    }

    fn tokens(&self) -> Result<&sled::Tree, MgmtError> {
        self.tree(&self.shared.tokens, TOKENS_TREE)
    }

    fn lock_user_changes(&self) -> MutexGuard<'_, ()> {
        // The guarded data is in sled, not behind the mutex: a panic elsewhere leaves nothing torn.
        self.shared
            .user_changes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn audit(&self, actor: &str, source: &str, event: &str, detail: &str) -> Result<(), MgmtError> {
        Ok(self.state.audit_as(actor, source, event, detail)?)
    }

    fn user(&self, name: &str) -> Result<Option<UserRecord>, MgmtError> {
        match self.users()?.get(name.as_bytes())? {
            Some(raw) => decode(USERS_TREE, &raw).map(Some),
            None => Ok(None),
        }
    }

    fn all_users(&self) -> Result<Vec<UserRecord>, MgmtError> {
        self.users()?
            .iter()
            .map(|entry| decode(USERS_TREE, &entry?.1))
            .collect()
    }

    fn put_user(&self, record: &UserRecord) -> Result<(), MgmtError> {
        self.users()?
            .insert(record.name.as_bytes(), encode(record)?)?;
        Ok(())
    }

    fn all_tokens(&self) -> Result<Vec<(sled::IVec, TokenRecord)>, MgmtError> {
        self.tokens()?
            .iter()
            .map(|entry| {
                let (key, raw) = entry?;
                Ok((key, decode(TOKENS_TREE, &raw)?))
            })
            .collect()
    }

    fn find_token(&self, id: &str) -> Result<Option<(sled::IVec, TokenRecord)>, MgmtError> {
        Ok(self.all_tokens()?.into_iter().find(|(_, t)| t.id == id))
    }

    /// Stores a new token of an existing user; `expires: None` never expires (only the local CLI's).
    fn issue(
        &self,
        user: &str,
        kind: TokenKind,
        name: &str,
        expires: Option<OffsetDateTime>,
    ) -> Result<IssuedToken, MgmtError> {
        let _changes = self.lock_user_changes();
        let owner = self.user(user)?.ok_or_else(|| user_not_found(user))?;
        let secret = new_secret(kind);
        let record = TokenRecord {
            id: hex::encode(random_bytes::<8>()),
            user: owner.name.clone(),
            kind,
            name: name.to_string(),
            created_at: fmt_time(OffsetDateTime::now_utc())?,
            expires_at: expires.map(fmt_time).transpose()?,
            revoked: false,
        };
        self.tokens()?
            .insert(hash_secret(&secret).as_bytes(), encode(&record)?)?;
        Ok(IssuedToken {
            id: record.id,
            token: secret,
            user: owner.name,
            role: owner.role,
            kind,
            expires_at: record.expires_at,
        })
    }

    /// Marks a token revoked; `false` when it already was.
    fn mark_revoked(&self, key: &[u8], mut record: TokenRecord) -> Result<bool, MgmtError> {
        if record.revoked {
            return Ok(false);
        }
        record.revoked = true;
        self.tokens()?.insert(key, encode(&record)?)?;
        Ok(true)
    }

    fn prune_expired_sessions(&self) -> Result<usize, MgmtError> {
        let now = OffsetDateTime::now_utc();
        let mut pruned = 0;
        for (key, token) in self.all_tokens()? {
            if token.kind == TokenKind::Session && token.expired(now)? {
                self.tokens()?.remove(key)?;
                pruned += 1;
            }
        }
        Ok(pruned)
    }

    /// Checks a user name and password (rate limited, audited) and issues a 12 h session token.
    pub fn login(
        &self,
        username: &str,
        password: &str,
        source: &str,
    ) -> Result<IssuedToken, MgmtError> {
        let limiter = &self.shared.limiter;
        let address = login_limit::source_key(source);
        let who = shown(username);
        if let Err(retry_after_secs) = limiter.check(username, &address, Instant::now()) {
            self.audit(
                "anonymous",
                source,
                "login_failed",
                &format!("user {who}: rate limited"),
            )?;
            return Err(MgmtError::TooManyAttempts { retry_after_secs });
        }
        let user = match validate_user_name(username) {
            Ok(()) => self.user(username)?,
            Err(_) => None,
        };
        let outcome = match user {
            None => {
                // Same work as for a real user, so timing does not tell which names exist.
                let _ = verify_password(password, dummy_hash());
                Err("unknown user")
            }
            Some(user) if !verify_password(password, &user.password_hash) => Err("wrong password"),
            Some(user) if user.disabled => Err("user disabled"),
            Some(user) => Ok(user),
        };
        let user = match outcome {
            Ok(user) => user,
            Err(why) => {
                limiter.record_failure(username, &address, Instant::now());
                let detail = format!("user {who}: {why}");
                self.audit("anonymous", source, "login_failed", &detail)?;
                return Err(MgmtError::Unauthenticated(match why {
                    // Only someone who knows the password learns that the account is disabled.
                    "user disabled" => "this user is disabled; ask an administrator".to_string(),
                    _ => BAD_LOGIN.to_string(),
                }));
            }
        };
        limiter.record_success(&user.name);
        if let Err(err) = self.prune_expired_sessions() {
            tracing::warn!(error = %err, "could not prune expired sessions");
        }
        let expires = OffsetDateTime::now_utc() + Duration::hours(SESSION_HOURS);
        let issued = self.issue(&user.name, TokenKind::Session, "session", Some(expires))?;
        self.audit(
            &user.name,
            source,
            "login",
            &format!("session {}", issued.id),
        )?;
        Ok(issued)
    }

    /// The principal a bearer secret (session or API token) stands for.
    pub fn authenticate(&self, secret: &str) -> Result<Principal, MgmtError> {
        let unauthenticated = |m: &str| MgmtError::Unauthenticated(m.to_string());
        let kind = secret_kind(secret).ok_or_else(|| unauthenticated(MALFORMED))?;
        let raw = self
            .tokens()?
            .get(hash_secret(secret).as_bytes())?
            .ok_or_else(|| unauthenticated(UNKNOWN))?;
        let token: TokenRecord = decode(TOKENS_TREE, &raw)?;
        if token.kind != kind {
            return Err(unauthenticated(UNKNOWN));
        }
        if token.revoked {
            return Err(unauthenticated(REVOKED));
        }
        if token.expired(OffsetDateTime::now_utc())? {
            return Err(unauthenticated(EXPIRED));
        }
        // The role comes from the user, so a role change or disabling applies to existing tokens.
        let user = self
            .user(&token.user)?
            .ok_or_else(|| unauthenticated(UNKNOWN))?;
        if user.disabled {
            return Err(unauthenticated(DISABLED));
        }
        Ok(Principal {
            user: user.name,
            role: user.role,
            token_id: token.id,
            kind,
        })
    }

    /// Revokes the token the principal used (logout).
    pub fn logout(&self, who: &Principal, source: &str) -> Result<(), MgmtError> {
        let (key, token) = self
            .find_token(&who.token_id)?
            .ok_or_else(|| MgmtError::Unauthenticated(UNKNOWN.to_string()))?;
        if self.mark_revoked(&key, token)? {
            self.audit(
                &who.user,
                source,
                "logout",
                &format!("token {}", who.token_id),
            )?;
            self.state.flush()?;
        }
        Ok(())
    }

    fn csrf_key(&self) -> &[u8; 32] {
        self.shared.csrf_key.get_or_init(|| {
            self.load_or_create_csrf_key().unwrap_or_else(|err| {
                // Forms keep working until a restart; only their tokens change then.
                tracing::warn!(error = %err, "could not store the CSRF key; using one for this run only");
                random_bytes()
            })
        })
    }

    fn load_or_create_csrf_key(&self) -> Result<[u8; 32], MgmtError> {
        if let Some(stored) = self.state.setting(CSRF_KEY_SETTING)? {
            let mut key = [0u8; 32];
            if hex::decode_to_slice(stored.trim(), &mut key).is_ok() {
                return Ok(key);
            }
            tracing::warn!("the stored CSRF key is malformed; replacing it");
        }
        let key = random_bytes();
        self.state
            .set_setting(CSRF_KEY_SETTING, &hex::encode(key))?;
        Ok(key)
    }

    /// A CSRF token bound to the principal's session.
    pub fn csrf_token(&self, who: &Principal) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.csrf_key())
            .expect("HMAC takes keys of any length");
        mac.update(who.token_id.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    pub fn check_csrf(&self, who: &Principal, given: &str) -> bool {
        let expected = self.csrf_token(who);
        expected.as_bytes().ct_eq(given.as_bytes()).into()
    }
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
