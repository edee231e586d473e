//! Small JSON state files of the data path (cache cursor, machine description, point chain), each tagged
//! with what it is and a format version, written atomically and durably.
//!
//! ```text
//! {"format":"<name>","version":1, ...fields of the value...}
//! ```
//!
//! A file of another format or a newer version is refused with an error naming it, rather than guessed at.

use crate::ActorError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Tagged<T> {
    format: String,
    version: u32,
    #[serde(flatten)]
    value: T,
}

/// The bytes a state file holds for `value`.
pub fn encode<T: Serialize>(format: &str, value: &T) -> Vec<u8> {
    serde_json::to_vec(&Tagged {
        format: format.to_string(),
        version: VERSION,
        value,
    })
    .expect("state values serialize")
}

pub fn decode<T: DeserializeOwned>(
    format: &str,
    path: &Path,
    bytes: &[u8],
) -> Result<T, ActorError> {
    let bad = |why: String| ActorError::Cache(format!("{}: {why}", path.display()));
    let t: Tagged<T> = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    if t.format != format {
        return Err(bad(format!(
            "is a {:?} file, expected {format:?}",
            t.format
        )));
    }
    if t.version != VERSION {
        return Err(bad(format!(
            "format version {} is not supported (this build reads {VERSION})",
            t.version
        )));
    }
    Ok(t.value)
}

/// Reads a state file; `Ok(None)` when it does not exist yet.
pub fn read<T: DeserializeOwned>(format: &str, path: &Path) -> Result<Option<T>, ActorError> {
    match std::fs::read(path) {
        Ok(b) => decode(format, path, &b).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ActorError::Cache(format!("read {}: {e}", path.display()))),
    }
}

/// Replaces a state file atomically (temp file, fsync, rename, fsync of the folder).
pub fn write<T: Serialize>(format: &str, path: &Path, value: &T) -> Result<(), ActorError> {
    let tmp = path.with_extension("tmp");
    crate::cache::write_durably(&tmp, path, &encode(format, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::Cursor;

    #[test]
    fn fixed_bytes_of_a_cursor() {
        let c = Cursor {
            seq: 5,
            bookmark_id: 7,
        };
        assert_eq!(
            encode("ferry.cache-cursor", &c),
            br#"{"format":"ferry.cache-cursor","version":1,"seq":5,"bookmark_id":7}"#.to_vec()
        );
    }

    #[test]
    fn wrong_format_version_or_garbage_is_an_error() {
        let p = Path::new("x");
        let ok: Cursor = decode(
            "a",
            p,
            br#"{"format":"a","version":1,"seq":1,"bookmark_id":2}"#,
        )
        .unwrap();
        assert_eq!(
            ok,
            Cursor {
                seq: 1,
                bookmark_id: 2
            }
        );
        assert!(decode::<Cursor>(
            "a",
            p,
            br#"{"format":"b","version":1,"seq":1,"bookmark_id":2}"#
        )
        .is_err());
        assert!(decode::<Cursor>(
            "a",
            p,
            br#"{"format":"a","version":2,"seq":1,"bookmark_id":2}"#
        )
        .is_err());
        assert!(decode::<Cursor>("a", p, br#"{"seq":1,"bookmark_id":2}"#).is_err());
        assert!(decode::<Cursor>("a", p, b"\x00\xff garbage").is_err());
    }
}
