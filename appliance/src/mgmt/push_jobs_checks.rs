//! What a push request must pass before a job is queued: every field that reaches a guest, a shell
//! or a log is checked here, so a job fails for reasons of the guest, not of its request.

use actors::push::{self, script, ssh, Auth, HostKeyPolicy, InstallSpec, Target};

use super::{Operation, Plan, PushAuth, PushRequest, PushSettings};
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
    }
}

/// Checks a request and turns it into a [`Plan`].
pub(super) fn plan(settings: &PushSettings, req: PushRequest) -> Result<Plan, MgmtError> {
    let vm = check_vm(&req.vm)?;
    let host = check_host(&req.host)?;
    if req.port == 0 {
        return Err(invalid("port", "must be 1 to 65535"));
    }
    check_username(&req.username)?;
    let auth = check_auth(req.auth)?;
    let pinned = req
        .host_key
        .as_deref()
        .map(ssh::normalize_fingerprint)
        .transpose()
        .map_err(|e| invalid("host_key", e))?;
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
