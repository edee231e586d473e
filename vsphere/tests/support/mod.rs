//! A small HTTP/1.1 server on 127.0.0.1 that answers SOAP calls from a handler, plain or over TLS,
//! and `FakeVc`: a handler that behaves like a vCenter for the calls of the vsphere crate
//! (sessions by cookie, container views, paged RetrievePropertiesEx).
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The SOAP method (the first element of the Body).
    pub method: String,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The text of the first element with this local name in the request body.
    pub fn field(&self, name: &str) -> Option<String> {
        let root = vsphere::xml::parse(self.body.as_bytes(), &Default::default()).ok()?;
        find(&root, name).map(|e| e.text.clone())
    }
}

fn find<'a>(el: &'a vsphere::xml::Element, name: &str) -> Option<&'a vsphere::xml::Element> {
    if el.name == name {
        return Some(el);
    }
    el.children.iter().find_map(|c| find(c, name))
}

/// What the server does with a request.
pub enum Reply {
    Soap {
        status: u16,
        body: String,
        set_cookie: Option<String>,
    },
    /// These bytes, then the connection closes (for broken answers).
    Raw(Vec<u8>),
    /// Never answers.
    Hang,
}

impl Reply {
    pub fn ok(inner: &str) -> Reply {
        Reply::Soap {
            status: 200,
            body: envelope(inner),
            set_cookie: None,
        }
    }

    pub fn fault(type_name: &str, detail: &str) -> Reply {
        Reply::Soap {
            status: 500,
            body: envelope(&format!(
                r#"<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring/><detail><{type_name}Fault xmlns="urn:vim25" xsi:type="{type_name}">{detail}</{type_name}Fault></detail></soapenv:Fault>"#
            )),
            set_cookie: None,
        }
    }
}

pub fn envelope(inner: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>{inner}</soapenv:Body></soapenv:Envelope>"#
    )
}

pub type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

pub struct Server {
    pub url: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub fn methods(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.method.clone())
            .collect()
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn serve(handler: Handler) -> Server {
    start(handler, None).await
}

pub async fn serve_tls(handler: Handler, acceptor: tokio_rustls::TlsAcceptor) -> Server {
    start(handler, Some(acceptor)).await
}

async fn start(handler: Handler, tls: Option<tokio_rustls::TlsAcceptor>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            let log = log.clone();
            let tls = tls.clone();
            conns.spawn(async move {
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            connection(stream, handler, log).await;
                        }
                    }
                    None => connection(stream, handler, log).await,
                }
            });
        }
    });
    Server {
        url: format!("{scheme}://127.0.0.1:{port}/sdk"),
        seen,
        task,
    }
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    handler: Handler,
    log: Arc<Mutex<Vec<Seen>>>,
) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let headers: Vec<(String, String)> = head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).to_string();
        buf.drain(..head_end + length);
        let method = vsphere::xml::parse(body.as_bytes(), &Default::default())
            .ok()
            .and_then(|root| {
                root.child("Body")
                    .and_then(|b| b.children.first())
                    .map(|m| m.name.clone())
            })
            .unwrap_or_default();
        let seen = Seen {
            headers,
            body,
            method,
        };
        log.lock().unwrap().push(seen.clone());
        match handler(&seen) {
            Reply::Soap {
                status,
                body,
                set_cookie,
            } => {
                let mut out = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: text/xml; charset=utf-8\r\nContent-Length: {}\r\n",
                    body.len()
                );
                if let Some(c) = set_cookie {
                    out.push_str(&format!("Set-Cookie: {c}\r\n"));
                }
                out.push_str("\r\n");
                out.push_str(&body);
                if stream.write_all(out.as_bytes()).await.is_err() {
                    return;
                }
            }
            Reply::Raw(bytes) => {
                let _ = stream.write_all(&bytes).await;
                let _ = stream.shutdown().await;
                return;
            }
            Reply::Hang => {
                tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                return;
            }
        }
    }
}

/// A vCenter stand-in: user "user" / password "pass", sessions by cookie, views per session, and
/// RetrievePropertiesEx over a view paged by maxObjects with tokens per session.
#[derive(Default)]
pub struct FakeVc {
    pub api_version: String,
    pub vm_count: usize,
    /// Answer an unauthenticated RetrievePropertiesEx the vcsim way: 200 with a NotAuthenticated missingSet.
    pub missing_set_shape: bool,
    state: Mutex<VcState>,
}

#[derive(Default)]
struct VcState {
    next: u64,
    sessions: HashSet<String>,
    views: HashMap<String, String>,
    tokens: HashMap<String, (String, usize, usize)>,
    /// Expire every session after this many successful RetrievePropertiesEx/Continue calls.
    expire_after_pages: Option<usize>,
    pages: usize,
    tickets: HashSet<String>,
    password: Option<String>,
    filters: HashMap<String, String>,
    renames: Vec<(usize, String)>,
    version: u64,
}

impl FakeVc {
    pub fn new(vm_count: usize) -> Arc<FakeVc> {
        Arc::new(FakeVc {
            api_version: "7.0.3.0".into(),
            vm_count,
            ..FakeVc::default()
        })
    }

    /// Answers an unauthenticated RetrievePropertiesEx the way vcsim does.
    pub fn vcsim_style(vm_count: usize) -> Arc<FakeVc> {
        Arc::new(FakeVc {
            api_version: "6.5".into(),
            vm_count,
            missing_set_shape: true,
            ..FakeVc::default()
        })
    }

    pub fn handler(self: &Arc<Self>) -> Handler {
        let vc = self.clone();
        Arc::new(move |seen: &Seen| vc.answer(seen))
    }

    /// Changes the password Login accepts (default "pass").
    pub fn set_password(&self, password: &str) {
        self.state.lock().unwrap().password = Some(password.to_string());
    }

    /// Queues a rename that the next WaitForUpdatesEx reports.
    pub fn rename(&self, vm: usize, name: &str) {
        self.state
            .lock()
            .unwrap()
            .renames
            .push((vm, name.to_string()));
    }

    pub fn expire_sessions(&self) {
        self.state.lock().unwrap().sessions.clear();
    }

    pub fn expire_after_pages(&self, pages: usize) {
        let mut s = self.state.lock().unwrap();
        s.expire_after_pages = Some(pages);
        s.pages = 0;
    }

    fn answer(&self, seen: &Seen) -> Reply {
        let cookie = seen
            .header("Cookie")
            .and_then(|c| c.strip_prefix("vmware_soap_session="))
            .map(|c| c.trim_matches('"').to_string());
        let mut state = self.state.lock().unwrap();
        let session = cookie.filter(|c| state.sessions.contains(c));
        match seen.method.as_str() {
            "RetrieveServiceContent" => return Reply::ok(&service_content(&self.api_version)),
            "Login" | "CloneSession" => {
                let password = state.password.clone().unwrap_or_else(|| "pass".into());
                if seen.method == "CloneSession" {
                    let ticket = seen.field("cloneTicket").unwrap_or_default();
                    if !state.tickets.remove(&ticket) {
                        return Reply::fault("InvalidLogin", "");
                    }
                } else if seen.field("userName").as_deref() != Some("user")
                    || seen.field("password") != Some(password)
                {
                    return Reply::fault("InvalidLogin", "");
                }
                state.next += 1;
                let key = format!("session-{}", state.next);
                state.sessions.insert(key.clone());
                return Reply::Soap {
                    status: 200,
                    body: envelope(&format!(
                        r#"<{m}Response xmlns="urn:vim25"><returnval><key>{key}</key><userName>user</userName><fullName>User</fullName><loginTime>2026-01-01T00:00:00Z</loginTime><lastActiveTime>2026-01-01T00:00:00Z</lastActiveTime></returnval></{m}Response>"#,
                        m = seen.method
                    )),
                    set_cookie: Some(format!(
                        "vmware_soap_session=\"{key}\"; Path=/; HttpOnly; Secure"
                    )),
                };
            }
            _ => {}
        }
        let Some(session) = session else {
            if self.missing_set_shape && seen.method == "RetrievePropertiesEx" {
                return Reply::ok(
                    r#"<RetrievePropertiesExResponse xmlns="urn:vim25"><returnval><objects><obj type="SessionManager">SessionManager</obj><missingSet><path>currentSession</path><fault><fault xmlns:XMLSchema-instance="http://www.w3.org/2001/XMLSchema-instance" XMLSchema-instance:type="NotAuthenticated"><object type="SessionManager">SessionManager</object><privilegeId>System.Read</privilegeId></fault></fault></missingSet></objects></returnval></RetrievePropertiesExResponse>"#,
                );
            }
            return Reply::fault(
                "NotAuthenticated",
                r#"<object type="ViewManager">ViewManager</object><privilegeId>System.View</privilegeId>"#,
            );
        };
        match seen.method.as_str() {
            "Logout" => {
                state.sessions.remove(&session);
                Reply::ok(r#"<LogoutResponse xmlns="urn:vim25"/>"#)
            }
            "CreateContainerView" => {
                state.next += 1;
                let view = format!("session[{session}]view-{}", state.next);
                state.views.insert(view.clone(), session.clone());
                Reply::ok(&format!(
                    r#"<CreateContainerViewResponse xmlns="urn:vim25"><returnval type="ContainerView">{view}</returnval></CreateContainerViewResponse>"#
                ))
            }
            "DestroyView" => Reply::ok(r#"<DestroyViewResponse xmlns="urn:vim25"/>"#),
            "AcquireCloneTicket" => {
                state.next += 1;
                let ticket = format!("ticket-{}", state.next);
                state.tickets.insert(ticket.clone());
                Reply::ok(&format!(
                    r#"<AcquireCloneTicketResponse xmlns="urn:vim25"><returnval>{ticket}</returnval></AcquireCloneTicketResponse>"#
                ))
            }
            "SessionIsActive" => {
                let active = seen.field("userName").as_deref() == Some("user")
                    && state
                        .sessions
                        .contains(&seen.field("sessionID").unwrap_or_default());
                Reply::ok(&format!(
                    r#"<SessionIsActiveResponse xmlns="urn:vim25"><returnval>{active}</returnval></SessionIsActiveResponse>"#
                ))
            }
            "CreateFilter" => {
                state.next += 1;
                let filter = format!("session[{session}]filter-{}", state.next);
                state.filters.insert(session.clone(), filter.clone());
                Reply::ok(&format!(
                    r#"<CreateFilterResponse xmlns="urn:vim25"><returnval type="PropertyFilter">{filter}</returnval></CreateFilterResponse>"#
                ))
            }
            "DestroyPropertyFilter" => {
                state.filters.remove(&session);
                Reply::ok(r#"<DestroyPropertyFilterResponse xmlns="urn:vim25"/>"#)
            }
            "WaitForUpdatesEx" => {
                let empty = Reply::ok(r#"<WaitForUpdatesExResponse xmlns="urn:vim25"/>"#);
                // Filters belong to the session that made them: a new session waits on nothing.
                let Some(filter) = state.filters.get(&session).cloned() else {
                    return empty;
                };
                let name_change = |i: usize, kind: &str, name: &str| {
                    format!(
                        r#"<objectSet><kind>{kind}</kind><obj type="VirtualMachine">vm-{i}</obj><changeSet><name>name</name><op>assign</op><val xsi:type="xsd:string">{name}</val></changeSet></objectSet>"#
                    )
                };
                let objects: String = if seen.field("version").unwrap_or_default().is_empty() {
                    (0..self.vm_count)
                        .map(|i| name_change(i, "enter", &format!("vm {i}")))
                        .collect()
                } else {
                    let renames = std::mem::take(&mut state.renames);
                    if renames.is_empty() {
                        return empty;
                    }
                    renames
                        .iter()
                        .map(|(i, n)| name_change(*i, "modify", n))
                        .collect()
                };
                state.version += 1;
                Reply::ok(&format!(
                    r#"<WaitForUpdatesExResponse xmlns="urn:vim25"><returnval><version>{}</version><filterSet><filter type="PropertyFilter">{filter}</filter>{objects}</filterSet></returnval></WaitForUpdatesExResponse>"#,
                    state.version
                ))
            }
            "RetrievePropertiesEx" if seen.field("obj").as_deref() == Some("SessionManager") => {
                Reply::ok(&format!(
                    r#"<RetrievePropertiesExResponse xmlns="urn:vim25"><returnval><objects><obj type="SessionManager">SessionManager</obj><propSet><name>currentSession</name><val xmlns:XMLSchema-instance="http://www.w3.org/2001/XMLSchema-instance" XMLSchema-instance:type="UserSession"><key>{session}</key><userName>user</userName><fullName>User</fullName></val></propSet></objects></returnval></RetrievePropertiesExResponse>"#
                ))
            }
            "RetrievePropertiesEx" => {
                let view = seen.field("obj").unwrap_or_default();
                if state.views.get(&view) != Some(&session) {
                    return Reply::fault(
                        "ManagedObjectNotFound",
                        &format!(r#"<obj type="ContainerView">{view}</obj>"#),
                    );
                }
                let max = seen
                    .field("maxObjects")
                    .and_then(|m| m.parse().ok())
                    .unwrap_or(usize::MAX);
                self.page(&mut state, &session, 0, max)
            }
            "ContinueRetrievePropertiesEx" => {
                let token = seen.field("token").unwrap_or_default();
                match state.tokens.remove(&token) {
                    Some((owner, from, max)) if owner == session => {
                        self.page(&mut state, &session, from, max)
                    }
                    _ => Reply::fault(
                        "InvalidArgument",
                        "<invalidProperty>token</invalidProperty>",
                    ),
                }
            }
            other => Reply::fault(
                "MethodNotFound",
                &format!("<receiver type=\"X\">x</receiver><method>{other}</method>"),
            ),
        }
    }

    fn page(&self, state: &mut VcState, session: &str, from: usize, max: usize) -> Reply {
        let to = (from.saturating_add(max)).min(self.vm_count);
        let objects: String = (from..to).map(vm_object).collect();
        let token = if to < self.vm_count {
            state.next += 1;
            let token = format!("token-{}", state.next);
            state
                .tokens
                .insert(token.clone(), (session.to_string(), to, max));
            format!("<token>{token}</token>")
        } else {
            String::new()
        };
        state.pages += 1;
        if state.expire_after_pages == Some(state.pages) {
            state.sessions.clear();
            state.expire_after_pages = None;
        }
        let m = if from == 0 {
            "RetrievePropertiesEx"
        } else {
            "ContinueRetrievePropertiesEx"
        };
        Reply::ok(&format!(
            r#"<{m}Response xmlns="urn:vim25"><returnval>{token}{objects}</returnval></{m}Response>"#
        ))
    }
}

pub fn vm_object(i: usize) -> String {
    let t = r#"xmlns:XMLSchema-instance="http://www.w3.org/2001/XMLSchema-instance" XMLSchema-instance:type"#;
    format!(
        r#"<objects><obj type="VirtualMachine">vm-{i}</obj><propSet><name>name</name><val {t}="xsd:string">vm {i}</val></propSet><propSet><name>config.uuid</name><val {t}="xsd:string">uuid-{i}</val></propSet><propSet><name>runtime.powerState</name><val {t}="VirtualMachinePowerState">poweredOff</val></propSet><propSet><name>config.hardware.device</name><val {t}="ArrayOfVirtualDevice"><VirtualDevice XMLSchema-instance:type="VirtualDisk"><key>{i}</key><backing XMLSchema-instance:type="VirtualDiskFlatVer2BackingInfo"><fileName>[ds] vm-{i}/disk.vmdk</fileName></backing><controllerKey>1000</controllerKey><unitNumber>0</unitNumber><capacityInKB>{i}</capacityInKB></VirtualDevice></val></propSet></objects>"#
    )
}

pub fn service_content(api_version: &str) -> String {
    format!(
        r#"<RetrieveServiceContentResponse xmlns="urn:vim25"><returnval><rootFolder type="Folder">group-d1</rootFolder><propertyCollector type="PropertyCollector">propertyCollector</propertyCollector><viewManager type="ViewManager">ViewManager</viewManager><about><name>VMware vCenter Server</name><fullName>VMware vCenter Server 7.0.3</fullName><version>7.0.3</version><build>1</build><apiType>VirtualCenter</apiType><apiVersion>{api_version}</apiVersion><instanceUuid>00000000-0000-0000-0000-000000000001</instanceUuid></about><sessionManager type="SessionManager">SessionManager</sessionManager><eventManager type="EventManager">EventManager</eventManager></returnval></RetrieveServiceContentResponse>"#
    )
}
