//! The client: the service content, the login session (kept in the `vmware_soap_session` cookie
//! and renewed once on NotAuthenticated), and the plumbing every typed call goes through.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::VsphereError;
use crate::property::{parse_retrieve_result, retrieve_request, FilterSpec};
use crate::soap::{decode_response, Request};
use crate::tls::TlsTrust;
use crate::transport::{ClientOptions, Transport};
use crate::types::{MoRef, ServiceContent, UserSession};
use crate::xml::Element;

/// The API version the first call (RetrieveServiceContent) announces; every later call announces
/// the server's own `about.apiVersion`.
const BOOTSTRAP_API_VERSION: &str = "6.5";

/// Bodies larger than this are parsed on the blocking pool, not on the async worker.
const INLINE_PARSE_BYTES: usize = 256 << 10;

/// A user name and password for Login.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Debug)]
enum Auth {
    Password(Credentials),
    /// A session this client did not log in (cloned from a single-use ticket, or adopted): it
    /// cannot log in again.
    Ticket,
}

#[derive(Debug, Default)]
struct Session {
    cookie: Option<String>,
    /// Counts logins, so concurrent calls that all see NotAuthenticated log in only once.
    generation: u64,
    user: Option<UserSession>,
}

#[derive(Debug)]
struct Inner {
    url: String,
    trust: TlsTrust,
    transport: Transport,
    content: ServiceContent,
    soap_action: String,
    auth: Auth,
    session: Mutex<Session>,
    login_lock: tokio::sync::Mutex<()>,
}

/// A vSphere SOAP client bound to one vCenter (or ESXi) and one login session. Cheap to clone;
/// clones share the session.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// What a response parser is: a plain function, so it can run on the blocking pool.
pub(crate) type Parser<T> = fn(Element) -> Result<T, VsphereError>;

impl Client {
    /// Connects with default options: RetrieveServiceContent, then Login.
    pub async fn connect(
        url: &str,
        credentials: Credentials,
        trust: TlsTrust,
    ) -> Result<Client, VsphereError> {
        Self::connect_with(url, credentials, trust, ClientOptions::default()).await
    }

    pub async fn connect_with(
        url: &str,
        credentials: Credentials,
        trust: TlsTrust,
        options: ClientOptions,
    ) -> Result<Client, VsphereError> {
        let client = Self::bootstrap(url, trust, options, Auth::Password(credentials)).await?;
        client.login().await?;
        Ok(client)
    }

    /// Joins an existing session through a clone ticket (`AcquireCloneTicket` on the other session).
    /// Such a client cannot log in again when the session ends.
    pub async fn connect_with_ticket(
        url: &str,
        ticket: &str,
        trust: TlsTrust,
        options: ClientOptions,
    ) -> Result<Client, VsphereError> {
        let client = Self::bootstrap(url, trust, options, Auth::Ticket).await?;
        let mut req = Request::new("CloneSession", &client.inner.content.session_manager);
        req.text("cloneTicket", ticket);
        let body = req.finish()?;
        let timeout = client.options().call_timeout;
        let session = client
            .invoke_once("CloneSession", &body, timeout, parse_user_session)
            .await?;
        client.logged_in(session);
        Ok(client)
    }

    /// Adopts a session someone else logged in (a vSphere Client user's session id, the value of
    /// the `vmware_soap_session` cookie). It never logs in: whether the session is live is what
    /// [`Client::current_session`] tells.
    pub async fn with_session(
        url: &str,
        session_id: &str,
        trust: TlsTrust,
        options: ClientOptions,
    ) -> Result<Client, VsphereError> {
        let bad = |c: char| c.is_ascii_control() || c.is_whitespace() || c == ';' || c == ',';
        if session_id.is_empty() || session_id.chars().any(bad) {
            return Err(VsphereError::invalid_input(
                "a session id is visible ASCII without separators",
            ));
        }
        let client = Self::bootstrap(url, trust, options, Auth::Ticket).await?;
        client.session().cookie = Some(format!("{}={session_id}", crate::SESSION_COOKIE));
        Ok(client)
    }

    async fn bootstrap(
        url: &str,
        trust: TlsTrust,
        options: ClientOptions,
        auth: Auth,
    ) -> Result<Client, VsphereError> {
        let transport = Transport::new(url, &trust, options)?;
        let instance = MoRef::new("ServiceInstance", "ServiceInstance");
        let body = Request::new("RetrieveServiceContent", &instance).finish()?;
        let raw = transport
            .post(
                &format!("urn:vim25/{BOOTSTRAP_API_VERSION}"),
                None,
                body,
                transport.options.call_timeout,
            )
            .await?;
        let limits = transport.options.limits();
        let resp = decode_response(raw.status, &raw.body, "RetrieveServiceContent", &limits)?;
        let content = ServiceContent::from_element(returnval(&resp)?)?;
        let soap_action = format!("urn:vim25/{}", content.about.api_version);
        Ok(Client {
            inner: Arc::new(Inner {
                url: url.to_string(),
                trust,
                transport,
                content,
                soap_action,
                auth,
                session: Mutex::new(Session {
                    // vCenter may hand out the session cookie on the first contact already.
                    cookie: raw.session_cookie,
                    ..Session::default()
                }),
                login_lock: tokio::sync::Mutex::new(()),
            }),
        })
    }

    pub fn service_content(&self) -> &ServiceContent {
        &self.inner.content
    }

    /// The server's API version, announced in every call's SOAPAction.
    pub fn api_version(&self) -> &str {
        &self.inner.content.about.api_version
    }

    pub fn options(&self) -> &ClientOptions {
        &self.inner.transport.options
    }

    /// The SDK endpoint this client talks to.
    pub fn sdk_url(&self) -> &url::Url {
        &self.inner.transport.sdk
    }

    /// Counts logins of this client. Views, filters and paging tokens die with the session they
    /// were made in: whoever keeps one compares this number and recreates it when it changed.
    pub fn session_generation(&self) -> u64 {
        self.session().generation
    }

    /// The session of the last successful login, if any.
    pub fn user_session(&self) -> Option<UserSession> {
        self.session().user.clone()
    }

    /// The `vmware_soap_session=...` cookie, for datastore HTTP requests that need the session.
    pub fn session_cookie(&self) -> Option<String> {
        self.session().cookie.clone()
    }

    /// Logs in (again) with the client's credentials, replacing the session.
    pub async fn login(&self) -> Result<UserSession, VsphereError> {
        let _guard = self.inner.login_lock.lock().await;
        self.login_locked().await
    }

    async fn login_locked(&self) -> Result<UserSession, VsphereError> {
        let Auth::Password(credentials) = &self.inner.auth else {
            return Err(VsphereError::NotAuthenticated);
        };
        let body = login_request(&self.inner.content.session_manager, credentials).finish()?;
        // A fresh session: the server sets the new cookie in its answer.
        self.session().cookie = None;
        let timeout = self.options().call_timeout;
        let session = self
            .invoke_once("Login", &body, timeout, parse_user_session)
            .await?;
        self.logged_in(session.clone());
        Ok(session)
    }

    fn logged_in(&self, user: UserSession) {
        let mut session = self.session();
        session.generation += 1;
        session.user = Some(user);
    }

    /// Ends the session on the server. An already expired session counts as logged out.
    pub async fn logout(&self) -> Result<(), VsphereError> {
        let body = Request::new("Logout", &self.inner.content.session_manager).finish()?;
        let timeout = self.options().call_timeout;
        let result = self
            .invoke_once("Logout", &body, timeout, parse_nothing)
            .await;
        {
            let mut session = self.session();
            session.cookie = None;
            session.user = None;
        }
        match result {
            Ok(()) | Err(VsphereError::NotAuthenticated) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Whether `session_id` is a live session of `user_name` (needs Sessions.ValidateSession).
    pub async fn session_is_active(
        &self,
        session_id: &str,
        user_name: &str,
    ) -> Result<bool, VsphereError> {
        let mut req = Request::new("SessionIsActive", &self.inner.content.session_manager);
        req.text("sessionID", session_id)
            .text("userName", user_name);
        self.invoke(req, |resp| {
            let value = returnval(&resp)?;
            match value.text.trim() {
                "true" => Ok(true),
                "false" => Ok(false),
                other => Err(VsphereError::malformed(format!(
                    "SessionIsActive returned {other:?}"
                ))),
            }
        })
        .await
    }

    /// The server's view of this client's session; `None` when there is none. A probe: it does
    /// not log in again (vcsim answers a NotAuthenticated `missingSet`, vCenter an empty result).
    pub async fn current_session(&self) -> Result<Option<UserSession>, VsphereError> {
        let sm = self.inner.content.session_manager.clone();
        let pc = &self.inner.content.property_collector;
        let req = retrieve_request(pc, &[FilterSpec::object(&sm, &["currentSession"])], None);
        let body = req.finish()?;
        let timeout = self.options().call_timeout;
        let result = self
            .invoke_once(
                "RetrievePropertiesEx",
                &body,
                timeout,
                parse_retrieve_result,
            )
            .await;
        let objects = match result {
            Ok(r) => r.objects,
            Err(VsphereError::NotAuthenticated) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(value) = objects
            .into_iter()
            .find_map(|mut o| o.take("currentSession"))
        else {
            return Ok(None);
        };
        let crate::Value::Object(obj) = value else {
            return Err(VsphereError::malformed(
                "currentSession is not a UserSession",
            ));
        };
        let text = |name: &str| {
            obj.field(name)
                .and_then(crate::Value::as_str)
                .map(str::to_string)
        };
        let key = text("key").ok_or_else(|| VsphereError::malformed("UserSession has no key"))?;
        Ok(Some(UserSession {
            key,
            user_name: text("userName").unwrap_or_default(),
            full_name: text("fullName").unwrap_or_default(),
            login_time: text("loginTime").unwrap_or_default(),
            last_active_time: text("lastActiveTime").unwrap_or_default(),
            ip_address: text("ipAddress"),
            user_agent: text("userAgent"),
        }))
    }

    /// A one-time ticket another client can join this session with.
    pub async fn acquire_clone_ticket(&self) -> Result<String, VsphereError> {
        let req = Request::new("AcquireCloneTicket", &self.inner.content.session_manager);
        self.invoke(req, |resp| {
            let ticket = returnval(&resp)?.text.clone();
            if ticket.is_empty() {
                return Err(VsphereError::malformed("empty clone ticket"));
            }
            Ok(ticket)
        })
        .await
    }

    /// A second client on a clone of this session (its own cookie, same user).
    pub async fn clone_session(&self) -> Result<Client, VsphereError> {
        let ticket = self.acquire_clone_ticket().await?;
        Self::connect_with_ticket(
            &self.inner.url,
            &ticket,
            self.inner.trust.clone(),
            self.options().clone(),
        )
        .await
    }

    /// The HTTP transport, for requests that are not SOAP calls (datastore files).
    pub(crate) fn transport(&self) -> &Transport {
        &self.inner.transport
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        self.inner.session.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends a call; on NotAuthenticated logs in again once (unless another call already did)
    /// and repeats it.
    pub(crate) async fn invoke<T: Send + 'static>(
        &self,
        req: Request,
        parse: Parser<T>,
    ) -> Result<T, VsphereError> {
        let timeout = self.options().call_timeout;
        self.invoke_timeout(req, timeout, parse).await
    }

    pub(crate) async fn invoke_timeout<T: Send + 'static>(
        &self,
        req: Request,
        timeout: Duration,
        parse: Parser<T>,
    ) -> Result<T, VsphereError> {
        let method = req.method();
        let body = req.finish()?;
        let generation = self.session().generation;
        match self.invoke_once(method, &body, timeout, parse).await {
            Err(VsphereError::NotAuthenticated) if matches!(self.inner.auth, Auth::Password(_)) => {
                tracing::info!(
                    method,
                    "vSphere session is not authenticated; logging in again"
                );
                {
                    let _guard = self.inner.login_lock.lock().await;
                    if self.session().generation == generation {
                        self.login_locked().await?;
                    }
                }
                self.invoke_once(method, &body, timeout, parse).await
            }
            other => other,
        }
    }

    async fn invoke_once<T: Send + 'static>(
        &self,
        method: &'static str,
        body: &str,
        timeout: Duration,
        parse: Parser<T>,
    ) -> Result<T, VsphereError> {
        let cookie = self.session().cookie.clone();
        let raw = self
            .inner
            .transport
            .post(
                &self.inner.soap_action,
                cookie.as_deref(),
                body.to_string(),
                timeout,
            )
            .await?;
        if let Some(cookie) = raw.session_cookie {
            self.session().cookie = Some(cookie);
        }
        let limits = self.options().limits();
        let inline = raw.body.len() < INLINE_PARSE_BYTES;
        let decode =
            move || decode_response(raw.status, &raw.body, method, &limits).and_then(parse);
        if inline {
            decode()
        } else {
            tokio::task::spawn_blocking(decode)
                .await
                .map_err(|e| VsphereError::malformed(format!("response parser stopped: {e}")))?
        }
    }
}

pub(crate) fn login_request(session_manager: &MoRef, credentials: &Credentials) -> Request {
    let mut req = Request::new("Login", session_manager);
    req.text("userName", &credentials.username)
        .text("password", &credentials.password);
    req
}

/// The single `returnval` of a response.
pub(crate) fn returnval(resp: &Element) -> Result<&Element, VsphereError> {
    resp.child("returnval")
        .ok_or_else(|| VsphereError::malformed(format!("{} has no returnval", resp.name)))
}

/// The `returnval` of a method that returns a managed object reference.
pub(crate) fn parse_moref(resp: Element) -> Result<MoRef, VsphereError> {
    MoRef::from_element(returnval(&resp)?)
}

pub(crate) fn parse_nothing(_resp: Element) -> Result<(), VsphereError> {
    Ok(())
}

fn parse_user_session(resp: Element) -> Result<UserSession, VsphereError> {
    UserSession::from_element(returnval(&resp)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn with_session_refuses_ids_that_would_break_the_cookie() {
        // Port 1 is never contacted: the id is checked first.
        let url = "https://127.0.0.1:1/sdk";
        let trust = TlsTrust::Thumbprint("AB".repeat(32));
        for id in ["", "a b", "a;b", "a,b", "a\nb", "\u{7f}"] {
            let err = Client::with_session(url, id, trust.clone(), ClientOptions::default())
                .await
                .unwrap_err();
            assert!(
                matches!(err, VsphereError::InvalidInput { .. }),
                "{id:?}: {err:?}"
            );
        }
    }
}
