//! The frame types. Field names follow docs/CONTRACTS.md.

use bytes::Bytes;

/// One protocol message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Register(Register),
    Registered(Registered),
    Hello(Hello),
    Welcome(Welcome),
    Extent(Extent),
    Ack(Ack),
    Bookmark(Bookmark),
    PointDurable(PointDurable),
    Error(ErrorFrame),
    Ping(u64),
    Pong(u64),
}

impl Frame {
    /// The frame type byte on the wire.
    pub fn type_code(&self) -> u8 {
        match self {
            Frame::Register(_) => 1,
            Frame::Registered(_) => 2,
            Frame::Hello(_) => 3,
            Frame::Welcome(_) => 4,
            Frame::Extent(_) => 5,
            Frame::Ack(_) => 6,
            Frame::Bookmark(_) => 7,
            Frame::PointDurable(_) => 8,
            Frame::Error(_) => 9,
            Frame::Ping(_) => 10,
            Frame::Pong(_) => 11,
        }
    }

    /// A short name for logs ("Extent", "Ack", ...).
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Register(_) => "Register",
            Frame::Registered(_) => "Registered",
            Frame::Hello(_) => "Hello",
            Frame::Welcome(_) => "Welcome",
            Frame::Extent(_) => "Extent",
            Frame::Ack(_) => "Ack",
            Frame::Bookmark(_) => "Bookmark",
            Frame::PointDurable(_) => "PointDurable",
            Frame::Error(_) => "Error",
            Frame::Ping(_) => "Ping",
            Frame::Pong(_) => "Pong",
        }
    }
}

/// Whether `t` is a frame type this version knows.
pub(crate) fn is_known_type(t: u8) -> bool {
    (1..=11).contains(&t)
}

/// Agent -> appliance, on a TLS connection without a client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Register {
    pub passphrase: String,
    pub hostname: String,
    /// The machine's SMBIOS system UUID in the canonical 36-character form, so the appliance can
    /// tell which discovered VM the agent runs in. `None` when the agent could not read it, and
    /// always from agents older than the field (their payload ends after `hostname`). The wire
    /// carries any text of at most [`crate::MAX_BIOS_UUID`] bytes; judging it is the receiver's job.
    pub bios_uuid: Option<String>,
}

/// Appliance -> agent: the agent's identity and credentials for mutual TLS from now on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub agent_id: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

/// Agent -> appliance, first frame of a replication session (mutual TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub min_version: u8,
    pub max_version: u8,
    pub agent_id: String,
    pub hostname: String,
    pub disks: Vec<DiskInfo>,
}

/// One protected disk as the agent sees it; its position in `Hello.disks` is its `disk_index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskInfo {
    pub disk_id: String,
    pub size_bytes: u64,
    pub label: String,
}

/// Appliance -> agent: the negotiated version, the flow-control window and where to resume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    pub version: u8,
    pub window_bytes: u32,
    pub resume: Vec<Resume>,
}

/// The last sequence number of a disk that the appliance holds durably.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    pub disk_index: u16,
    pub durable_seq: u64,
}

/// Agent -> appliance: new content for `data.len()` bytes of a disk at `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent {
    pub disk_index: u16,
    pub seq: u64,
    pub offset: u64,
    pub data: Bytes,
}

/// Appliance -> agent: every extent of the disk up to `durable_seq` is fsync'd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub disk_index: u16,
    pub durable_seq: u64,
}

/// Agent -> appliance: a recovery point at these per-disk sequence numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bookmark {
    pub bookmark_id: u64,
    pub kind: PointKind,
    pub seqs: Vec<DiskSeq>,
}

/// A disk and a sequence number (the last one sent before a bookmark).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSeq {
    pub disk_index: u16,
    pub seq: u64,
}

/// How consistent a point is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointKind {
    /// Disk state at an instant, as after a power cut.
    Crash,
    /// Taken with applications quiesced (freeze hook).
    App,
}

impl PointKind {
    pub fn to_u8(self) -> u8 {
        match self {
            PointKind::Crash => 0,
            PointKind::App => 1,
        }
    }

    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(PointKind::Crash),
            1 => Some(PointKind::App),
            _ => None,
        }
    }
}

/// Appliance -> agent: the point of a bookmark is in the vault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointDurable {
    pub bookmark_id: u64,
    pub point_id: String,
}

/// Either side: why the sender is about to close the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFrame {
    pub code: ErrorCode,
    pub message: String,
}

/// Error codes carried by [`ErrorFrame`]. Codes this version does not know decode as `Other`, so
/// a newer peer's error still reaches the user with its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadPassphrase,
    Revoked,
    UnknownAgent,
    Protocol,
    UnsupportedVersion,
    Internal,
    BadFrame,
    Other(u16),
}

impl ErrorCode {
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::BadPassphrase => 1,
            ErrorCode::Revoked => 2,
            ErrorCode::UnknownAgent => 3,
            ErrorCode::Protocol => 4,
            ErrorCode::UnsupportedVersion => 5,
            ErrorCode::Internal => 6,
            ErrorCode::BadFrame => 7,
            ErrorCode::Other(v) => v,
        }
    }

    pub fn from_u16(v: u16) -> Self {
        match v {
            1 => ErrorCode::BadPassphrase,
            2 => ErrorCode::Revoked,
            3 => ErrorCode::UnknownAgent,
            4 => ErrorCode::Protocol,
            5 => ErrorCode::UnsupportedVersion,
            6 => ErrorCode::Internal,
            7 => ErrorCode::BadFrame,
            other => ErrorCode::Other(other),
        }
    }

    /// The contract's snake_case name ("bad_passphrase", ...); "other" for unknown codes.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::BadPassphrase => "bad_passphrase",
            ErrorCode::Revoked => "revoked",
            ErrorCode::UnknownAgent => "unknown_agent",
            ErrorCode::Protocol => "protocol",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::Internal => "internal",
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::Other(_) => "other",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ErrorCode::Other(v) => write!(f, "error code {v}"),
            known => f.write_str(known.name()),
        }
    }
}
