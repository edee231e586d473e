//! `/api/v1/setup`: the first-boot setup, open to anyone who holds the setup token.

use actix_web::{web, HttpRequest, HttpResponse};

use crate::mgmt::setup::{SetupRequest, SetupResult, SetupStatus, VaultTestRequest};
use crate::mgmt::Core;
use crate::web::error::{ApiError, ErrorBody};
use crate::web::extract::source;

/// Where setup stands, the proposed vault and the password rules.
#[utoipa::path(get, path = "/api/v1/setup", tag = "setup",
    responses((status = 200, body = SetupStatus)))]
pub async fn status(core: web::Data<Core>) -> HttpResponse {
    HttpResponse::Ok().json(core.setup.status())
}

/// Completes the first-boot setup. `{"token","admin_password"}` alone uses the defaults (a local vault
/// in the data folder, generated passphrases). The answer holds the passphrases and the recovery kit:
/// it is shown once.
#[utoipa::path(post, path = "/api/v1/setup", tag = "setup", request_body = SetupRequest,
    responses(
        (status = 200, body = SetupResult),
        (status = 400, description = "a field is invalid or the vault target does not answer", body = ErrorBody),
        (status = 403, description = "missing or wrong setup token", body = ErrorBody),
        (status = 409, description = "setup is already complete", body = ErrorBody)))]
pub async fn submit(
    core: web::Data<Core>,
    req: HttpRequest,
    body: web::Json<SetupRequest>,
) -> Result<HttpResponse, ApiError> {
    let result = core.setup.submit(body.into_inner(), &source(&req)).await?;
    Ok(HttpResponse::Ok().json(result))
}

/// Tries a vault target (connectivity, credentials, an existing vault) without changing anything.
#[utoipa::path(post, path = "/api/v1/setup/vault-test", tag = "setup", request_body = VaultTestRequest,
    responses(
        (status = 200, body = VaultTestResult),
        (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn vault_test(
    core: web::Data<Core>,
    body: web::Json<VaultTestRequest>,
) -> Result<HttpResponse, ApiError> {
    core.setup.test_vault(body.into_inner()).await?;
    Ok(HttpResponse::Ok().json(VaultTestResult { ok: true }))
}

#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct VaultTestResult {
    pub ok: bool,
}
