//! `/api/v1/vcenters`: vCenters to discover VMs in (add, list, update credential or thumbprint, remove)
//! and their discovered VMs.

use actix_web::{web, HttpResponse};

use crate::mgmt::auth::Role;
use crate::mgmt::protect::{ProtectRequest, ProtectStarted};
use crate::mgmt::vcenters::{NewVcenter, VcenterUpdate, VcenterView, VcenterVm, VmQuery};
use crate::mgmt::{Core, Page, PageRequest};
use crate::web::error::{ApiError, ErrorBody};
use crate::web::extract::Caller;

/// vCenters with their discovery health, by URL.
#[utoipa::path(get, path = "/api/v1/vcenters", tag = "vcenters", security(("bearer" = [])),
    params(PageRequest),
    responses((status = 200, body = Page<VcenterView>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub async fn list(
    core: web::Data<Core>,
    _caller: Caller,
    page: web::Query<PageRequest>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(core.vcenters.list(*page)?))
}

/// Adds a vCenter (admin). The appliance logs in first: a refused password answers 400 on `password`,
/// another certificate 400 on `thumbprint` (naming the thumbprint it presents), an unreachable vCenter
/// 400 on `url`. Discovery of its VMs starts at once.
#[utoipa::path(post, path = "/api/v1/vcenters", tag = "vcenters", security(("bearer" = [])),
    request_body = NewVcenter,
    responses((status = 201, body = VcenterView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "this vCenter is already added", body = ErrorBody)))]
pub async fn add(
    core: web::Data<Core>,
    caller: Caller,
    body: web::Json<NewVcenter>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let view = core
        .vcenters
        .add(&caller.principal, &caller.source, body.into_inner())
        .await?;
    Ok(HttpResponse::Created().json(view))
}

#[utoipa::path(get, path = "/api/v1/vcenters/{id}", tag = "vcenters", security(("bearer" = [])),
    params(("id" = String, Path, description = "vCenter id")),
    responses((status = 200, body = VcenterView), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn get(
    core: web::Data<Core>,
    _caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(core.vcenters.get(&id)?))
}

/// Updates the credential (`username`, `password`) or accepts a new certificate (`thumbprint`) (admin).
/// The appliance logs in with the result first; discovery resumes at once.
#[utoipa::path(patch, path = "/api/v1/vcenters/{id}", tag = "vcenters", security(("bearer" = [])),
    params(("id" = String, Path, description = "vCenter id")), request_body = VcenterUpdate,
    responses((status = 200, body = VcenterView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn update(
    core: web::Data<Core>,
    caller: Caller,
    id: web::Path<String>,
    body: web::Json<VcenterUpdate>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let view = core
        .vcenters
        .update(&caller.principal, &caller.source, &id, body.into_inner())
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Removes a vCenter (admin): its discovery stops and its inventory is forgotten.
#[utoipa::path(delete, path = "/api/v1/vcenters/{id}", tag = "vcenters", security(("bearer" = [])),
    params(("id" = String, Path, description = "vCenter id")),
    responses((status = 204, description = "removed"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn remove(
    core: web::Data<Core>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    core.vcenters
        .remove(&caller.principal, &caller.source, &id)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The discovered VMs of a vCenter, by name; `agent_id` is set where a registered agent runs in the VM,
/// `protection` says whether the appliance protects it.
#[utoipa::path(get, path = "/api/v1/vcenters/{id}/vms", tag = "vcenters", security(("bearer" = [])),
    params(("id" = String, Path, description = "vCenter id"), VmQuery),
    responses((status = 200, body = Page<VcenterVm>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn vms(
    core: web::Data<Core>,
    _caller: Caller,
    id: web::Path<String>,
    query: web::Query<VmQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    // Thousands of records are decoded per call: off the worker thread.
    let page = web::block(move || core.vms_with_protection(&id, &query))
        .await
        .map_err(|e| crate::mgmt::MgmtError::Internal(format!("inventory worker: {e}")))??;
    Ok(HttpResponse::Ok().json(page))
}

#[utoipa::path(get, path = "/api/v1/vcenters/{id}/vms/{moref}", tag = "vcenters",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "vCenter id"),
        ("moref" = String, Path, description = "the VM's managed object id, e.g. vm-42")),
    responses((status = 200, body = VcenterVm), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn vm(
    core: web::Data<Core>,
    _caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, moref) = path.into_inner();
    Ok(HttpResponse::Ok().json(core.vm_with_protection(&id, &moref)?))
}

/// Enables protection of a VM (admin, like every push install): starts a push install of the agent
/// into the guest over SSH (`host` defaults to the VM's first guest IPv4 address) and records it for
/// the VM, whose `protection` then follows the job (`installing`, then `protected` or `failed`).
#[utoipa::path(post, path = "/api/v1/vcenters/{id}/vms/{moref}/protect", tag = "vcenters",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "vCenter id"),
        ("moref" = String, Path, description = "the VM's managed object id, e.g. vm-42")),
    request_body = ProtectRequest,
    responses((status = 202, description = "the push install is queued", body = ProtectStarted),
        (status = 400, description = "a field is invalid, or the VM reports no guest IPv4 address \
            and the body names no `host`", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "the VM is powered off, suspended or a template, its install \
            is already running, or setup is not complete", body = ErrorBody),
        (status = 503, description = "the agent binaries folder is missing, or the data path is \
            starting", body = ErrorBody)))]
pub async fn protect(
    core: web::Data<Core>,
    caller: Caller,
    path: web::Path<(String, String)>,
    body: web::Json<ProtectRequest>,
) -> Result<HttpResponse, ApiError> {
    let (id, moref) = path.into_inner();
    let started = core.protect_vm(
        &caller.principal,
        &caller.source,
        &id,
        &moref,
        body.into_inner(),
    )?;
    Ok(HttpResponse::Accepted().json(started))
}

/// Forgets that protection of this VM was asked for (admin). It does not uninstall the agent: a VM
/// with a registered agent stays `protected` (uninstall with a push job of `operation: uninstall`,
/// or revoke the agent).
#[utoipa::path(delete, path = "/api/v1/vcenters/{id}/vms/{moref}/protect", tag = "vcenters",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "vCenter id"),
        ("moref" = String, Path, description = "the VM's managed object id")),
    responses((status = 204, description = "forgotten"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, description = "protection of this VM was never enabled", body = ErrorBody)))]
pub async fn unprotect(
    core: web::Data<Core>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, moref) = path.into_inner();
    core.forget_protection(&caller.principal, &caller.source, &id, &moref)?;
    Ok(HttpResponse::NoContent().finish())
}
