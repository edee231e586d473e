//! Small durable-file helpers shared by the TLS and secrets modules.
//!
//! Files holding keys and passphrases are never visible half-written: they are written to a
//! temporary name, synced, then linked (create-once) or renamed (replace) into place, and the
//! directory is synced so the new name survives a power cut.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Permissions of files only the appliance may read (keys, passphrases).
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// Permissions of files anyone on the machine may read (certificates).
pub const PUBLIC_FILE_MODE: u32 = 0o644;
/// Permissions of directories holding private files.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// Creates `dir` (and missing parents) with `mode` for the directories this call creates.
pub fn create_dir_all(dir: &Path, mode: u32) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(mode).create(dir)
}

fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", uuid::Uuid::new_v4().simple()))
}

fn write_temp(path: &Path, contents: &[u8], mode: u32) -> io::Result<PathBuf> {
    let tmp = temp_name(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    // The umask may have narrowed `mode`; a public certificate must stay readable.
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    if let Err(err) = written {
        let _ = fs::remove_file(&tmp);
        return Err(err);
    }
    Ok(tmp)
}

/// Syncs a directory so that names created or renamed in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `path` only if it does not exist yet; `ErrorKind::AlreadyExists` otherwise.
/// Two processes racing here cannot both win, and neither can overwrite an existing file.
pub fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let tmp = write_temp(path, contents, mode)?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    linked?;
    sync_dir(parent_of(path))
}

/// Writes `path`, replacing any previous content atomically.
pub fn replace_file(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let tmp = write_temp(path, contents, mode)?;
    if let Err(err) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(err);
    }
    sync_dir(parent_of(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn write_new_file_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        write_new_file(&path, b"first", PRIVATE_FILE_MODE).unwrap();
        let err = write_new_file(&path, b"second", PRIVATE_FILE_MODE).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"first");
        assert_eq!(mode_of(&path), 0o600);
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temporary files are cleaned up");
    }

    #[test]
    fn replace_file_replaces_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cert.pem");
        replace_file(&path, b"one", PUBLIC_FILE_MODE).unwrap();
        replace_file(&path, b"two", PUBLIC_FILE_MODE).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(mode_of(&path), 0o644);
    }

    #[test]
    fn create_dir_all_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        create_dir_all(&sub, PRIVATE_DIR_MODE).unwrap();
        assert_eq!(mode_of(&sub), 0o700);
        create_dir_all(&sub, PRIVATE_DIR_MODE).unwrap();
    }
}
