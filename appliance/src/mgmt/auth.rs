//! Users, roles, session and API tokens, login rate limiting and CSRF tokens (docs/MANAGEMENT.md
//! "Authentication"). No secret is ever stored: tokens are keyed by the SHA-256 of their secret and
//! passwords are argon2id hashes.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use super::login_limit::{self, LoginLimiter};
use super::MgmtError;
use crate::files;
use crate::state::{decode_record, encode_record, State};

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
/// base64url without padding of the 32 random bytes of a secret.
const SECRET_B64_CHARS: usize = 43;
/// OWASP's argon2id parameters: 19 MiB, 2 passes, 1 lane.
const ARGON2_M_KIB: u32 = 19_456;
const ARGON2_T: u32 = 2;
const ARGON2_P: u32 = 1;

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

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // ThreadRng is a CSPRNG seeded from the OS.
    rand::rng().fill_bytes(&mut out);
    out
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

fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The kind a secret claims by its prefix, if it has the shape of an issued secret.
fn secret_kind(secret: &str) -> Option<TokenKind> {
    let (kind, body) = if let Some(body) = secret.strip_prefix(SESSION_PREFIX) {
        (TokenKind::Session, body)
    } else {
        (TokenKind::Api, secret.strip_prefix(API_PREFIX)?)
    };
    let shaped = body.len() == SECRET_B64_CHARS
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    shaped.then_some(kind)
}

fn new_secret(kind: TokenKind) -> String {
    let prefix = match kind {
        TokenKind::Session => SESSION_PREFIX,
        TokenKind::Api => API_PREFIX,
    };
    let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>());
    format!("{prefix}{body}")
}

/// A user-supplied name as it appears in audit details: quoted, escaped, at most 64 characters.
fn shown(name: &str) -> String {
    format!(
        "{:?}",
        name.chars().take(MAX_NAME_CHARS).collect::<String>()
    )
}

/// 1..=64 characters of `[a-z0-9._-]`, starting with a letter or digit.
pub fn validate_user_name(name: &str) -> Result<(), MgmtError> {
    let problem = if name.is_empty() {
        "must not be empty"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
    {
        "may contain only lower-case letters a-z, digits, '.', '_' and '-'"
    } else if !name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        "must start with a letter or a digit"
    } else if name.len() > MAX_NAME_CHARS {
        "must have at most 64 characters"
    } else {
        return Ok(());
    };
    Err(MgmtError::invalid("name", problem))
}

fn validate_token_name(name: &str) -> Result<(), MgmtError> {
    let chars = name.chars().count();
    if name.trim().is_empty() || chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(MgmtError::invalid(
            "name",
            "must have 1 to 64 characters and no control characters",
        ));
    }
    Ok(())
}

fn argon2() -> Argon2<'static> {
    let params = Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, None)
        .expect("the constant argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The argon2id PHC string of a password, with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, MgmtError> {
    let salt = SaltString::encode_b64(&random_bytes::<16>())
        .map_err(|e| MgmtError::Internal(format!("password salt: {e}")))?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| MgmtError::Internal(format!("hashing a password: {e}")))
}

/// Whether `password` matches the PHC string `phc` (false for a malformed hash).
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => argon2().verify_password(password.as_bytes(), &hash).is_ok(),
        Err(_) => false,
    }
}

/// A hash no password matches in practice, so that a login for an unknown user costs as much as one
/// for a known user and user names cannot be probed by timing.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&hex::encode(random_bytes::<32>())).unwrap_or_default())
}

fn check_password(name: &str, password: &str) -> Result<(), MgmtError> {
    let problems = Auth::password_problems_for(name, password);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(MgmtError::invalid("password", problems.join(" ")))
    }
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

    /// The rules a new password must follow, for the form.
    pub fn password_rules() -> Vec<String> {
        [
            format!("At least {MIN_PASSWORD_CHARS} characters."),
            format!("At most {MAX_PASSWORD_CHARS} characters."),
            "Not the user name.".to_string(),
            "At least two kinds of characters: lower-case letters, upper-case letters, digits, others."
                .to_string(),
        ]
        .into()
    }

    /// What is wrong with a new password (empty when it is acceptable); shown next to the form.
    pub fn password_problems(password: &str) -> Vec<String> {
        Auth::password_problems_for("", password)
    }

    /// Like [`Auth::password_problems`], also refusing the user name itself (when not empty).
    pub fn password_problems_for(name: &str, password: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let chars = password.chars().count();
        if chars < MIN_PASSWORD_CHARS {
            problems.push(format!(
                "The password must have at least {MIN_PASSWORD_CHARS} characters."
            ));
        }
        if chars > MAX_PASSWORD_CHARS {
            problems.push(format!(
                "The password must have at most {MAX_PASSWORD_CHARS} characters."
            ));
        }
        if !name.is_empty() && password.to_lowercase() == name.to_lowercase() {
            problems.push("The password must not be the user name.".to_string());
        }
        let has = |f: fn(&char) -> bool| password.chars().any(|c| f(&c));
        let kinds = [
            has(|c| c.is_lowercase()),
            has(|c| c.is_uppercase()),
            has(|c| c.is_numeric()),
            has(|c| !c.is_lowercase() && !c.is_uppercase() && !c.is_numeric()),
        ];
        if kinds.iter().filter(|k| **k).count() < 2 {
            problems.push(
                "The password must mix at least two kinds of characters: lower-case letters, \
                 upper-case letters, digits, others."
                    .to_string(),
            );
        }
        problems
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
#[path = "auth_tests.rs"]
mod tests;
