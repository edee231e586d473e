//! What a restore job request must pass before it starts: ids, the output path under the restore
//! folder, the running-jobs limit, an existing file; and the small mappings the runner uses.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use vault::{RestoreRequest, VaultError};

use super::{JobState, Live, RestoreFormat, MAX_PATH_BYTES, MAX_RUNNING};
use crate::mgmt::auth::{Principal, Role};
use crate::mgmt::MgmtError;

/// Whether one more job writing `out` may start now.
pub(super) fn admit(
    live: &HashMap<String, Arc<Live>>,
    out: &Path,
    overwrite: bool,
) -> Result<(), MgmtError> {
    if live.len() >= MAX_RUNNING {
        return Err(MgmtError::Conflict(format!(
            "{MAX_RUNNING} restores are running; wait or cancel one"
        )));
    }
    if live.values().any(|l| l.out == out) {
        return Err(MgmtError::Conflict(format!(
            "a running restore writes {}",
            out.display()
        )));
    }
    match std::fs::symlink_metadata(out) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(MgmtError::Internal(format!(
            "checking {}: {e}",
            out.display()
        ))),
        Ok(m) if m.file_type().is_symlink() => Err(MgmtError::invalid(
            "path",
            "names a symbolic link; restores write only plain files",
        )),
        Ok(m) if m.is_dir() => Err(MgmtError::Conflict(format!(
            "{} is a directory",
            out.display()
        ))),
        Ok(_) if !overwrite => Err(MgmtError::Conflict(format!(
            "{} exists; set overwrite to replace it",
            out.display()
        ))),
        Ok(_) => Ok(()),
    }
}

/// The output file for a requested relative path, or why the path is refused.
pub fn target_path(restores_dir: &Path, requested: &str) -> Result<PathBuf, MgmtError> {
    let bad = |why: &str| Err(MgmtError::invalid("path", why));
    if requested.is_empty() {
        return bad("must not be empty");
    }
    if requested.len() > MAX_PATH_BYTES {
        return bad("must be at most 255 bytes");
    }
    if requested.chars().any(char::is_control) {
        return bad("must not contain NUL or control characters");
    }
    if requested.starts_with('/') || Path::new(requested).is_absolute() {
        return bad("must be relative to the restore folder, not absolute");
    }
    let parts: Vec<&str> = requested.split('/').collect();
    let mut out = restores_dir.to_path_buf();
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            return bad("must not contain empty components (`//` or a trailing `/`)");
        }
        if *part == ".." {
            return bad("must not contain `..`");
        }
        if part.starts_with('.') {
            return bad("must not contain components starting with '.'");
        }
        if !matches!(
            Path::new(part).components().next(),
            Some(Component::Normal(_))
        ) {
            return bad("has a component that is not a plain name");
        }
        out.push(part);
        let is_folder = i + 1 < parts.len();
        // A link below the restore folder could point anywhere. The file itself is checked
        // when the job is admitted.
        match std::fs::symlink_metadata(&out) {
            Ok(m) if is_folder && m.file_type().is_symlink() => {
                return bad("goes through a symbolic link");
            }
            Ok(m) if is_folder && !m.is_dir() => {
                return Err(MgmtError::Conflict(format!(
                    "{} exists and is not a folder",
                    out.display()
                )));
            }
            _ => {}
        }
    }
    if requested.ends_with(".partial") {
        return bad("must not end in .partial (the name of images being built)");
    }
    Ok(out)
}

pub(super) fn require_operator(by: &Principal) -> Result<(), MgmtError> {
    if by.role < Role::Operator {
        return Err(MgmtError::Forbidden(
            "restore jobs need the operator or admin role".into(),
        ));
    }
    Ok(())
}

pub(super) fn check_id(field: &str, id: &str) -> Result<(), MgmtError> {
    if RestoreRequest::is_valid_id(id) {
        Ok(())
    } else {
        Err(MgmtError::invalid(
            field,
            "must be 1-128 of A-Z a-z 0-9 - _ . and not start with '.'",
        ))
    }
}

/// The format a file name implies: `.vhd`, `.vmdk`, else raw.
pub(super) fn format_for(out: &Path) -> RestoreFormat {
    let ext = out
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    match ext.as_deref() {
        Some("vhd") => RestoreFormat::Vhd,
        Some("vmdk") => RestoreFormat::Vmdk,
        _ => RestoreFormat::Raw,
    }
}

pub(super) fn vault_format(format: RestoreFormat) -> vault::RestoreFormat {
    match format {
        RestoreFormat::Raw => vault::RestoreFormat::Raw,
        RestoreFormat::Vhd => vault::RestoreFormat::Vhd,
        RestoreFormat::Vmdk => vault::RestoreFormat::Vmdk,
    }
}

pub(super) fn format_name(format: RestoreFormat) -> &'static str {
    match format {
        RestoreFormat::Raw => "raw",
        RestoreFormat::Vhd => "vhd",
        RestoreFormat::Vmdk => "vmdk",
    }
}

pub(super) fn state_name(state: JobState) -> &'static str {
    match state {
        JobState::Running => "running",
        JobState::Succeeded => "succeeded",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
    }
}

pub(super) fn vault_unavailable(err: VaultError) -> MgmtError {
    if err.is_retryable() || matches!(err, VaultError::Store { .. }) {
        MgmtError::Unavailable(format!("the vault cannot be read now: {err}"))
    } else {
        MgmtError::Internal(format!("listing the vault's points: {err}"))
    }
}
