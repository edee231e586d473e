//! The real [`Connector`]: the `vsphere` client. Changes are followed with a filter on a container view
//! of every VM (the same properties as the full listing) and `WaitForUpdatesEx`; each object update is
//! applied to this session's copy of the inventory and handed on as the VM's complete new description.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use vsphere::inventory::{apply_update, refresh_vm, VM_PROPERTIES};
use vsphere::{Client, ClientOptions, FilterSpec, MoRef, ObjectUpdateKind, VmInfo};

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
            let client = Client::connect_with(
                &target.url,
                target.credentials.clone(),
                target.trust.clone(),
                options,
            )
            .await?;
            Ok(Box::new(VsphereSession {
                client,
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
    /// What the sink was last told, by moref.
    vms: BTreeMap<MoRef, VmInfo>,
    watch: Option<Watch>,
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
        let update = self
            .client
            .wait_for_updates_ex(&watch.version, seconds, None)
            .await?;
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
                match refresh_vm(&self.client, &update.obj).await? {
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
            let vms = vsphere::list_vms(&self.client).await?;
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
            let view = self
                .client
                .create_container_view(&root, &["VirtualMachine"], true)
                .await?;
            let spec = FilterSpec::container_view(&view, "VirtualMachine", VM_PROPERTIES);
            let filter = self.client.create_filter(&spec, false).await?;
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
