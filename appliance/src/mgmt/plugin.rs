//! The vCenter plugin: Ferry registers itself as an extension of a stored vCenter (key
//! `io.ferry.appliance`) whose `vsphere-client-remote` client points the vSphere Client at the remote
//! plugin manifest the appliance serves (`/plugin/plugin.json`), with the appliance certificate's
//! SHA-1 thumbprint in the server entry so the vSphere Client trusts the appliance. Registration
//! logs in with the vCenter's stored credential. How plugin calls sign in is `plugin_auth.rs`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use vsphere::{Client, ClientOptions, Extension, ExtensionClient, ExtensionServer, VsphereError};

use super::auth::Principal;
use super::vcenters::{PluginTarget, Vcenters};
use super::MgmtError;
use crate::config::Config;
use crate::state::State;

/// The extension key Ferry registers under.
pub const EXTENSION_KEY: &str = "io.ferry.appliance";
/// Where the appliance serves the remote plugin manifest.
pub const MANIFEST_PATH: &str = "/plugin/plugin.json";
/// The plugin's version is the appliance's.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
const COMPANY: &str = "Ferry";
const LABEL: &str = "Ferry";
const SUMMARY: &str = "Ferry disaster recovery: protected machines and recovery points";
const CLIENT_TYPE: &str = "vsphere-client-remote";
const MAX_EMAIL_CHARS: usize = 254;

/// `POST /api/v1/vcenters/{id}/plugin`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginRegistration {
    /// The appliance as the vSphere Client reaches it, `https://host[:port]`. Default: the
    /// management listener's address, unless it binds every interface (then this is required).
    pub appliance_url: Option<String>,
    /// Contact of the plugin server (vCenter requires one). Default: `admin@<appliance host>`.
    pub admin_email: Option<String>,
}

/// Whether and how the plugin is registered with a vCenter, as the vCenter reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PluginStatus {
    pub vcenter_id: String,
    pub extension_key: String,
    pub registered: bool,
    /// The registered version.
    pub version: Option<String>,
    /// The manifest URL the vSphere Client loads.
    pub manifest_url: Option<String>,
    /// The appliance certificate's thumbprint the vCenter trusts for the plugin server.
    pub server_thumbprint: Option<String>,
}

/// `https://host[:port]` of the appliance: `given`, else the management listener's address.
pub fn appliance_url(given: Option<&str>, listen_management: &str) -> Result<String, MgmtError> {
    let bad = |why: String| MgmtError::invalid("appliance_url", why);
    let Some(given) = given.map(str::trim) else {
        let addr: std::net::SocketAddr = listen_management.parse().map_err(|_| {
            bad(format!(
                "listen_management {listen_management:?} is no address"
            ))
        })?;
        if addr.ip().is_unspecified() {
            return Err(bad(format!(
                "the management listener binds every interface ({addr}); send the address the \
                 vSphere Client reaches the appliance at, https://host[:port]"
            )));
        }
        return Ok(format!("https://{addr}"));
    };
    let url = url::Url::parse(given).map_err(|e| bad(format!("{given:?} is not a URL ({e})")))?;
    if url.scheme() != "https" {
        return Err(bad(format!("{given:?}: the scheme must be https")));
    }
    if !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
        || !matches!(url.path(), "" | "/")
    {
        return Err(bad(format!(
            "{given:?}: only https://host[:port], without a path, query or credentials"
        )));
    }
    let host = match url.host() {
        Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
        Some(url::Host::Ipv4(a)) if !a.is_unspecified() => a.to_string(),
        Some(url::Host::Ipv6(a)) if !a.is_unspecified() => format!("[{a}]"),
        _ => return Err(bad(format!("{given:?}: no usable host"))),
    };
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    Ok(format!("https://{host}{port}"))
}

fn admin_email(given: Option<&str>, appliance_url: &str) -> Result<String, MgmtError> {
    let Some(given) = given.map(str::trim) else {
        let host = url::Url::parse(appliance_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| "localhost".into());
        return Ok(format!("admin@{}", host.trim_matches(['[', ']'])));
    };
    let ok = given.chars().count() <= MAX_EMAIL_CHARS
        && given
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
        && !given
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>\"".contains(c));
    if !ok {
        return Err(MgmtError::invalid(
            "admin_email",
            format!("{given:?} is not an e-mail address"),
        ));
    }
    Ok(given.to_string())
}

/// The SHA-1 thumbprint (colon hex, upper case) of the certificate the management listener
/// presents, as vCenter expects it for a remote plugin's server.
pub fn server_thumbprint(data_dir: &Path) -> Result<String, MgmtError> {
    let path = crate::tls::tls_dir(data_dir).join("server.pem");
    let cert = CertificateDer::from_pem_file(&path).map_err(|e| {
        MgmtError::Internal(format!(
            "reading the server certificate {}: {e}",
            path.display()
        ))
    })?;
    Ok(vsphere::tls::colon_hex(
        &vsphere::tls::Presented::of(&cert).sha1,
    ))
}

/// The extension registered with a vCenter.
pub fn extension(appliance_url: &str, thumbprint: &str, admin_email: &str) -> Extension {
    let manifest_url = format!("{appliance_url}{MANIFEST_PATH}");
    Extension {
        key: EXTENSION_KEY.into(),
        version: VERSION.into(),
        company: COMPANY.into(),
        label: LABEL.into(),
        summary: SUMMARY.into(),
        type_name: None,
        servers: vec![ExtensionServer {
            url: manifest_url.clone(),
            type_name: "HTTPS".into(),
            company: COMPANY.into(),
            label: LABEL.into(),
            summary: "Ferry appliance (remote plugin server)".into(),
            admin_emails: vec![admin_email.into()],
            thumbprint: Some(thumbprint.into()),
        }],
        clients: vec![ExtensionClient {
            version: VERSION.into(),
            type_name: CLIENT_TYPE.into(),
            company: COMPANY.into(),
            label: LABEL.into(),
            summary: SUMMARY.into(),
            url: manifest_url,
        }],
        shown_in_solution_manager: Some(true),
        last_heartbeat_time: None,
    }
}

/// The remote plugin manifest (vSphere Client SDK, manifest version 1.1.0). Page URIs are relative
/// to the manifest.
pub fn manifest() -> serde_json::Value {
    serde_json::json!({
        "manifestVersion": "1.1.0",
        "requirements": { "plugin.api.version": "1.1.0" },
        "configuration": {
            "nameKey": "plugin.name",
            "icon": { "name": "main" }
        },
        "global": {
            "view": {
                "navigationId": "ferry.global",
                "uri": "index.html",
                "navigationVisible": true
            }
        },
        "objects": {
            "VirtualMachine": {
                "summary": {
                    "view": {
                        "uri": "vm-summary.html",
                        "size": { "widthSpan": 1, "heightSpan": 1 }
                    }
                }
            }
        },
        "definitions": {
            "iconSpriteSheet": {
                "uri": "icon.svg",
                "definitions": { "main": { "x": 0, "y": 0 } }
            },
            "i18n": {
                "locales": ["en-US"],
                "definitions": {
                    "plugin.name": { "en-US": "Ferry" },
                    "vm.summary.title": { "en-US": "Ferry protection" }
                }
            }
        }
    })
}

fn status_of(vcenter_id: &str, found: Option<Extension>) -> PluginStatus {
    let client = found
        .as_ref()
        .and_then(|e| e.clients.iter().find(|c| c.type_name == CLIENT_TYPE));
    let server = found.as_ref().and_then(|e| e.servers.first());
    PluginStatus {
        vcenter_id: vcenter_id.to_string(),
        extension_key: EXTENSION_KEY.into(),
        registered: found.is_some(),
        version: found.as_ref().map(|e| e.version.clone()),
        manifest_url: client.map(|c| c.url.clone()),
        server_thumbprint: server.and_then(|s| s.thumbprint.clone()),
    }
}

/// A failure talking to the vCenter, as the API answers it.
fn vcenter_error(target: &PluginTarget, err: VsphereError) -> MgmtError {
    match err {
        VsphereError::InvalidLogin => MgmtError::Conflict(format!(
            "the vCenter at {} refuses the stored credential; update it with PATCH \
             /api/v1/vcenters/{}",
            target.url, target.id
        )),
        VsphereError::CertificateMismatch {
            presented_sha256, ..
        } => MgmtError::Conflict(format!(
            "the vCenter at {} presents another certificate ({presented_sha256}); accept it with \
             PATCH /api/v1/vcenters/{} first",
            target.url, target.id
        )),
        e if e.is_retryable() => MgmtError::VcenterUnreachable(format!(
            "the vCenter at {} does not answer: {e}; retry shortly",
            target.url
        )),
        e => MgmtError::Conflict(format!("the vCenter at {} refused: {e}", target.url)),
    }
}

/// Registration of the plugin with stored vCenters. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Plugin {
    cfg: Arc<Config>,
    state: State,
    vcenters: Vcenters,
    options: ClientOptions,
}

impl Plugin {
    pub fn new(cfg: Arc<Config>, state: State, vcenters: Vcenters) -> Plugin {
        Plugin {
            cfg,
            state,
            vcenters,
            options: ClientOptions {
                connect_timeout: Duration::from_secs(10),
                call_timeout: Duration::from_secs(30),
                ..ClientOptions::default()
            },
        }
    }

    async fn connect(&self, id: &str) -> Result<(PluginTarget, Client), MgmtError> {
        let (target, credentials) = self.vcenters.plugin_login(id)?;
        let client = Client::connect_with(
            &target.url,
            credentials,
            target.trust(),
            self.options.clone(),
        )
        .await
        .map_err(|e| vcenter_error(&target, e))?;
        Ok((target, client))
    }

    /// Whether the plugin is registered with the vCenter `id`.
    pub async fn status(&self, id: &str) -> Result<PluginStatus, MgmtError> {
        let (target, client) = self.connect(id).await?;
        let found = client.find_extension(EXTENSION_KEY).await;
        let _ = client.logout().await;
        Ok(status_of(
            &target.id,
            found.map_err(|e| vcenter_error(&target, e))?,
        ))
    }

    /// Registers the plugin with the vCenter `id`, or updates the registration (new address,
    /// certificate or version).
    pub async fn register(
        &self,
        by: &Principal,
        source: &str,
        id: &str,
        request: PluginRegistration,
    ) -> Result<PluginStatus, MgmtError> {
        let url = appliance_url(
            request.appliance_url.as_deref(),
            &self.cfg.listen_management,
        )?;
        let email = admin_email(request.admin_email.as_deref(), &url)?;
        let thumbprint = server_thumbprint(&self.cfg.data_dir)?;
        let ext = extension(&url, &thumbprint, &email);
        let (target, client) = self.connect(id).await?;
        let result = async {
            let existed = client.find_extension(EXTENSION_KEY).await?.is_some();
            if existed {
                client.update_extension(&ext).await?;
            } else {
                client.register_extension(&ext).await?;
            }
            Ok((existed, client.find_extension(EXTENSION_KEY).await?))
        }
        .await;
        let _ = client.logout().await;
        let (existed, found) = result.map_err(|e| vcenter_error(&target, e))?;
        let event = if existed {
            "vcenter_plugin_updated"
        } else {
            "vcenter_plugin_registered"
        };
        self.state.audit_as(
            &by.user,
            source,
            event,
            &format!(
                "{} {}: {EXTENSION_KEY} {VERSION}, manifest {url}{MANIFEST_PATH}, thumbprint \
                 {thumbprint}",
                target.id, target.url
            ),
        )?;
        self.state.flush()?;
        Ok(status_of(&target.id, found))
    }

    /// Unregisters the plugin from the vCenter `id`; 404 when it is not registered.
    pub async fn unregister(
        &self,
        by: &Principal,
        source: &str,
        id: &str,
    ) -> Result<(), MgmtError> {
        let (target, client) = self.connect(id).await?;
        let result = async {
            if client.find_extension(EXTENSION_KEY).await?.is_none() {
                return Ok(false);
            }
            client.unregister_extension(EXTENSION_KEY).await?;
            Ok(true)
        }
        .await;
        let _ = client.logout().await;
        if !result.map_err(|e| vcenter_error(&target, e))? {
            return Err(MgmtError::NotFound(format!(
                "the plugin is not registered with the vCenter {}",
                target.id
            )));
        }
        self.state.audit_as(
            &by.user,
            source,
            "vcenter_plugin_unregistered",
            &format!("{} {}: {EXTENSION_KEY}", target.id, target.url),
        )?;
        self.state.flush()?;
        Ok(())
    }
}

#[cfg(test)]
#[path = "plugin_tests.rs"]
mod tests;
