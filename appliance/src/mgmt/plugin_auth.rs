//! Sign-in of the vCenter plugin: the plugin's pages run inside the vSphere Client and call
//! `/api/v1` with the user's vCenter session (`Authorization: vCenter-Session <id>` and
//! `X-Ferry-vCenter: <vCenter id or origin>`). The session is checked with that vCenter (the one
//! stored, over its pinned certificate): its `SessionManager.currentSession` names the user, whom the
//! vCenter's role table maps to a Ferry role.
//!
//! A checked session is remembered for a short time (60 s by default) under the SHA-256 of the
//! vCenter id and session id, so a page's burst of calls costs one round trip to the vCenter; the
//! session id itself is never kept. The role is looked up on every call, so a changed table applies
//! at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use sha2::{Digest, Sha256};

use super::auth::{Principal, Role, TokenKind};
use super::vcenters::{PluginTarget, Vcenters};
use super::MgmtError;

/// The `Authorization` scheme of plugin calls.
pub const AUTH_SCHEME: &str = "vCenter-Session";
/// The header naming the vCenter that issued the session.
pub const VCENTER_HEADER: &str = "X-Ferry-vCenter";
/// How long a checked session is trusted without asking the vCenter again.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// vCenter session ids are about 40-70 characters; anything much longer is not one.
pub const MAX_SESSION_ID_BYTES: usize = 512;
const MAX_VCENTER_REF_BYTES: usize = 300;
/// Bound of the cache: one entry per live plugin user session.
const MAX_CACHE_ENTRIES: usize = 4096;
/// A check that takes longer counts as an unreachable vCenter.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(20);

/// What a plugin call presents. The session id is only handed to the vCenter that issued it.
#[derive(Clone, PartialEq, Eq)]
pub struct PluginCredentials {
    /// The Ferry vCenter id, or the vCenter's origin `https://host[:port]`.
    pub vcenter: String,
    session_id: String,
}

impl std::fmt::Debug for PluginCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginCredentials")
            .field("vcenter", &self.vcenter)
            .field("session_id", &"<redacted>")
            .finish()
    }
}

impl PluginCredentials {
    /// From the `Authorization` header's value and the `X-Ferry-vCenter` header (if sent).
    /// `Ok(None)`: the `Authorization` scheme is not `vCenter-Session`, so this is no plugin call.
    pub fn parse(
        authorization: &str,
        vcenter: Option<&str>,
    ) -> Result<Option<PluginCredentials>, MgmtError> {
        let (scheme, rest) = authorization.split_once(' ').unwrap_or((authorization, ""));
        if !scheme.eq_ignore_ascii_case(AUTH_SCHEME) {
            return Ok(None);
        }
        let session_id = rest.trim();
        if session_id.is_empty() {
            return Err(MgmtError::BadRequest(format!(
                "Authorization: {AUTH_SCHEME} needs the vCenter session id"
            )));
        }
        if session_id.len() > MAX_SESSION_ID_BYTES {
            return Err(MgmtError::BadRequest(format!(
                "the vCenter session id is longer than {MAX_SESSION_ID_BYTES} bytes"
            )));
        }
        if !session_id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
        {
            return Err(MgmtError::BadRequest(
                "the vCenter session id has characters no session id has".into(),
            ));
        }
        let vcenter = vcenter.map(str::trim).unwrap_or("");
        if vcenter.is_empty() {
            return Err(MgmtError::BadRequest(format!(
                "a {AUTH_SCHEME} call names its vCenter in {VCENTER_HEADER} (the Ferry vCenter id)"
            )));
        }
        if vcenter.len() > MAX_VCENTER_REF_BYTES || !vcenter.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(MgmtError::BadRequest(format!(
                "{VCENTER_HEADER} is neither a vCenter id nor https://host[:port]"
            )));
        }
        Ok(Some(PluginCredentials {
            vcenter: vcenter.to_string(),
            session_id: session_id.to_string(),
        }))
    }
}

/// The Ferry role of a vCenter user: the exact name, else the name ignoring ASCII case (vCenter
/// domains and user names are not case-sensitive), else `*`.
pub fn role_for(roles: &BTreeMap<String, Role>, user: &str) -> Option<Role> {
    roles
        .get(user)
        .or_else(|| {
            roles
                .iter()
                .find(|(name, _)| name.as_str() != "*" && name.eq_ignore_ascii_case(user))
                .map(|(_, role)| role)
        })
        .or_else(|| roles.get("*"))
        .copied()
}

/// Why a session could not be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// The vCenter did not answer, or not over its pinned certificate; retrying may help.
    Unreachable(String),
}

/// Asks a vCenter whose session an id is. `Ok(None)`: the vCenter knows no such session.
pub trait SessionVerifier: Send + Sync {
    fn session_user<'a>(
        &'a self,
        target: &'a PluginTarget,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, VerifyError>>;
}

/// The real check: adopts the session in a vSphere client and reads `currentSession`. The session
/// is the user's: it is never logged out here.
#[derive(Debug, Clone)]
pub struct VsphereVerifier {
    pub options: vsphere::ClientOptions,
}

impl Default for VsphereVerifier {
    fn default() -> Self {
        VsphereVerifier {
            options: vsphere::ClientOptions {
                connect_timeout: Duration::from_secs(5),
                call_timeout: Duration::from_secs(15),
                ..vsphere::ClientOptions::default()
            },
        }
    }
}

impl SessionVerifier for VsphereVerifier {
    fn session_user<'a>(
        &'a self,
        target: &'a PluginTarget,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, VerifyError>> {
        Box::pin(async move {
            let unreachable = |e: vsphere::VsphereError| VerifyError::Unreachable(e.to_string());
            let client = vsphere::Client::with_session(
                &target.url,
                session_id,
                target.trust(),
                self.options.clone(),
            )
            .await
            .map_err(unreachable)?;
            let session = client.current_session().await.map_err(unreachable)?;
            Ok(session.map(|s| s.user_name).filter(|u| !u.is_empty()))
        })
    }
}

struct Checked {
    vcenter_id: String,
    user: String,
    at: Instant,
}

struct Inner {
    vcenters: Vcenters,
    verifier: Arc<dyn SessionVerifier>,
    ttl: Duration,
    cache: Mutex<HashMap<[u8; 32], Checked>>,
}

/// The plugin sign-in service. Cheap to clone.
#[derive(Clone)]
pub struct PluginAuth {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PluginAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginAuth")
            .field("ttl", &self.inner.ttl)
            .finish_non_exhaustive()
    }
}

fn cache_key(vcenter_id: &str, session_id: &str) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(vcenter_id.as_bytes());
    hash.update([0]);
    hash.update(session_id.as_bytes());
    hash.finalize().into()
}

impl PluginAuth {
    /// `ttl`: how long a checked session is trusted (zero: every call asks the vCenter).
    pub fn new(vcenters: Vcenters, verifier: Arc<dyn SessionVerifier>, ttl: Duration) -> Self {
        PluginAuth {
            inner: Arc::new(Inner {
                vcenters,
                verifier,
                ttl,
                cache: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The caller behind a plugin call, or why there is none: 401 `unauthenticated` for a vCenter
    /// Ferry does not know, 401 `vcenter_session_invalid`, 403 `plugin_user_not_mapped`, 503
    /// `vcenter_unreachable`.
    pub async fn authenticate(&self, creds: &PluginCredentials) -> Result<Principal, MgmtError> {
        self.authenticate_at(creds, Instant::now()).await
    }

    async fn authenticate_at(
        &self,
        creds: &PluginCredentials,
        now: Instant,
    ) -> Result<Principal, MgmtError> {
        let target = self
            .inner
            .vcenters
            .plugin_target(&creds.vcenter)?
            .ok_or_else(|| {
                MgmtError::Unauthenticated(format!(
                    "{} names no vCenter this appliance knows",
                    creds.vcenter
                ))
            })?;
        let key = cache_key(&target.id, &creds.session_id);
        let user = match self.cached(&key, &target.id, now) {
            Some(user) => user,
            None => {
                let user = self.verify(&target, &creds.session_id).await?;
                self.remember(key, &target.id, &user, now);
                user
            }
        };
        let role = role_for(&target.roles, &user).ok_or_else(|| {
            MgmtError::PluginUserNotMapped(format!(
                "the vCenter user {user} has no Ferry role; an admin gives it one in the vCenter's \
                 plugin_roles (PATCH /api/v1/vcenters/{})",
                target.id
            ))
        })?;
        Ok(Principal {
            user: format!("vcenter:{}:{user}", target.id),
            role,
            // Names the session without revealing it.
            token_id: format!("vcenter-session:{}", hex::encode(&key[..8])),
            kind: TokenKind::Session,
        })
    }

    async fn verify(&self, target: &PluginTarget, session_id: &str) -> Result<String, MgmtError> {
        let check = self.inner.verifier.session_user(target, session_id);
        let unreachable = |why: String| {
            MgmtError::VcenterUnreachable(format!(
                "cannot check the session with the vCenter at {}: {why}; retry shortly",
                target.url
            ))
        };
        match tokio::time::timeout(VERIFY_TIMEOUT, check).await {
            Ok(Ok(Some(user))) => Ok(user),
            Ok(Ok(None)) => Err(MgmtError::VcenterSessionInvalid(format!(
                "the vCenter at {} has no such session (signed out or expired); sign in to the \
                 vSphere Client again",
                target.url
            ))),
            Ok(Err(VerifyError::Unreachable(why))) => Err(unreachable(why)),
            Err(_) => Err(unreachable(format!(
                "no answer within {} s",
                VERIFY_TIMEOUT.as_secs()
            ))),
        }
    }

    fn cached(&self, key: &[u8; 32], vcenter_id: &str, now: Instant) -> Option<String> {
        let cache = self.inner.cache.lock().expect("plugin session cache lock");
        let entry = cache.get(key)?;
        let fresh = now.saturating_duration_since(entry.at) < self.inner.ttl;
        (fresh && entry.vcenter_id == vcenter_id).then(|| entry.user.clone())
    }

    fn remember(&self, key: [u8; 32], vcenter_id: &str, user: &str, now: Instant) {
        if self.inner.ttl.is_zero() {
            return;
        }
        let mut cache = self.inner.cache.lock().expect("plugin session cache lock");
        if cache.len() >= MAX_CACHE_ENTRIES {
            let ttl = self.inner.ttl;
            cache.retain(|_, e| now.saturating_duration_since(e.at) < ttl);
        }
        if cache.len() >= MAX_CACHE_ENTRIES {
            // Every entry is fresh: the oldest goes, and that session is simply checked again.
            if let Some(oldest) = cache.iter().min_by_key(|(_, e)| e.at).map(|(k, _)| *k) {
                cache.remove(&oldest);
            }
        }
        cache.insert(
            key,
            Checked {
                vcenter_id: vcenter_id.to_string(),
                user: user.to_string(),
                at: now,
            },
        );
    }

    /// Sessions remembered now (tests and metrics).
    pub fn cached_sessions(&self) -> usize {
        self.inner
            .cache
            .lock()
            .expect("plugin session cache lock")
            .len()
    }
}

#[cfg(test)]
#[path = "plugin_auth_tests.rs"]
mod tests;
