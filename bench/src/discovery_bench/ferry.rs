//! One round of Ferry's discovery: a new client (RetrieveServiceContent and Login over a new TLS
//! connection, the certificate pinned by thumbprint) and then every VM through `list_vms`: a
//! container view, RetrievePropertiesEx of `VM_PROPERTIES` with every continuation page, the
//! view destroyed, and each VM parsed into a `VmInfo`. The two parts are timed apart.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use vsphere::inventory::VM_PROPERTIES;
use vsphere::{Client, Credentials, FilterSpec, TlsTrust, VmInfo};

use super::compare::{PropertySet, VmKey};

/// Where and as whom the client logs in.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub credentials: Credentials,
    /// SHA-256 thumbprint of the server certificate.
    pub thumbprint: String,
}

impl Target {
    async fn connect(&self) -> Result<Client> {
        Client::connect(
            &self.url,
            self.credentials.clone(),
            TlsTrust::Thumbprint(self.thumbprint.clone()),
        )
        .await
        .with_context(|| format!("Ferry's client could not log in to {}", self.url))
    }
}

/// What one round measured and found.
#[derive(Debug, Clone)]
pub struct FerryRound {
    /// `Client::connect`: RetrieveServiceContent and Login, the TLS connection included.
    pub connect: Duration,
    /// `list_vms`: view, retrieval, parse.
    pub retrieval: Duration,
    pub vms: Vec<VmKey>,
}

pub fn key(vm: &VmInfo) -> VmKey {
    VmKey {
        moref: vm.moref.value.clone(),
        name: vm.name.clone(),
        bios_uuid: vm.bios_uuid.clone(),
    }
}

/// One timed round; the session is logged out afterwards, outside the timing.
pub async fn round(target: &Target) -> Result<FerryRound> {
    let started = Instant::now();
    let client = target.connect().await?;
    let connect = started.elapsed();
    let listed = Instant::now();
    let vms = vsphere::list_vms(&client)
        .await
        .context("Ferry's list_vms failed")?;
    let retrieval = listed.elapsed();
    let keys = vms.iter().map(key).collect();
    drop(vms);
    logout(&client).await;
    Ok(FerryRound {
        connect,
        retrieval,
        vms: keys,
    })
}

/// The properties the server returns for `VM_PROPERTIES`, read untimed through the same kind of
/// view and filter `list_vms` uses (it keeps only the parsed `VmInfo`, not the property names).
pub async fn returned_properties(target: &Target) -> Result<PropertySet> {
    let client = target.connect().await?;
    let root = client.service_content().root_folder.clone();
    let view = client
        .create_container_view(&root, &["VirtualMachine"], true)
        .await?;
    let spec = FilterSpec::container_view(&view, "VirtualMachine", VM_PROPERTIES);
    let objects = client.retrieve_all(&[spec]).await;
    let destroyed = client.destroy_view(&view).await;
    logout(&client).await;
    let objects = objects.context("RetrievePropertiesEx of VM_PROPERTIES")?;
    destroyed.context("DestroyView")?;
    let mut set = PropertySet {
        requested: VM_PROPERTIES.iter().map(|p| p.to_string()).collect(),
        ..PropertySet::default()
    };
    for object in &objects {
        set.returned
            .extend(object.props.iter().map(|(path, _)| path.clone()));
        set.missing
            .extend(object.missing.iter().map(|m| m.path.clone()));
    }
    Ok(set)
}

/// vcsim keeps every session until it stops: log out so rounds do not pile them up.
async fn logout(client: &Client) {
    if let Err(e) = client.logout().await {
        eprintln!("discovery_bench: Ferry's logout failed (ignored): {e}");
    }
}
