//! Users, roles, session and API tokens, login rate limiting (docs/MANAGEMENT.md "Authentication").
//! SKELETON: signatures agreed between modules; the bodies are being written.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::MgmtError;
use crate::state::State;

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

/// Authentication service over the `users` and `tokens` trees. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Auth {
    state: State,
}

impl Auth {
    pub fn new(state: State) -> Auth {
        Auth { state }
    }

    /// What is wrong with a new password (empty when it is acceptable); shown next to the form.
    pub fn password_problems(_password: &str) -> Vec<String> {
        Vec::new()
    }

    /// The `users` tree key and value of a new user, for setup's sled transaction.
    pub fn user_entry(
        _name: &str,
        _role: Role,
        _password: &str,
    ) -> Result<(Vec<u8>, Vec<u8>), MgmtError> {
        Err(MgmtError::Internal("not built yet".into()))
    }

    /// Checks a user name and password (rate limited, audited) and issues a 12 h session token.
    pub fn login(
        &self,
        _username: &str,
        _password: &str,
        _source: &str,
    ) -> Result<IssuedToken, MgmtError> {
        let _ = &self.state;
        Err(MgmtError::Internal("not built yet".into()))
    }

    /// The principal a bearer secret (session or API token) stands for.
    pub fn authenticate(&self, _secret: &str) -> Result<Principal, MgmtError> {
        Err(MgmtError::Unauthenticated("not built yet".into()))
    }

    /// Revokes the token the principal used (logout).
    pub fn logout(&self, _who: &Principal, _source: &str) -> Result<(), MgmtError> {
        Ok(())
    }

    /// A CSRF token bound to the principal's session.
    pub fn csrf_token(&self, _who: &Principal) -> String {
        String::new()
    }

    pub fn check_csrf(&self, _who: &Principal, _given: &str) -> bool {
        false
    }

    pub fn list_users(&self) -> Result<Vec<UserView>, MgmtError> {
        Ok(Vec::new())
    }

    pub fn create_user(
        &self,
        _by: &Principal,
        _source: &str,
        _name: &str,
        _role: Role,
        _password: &str,
    ) -> Result<UserView, MgmtError> {
        Err(MgmtError::Internal("not built yet".into()))
    }

    /// Changes role, password or disabled flag (each optional).
    pub fn update_user(
        &self,
        _by: &Principal,
        _source: &str,
        _name: &str,
        _role: Option<Role>,
        _password: Option<&str>,
        _disabled: Option<bool>,
    ) -> Result<UserView, MgmtError> {
        Err(MgmtError::Internal("not built yet".into()))
    }

    pub fn delete_user(
        &self,
        _by: &Principal,
        _source: &str,
        _name: &str,
    ) -> Result<(), MgmtError> {
        Err(MgmtError::Internal("not built yet".into()))
    }

    pub fn list_tokens(&self) -> Result<Vec<TokenView>, MgmtError> {
        Ok(Vec::new())
    }

    /// Creates an API token for `user` valid `ttl_days` (None: default 90; at most 730).
    pub fn create_api_token(
        &self,
        _by: &Principal,
        _source: &str,
        _user: &str,
        _name: &str,
        _ttl_days: Option<u32>,
    ) -> Result<IssuedToken, MgmtError> {
        Err(MgmtError::Internal("not built yet".into()))
    }

    pub fn revoke_token(&self, _by: &Principal, _source: &str, _id: &str) -> Result<(), MgmtError> {
        Err(MgmtError::Internal("not built yet".into()))
    }

    /// Makes sure `<data dir>/admin-token` holds a working API token of `admin` (after setup).
    pub fn ensure_admin_token_file(&self, _data_dir: &Path) -> Result<(), MgmtError> {
        Ok(())
    }
}
