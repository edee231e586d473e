//! Keys, the `config` object and the generic sealed envelope used by every metadata object.
//!
//! ## `config` (140 bytes, integers big-endian)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0   | 4  | magic `b"FYVC"` |
//! | 4   | 1  | format version (1) |
//! | 5   | 1  | KDF algorithm (1 = Argon2id v0x13) |
//! | 6   | 2  | reserved, 0 |
//! | 8   | 4  | Argon2 memory in KiB |
//! | 12  | 4  | Argon2 passes (t) |
//! | 16  | 4  | Argon2 lanes (p) |
//! | 20  | 16 | salt |
//! | 36  | 24 | XChaCha20-Poly1305 nonce |
//! | 60  | 64 | ciphertext of data key (32) then chunk-id key (32) |
//! | 124 | 16 | Poly1305 tag |
//!
//! The key-encryption key is Argon2id(passphrase, salt); the associated data is bytes 0..60, so
//! the KDF parameters cannot be weakened without the tag failing.
//!
//! ## Sealed envelope (index, pack footer, machine, point manifest)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0  | 4  | magic, one per object kind (`FYIX`, `FYPF`, `FYMD`, `FYPM`) |
//! | 4  | 1  | format version (1) |
//! | 5  | 3  | reserved, 0 |
//! | 8  | 24 | nonce |
//! | 32 | n  | ciphertext |
//! | 32+n | 16 | tag |
//!
//! The associated data is the 32-byte header followed by the object's name, so an object
//! cannot be moved to another name (e.g. swapping two points) without failing to open.

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{Key, KeyInit, Tag, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use zeroize::Zeroizing;

use crate::codec::{DecodeError, DecodeResult, Reader, Writer};
use crate::VaultError;

pub(crate) const KEY_LEN: usize = 32;
pub(crate) const NONCE_LEN: usize = 24;
pub(crate) const TAG_LEN: usize = 16;
pub(crate) const FORMAT_VERSION: u8 = 1;

pub(crate) const CONFIG_MAGIC: [u8; 4] = *b"FYVC";
pub(crate) const CONFIG_LEN: usize = 140;
const CONFIG_AAD_LEN: usize = 60;
const KDF_ARGON2ID: u8 = 1;
const SALT_LEN: usize = 16;

pub(crate) const ENVELOPE_HEADER_LEN: usize = 32;

/// Upper bounds a `config` may ask for, so a forged config cannot make `open` allocate 4 TiB.
const MAX_KDF_M_KIB: u32 = 4 * 1024 * 1024;
const MAX_KDF_T: u32 = 64;
const MAX_KDF_P: u32 = 64;

/// Argon2id cost parameters for the passphrase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        KdfParams {
            m_kib: 64 * 1024,
            t: 3,
            p: 1,
        }
    }
}

impl KdfParams {
    /// Cheap parameters so tests do not spend seconds in Argon2. Never for real vaults.
    pub fn fast_for_tests() -> Self {
        KdfParams {
            m_kib: 64,
            t: 1,
            p: 1,
        }
    }

    fn validate(&self) -> DecodeResult<()> {
        if self.p == 0 || self.p > MAX_KDF_P {
            return Err(DecodeError::new(format!(
                "argon2 lanes {} out of range",
                self.p
            )));
        }
        if self.t == 0 || self.t > MAX_KDF_T {
            return Err(DecodeError::new(format!(
                "argon2 passes {} out of range",
                self.t
            )));
        }
        if self.m_kib < 8 * self.p || self.m_kib > MAX_KDF_M_KIB {
            return Err(DecodeError::new(format!(
                "argon2 memory {} KiB out of range",
                self.m_kib
            )));
        }
        Ok(())
    }
}

/// The two master keys. Zeroed when dropped; never written anywhere unwrapped.
pub(crate) struct MasterKeys {
    pub(crate) data: Zeroizing<[u8; KEY_LEN]>,
    pub(crate) chunk_id: Zeroizing<[u8; KEY_LEN]>,
}

impl MasterKeys {
    pub(crate) fn generate() -> Result<Self, VaultError> {
        let mut data = Zeroizing::new([0u8; KEY_LEN]);
        let mut chunk_id = Zeroizing::new([0u8; KEY_LEN]);
        fill_os_random(data.as_mut_slice())?;
        fill_os_random(chunk_id.as_mut_slice())?;
        Ok(MasterKeys { data, chunk_id })
    }
}

fn fill_os_random(out: &mut [u8]) -> Result<(), VaultError> {
    use rand::TryRngCore;
    rand::rngs::OsRng
        .try_fill_bytes(out)
        .map_err(|e| VaultError::Io(std::io::Error::other(format!("OS random source: {e}"))))
}

/// A fresh random nonce; 192 bits make random nonces safe for any realistic number of objects.
pub(crate) fn random_nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut n);
    n
}

pub(crate) fn aead(key: &[u8; KEY_LEN]) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(&Key::from(*key))
}

fn derive_kek(
    passphrase: &str,
    salt: &[u8; SALT_LEN],
    kdf: KdfParams,
) -> Result<Zeroizing<[u8; KEY_LEN]>, VaultError> {
    let params = argon2::Params::new(kdf.m_kib, kdf.t, kdf.p, Some(KEY_LEN))
        .map_err(|e| VaultError::format("config", format!("argon2 parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut kek = Zeroizing::new([0u8; KEY_LEN]);
    argon
        .hash_password_into(passphrase.as_bytes(), salt, kek.as_mut_slice())
        .map_err(|e| VaultError::format("config", format!("argon2: {e}")))?;
    Ok(kek)
}

/// Builds the `config` object. Slow on purpose (Argon2id); call from a blocking thread.
pub(crate) fn encode_config(
    keys: &MasterKeys,
    passphrase: &str,
    kdf: KdfParams,
    salt: [u8; SALT_LEN],
    nonce: [u8; NONCE_LEN],
) -> Result<Vec<u8>, VaultError> {
    kdf.validate()
        .map_err(|e| VaultError::format("config", e.0))?;
    let kek = derive_kek(passphrase, &salt, kdf)?;
    let mut w = Writer::with_capacity(CONFIG_LEN);
    w.bytes(&CONFIG_MAGIC);
    w.u8(FORMAT_VERSION);
    w.u8(KDF_ARGON2ID);
    w.u16(0);
    w.u32(kdf.m_kib);
    w.u32(kdf.t);
    w.u32(kdf.p);
    w.bytes(&salt);
    w.bytes(&nonce);
    w.bytes(keys.data.as_slice());
    w.bytes(keys.chunk_id.as_slice());
    let (aad, body) = w.buf.split_at_mut(CONFIG_AAD_LEN);
    let tag = aead(&kek)
        .encrypt_inout_detached(&XNonce::from(nonce), aad, body.into())
        .map_err(|_| VaultError::format("config", "encryption failed"))?;
    w.bytes(&tag);
    Ok(w.buf)
}

/// The clear part of a `config` object: enough to run the KDF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigHeader {
    pub(crate) kdf: KdfParams,
    pub(crate) salt: [u8; SALT_LEN],
    pub(crate) nonce: [u8; NONCE_LEN],
}

pub(crate) fn decode_config_header(bytes: &[u8]) -> DecodeResult<ConfigHeader> {
    if bytes.len() != CONFIG_LEN {
        return Err(DecodeError::new(format!(
            "config is {} bytes, expected {CONFIG_LEN}",
            bytes.len()
        )));
    }
    let mut r = Reader::new(bytes);
    if r.array::<4>()? != CONFIG_MAGIC {
        return Err(DecodeError::new("bad config magic"));
    }
    let version = r.u8()?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::new(format!(
            "unsupported config version {version}"
        )));
    }
    let alg = r.u8()?;
    if alg != KDF_ARGON2ID {
        return Err(DecodeError::new(format!("unknown KDF algorithm {alg}")));
    }
    let _reserved = r.u16()?;
    let kdf = KdfParams {
        m_kib: r.u32()?,
        t: r.u32()?,
        p: r.u32()?,
    };
    kdf.validate()?;
    Ok(ConfigHeader {
        kdf,
        salt: r.array()?,
        nonce: r.array()?,
    })
}

/// Unwraps the master keys. Slow on purpose (Argon2id); call from a blocking thread.
pub(crate) fn decode_config(bytes: &[u8], passphrase: &str) -> Result<MasterKeys, VaultError> {
    let header = decode_config_header(bytes).map_err(|e| VaultError::integrity("config", e.0))?;
    let kek = derive_kek(passphrase, &header.salt, header.kdf)?;
    let mut body = Zeroizing::new([0u8; 2 * KEY_LEN]);
    body.copy_from_slice(&bytes[CONFIG_AAD_LEN..CONFIG_AAD_LEN + 2 * KEY_LEN]);
    let tag = Tag::try_from(&bytes[CONFIG_AAD_LEN + 2 * KEY_LEN..])
        .map_err(|_| VaultError::integrity("config", "bad tag length"))?;
    aead(&kek)
        .decrypt_inout_detached(
            &XNonce::from(header.nonce),
            &bytes[..CONFIG_AAD_LEN],
            body.as_mut_slice().into(),
            &tag,
        )
        // A tampered config is indistinguishable from a wrong passphrase by design.
        .map_err(|_| VaultError::WrongPassphrase)?;
    let mut data = Zeroizing::new([0u8; KEY_LEN]);
    let mut chunk_id = Zeroizing::new([0u8; KEY_LEN]);
    data.copy_from_slice(&body[..KEY_LEN]);
    chunk_id.copy_from_slice(&body[KEY_LEN..]);
    Ok(MasterKeys { data, chunk_id })
}

pub(crate) fn new_salt() -> Result<[u8; SALT_LEN], VaultError> {
    let mut s = [0u8; SALT_LEN];
    fill_os_random(&mut s)?;
    Ok(s)
}

fn envelope_aad(header: &[u8], object: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + object.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(object.as_bytes());
    aad
}

/// Seals `plain` as the object named `object`.
pub(crate) fn seal_envelope(
    cipher: &XChaCha20Poly1305,
    magic: [u8; 4],
    object: &str,
    plain: &[u8],
    nonce: [u8; NONCE_LEN],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENVELOPE_HEADER_LEN + plain.len() + TAG_LEN);
    out.extend_from_slice(&magic);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plain);
    let aad = envelope_aad(&out[..ENVELOPE_HEADER_LEN], object);
    let tag = cipher
        .encrypt_inout_detached(
            &XNonce::from(nonce),
            &aad,
            (&mut out[ENVELOPE_HEADER_LEN..]).into(),
        )
        .expect("XChaCha20-Poly1305 accepts messages up to 256 GiB");
    out.extend_from_slice(&tag);
    out
}

/// Opens an envelope written by [`seal_envelope`]; every failure is `Integrity` naming `object`.
pub(crate) fn open_envelope(
    cipher: &XChaCha20Poly1305,
    magic: [u8; 4],
    object: &str,
    sealed: &[u8],
) -> Result<Vec<u8>, VaultError> {
    let bad = |reason: String| VaultError::integrity(object, reason);
    if sealed.len() < ENVELOPE_HEADER_LEN + TAG_LEN {
        return Err(bad(format!("truncated: {} bytes", sealed.len())));
    }
    if sealed[..4] != magic {
        return Err(bad(format!(
            "bad magic {:02x?}, expected {}",
            &sealed[..4],
            String::from_utf8_lossy(&magic)
        )));
    }
    if sealed[4] != FORMAT_VERSION {
        return Err(bad(format!("unsupported version {}", sealed[4])));
    }
    let header = &sealed[..ENVELOPE_HEADER_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&sealed[8..ENVELOPE_HEADER_LEN]);
    let body_end = sealed.len() - TAG_LEN;
    let tag = Tag::try_from(&sealed[body_end..]).map_err(|_| bad("bad tag length".into()))?;
    let mut plain = sealed[ENVELOPE_HEADER_LEN..body_end].to_vec();
    cipher
        .decrypt_inout_detached(
            &XNonce::from(nonce),
            &envelope_aad(header, object),
            plain.as_mut_slice().into(),
            &tag,
        )
        .map_err(|_| bad("authentication failed (tampered, truncated or wrong key)".into()))?;
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed_keys() -> MasterKeys {
        MasterKeys {
            data: Zeroizing::new([0x11; KEY_LEN]),
            chunk_id: Zeroizing::new([0x22; KEY_LEN]),
        }
    }

    // The ciphertext and tag pins below were cross-checked with an independent implementation:
    // Python `cryptography` (Argon2id, and ChaCha20Poly1305 keyed with an HChaCha20 subkey).
    #[test]
    fn config_fixed_bytes() {
        let bytes = encode_config(
            &fixed_keys(),
            "pass",
            KdfParams::fast_for_tests(),
            [0x33; SALT_LEN],
            [0x44; NONCE_LEN],
        )
        .unwrap();
        assert_eq!(bytes.len(), CONFIG_LEN);
        assert_eq!(
            hex::encode(&bytes[..CONFIG_AAD_LEN]),
            concat!(
                "46595643",
                "01",
                "01",
                "0000",
                "00000040",
                "00000001",
                "00000001",
                "33333333333333333333333333333333",
                "444444444444444444444444444444444444444444444444"
            )
        );
        assert_eq!(
            hex::encode(&bytes[CONFIG_AAD_LEN..]),
            concat!(
                "eed4eb8f9fe864724dd118d19bbe2aff757c1bab7ec336f60cde7f77550e2672",
                "59f8b01fb9466763a53e814725e2f2c9ba2e148280b36eb99dd73054aa3941aa",
                "100597d3ca9fd4c7237248a446b22224" // tag
            )
        );
        let keys = decode_config(&bytes, "pass").unwrap();
        assert_eq!(*keys.data, [0x11; KEY_LEN]);
        assert_eq!(*keys.chunk_id, [0x22; KEY_LEN]);
        assert!(matches!(
            decode_config(&bytes, "Pass"),
            Err(VaultError::WrongPassphrase)
        ));
    }

    #[test]
    fn config_rejects_bad_headers() {
        let good = encode_config(
            &fixed_keys(),
            "pass",
            KdfParams::fast_for_tests(),
            [1; SALT_LEN],
            [2; NONCE_LEN],
        )
        .unwrap();
        assert!(decode_config_header(&good[..CONFIG_LEN - 1]).is_err());
        let mut bad = good.clone();
        bad[0] ^= 1;
        assert!(decode_config_header(&bad).is_err());
        let mut bad = good.clone();
        bad[4] = 2;
        assert!(decode_config_header(&bad)
            .unwrap_err()
            .0
            .contains("version"));
        let mut huge = good.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_config_header(&huge)
            .unwrap_err()
            .0
            .contains("memory"));
        // Weakening the KDF passes the header check but fails authentication.
        let mut weaker = good.clone();
        weaker[15] = 2; // t = 2 is valid, but bound by the AAD
        assert!(matches!(
            decode_config(&weaker, "pass"),
            Err(VaultError::WrongPassphrase)
        ));
    }

    #[test]
    fn envelope_fixed_bytes_and_binding() {
        let cipher = aead(&[0x11; KEY_LEN]);
        let sealed = seal_envelope(&cipher, *b"FYIX", "index/00", b"hello", [0x55; NONCE_LEN]);
        assert_eq!(
            hex::encode(&sealed),
            concat!(
                "46594958",
                "01",
                "000000",
                "555555555555555555555555555555555555555555555555",
                "33c2b2e37b",                       // ciphertext of "hello"
                "47576452eeaa9b59b2c0a1c5b5f0c4dc"  // tag
            )
        );
        assert_eq!(
            open_envelope(&cipher, *b"FYIX", "index/00", &sealed).unwrap(),
            b"hello"
        );
        // Renamed object, other magic, flipped bytes, truncation: all Integrity.
        for (magic, name, bytes) in [
            (*b"FYIX", "index/01", sealed.clone()),
            (*b"FYMD", "index/00", sealed.clone()),
            (*b"FYIX", "index/00", sealed[..sealed.len() - 1].to_vec()),
            (*b"FYIX", "index/00", sealed[..10].to_vec()),
        ] {
            let err = open_envelope(&cipher, magic, name, &bytes).unwrap_err();
            assert!(matches!(err, VaultError::Integrity { ref object, .. } if object == name));
        }
        for i in 0..sealed.len() {
            let mut flipped = sealed.clone();
            flipped[i] ^= 0x80;
            assert!(
                open_envelope(&cipher, *b"FYIX", "index/00", &flipped).is_err(),
                "byte {i}"
            );
        }
    }
}
