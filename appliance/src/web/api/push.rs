//! `/api/v1/push-jobs`: push installs of the mobility agent into Linux guests over SSH or through
//! VMware Tools (install, upgrade, uninstall), followed as jobs; `/api/v1/push-host-keys`: forget a
//! guest's recorded SSH host key. The guest credentials of a request go to the job's task only: no
//! answer, record or log line carries them.

use actix_web::{web, HttpResponse};

use crate::mgmt::auth::Role;
use crate::mgmt::push_jobs::{Operation, PushJobView, PushRequest};
use crate::mgmt::{Core, MgmtError, Page, PageRequest};
use crate::web::error::{ApiError, ErrorBody};
use crate::web::extract::Caller;

/// Starts a push job (admin). An install issues a one-time enrollment token for `vm`, copies the
/// agent binary for the guest's architecture, registers it with that token, starts it as a service
/// and succeeds once the agent registered with the appliance (so it needs the data path running).
/// Over SSH the host key is pinned by `host_key`, else by the key an earlier job recorded for
/// `host:port`, else trusted on first use and recorded. With `via: vmware_tools` the guest is
/// reached through the stored vCenter of `vm` (`<vCenter id>/<moref>`), with a password login and
/// no host, port or host key.
#[utoipa::path(post, path = "/api/v1/push-jobs", tag = "push", security(("bearer" = [])),
    request_body = PushRequest,
    responses((status = 202, description = "queued", body = PushJobView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 409, description = "a job for this host and port (or VM) is queued or running, or \
            setup is not complete", body = ErrorBody),
        (status = 503, description = "the agent binaries folder is missing, or the data path is \
            starting", body = ErrorBody)))]
pub async fn start(
    core: web::Data<Core>,
    caller: Caller,
    body: web::Json<PushRequest>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let req = body.into_inner();
    // An install succeeds only when the agent registered, which needs the data listener.
    if req.operation == Operation::Install {
        core.require_running()?;
    }
    let job = core
        .push_jobs
        .start(&caller.principal, &caller.source, req)?;
    Ok(HttpResponse::Accepted().json(job))
}

/// Push jobs, newest first.
#[utoipa::path(get, path = "/api/v1/push-jobs", tag = "push", security(("bearer" = [])),
    params(PageRequest),
    responses((status = 200, body = Page<PushJobView>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub async fn list(
    core: web::Data<Core>,
    _caller: Caller,
    page: web::Query<PageRequest>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(core.push_jobs.list(*page)?))
}

/// One push job with its log.
#[utoipa::path(get, path = "/api/v1/push-jobs/{id}", tag = "push", security(("bearer" = [])),
    params(("id" = String, Path, description = "job id")),
    responses((status = 200, body = PushJobView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn get(
    core: web::Data<Core>,
    _caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(core.push_jobs.get(&id)?))
}

/// Cancels a queued or running push job (admin). A running job stops between two steps and ends
/// `cancelled`; the guest may be partly changed (every step is idempotent: run it again).
#[utoipa::path(post, path = "/api/v1/push-jobs/{id}/cancel", tag = "push",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "job id")),
    responses((status = 200, body = PushJobView), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "the job has ended", body = ErrorBody)))]
pub async fn cancel(
    core: web::Data<Core>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    Ok(HttpResponse::Ok().json(
        core.push_jobs
            .cancel(&caller.principal, &caller.source, &id)?,
    ))
}

/// The host as push jobs record it: trimmed, IPv6 brackets removed.
fn host_of(host: &str) -> Result<String, MgmtError> {
    let host = host.trim();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.len() > 253 || host.chars().any(char::is_control) {
        return Err(MgmtError::invalid(
            "host",
            "must be a host name or an IP address",
        ));
    }
    Ok(host.to_string())
}

/// Forgets the SSH host key recorded for `host:port` (admin), after the guest was reinstalled: the
/// next job trusts the key it is shown and records it.
#[utoipa::path(delete, path = "/api/v1/push-host-keys/{host}/{port}", tag = "push",
    security(("bearer" = [])),
    params(("host" = String, Path, description = "guest host name or IP address, as the jobs named it"),
        ("port" = u16, Path, description = "SSH port")),
    responses((status = 204, description = "forgotten"), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "no key is recorded for this host and port", body = ErrorBody)))]
pub async fn forget_host_key(
    core: web::Data<Core>,
    caller: Caller,
    path: web::Path<(String, u16)>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let (host, port) = path.into_inner();
    let host = host_of(&host)?;
    if core
        .push_jobs
        .forget_host_key(&caller.principal, &caller.source, &host, port)?
    {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(MgmtError::NotFound(format!("no host key is recorded for {host}:{port}")).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_named_as_jobs_record_them() {
        assert_eq!(host_of(" guest.example ").unwrap(), "guest.example");
        assert_eq!(host_of("[fe80::1]").unwrap(), "fe80::1");
        for bad in ["", "  ", "[]", "a\nb", &"h".repeat(254)] {
            let err = host_of(bad).unwrap_err();
            assert_eq!(err.code(), "invalid_field", "{bad:?}");
        }
    }

    #[test]
    fn requests_never_show_their_secrets() {
        let password: PushRequest = serde_json::from_value(serde_json::json!({
            "host": "10.0.0.5", "username": "root", "vm": "vc-1/vm-42", "disks": ["/dev/sda"],
            "auth": {"kind": "password", "password": "hunter2-secret"}
        }))
        .unwrap();
        assert_eq!(password.port, 22);
        assert_eq!(password.operation, Operation::Install);
        let shown = format!("{password:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let key: PushRequest = serde_json::from_value(serde_json::json!({
            "host": "10.0.0.5", "username": "root", "vm": "v", "operation": "uninstall",
            "auth": {"kind": "private_key", "private_key": "-----BEGIN KEY-----secret-material",
                "passphrase": "key-pass-secret"}
        }))
        .unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.contains("secret-material"), "{shown}");
        assert!(!shown.contains("key-pass-secret"), "{shown}");
    }

    #[test]
    fn callers_cannot_set_what_the_appliance_decides() {
        // The local agents folder is the appliance's: a caller naming it is refused, not ignored.
        let err = serde_json::from_value::<PushRequest>(serde_json::json!({
            "host": "h", "username": "root", "vm": "v", "agents_dir": "/tmp",
            "auth": {"kind": "password", "password": "x"}
        }))
        .unwrap_err();
        assert!(err.to_string().contains("agents_dir"), "{err}");
        let err = serde_json::from_value::<PushRequest>(serde_json::json!({
            "host": "h", "username": "root", "vm": "v",
            "auth": {"kind": "password", "password": "x", "extra": 1}
        }))
        .unwrap_err();
        assert!(err.to_string().contains("extra"), "{err}");
        let err = serde_json::from_value::<PushRequest>(serde_json::json!({
            "host": "h", "username": "root", "vm": "v", "operation": "reinstall",
            "auth": {"kind": "password", "password": "x"}
        }))
        .unwrap_err();
        assert!(err.to_string().contains("reinstall"), "{err}");
    }
}
