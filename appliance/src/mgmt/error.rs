//! The one error type of the management core. The HTTP layer turns it into `{"code","message"}` with
//! [`MgmtError::status`]; the code strings are a stable contract for clients (docs/MANAGEMENT.md).

use crate::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum MgmtError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{field}: {message}")]
    InvalidField { field: String, message: String },
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("the form's CSRF token is missing or belongs to another session; reload the page")]
    Csrf,
    #[error("the setup token is missing or wrong; it is in <data dir>/setup-token and in the log")]
    BadSetupToken,
    #[error("{0}")]
    NotFound(String),
    #[error("the appliance is not set up yet: finish the first-boot setup at /setup")]
    SetupRequired,
    #[error("setup is already complete")]
    SetupComplete,
    #[error("{0}")]
    Conflict(String),
    #[error("too many failed attempts; try again in {retry_after_secs} s")]
    TooManyAttempts { retry_after_secs: u64 },
    /// A dependency (the vault, the data path) is down or not started; retrying later can help.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
    /// vCenter plugin: the vCenter does not know the session the plugin sent.
    #[error("{0}")]
    VcenterSessionInvalid(String),
    /// vCenter plugin: the session is live but its user has no Ferry role on this vCenter.
    #[error("{0}")]
    PluginUserNotMapped(String),
    /// vCenter plugin: the vCenter that would verify the session does not answer.
    #[error("{0}")]
    VcenterUnreachable(String),
}

impl MgmtError {
    pub fn invalid(field: &str, message: impl Into<String>) -> MgmtError {
        MgmtError::InvalidField {
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            MgmtError::BadRequest(_) => "bad_request",
            MgmtError::InvalidField { .. } => "invalid_field",
            MgmtError::Unauthenticated(_) => "unauthenticated",
            MgmtError::Forbidden(_) => "forbidden",
            MgmtError::Csrf => "csrf",
            MgmtError::BadSetupToken => "bad_setup_token",
            MgmtError::NotFound(_) => "not_found",
            MgmtError::SetupRequired => "setup_required",
            MgmtError::SetupComplete => "setup_complete",
            MgmtError::Conflict(_) => "conflict",
            MgmtError::TooManyAttempts { .. } => "too_many_attempts",
            MgmtError::Unavailable(_) => "unavailable",
            MgmtError::Internal(_) => "internal",
            MgmtError::VcenterSessionInvalid(_) => "vcenter_session_invalid",
            MgmtError::PluginUserNotMapped(_) => "plugin_user_not_mapped",
            MgmtError::VcenterUnreachable(_) => "vcenter_unreachable",
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            MgmtError::BadRequest(_) | MgmtError::InvalidField { .. } => 400,
            MgmtError::Unauthenticated(_) | MgmtError::VcenterSessionInvalid(_) => 401,
            MgmtError::Forbidden(_)
            | MgmtError::Csrf
            | MgmtError::BadSetupToken
            | MgmtError::PluginUserNotMapped(_) => 403,
            MgmtError::NotFound(_) => 404,
            MgmtError::SetupRequired | MgmtError::SetupComplete | MgmtError::Conflict(_) => 409,
            MgmtError::TooManyAttempts { .. } => 429,
            MgmtError::Unavailable(_) | MgmtError::VcenterUnreachable(_) => 503,
            MgmtError::Internal(_) => 500,
        }
    }

    /// Whether the same request may succeed later without a change by the caller.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            MgmtError::TooManyAttempts { .. }
                | MgmtError::Unavailable(_)
                | MgmtError::Internal(_)
                | MgmtError::VcenterUnreachable(_)
        )
    }
}

impl From<StateError> for MgmtError {
    fn from(err: StateError) -> MgmtError {
        MgmtError::Internal(format!("appliance state: {err}"))
    }
}

impl From<sled::Error> for MgmtError {
    fn from(err: sled::Error) -> MgmtError {
        MgmtError::Internal(format!("appliance state: {err}"))
    }
}
