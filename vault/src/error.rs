//! The crate's error type. Each variant says whether retrying the same call can help.

/// Everything the vault can fail with.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The object store failed (network, HTTP status, permissions, local I/O inside the store).
    #[error("object store: {source}")]
    Store {
        #[source]
        source: object_store::Error,
        /// True for transient failures (network, 5xx after the store's own retries).
        retryable: bool,
    },
    /// An object the caller asked for (point, machine, disk) does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// An object failed authentication or its content contradicts its name/position.
    /// Restores stop here: nothing unauthenticated is ever written.
    #[error("integrity check failed for {object}: {reason}")]
    Integrity { object: String, reason: String },
    /// The passphrase does not unwrap the vault keys.
    #[error("wrong vault passphrase")]
    WrongPassphrase,
    /// There is no `config` object: the vault was never created here.
    #[error("vault is not initialized")]
    NotInitialized,
    /// `create` found an existing `config` object.
    #[error("vault is already initialized")]
    AlreadyInitialized,
    /// A value cannot be encoded, or an object has a layout this build does not understand
    /// (unknown version, bad name, inconsistent sizes).
    #[error("format error in {object}: {reason}")]
    Format { object: String, reason: String },
    /// Local file I/O (restore output, local store setup).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The caller cancelled the operation (a restore asked to stop); nothing was left behind.
    #[error("cancelled")]
    Cancelled,
}

impl VaultError {
    /// Whether the same call may succeed if repeated later.
    pub fn is_retryable(&self) -> bool {
        match self {
            VaultError::Store { retryable, .. } => *retryable,
            VaultError::Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::WouldBlock
            ),
            VaultError::NotFound(_)
            | VaultError::Integrity { .. }
            | VaultError::WrongPassphrase
            | VaultError::NotInitialized
            | VaultError::AlreadyInitialized
            | VaultError::Format { .. }
            | VaultError::Cancelled => false,
        }
    }

    pub(crate) fn integrity(object: impl Into<String>, reason: impl Into<String>) -> Self {
        VaultError::Integrity {
            object: object.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn format(object: impl Into<String>, reason: impl Into<String>) -> Self {
        VaultError::Format {
            object: object.into(),
            reason: reason.into(),
        }
    }
}

impl From<object_store::Error> for VaultError {
    fn from(source: object_store::Error) -> Self {
        use object_store::Error as E;
        let retryable = match &source {
            // Generic carries network errors and HTTP 5xx/429 that outlived the client's retries.
            E::Generic { .. } | E::JoinError { .. } => true,
            _ => false,
        };
        VaultError::Store { source, retryable }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_classification() {
        let generic = object_store::Error::Generic {
            store: "x",
            source: "connection reset".into(),
        };
        assert!(VaultError::from(generic).is_retryable());
        let missing = object_store::Error::NotFound {
            path: "a".into(),
            source: "gone".into(),
        };
        assert!(!VaultError::from(missing).is_retryable());
        assert!(!VaultError::integrity("packs/ab/x", "tag").is_retryable());
        assert!(!VaultError::WrongPassphrase.is_retryable());
        let timeout = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow");
        assert!(VaultError::Io(timeout).is_retryable());
        assert!(!VaultError::Cancelled.is_retryable());
    }
}
