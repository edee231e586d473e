//! The real [`Connector`]: the `vsphere` client. Changes are followed with a filter on a container view
//! of every VM (the same properties as the full listing) and `WaitForUpdatesEx`; each object update is
//! applied to this session's copy of the inventory and handed on as the VM's complete new description.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use vsphere::inventory::{apply_update, refresh_vm, VM_PROPERTIES};
use vsphere::{Client, ClientOptions, FilterSpec, MoRef, ObjectUpdateKind, VmInfo, VsphereError};

use super::{Change, Connector, Failure, Session, VcenterTarget};

/// Connects with the `vsphere` client.
#[derive(Clone, Debug, Default)]
pub struct VsphereConnector {
    pub options: ClientOptions,
}

impl Connector for VsphereConnector {
    fn connect(
        &self,
        target: &VcenterTarget,
    ) -> BoxFuture<'static, Result<Box<dyn Session>, Failure>> {
        let target = target.clone();
        let options = self.options.clone();
        async move {
            let host = host_of(&target.url);
            let started = Instant::now();
            let client = Client::connect_with(
                &target.url,
                target.credentials.clone(),
                target.trust.clone(),
                options,
            )
            .await
            .map_err(|err| failure(err, &host, "connecting and logging in", started.elapsed()))?;
            Ok(Box::new(VsphereSession {
                client,
                host,
                vms: BTreeMap::new(),
                watch: None,
            }) as Box<dyn Session>)
        }
        .boxed()
    }
}

/// A filter on a view of every VM, and where in its change stream this session is.
struct Watch {
    view: MoRef,
    filter: MoRef,
    version: String,
    /// The client's session generation the view and filter were made in: they die with it.
    generation: u64,
}

struct VsphereSession {
    client: Client,
    /// `host[:port]` of the vCenter, for the messages an operator reads.
    host: String,
    /// What the sink was last told, by moref.
    vms: BTreeMap<MoRef, VmInfo>,
    watch: Option<Watch>,
}

/// `host[:port]` of a vCenter URL (never a user name or password written into it).
pub(super) fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if host.is_empty() {
        "(no host)".to_string()
    } else {
        host.to_string()
    }
}

/// What an operator reads in `last_error` when a call to the vCenter at `host` fails after `took`:
/// a short sentence from the kind of error. The client's full text (the HTTP stack's error chain,
/// URLs, links to library docs) goes to the log only. A rejected login and a certificate mismatch keep
/// their own messages, which already say what the operator must do.
pub(super) fn failure(err: VsphereError, host: &str, during: &str, took: Duration) -> Failure {
    tracing::warn!(vcenter = %host, during, error = %err, "vCenter call failed");
    let message = match &err {
        VsphereError::InvalidLogin | VsphereError::CertificateMismatch { .. } => {
            return Failure::from(err);
        }
        VsphereError::Transport { reason } => transport_message(reason, host, took),
        VsphereError::Timeout => timed_out(host, took),
        VsphereError::Tls { .. } => {
            format!("the TLS handshake with the vCenter at {host} failed; retrying")
        }
        VsphereError::Http { status } => {
            format!("the vCenter at {host} answered with HTTP status {status}; retrying")
        }
        VsphereError::Malformed { .. } => {
            format!("the vCenter at {host} sent an answer that cannot be read; retrying")
        }
        VsphereError::NotAuthenticated => {
            format!("the session with the vCenter at {host} expired and logging in again failed; retrying")
        }
        // Faults and the rest are already short and say what the vCenter objected to.
        other => format!("{other} (vCenter at {host}); retrying"),
    };
    Failure::other(message)
}

fn timed_out(host: &str, took: Duration) -> String {
    format!(
        "the vCenter at {host} timed out after {} s; retrying",
        // Whole seconds, at least 1: "after 0 s" would read as no wait at all.
        ((took.as_millis() + 500) / 1000).max(1)
    )
}

/// The transport's reason is the HTTP stack's error chain as text: the kind of failure is read from
/// the words the operating system and the TLS library use for it.
fn transport_message(reason: &str, host: &str, took: Duration) -> String {
    let reason = reason.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| reason.contains(w));
    if has(&["connection refused"]) {
        format!("the vCenter at {host} does not answer (connection refused); retrying")
    } else if has(&["timed out", "timeout"]) {
        timed_out(host, took)
    } else if has(&[
        "dns error",
        "failed to lookup address",
        "name or service not known",
        "no address associated",
    ]) {
        format!("the name of the vCenter at {host} cannot be resolved (DNS); retrying")
    } else if has(&[
        "no route to host",
        "network is unreachable",
        "host is unreachable",
    ]) {
        format!("the vCenter at {host} cannot be reached (no route to it); retrying")
    } else if has(&[
        "close_notify",
        "connection closed",
        "connection reset",
        "broken pipe",
        "unexpected eof",
        "end of file",
        "incomplete message",
    ]) {
        format!("the vCenter at {host} closed the connection; retrying")
    } else {
        format!("the connection to the vCenter at {host} failed; retrying")
    }
}

fn renewed() -> Failure {
    // Views and filters die with a session; a full list is the only way to be sure nothing was missed.
    Failure::other("the vCenter session was renewed; starting over with a full list")
}

impl VsphereSession {
    async fn poll(&mut self, max_wait: Duration) -> Result<Vec<Change>, Failure> {
        let Some(watch) = self.watch.as_mut() else {
            return Err(Failure::other("changes asked for before watching"));
        };
        if self.client.session_generation() != watch.generation {
            return Err(renewed());
        }
        let seconds = u32::try_from(max_wait.as_secs()).unwrap_or(u32::MAX).max(1);
        let started = Instant::now();
        let update = self
            .client
            .wait_for_updates_ex(&watch.version, seconds, None)
            .await
            .map_err(|err| failure(err, &self.host, "waiting for changes", started.elapsed()))?;
        if self.client.session_generation() != watch.generation {
            return Err(renewed());
        }
        let Some(set) = update else {
            return Ok(Vec::new());
        };
        watch.version = set.version;
        let filter = watch.filter.clone();
        let mut changes = Vec::new();
        for update in set
            .filters
            .iter()
            .filter(|f| f.filter == filter)
            .flat_map(|f| &f.objects)
        {
            if update.obj.kind != "VirtualMachine" {
                continue;
            }
            if update.kind == ObjectUpdateKind::Leave {
                if self.vms.remove(&update.obj).is_some() {
                    changes.push(Change::Remove(update.obj.value.clone()));
                }
                continue;
            }
            // An `enter` carries every set property: build the VM afresh rather than on top of a copy
            // that may hold values unset since.
            let before = if update.kind == ObjectUpdateKind::Enter {
                self.vms.remove(&update.obj)
            } else {
                self.vms.get(&update.obj).cloned()
            };
            if !apply_update(&mut self.vms, update) {
                let started = Instant::now();
                let refreshed = refresh_vm(&self.client, &update.obj)
                    .await
                    .map_err(|err| failure(err, &self.host, "reading a VM", started.elapsed()))?;
                match refreshed {
                    Some(vm) => {
                        self.vms.insert(update.obj.clone(), vm);
                    }
                    None => {
                        self.vms.remove(&update.obj);
                    }
                }
            }
            match self.vms.get(&update.obj) {
                Some(after) if Some(after) != before.as_ref() => {
                    changes.push(Change::Upsert(Box::new(after.clone())))
                }
                Some(_) => {}
                None if before.is_some() => changes.push(Change::Remove(update.obj.value.clone())),
                None => {}
            }
        }
        Ok(changes)
    }
}

impl Session for VsphereSession {
    fn list_vms(&mut self) -> BoxFuture<'_, Result<Vec<VmInfo>, Failure>> {
        async move {
            let started = Instant::now();
            let vms = vsphere::list_vms(&self.client)
                .await
                .map_err(|err| failure(err, &self.host, "listing the VMs", started.elapsed()))?;
            self.vms = vms
                .iter()
                .map(|vm| (vm.moref.clone(), vm.clone()))
                .collect();
            Ok(vms)
        }
        .boxed()
    }

    fn watch(&mut self) -> BoxFuture<'_, Result<(), Failure>> {
        async move {
            let generation = self.client.session_generation();
            let root = self.client.service_content().root_folder.clone();
            let started = Instant::now();
            let fail = |err| {
                failure(
                    err,
                    &self.host,
                    "creating the change filter",
                    started.elapsed(),
                )
            };
            let view = self
                .client
                .create_container_view(&root, &["VirtualMachine"], true)
                .await
                .map_err(fail)?;
            let spec = FilterSpec::container_view(&view, "VirtualMachine", VM_PROPERTIES);
            let filter = self
                .client
                .create_filter(&spec, false)
                .await
                .map_err(fail)?;
            self.watch = Some(Watch {
                view,
                filter,
                version: String::new(),
                generation,
            });
            Ok(())
        }
        .boxed()
    }

    fn changes(&mut self, max_wait: Duration) -> BoxFuture<'_, Result<Vec<Change>, Failure>> {
        self.poll(max_wait).boxed()
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        async move {
            if let Some(watch) = self.watch {
                let _ = self.client.destroy_filter(&watch.filter).await;
                let _ = self.client.destroy_view(&watch.view).await;
            }
            if let Err(err) = self.client.logout().await {
                tracing::debug!(%err, "vCenter logout failed");
            }
        }
        .boxed()
    }
}
