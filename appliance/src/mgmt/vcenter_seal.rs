//! vCenter passwords at rest: XChaCha20-Poly1305 under a 32-byte key kept in
//! `<data dir>/credentials.key` (0600, created on first use), never in sled. A stolen copy of the state
//! database alone therefore reveals no vCenter password.
//!
//! A sealed password is the base64 (standard, padded) of:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | version, 1 |
//! | 1 | 24 | random nonce |
//! | 25 | n | ciphertext of the UTF-8 password |
//! | 25 + n | 16 | Poly1305 tag |
//!
//! The associated data is the vCenter id, so a sealed password copied onto another vCenter's record
//! does not open.

use std::io;
use std::path::{Path, PathBuf};

use base64::Engine;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{Key, KeyInit, XChaCha20Poly1305, XNonce};
use rand::RngCore;

use super::MgmtError;
use crate::files::{self, PRIVATE_FILE_MODE};

pub const CREDENTIALS_KEY_FILE: &str = "credentials.key";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const SEAL_VERSION: u8 = 1;

/// The key that seals vCenter passwords.
#[derive(Clone)]
pub struct CredentialKey {
    path: PathBuf,
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for CredentialKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialKey")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(CREDENTIALS_KEY_FILE)
}

fn read_key(path: &Path) -> Result<[u8; KEY_LEN], MgmtError> {
    let raw = std::fs::read(path)
        .map_err(|e| MgmtError::Internal(format!("reading {}: {e}", path.display())))?;
    raw.as_slice().try_into().map_err(|_| {
        MgmtError::Internal(format!(
            "{} holds {} bytes, not a {KEY_LEN}-byte key: it was damaged or replaced; \
             restore it from a backup, or remove it and set every vCenter password again",
            path.display(),
            raw.len()
        ))
    })
}

impl CredentialKey {
    /// Loads `<data dir>/credentials.key`, creating it (0600) when it does not exist yet.
    pub fn load_or_create(data_dir: &Path) -> Result<CredentialKey, MgmtError> {
        let path = key_path(data_dir);
        if !path.exists() {
            let mut key = [0u8; KEY_LEN];
            rand::rng().fill_bytes(&mut key);
            match files::write_new_file(&path, &key, PRIVATE_FILE_MODE) {
                Ok(()) => {}
                // Another caller created it first: use theirs.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(MgmtError::Internal(format!(
                        "creating {}: {e}",
                        path.display()
                    )))
                }
            }
        }
        let key = read_key(&path)?;
        Ok(CredentialKey {
            cipher: XChaCha20Poly1305::new(&Key::from(key)),
            path,
        })
    }

    /// Seals `password` for the vCenter `id`.
    pub fn seal(&self, id: &str, password: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: password.as_bytes(),
                    aad: id.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 seals any password length");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        base64::engine::general_purpose::STANDARD.encode(out)
    }

    /// Opens what [`CredentialKey::seal`] made for `id`.
    pub fn open(&self, id: &str, sealed: &str) -> Result<String, MgmtError> {
        let fail = |why: &str| {
            MgmtError::Internal(format!(
                "the stored password of vCenter {id} cannot be opened ({why}): {} is not the key \
                 it was sealed with, or the record was altered; set the password again \
                 (PATCH /api/v1/vcenters/{id})",
                self.path.display()
            ))
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|_| fail("not base64"))?;
        if raw.len() < 1 + NONCE_LEN + TAG_LEN {
            return Err(fail("too short"));
        }
        if raw[0] != SEAL_VERSION {
            return Err(fail("unknown version"));
        }
        let nonce: [u8; NONCE_LEN] = raw[1..1 + NONCE_LEN]
            .try_into()
            .map_err(|_| fail("too short"))?;
        let plain = self
            .cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &raw[1 + NONCE_LEN..],
                    aad: id.as_bytes(),
                },
            )
            .map_err(|_| fail("authentication failed"))?;
        String::from_utf8(plain).map_err(|_| fail("not UTF-8"))
    }
}
