//! Credential helpers of [`super::Auth`]: password hashing and rules, user and token names, and the
//! secrets of issued tokens.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::{
    Auth, TokenKind, API_PREFIX, MAX_NAME_CHARS, MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS,
    SESSION_PREFIX,
};
use crate::mgmt::MgmtError;

/// base64url without padding of the 32 random bytes of a secret.
const SECRET_B64_CHARS: usize = 43;
/// OWASP's argon2id parameters: 19 MiB, 2 passes, 1 lane.
const ARGON2_M_KIB: u32 = 19_456;
const ARGON2_T: u32 = 2;
const ARGON2_P: u32 = 1;

pub(super) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // ThreadRng is a CSPRNG seeded from the OS.
    rand::rng().fill_bytes(&mut out);
    out
}

pub(super) fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The kind a secret claims by its prefix, if it has the shape of an issued secret.
pub(super) fn secret_kind(secret: &str) -> Option<TokenKind> {
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

pub(super) fn new_secret(kind: TokenKind) -> String {
    let prefix = match kind {
        TokenKind::Session => SESSION_PREFIX,
        TokenKind::Api => API_PREFIX,
    };
    let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>());
    format!("{prefix}{body}")
}

/// A user-supplied name as it appears in audit details: quoted, escaped, at most 64 characters.
pub(super) fn shown(name: &str) -> String {
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

pub(super) fn validate_token_name(name: &str) -> Result<(), MgmtError> {
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
pub(super) fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&hex::encode(random_bytes::<32>())).unwrap_or_default())
}

pub(super) fn check_password(name: &str, password: &str) -> Result<(), MgmtError> {
    let problems = Auth::password_problems_for(name, password);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(MgmtError::invalid("password", problems.join(" ")))
    }
}

// The password rules, as associated functions so that forms and setup reach them through `Auth`.
impl Auth {
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
}
