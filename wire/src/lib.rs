//! The agent <-> appliance replication protocol (port 9443, inside TLS 1.3).
//!
//! Every message is one frame. All integers are big-endian.
//!
//! ```text
//! offset  size  field
//! 0       2     magic  b"FW"
//! 2       1     wire format version (1)
//! 3       1     frame type (1..=11, see the table below)
//! 4       4     payload length n (u32), n <= MAX_PAYLOAD (4 MiB + 4 KiB)
//! 8       n     payload (per frame type)
//! 8+n     4     CRC-32 (IEEE) over bytes 0 .. 8+n
//! ```
//!
//! Payload primitives: `u8`/`u16`/`u32`/`u64` big-endian; `str` = u16 length + UTF-8 (at most 4096
//! bytes); `lstr` = u32 length + UTF-8 (bounded by the payload); `bytes` = u32 length + bytes;
//! `vec<T>` = u32 count + items (the count is checked against the bytes left before allocating).
//!
//! | type | frame        | payload |
//! |------|--------------|---------|
//! | 1    | Register     | passphrase str, hostname str, [bios_uuid str (at most 64 bytes)] |
//! | 2    | Registered   | agent_id str, cert_pem lstr, key_pem lstr, ca_pem lstr |
//! | 3    | Hello        | min_version u8, max_version u8, agent_id str, hostname str, disks vec<{disk_id str, size_bytes u64, label str}> |
//! | 4    | Welcome      | version u8, window_bytes u32, resume vec<{disk_index u16, durable_seq u64}> |
//! | 5    | Extent       | disk_index u16, seq u64, offset u64, data bytes |
//! | 6    | Ack          | disk_index u16, durable_seq u64 |
//! | 7    | Bookmark     | bookmark_id u64, kind u8 (0 crash, 1 app), seqs vec<{disk_index u16, seq u64}> |
//! | 8    | PointDurable | bookmark_id u64, point_id str |
//! | 9    | Error        | code u16, message str |
//! | 10   | Ping         | nonce u64 |
//! | 11   | Pong         | nonce u64 |
//!
//! Sample: `Ack{disk_index: 1, durable_seq: 7}` encodes as
//! `46 57 01 06 00 00 00 0a | 00 01 00 00 00 00 00 00 00 07 | crc32`; the tests pin the exact
//! bytes of Register (both layouts), Hello, Extent, Ack, Bookmark and Error.
//!
//! Register's `bios_uuid` is a trailing optional field. Register comes before Hello, so before any
//! version is negotiated: the field was added without a version change, and its presence is told
//! by the payload length alone.
//!
//! ```text
//! Register payload
//! offset   size  field
//! 0        2     n = length of passphrase
//! 2        n     passphrase (UTF-8, n <= 4096)
//! 2+n      2     m = length of hostname
//! 4+n      m     hostname (UTF-8, m <= 4096)
//! ------ the payload of an agent without a BIOS UUID ends here ------
//! 4+n+m    2     k = length of bios_uuid
//! 6+n+m    k     bios_uuid (UTF-8, k <= 64); nothing may follow
//! ```
//!
//! A payload that ends after `hostname` (an agent older than the field, or one that could not read
//! the UUID) decodes as `bios_uuid: None`; `None` encodes as nothing, so every decoded frame
//! re-encodes to the same bytes. The sender puts the canonical lower-case form
//! (`42172e0b-9a4c-4c3f-8d2e-0123456789ab`); the wire checks only the length and UTF-8, the
//! appliance checks that it is a UUID. Appliances older than the field refuse a Register that has
//! it (trailing bytes) by closing the connection; the agent then registers once more without it.
//!
//! Decoding is strict: the header is validated (magic, version, known type, length limit) before
//! anything is allocated, the CRC is checked before the payload is parsed, and a payload with bytes
//! left over is malformed. An Extent's offset must be a multiple of [`BLOCK_SIZE`] and its data
//! 1..=[`MAX_EXTENT_BYTES`] long.

mod codec;
mod frames;
mod io;

pub use codec::{decode, decode_bytes, encode};
pub use frames::*;
pub use io::{read_frame, write_frame, FrameReader};

/// First two bytes of every frame.
pub const MAGIC: [u8; 2] = *b"FW";
/// Frame format version; also the only protocol version negotiated in Hello/Welcome.
pub const WIRE_VERSION: u8 = 1;
/// Largest payload a frame may carry: a 1 MiB extent fits easily; PEM bundles are far smaller.
pub const MAX_PAYLOAD: usize = 4 * 1024 * 1024 + 4096;
/// Change-tracking granularity: extents start on a block boundary.
pub const BLOCK_SIZE: u64 = 65536;
/// Largest extent data an agent may send in one frame.
pub const MAX_EXTENT_BYTES: usize = 1024 * 1024;
/// Longest `str` field (u16-length strings).
pub const MAX_STR: usize = 4096;
/// Longest `Register.bios_uuid` (the canonical form is 36 bytes; the slack costs nothing).
pub const MAX_BIOS_UUID: usize = 64;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 8;
/// Bytes after the payload (the CRC).
pub const TRAILER_LEN: usize = 4;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Transparent, so `{:#}` chains do not print the OS error twice.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("bad magic: not a Ferry wire frame")]
    BadMagic,
    #[error("unsupported wire format version {0}")]
    UnsupportedVersion(u8),
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    #[error("frame payload of {0} bytes exceeds the limit")]
    TooLarge(u32),
    #[error("frame checksum mismatch")]
    Checksum,
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
}

impl WireError {
    /// Only transport failures are worth a retry (on a new connection); every other error means the
    /// peer sent bytes that will be just as wrong the next time.
    pub fn is_retryable(&self) -> bool {
        matches!(self, WireError::Io(_) | WireError::Truncated)
    }
}
