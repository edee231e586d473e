//! The appliance's two passphrases, kept in the data dir once first-boot setup wrote them
//! (`mgmt::setup` owns writing them):
//!
//! - `registration-passphrase` (0600): what an agent presents to register.
//! - `vault-passphrase` (0600): unlocks the vault's master key. Losing it loses the vault, so
//!   setup shows it once (with the recovery kit) for the operator to store elsewhere.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rand::seq::IndexedRandom;

use crate::config::Config;
use crate::files::{self, PRIVATE_FILE_MODE};

pub const REGISTRATION_PASSPHRASE_FILE: &str = "registration-passphrase";
pub const VAULT_PASSPHRASE_FILE: &str = "vault-passphrase";

/// Symbols that survive being read aloud or copied by hand: no 0/O, 1/I/L, or 5/S, 2/Z, 8/B.
const ALPHABET: &[u8] = b"34679ACDEFGHJKMNPQRTUVWXY";
const GROUP_LEN: usize = 4;
/// 24 symbols of 25: about 111 bits.
pub const REGISTRATION_SYMBOLS: usize = 24;
/// 32 symbols of 25: about 148 bits; the vault is exposed to offline guessing.
pub const VAULT_SYMBOLS: usize = 32;

/// Where each secret lives in a data dir.
pub fn registration_passphrase_path(data_dir: &Path) -> PathBuf {
    data_dir.join(REGISTRATION_PASSPHRASE_FILE)
}

pub fn vault_passphrase_path(data_dir: &Path) -> PathBuf {
    data_dir.join(VAULT_PASSPHRASE_FILE)
}

/// What the first start prints for the operator to note (the daemon's stdout, once): only the
/// passphrases generated now, the CA fingerprint, and where the recovery kit is.
pub fn announce(
    out: &mut impl Write,
    registration: Option<&str>,
    vault: Option<&str>,
    ca_fingerprint: &str,
) -> io::Result<()> {
    writeln!(out, "==== Ferry appliance: first start ====")?;
    if let Some(passphrase) = registration {
        writeln!(out, "Agent registration passphrase: {passphrase}")?;
        writeln!(out, "  (show it again with `appliance passphrase show`)")?;
    }
    if let Some(passphrase) = vault {
        writeln!(out, "Vault passphrase: {passphrase}")?;
        writeln!(
            out,
            "  Store it somewhere safe outside this appliance: with it alone, a new \
             appliance can restore every recovery point; without it, nothing can."
        )?;
    }
    writeln!(out, "CA fingerprint (SHA-256): {ca_fingerprint}")?;
    writeln!(out, "======================================")?;
    out.flush()
}

/// A fresh passphrase of `symbols` symbols from [`ALPHABET`], in dash-separated groups of 4.
pub fn generate_passphrase(symbols: usize) -> String {
    let mut rng = rand::rng();
    let chars: Vec<char> = (0..symbols)
        .map(|_| *ALPHABET.choose(&mut rng).expect("alphabet is not empty") as char)
        .collect();
    chars
        .chunks(GROUP_LEN)
        .map(|group| group.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// The form passphrases are compared in: case, spaces and dashes do not matter, so a
/// passphrase typed as `abcd efgh` matches `ABCD-EFGH`.
pub fn normalize_passphrase(input: &str) -> String {
    input
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// Reads a secret file, ignoring surrounding whitespace; an empty file is an error.
pub fn read_secret_file(path: &Path) -> anyhow::Result<String> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let secret = text.trim();
    if secret.is_empty() {
        bail!("{} is empty", path.display());
    }
    Ok(secret.to_string())
}

/// Reads a secret file if it exists (`None` when it does not).
pub fn read_secret_file_if_exists(path: &Path) -> anyhow::Result<Option<String>> {
    if !path.exists() {
        return Ok(None);
    }
    read_secret_file(path).map(Some)
}

/// Writes a secret file (0600, atomically, replacing a previous one).
pub fn write_secret_file(path: &Path, secret: &str) -> io::Result<()> {
    files::replace_file(path, format!("{secret}\n").as_bytes(), PRIVATE_FILE_MODE)
}

/// The registration passphrase of an appliance that has started at least once.
pub fn read_registration_passphrase(data_dir: &Path) -> anyhow::Result<String> {
    let path = registration_passphrase_path(data_dir);
    if !path.exists() {
        bail!(
            "{} does not exist: start the appliance (`appliance run`) and finish its first-boot \
             setup to create it",
            path.display()
        );
    }
    read_secret_file(&path)
}

/// The vault passphrase: the data dir's file (setup wrote it, so it is the one the vault was
/// created with), else the configuration's.
pub fn read_vault_passphrase(cfg: &Config) -> anyhow::Result<String> {
    if let Some(passphrase) = read_secret_file_if_exists(&vault_passphrase_path(&cfg.data_dir))? {
        return Ok(passphrase);
    }
    if let Some(given) = &cfg.vault_passphrase {
        return Ok(given.clone());
    }
    bail!(
        "no vault passphrase: {} does not exist and the configuration gives none \
         (use --vault-passphrase-file)",
        vault_passphrase_path(&cfg.data_dir).display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn config_in(dir: &Path) -> Config {
        let figment = figment::Figment::new().merge(figment::providers::Serialized::default(
            "data_dir",
            dir.to_string_lossy().into_owned(),
        ));
        Config::from_figment(figment).unwrap()
    }

    #[test]
    fn generated_passphrases_are_grouped_from_the_alphabet() {
        let p = generate_passphrase(REGISTRATION_SYMBOLS);
        assert_eq!(p.len(), 24 + 5, "{p}");
        let groups: Vec<&str> = p.split('-').collect();
        assert_eq!(groups.len(), 6);
        assert!(groups.iter().all(|g| g.len() == 4));
        assert!(normalize_passphrase(&p)
            .bytes()
            .all(|b| ALPHABET.contains(&b)));
        assert_ne!(p, generate_passphrase(REGISTRATION_SYMBOLS));
        assert_eq!(generate_passphrase(VAULT_SYMBOLS).len(), 32 + 7);
    }

    #[test]
    fn normalization_ignores_case_spaces_and_dashes() {
        assert_eq!(normalize_passphrase(" abcd-EFGH  jk\n"), "ABCDEFGHJK");
        assert_eq!(normalize_passphrase("AB-CD"), normalize_passphrase("ab cd"));
    }

    #[test]
    fn written_secrets_are_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config_in(&dir.path().join("data"));
        std::fs::create_dir_all(&cfg.data_dir).unwrap();
        let reg = registration_passphrase_path(&cfg.data_dir);
        let vault = vault_passphrase_path(&cfg.data_dir);
        assert_eq!(read_secret_file_if_exists(&reg).unwrap(), None);
        write_secret_file(&reg, "REG-ONE").unwrap();
        write_secret_file(&vault, "VAULT-ONE").unwrap();
        write_secret_file(&vault, "VAULT-TWO").unwrap();
        for path in [&reg, &vault] {
            let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", path.display());
        }
        assert_eq!(
            read_registration_passphrase(&cfg.data_dir).unwrap(),
            "REG-ONE"
        );
        assert_eq!(read_vault_passphrase(&cfg).unwrap(), "VAULT-TWO");
        assert_eq!(
            read_secret_file_if_exists(&reg).unwrap().as_deref(),
            Some("REG-ONE")
        );
    }

    #[test]
    fn the_file_wins_over_the_configured_vault_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config_in(dir.path());
        cfg.vault_passphrase = Some("from config".into());
        assert_eq!(read_vault_passphrase(&cfg).unwrap(), "from config");
        write_secret_file(&vault_passphrase_path(dir.path()), "written by setup").unwrap();
        assert_eq!(read_vault_passphrase(&cfg).unwrap(), "written by setup");
    }

    #[test]
    fn empty_secret_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(registration_passphrase_path(dir.path()), "  \n").unwrap();
        let err = read_registration_passphrase(dir.path()).unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
        let err =
            read_secret_file_if_exists(&registration_passphrase_path(dir.path())).unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
    }

    #[test]
    fn missing_files_give_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_registration_passphrase(dir.path()).unwrap_err();
        assert!(err.to_string().contains("appliance run"), "{err}");
        let err = read_vault_passphrase(&config_in(dir.path())).unwrap_err();
        assert!(err.to_string().contains("--vault-passphrase-file"), "{err}");
    }

    #[test]
    fn announce_shows_only_what_it_is_given() {
        let mut out = Vec::new();
        announce(&mut out, Some("REG-PASS"), None, "ab:cd").unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("REG-PASS"), "{text}");
        assert!(!text.contains("Vault passphrase"), "{text}");
        assert!(text.contains("ab:cd"), "{text}");

        let mut out = Vec::new();
        announce(&mut out, None, Some("VAULT-PASS"), "ab:cd").unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("VAULT-PASS") && !text.contains("registration"),
            "{text}"
        );
    }
}
