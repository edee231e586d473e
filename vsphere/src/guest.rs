//! Guest operations through VMware Tools: copying a file into the guest
//! (InitiateFileTransferToGuest, then an HTTP PUT of the bytes) or out of it
//! (InitiateFileTransferFromGuest, then an HTTP GET), starting a program
//! (StartProgramInGuest) and listing processes (ListProcessesInGuest).
//!
//! When Tools is not running yet the calls fail with
//! [`VsphereError::GuestOperationsUnavailable`], which is retryable. The transfer URL points at
//! the ESXi host that runs the VM; its certificate is the host's, not the vCenter's, so
//! [`Client::put_guest_file`] takes the trust to check it with.

use std::time::Duration;

use reqwest::header::CONTENT_LENGTH;

use crate::client::{returnval, Client};
use crate::error::VsphereError;
use crate::soap::Request;
use crate::tls::TlsTrust;
use crate::transport::Transport;
use crate::types::MoRef;
use crate::xml::Element;

/// A user in the guest.
#[derive(Clone)]
pub struct GuestAuth {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for GuestAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Attributes of a file copied into the guest; `None` leaves the guest's default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestFileAttributes {
    Posix {
        owner_id: Option<i32>,
        group_id: Option<i32>,
        /// Mode bits, e.g. `0o755`.
        permissions: Option<u32>,
    },
    Windows {
        hidden: Option<bool>,
        read_only: Option<bool>,
    },
}

impl Default for GuestFileAttributes {
    fn default() -> Self {
        GuestFileAttributes::Posix {
            owner_id: None,
            group_id: None,
            permissions: None,
        }
    }
}

/// A program to start in the guest (`GuestProgramSpec`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GuestProgram {
    /// The absolute path of the program (`/bin/sh`).
    pub path: String,
    /// The arguments, one string as a shell would get them.
    pub arguments: String,
    pub working_dir: Option<String>,
    /// `NAME=value` entries.
    pub env: Vec<String>,
}

/// A process in the guest (`GuestProcessInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestProcess {
    pub pid: i64,
    pub name: String,
    pub owner: String,
    pub cmd_line: String,
    pub start_time: String,
    /// Set for a process started by StartProgramInGuest that has ended (kept for 5 minutes).
    pub end_time: Option<String>,
    pub exit_code: Option<i32>,
}

fn invalid(reason: impl Into<String>) -> VsphereError {
    VsphereError::InvalidInput {
        reason: reason.into(),
    }
}

fn check_auth(auth: &GuestAuth) -> Result<(), VsphereError> {
    if auth.username.is_empty() {
        return Err(invalid("the guest user name is empty"));
    }
    Ok(())
}

fn check_guest_path(what: &str, path: &str) -> Result<(), VsphereError> {
    if path.trim().is_empty() || path.chars().any(char::is_control) {
        return Err(invalid(format!("bad {what} {path:?}")));
    }
    Ok(())
}

/// `<vm/><auth xsi:type="NamePasswordAuthentication">`, shared by every guest call.
fn guest_request(
    method: &'static str,
    manager: &MoRef,
    vm: &MoRef,
    auth: &GuestAuth,
) -> Result<Request, VsphereError> {
    check_auth(auth)?;
    let mut req = Request::new(method, manager);
    req.moref("vm", vm)
        .open_typed("auth", "NamePasswordAuthentication")
        .value("interactiveSession", false)
        .text("username", &auth.username)
        .text("password", &auth.password)
        .close();
    Ok(req)
}

pub(crate) fn file_transfer_request(
    file_manager: &MoRef,
    vm: &MoRef,
    auth: &GuestAuth,
    guest_path: &str,
    attrs: &GuestFileAttributes,
    size: u64,
    overwrite: bool,
) -> Result<Request, VsphereError> {
    check_guest_path("guest file path", guest_path)?;
    let mut req = guest_request("InitiateFileTransferToGuest", file_manager, vm, auth)?;
    req.text("guestFilePath", guest_path);
    match attrs {
        GuestFileAttributes::Posix {
            owner_id,
            group_id,
            permissions,
        } => {
            req.open_typed("fileAttributes", "GuestPosixFileAttributes");
            if let Some(id) = owner_id {
                req.value("ownerId", id);
            }
            if let Some(id) = group_id {
                req.value("groupId", id);
            }
            if let Some(mode) = permissions {
                req.value("permissions", mode);
            }
        }
        GuestFileAttributes::Windows { hidden, read_only } => {
            req.open_typed("fileAttributes", "GuestWindowsFileAttributes");
            if let Some(h) = hidden {
                req.value("hidden", h);
            }
            if let Some(r) = read_only {
                req.value("readOnly", r);
            }
        }
    }
    req.close()
        .value("fileSize", size)
        .value("overwrite", overwrite);
    Ok(req)
}

pub(crate) fn start_program_request(
    process_manager: &MoRef,
    vm: &MoRef,
    auth: &GuestAuth,
    program: &GuestProgram,
) -> Result<Request, VsphereError> {
    check_guest_path("program path", &program.path)?;
    if let Some(dir) = &program.working_dir {
        check_guest_path("working directory", dir)?;
    }
    if let Some(bad) = program
        .env
        .iter()
        .find(|e| !e.contains('=') || e.starts_with('='))
    {
        return Err(invalid(format!(
            "environment entry {bad:?} is not NAME=value"
        )));
    }
    let mut req = guest_request("StartProgramInGuest", process_manager, vm, auth)?;
    req.open_typed("spec", "GuestProgramSpec")
        .text("programPath", &program.path)
        .text("arguments", &program.arguments);
    if let Some(dir) = &program.working_dir {
        req.text("workingDirectory", dir);
    }
    for e in &program.env {
        req.text("envVariables", e);
    }
    req.close();
    Ok(req)
}

pub(crate) fn list_processes_request(
    process_manager: &MoRef,
    vm: &MoRef,
    auth: &GuestAuth,
    pids: &[i64],
) -> Result<Request, VsphereError> {
    let mut req = guest_request("ListProcessesInGuest", process_manager, vm, auth)?;
    for pid in pids {
        req.value("pids", pid);
    }
    Ok(req)
}

pub(crate) fn file_transfer_from_request(
    file_manager: &MoRef,
    vm: &MoRef,
    auth: &GuestAuth,
    guest_path: &str,
) -> Result<Request, VsphereError> {
    check_guest_path("guest file path", guest_path)?;
    let mut req = guest_request("InitiateFileTransferFromGuest", file_manager, vm, auth)?;
    req.text("guestFilePath", guest_path);
    Ok(req)
}

/// What InitiateFileTransferFromGuest answers (`FileTransferInformation`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFileDownload {
    /// Where to GET the file (with [`Client::get_guest_file`]); good for one download.
    pub url: url::Url,
    /// The file's size in bytes when the call was made.
    pub size: u64,
    /// Posix mode bits, when the guest reported them.
    pub permissions: Option<u32>,
}

/// The `returnval` of InitiateFileTransferFromGuest: URL text as sent, size, permissions.
pub(crate) fn parse_transfer_from(
    resp: Element,
) -> Result<(String, u64, Option<u32>), VsphereError> {
    let info = returnval(&resp)?;
    let url_text = info
        .child_text("url")
        .ok_or_else(|| VsphereError::malformed("a file transfer without a url"))?;
    let size_text = info.child_text("size").unwrap_or_default().trim();
    let size = size_text
        .parse()
        .map_err(|_| VsphereError::malformed(format!("guest file size {size_text:?}")))?;
    let permissions = match info
        .child("attributes")
        .and_then(|a| a.child_text("permissions"))
    {
        Some(p) => Some(
            p.trim()
                .parse()
                .map_err(|_| VsphereError::malformed(format!("guest file permissions {p:?}")))?,
        ),
        None => None,
    };
    Ok((url_text.trim().to_string(), size, permissions))
}

/// The `returnval` of InitiateFileTransferToGuest: the transfer URL as sent.
fn parse_url_text(resp: Element) -> Result<String, VsphereError> {
    Ok(returnval(&resp)?.text.trim().to_string())
}

/// The transfer URL with a host of `*` replaced by the host the call went to, as the API
/// reference asks of clients.
pub(crate) fn resolve_transfer_url(text: &str, sdk: &url::Url) -> Result<url::Url, VsphereError> {
    let bad = || VsphereError::malformed(format!("file transfer URL {text:?}"));
    // `*` is not a host a URL parser takes: put the real one in first.
    let fixed = match (text.split_once("://"), sdk.host_str()) {
        (Some((scheme, rest)), Some(host)) if rest.starts_with('*') => {
            format!("{scheme}://{host}{}", &rest[1..])
        }
        _ => text.to_string(),
    };
    let url = url::Url::parse(&fixed).map_err(|_| bad())?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return Err(bad());
    }
    Ok(url)
}

fn parse_pid(resp: Element) -> Result<i64, VsphereError> {
    let text = &returnval(&resp)?.text;
    text.trim()
        .parse()
        .map_err(|_| VsphereError::malformed(format!("process id {text:?}")))
}

pub(crate) fn parse_processes(resp: Element) -> Result<Vec<GuestProcess>, VsphereError> {
    resp.children_named("returnval")
        .map(|p| {
            let text = |name: &str| p.child_text(name).map(str::to_string);
            let pid = p
                .child_text("pid")
                .and_then(|t| t.trim().parse().ok())
                .ok_or_else(|| VsphereError::malformed("a guest process without a pid"))?;
            Ok(GuestProcess {
                pid,
                name: text("name").unwrap_or_default(),
                owner: text("owner").unwrap_or_default(),
                cmd_line: text("cmdLine").unwrap_or_default(),
                start_time: text("startTime").unwrap_or_default(),
                end_time: text("endTime"),
                exit_code: p.child_text("exitCode").and_then(|t| t.trim().parse().ok()),
            })
        })
        .collect()
}

impl Client {
    /// The guest file and process managers (properties of the GuestOperationsManager).
    async fn guest_manager(&self, property: &'static str) -> Result<MoRef, VsphereError> {
        let ops = self
            .service_content()
            .guest_operations_manager
            .clone()
            .ok_or_else(|| VsphereError::MethodNotFound {
                method: "guest operations (the server has no GuestOperationsManager)".into(),
            })?;
        self.retrieve_one(&ops, &[property])
            .await?
            .and_then(|o| o.get(property).and_then(|v| v.as_moref()).cloned())
            .ok_or_else(|| VsphereError::MethodNotFound {
                method: format!("guest operations (the server has no {property})"),
            })
    }

    /// Prepares a copy of `size` bytes to `guest_path` in the guest and returns the URL to PUT
    /// them to (with [`Client::put_guest_file`]). The URL is good for one upload.
    pub async fn initiate_file_transfer_to_guest(
        &self,
        vm: &MoRef,
        auth: &GuestAuth,
        guest_path: &str,
        attrs: &GuestFileAttributes,
        size: u64,
        overwrite: bool,
    ) -> Result<url::Url, VsphereError> {
        let manager = self.guest_manager("fileManager").await?;
        let req = file_transfer_request(&manager, vm, auth, guest_path, attrs, size, overwrite)?;
        let text = self.invoke(req, parse_url_text).await?;
        resolve_transfer_url(&text, self.sdk_url())
    }

    /// PUTs `bytes` to a transfer URL. `trust` checks the ESXi host's certificate; `None`
    /// uses the vCenter's trust (right when the URL names the vCenter itself).
    pub async fn put_guest_file(
        &self,
        url: &url::Url,
        bytes: Vec<u8>,
        trust: Option<&TlsTrust>,
    ) -> Result<(), VsphereError> {
        let own;
        let transport = match trust {
            Some(trust) => {
                own = Transport::new(url.as_str(), trust, self.options().clone())?;
                &own
            }
            None => self.transport(),
        };
        // A slow guest disk: a floor of 1 MiB/s on top of the call timeout.
        let timeout = self.options().call_timeout + Duration::from_secs((bytes.len() as u64) >> 20);
        let len = bytes.len();
        let resp = transport
            .http()
            .put(url.clone())
            .timeout(timeout)
            .header(CONTENT_LENGTH, len)
            .body(bytes)
            .send()
            .await
            .map_err(|e| transport.map_error(e))?;
        match resp.status().as_u16() {
            200 | 201 | 204 => Ok(()),
            404 => Err(VsphereError::NotFound {
                what: format!("the guest file transfer {}", url.path()),
            }),
            status => Err(VsphereError::Http { status }),
        }
    }

    /// Prepares a copy of the guest file `guest_path` out of the guest: its size and the URL to
    /// GET it from (with [`Client::get_guest_file`]). A missing file is
    /// [`VsphereError::NotFound`].
    pub async fn initiate_file_transfer_from_guest(
        &self,
        vm: &MoRef,
        auth: &GuestAuth,
        guest_path: &str,
    ) -> Result<GuestFileDownload, VsphereError> {
        let manager = self.guest_manager("fileManager").await?;
        let req = file_transfer_from_request(&manager, vm, auth, guest_path)?;
        let (url, size, permissions) = self.invoke(req, parse_transfer_from).await?;
        Ok(GuestFileDownload {
            url: resolve_transfer_url(&url, self.sdk_url())?,
            size,
            permissions,
        })
    }

    /// GETs a guest file from a transfer URL, refusing more than `max_bytes` (the answer is
    /// [`VsphereError::InvalidInput`] then: the caller's limit, not the server, is at fault).
    /// `trust` as for [`Client::put_guest_file`].
    pub async fn get_guest_file(
        &self,
        url: &url::Url,
        max_bytes: u64,
        trust: Option<&TlsTrust>,
    ) -> Result<Vec<u8>, VsphereError> {
        let own;
        let transport = match trust {
            Some(trust) => {
                own = Transport::new(url.as_str(), trust, self.options().clone())?;
                &own
            }
            None => self.transport(),
        };
        let timeout = self.options().call_timeout + Duration::from_secs(max_bytes >> 20);
        let too_big = |n: u64| {
            VsphereError::invalid_input(format!(
                "the guest file {} has {n} bytes or more, more than the limit of {max_bytes}",
                url.path()
            ))
        };
        let mut resp = transport
            .http()
            .get(url.clone())
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| transport.map_error(e))?;
        match resp.status().as_u16() {
            200 => {}
            404 => {
                return Err(VsphereError::NotFound {
                    what: format!("the guest file transfer {}", url.path()),
                })
            }
            status => return Err(VsphereError::Http { status }),
        }
        if let Some(len) = resp.content_length().filter(|&n| n > max_bytes) {
            return Err(too_big(len));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| transport.map_error(e))? {
            if (body.len() + chunk.len()) as u64 > max_bytes {
                return Err(too_big((body.len() + chunk.len()) as u64));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Starts a program in the guest and returns its process id.
    pub async fn start_program_in_guest(
        &self,
        vm: &MoRef,
        auth: &GuestAuth,
        program: &GuestProgram,
    ) -> Result<i64, VsphereError> {
        let manager = self.guest_manager("processManager").await?;
        let req = start_program_request(&manager, vm, auth, program)?;
        self.invoke(req, parse_pid).await
    }

    /// The processes with these ids (every process when `pids` is empty).
    pub async fn list_processes_in_guest(
        &self,
        vm: &MoRef,
        auth: &GuestAuth,
        pids: &[i64],
    ) -> Result<Vec<GuestProcess>, VsphereError> {
        let manager = self.guest_manager("processManager").await?;
        let req = list_processes_request(&manager, vm, auth, pids)?;
        self.invoke(req, parse_processes).await
    }
}

#[cfg(test)]
#[path = "guest_tests.rs"]
mod tests;
