//! The one JSON error shape of the management listener: `{"code", "message"}` with the status of
//! [`MgmtError::status`], and the same shape for what actix itself refuses (bad JSON, too large, bad
//! query strings).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::mgmt::MgmtError;

/// The body of every error answer.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable (`setup_required`, `invalid_field`, `forbidden`, ...).
    pub code: String,
    /// For a person.
    pub message: String,
}

/// [`MgmtError`] as an actix error.
#[derive(Debug)]
pub struct ApiError(pub MgmtError);

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl From<MgmtError> for ApiError {
    fn from(err: MgmtError) -> ApiError {
        ApiError(err)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        error_response(&self.0)
    }
}

pub fn error_response(err: &MgmtError) -> HttpResponse {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        tracing::warn!(code = err.code(), %err, "management request failed");
    }
    let mut response = HttpResponse::build(status);
    if let MgmtError::TooManyAttempts { retry_after_secs } = err {
        response.insert_header(("Retry-After", retry_after_secs.to_string()));
    }
    if let MgmtError::Unauthenticated(_) = err {
        response.insert_header(("WWW-Authenticate", "Bearer realm=\"ferry\""));
    }
    response.json(ErrorBody {
        code: err.code().to_string(),
        message: err.to_string(),
    })
}

/// Error answers of a bespoke status and code (for actix's own extractor failures).
fn plain(status: StatusCode, code: &str, message: String) -> actix_web::Error {
    let body = ErrorBody {
        code: code.to_string(),
        message,
    };
    actix_web::error::InternalError::from_response(
        code.to_string(),
        HttpResponse::build(status).json(body),
    )
    .into()
}

/// JSON bodies: size limit, content type and parse errors in the common shape.
pub fn json_config(limit: usize) -> actix_web::web::JsonConfig {
    actix_web::web::JsonConfig::default()
        .limit(limit)
        .error_handler(move |err, _req| {
            use actix_web::error::JsonPayloadError as E;
            match err {
                E::OverflowKnownLength { length, limit } => plain(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("the body has {length} bytes; at most {limit} are accepted"),
                ),
                E::Overflow { limit } => plain(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("the body is larger than {limit} bytes"),
                ),
                E::ContentType => plain(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "send the body as Content-Type: application/json".into(),
                ),
                E::Deserialize(err) => plain(
                    StatusCode::BAD_REQUEST,
                    "invalid_json",
                    format!("the JSON body does not fit this call: {err}"),
                ),
                other => plain(
                    StatusCode::BAD_REQUEST,
                    "invalid_json",
                    format!("the body could not be read: {other}"),
                ),
            }
        })
}

/// Query strings that do not parse (`?limit=abc`) in the common shape.
pub fn query_config() -> actix_web::web::QueryConfig {
    actix_web::web::QueryConfig::default().error_handler(|err, _req| {
        plain(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("the query string does not fit this call: {err}"),
        )
    })
}

/// Path segments that do not parse in the common shape.
pub fn path_config() -> actix_web::web::PathConfig {
    actix_web::web::PathConfig::default().error_handler(|err, _req| {
        plain(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such resource: {err}"),
        )
    })
}
