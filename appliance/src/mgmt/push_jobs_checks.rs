//! What a push request must pass before a job is queued: every field that reaches a guest, a shell
//! or a log is checked here, so a job fails for reasons of the guest, not of its request.

use actors::push::{self, script, ssh, Auth, HostKeyPolicy, InstallSpec, Target, ToolsTarget};

use super::{Operation, PushAuth, PushRequest, PushSettings, Via};
use crate::mgmt::vcenters::Vcenters;
use crate::mgmt::MgmtError;

const MAX_VM_CHARS: usize = 256;
const MAX_HOST_CHARS: usize = 253;
const MAX_USER_CHARS: usize = 64;
const MAX_PASSWORD_BYTES: usize = 4096;
const MAX_KEY_BYTES: usize = 64 << 10;
const MAX_DISKS: usize = 32;
const MAX_INTERVAL_SECS: u64 = 24 * 3600;

fn invalid(field: &str, e: impl std::fmt::Display) -> MgmtError {
    MgmtError::invalid(field, e.to_string())
}

fn check_vm(vm: &str) -> Result<String, MgmtError> {
    let vm = vm.trim();
    if vm.is_empty() || vm.chars().count() > MAX_VM_CHARS || vm.chars().any(char::is_control) {
        return Err(invalid(
            "vm",
            format!("must be 1 to {MAX_VM_CHARS} characters on one line"),
        ));
    }
    Ok(vm.to_string())
}

/// A host name or IP address (IPv6 with or without brackets).
fn check_host(host: &str) -> Result<String, MgmtError> {
    let host = host.trim();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ok = !host.is_empty()
        && host.len() <= MAX_HOST_CHARS
        && !host.starts_with('-')
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'));
    if !ok {
        return Err(invalid(
            "host",
            "must be a host name or an IP address (letters, digits, . - : _)",
        ));
    }
    Ok(host.to_string())
}

fn check_username(user: &str) -> Result<(), MgmtError> {
    if user.is_empty()
        || user.len() > MAX_USER_CHARS
        || user.starts_with('-')
        || !user.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(invalid(
            "username",
            format!("must be 1 to {MAX_USER_CHARS} printable characters without spaces"),
        ));
    }
    Ok(())
}

fn check_auth(auth: PushAuth) -> Result<Auth, MgmtError> {
    match auth {
        PushAuth::Password { password } => {
            if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
                return Err(invalid(
                    "auth.password",
                    format!("must be 1 to {MAX_PASSWORD_BYTES} bytes"),
                ));
            }
            Ok(Auth::Password(password))
        }
        PushAuth::PrivateKey {
            private_key,
            passphrase,
        } => {
            if private_key.len() > MAX_KEY_BYTES {
                return Err(invalid("auth.private_key", "is larger than 64 KiB"));
            }
            ssh::check_private_key(&private_key, passphrase.as_deref())
                .map_err(|e| invalid("auth.private_key", e))?;
            Ok(Auth::PrivateKey {
                pem: private_key,
                passphrase,
            })
        }
        // `PushJobs::start` resolves stored credentials before it plans.
        PushAuth::Credential { .. } => Err(invalid(
            "auth",
            "a stored credential must be resolved before the job is planned",
        )),
    }
}

/// `<vCenter id>/<moref>` of a VM a job reaches through VMware Tools.
fn split_vm(vm: &str) -> Result<(&str, &str), MgmtError> {
    let plain = |s: &str| {
        !s.is_empty()
            && s.len() <= 80
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    match vm.split_once('/') {
        Some((vc, moref)) if plain(vc) && plain(moref) => Ok((vc, moref)),
        _ => Err(invalid(
            "vm",
            "through VMware Tools, name the VM as <vCenter id>/<moref> (e.g. vc-1/vm-42)",
        )),
    }
}

/// The guest through its vCenter: no host, port or host key; a password login.
fn tools_target(
    settings: &PushSettings,
    vcenters: Option<&Vcenters>,
    req: &PushRequest,
    vm: &str,
    auth: Auth,
) -> Result<ToolsTarget, MgmtError> {
    let not_here = |field: &str| {
        invalid(
            field,
            "does not apply with via vmware_tools: the guest is reached through its vCenter",
        )
    };
    if !req.host.trim().is_empty() {
        return Err(not_here("host"));
    }
    if req.port != 22 {
        return Err(not_here("port"));
    }
    if req.host_key.is_some() {
        return Err(not_here("host_key"));
    }
    let Auth::Password(password) = auth else {
        return Err(invalid(
            "auth",
            "VMware Tools logs in with a user name and password: use {\"kind\":\"password\"}",
        ));
    };
    let (vcenter_id, moref) = split_vm(vm)?;
    let vcenters = vcenters.ok_or_else(|| {
        MgmtError::Unavailable("the vCenters are not loaded yet; retry shortly".into())
    })?;
    let login = vcenters.login_target(vcenter_id).map_err(|e| match e {
        MgmtError::NotFound(_) => invalid("vm", format!("no vCenter {vcenter_id} is stored")),
        other => other,
    })?;
    Ok(ToolsTarget {
        vcenter_url: login.url,
        vcenter_credentials: login.credentials,
        vcenter_trust: login.trust,
        vm: moref.to_string(),
        username: req.username.clone(),
        password,
        connect_timeout: settings.connect_timeout,
        command_timeout: settings.command_timeout,
        upload_timeout: settings.upload_timeout,
    })
}

/// Checks a request and turns it into a [`Plan`].
pub(super) fn plan(
    settings: &PushSettings,
    vcenters: Option<&Vcenters>,
    req: PushRequest,
) -> Result<Plan, MgmtError> {
    let vm = check_vm(&req.vm)?;
    check_username(&req.username)?;
    let auth = check_auth(req.auth.clone())?;
    let (target, pinned) = match req.via {
        Via::Ssh => {
            let host = check_host(&req.host)?;
            if req.port == 0 {
                return Err(invalid("port", "must be 1 to 65535"));
            }
            let pinned = req
                .host_key
                .as_deref()
                .map(ssh::normalize_fingerprint)
                .transpose()
                .map_err(|e| invalid("host_key", e))?;
            let mut target = Target::new(
                &host,
                req.port,
                &req.username,
                auth,
                HostKeyPolicy::TrustOnFirstUse,
            );
            target.connect_timeout = settings.connect_timeout;
            target.command_timeout = settings.command_timeout;
            target.upload_timeout = settings.upload_timeout;
            (push::GuestTarget::Ssh(target), pinned)
        }
        Via::VmwareTools => (
            push::GuestTarget::Tools(tools_target(settings, vcenters, &req, &vm, auth)?),
            None,
        ),
    };
    let prefix = req
        .prefix
        .unwrap_or_else(|| push::DEFAULT_PREFIX.to_string());
    script::check_prefix(&prefix).map_err(|e| invalid("prefix", e))?;
    let appliance_addr = req
        .appliance_addr
        .or_else(|| settings.appliance_addr.clone())
        .ok_or_else(|| {
            invalid(
                "appliance_addr",
                "is required: the appliance's replication address (HOST:PORT) as the guest reaches it",
            )
        })?;
    script::check_appliance_addr(&appliance_addr).map_err(|e| invalid("appliance_addr", e))?;
    if req.operation == Operation::Install && req.disks.is_empty() {
        return Err(invalid("disks", "name at least one disk to protect"));
    }
    if req.disks.len() > MAX_DISKS {
        return Err(invalid("disks", format!("at most {MAX_DISKS} disks")));
    }
    for disk in &req.disks {
        script::check_disk(disk).map_err(|e| invalid("disks", e))?;
    }
    if let Some(secs) = req.interval_secs {
        if !(1..=MAX_INTERVAL_SECS).contains(&secs) {
            return Err(invalid(
                "interval_secs",
                format!("must be 1 to {MAX_INTERVAL_SECS}"),
            ));
        }
    }
    let agents_dir = req
        .agents_dir
        .unwrap_or_else(|| settings.agents_dir.clone());
    if req.operation != Operation::Uninstall && !agents_dir.is_dir() {
        return Err(MgmtError::Unavailable(format!(
            "the agent binaries folder {} is missing on the appliance",
            agents_dir.display()
        )));
    }
    script::check_ca_fingerprint(&settings.ca_fingerprint)
        .map_err(|e| MgmtError::Internal(e.to_string()))?;
    Ok(Plan {
        operation: req.operation,
        vm,
        target,
        pinned,
        spec: InstallSpec {
            prefix,
            agents_dir,
            appliance_addr,
            ca_fingerprint: settings.ca_fingerprint.clone(),
            disks: req.disks,
            enrollment: None,
            service: None,
            interval_secs: req.interval_secs,
        },
    })
}

/// What a checked request becomes: everything the task needs, credentials included.
pub(crate) struct Plan {
    pub operation: Operation,
    pub vm: String,
    pub target: push::GuestTarget,
    /// The request pinned this key (else: the recorded one, else trust on first use). SSH only.
    pub pinned: Option<String>,
    pub spec: push::InstallSpec,
}

impl Plan {
    pub fn via(&self) -> Via {
        match self.target {
            push::GuestTarget::Ssh(_) => Via::Ssh,
            push::GuestTarget::Tools(_) => Via::VmwareTools,
        }
    }

    pub fn ssh(&self) -> Option<&push::Target> {
        match &self.target {
            push::GuestTarget::Ssh(t) => Some(t),
            push::GuestTarget::Tools(_) => None,
        }
    }

    /// What at most one live job may have: the SSH endpoint, or the VM.
    pub(super) fn target_key(&self) -> String {
        match &self.target {
            push::GuestTarget::Ssh(t) => format!("{}:{}", t.host, t.port),
            push::GuestTarget::Tools(_) => format!("vm:{}", self.vm),
        }
    }
}
