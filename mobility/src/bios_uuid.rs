//! The machine's SMBIOS system UUID, sent at registration so the appliance can tell which VM that it
//! discovers in vCenter this agent runs in. Linux shows it in sysfs, readable by root only on most
//! systems; an agent that cannot read it registers without it (`--bios-uuid` supplies it instead).

use std::path::Path;

/// Where Linux shows the SMBIOS system UUID.
pub const PRODUCT_UUID_PATH: &str = "/sys/class/dmi/id/product_uuid";

/// Why a text is not a usable BIOS UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BiosUuidError {
    #[error("{0:?} is not a UUID: expected 32 hex digits as 8-4-4-4-12 (or without dashes)")]
    Malformed(String),
    /// SMBIOS uses all zeros ("not set") and all ones ("not present") when a machine has none.
    #[error("{0} is a placeholder that firmware reports when a machine has no UUID")]
    Placeholder(String),
}

/// The canonical form of a UUID: lower case, 8-4-4-4-12. Accepts either case, with or without the
/// dashes, and surrounding white space (sysfs ends the value with a line break).
pub fn normalize(text: &str) -> Result<String, BiosUuidError> {
    let trimmed = text.trim();
    let malformed = || BiosUuidError::Malformed(trimmed.chars().take(80).collect());
    let hex: String = if trimmed.len() == 36 {
        let dashes_in_place = trimmed
            .char_indices()
            .all(|(i, c)| (c == '-') == matches!(i, 8 | 13 | 18 | 23));
        if !dashes_in_place {
            return Err(malformed());
        }
        trimmed.chars().filter(|&c| c != '-').collect()
    } else {
        trimmed.to_string()
    };
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed());
    }
    let hex = hex.to_ascii_lowercase();
    let canonical = format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    );
    if hex.bytes().all(|b| b == b'0') || hex.bytes().all(|b| b == b'f') {
        return Err(BiosUuidError::Placeholder(canonical));
    }
    Ok(canonical)
}

/// This machine's BIOS UUID, or `None` when it cannot be read or is not a usable UUID.
pub fn read_local() -> Option<String> {
    read_from(Path::new(PRODUCT_UUID_PATH))
}

/// [`read_local`] from another file (tests).
pub fn read_from(path: &Path) -> Option<String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) => {
            // Expected without root or outside a VM: registration goes on without it.
            tracing::debug!(path = %path.display(), %err, "BIOS UUID not readable; registering without it");
            return None;
        }
    };
    match normalize(&text) {
        Ok(uuid) => Some(uuid),
        Err(err @ BiosUuidError::Placeholder(_)) => {
            tracing::debug!(path = %path.display(), %err, "no BIOS UUID set; registering without it");
            None
        }
        Err(err) => {
            tracing::warn!(path = %path.display(), %err, "unusable BIOS UUID; registering without it");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANONICAL: &str = "4c4c4544-0042-3510-8052-b4c04f4b4d32";

    #[test]
    fn normalizes_case_dashes_and_white_space() {
        for given in [
            CANONICAL,
            "4C4C4544-0042-3510-8052-B4C04F4B4D32\n",
            "  4c4c4544004235108052B4C04F4B4D32 ",
            "4C4C4544-0042-3510-8052-b4c04f4b4d32\r\n",
        ] {
            assert_eq!(normalize(given).as_deref(), Ok(CANONICAL), "{given:?}");
        }
    }

    #[test]
    fn bad_text_is_refused_with_the_reason() {
        for bad in [
            "",
            "not-a-uuid",
            "4c4c4544-0042-3510-8052-b4c04f4b4d3",
            "4c4c4544-0042-3510-8052-b4c04f4b4d322",
            "4c4c4544-0042-3510-8052-b4c04f4b4d3g",
            "4c4c45440-042-3510-8052-b4c04f4b4d32",
            "4c4c4544_0042_3510_8052_b4c04f4b4d32",
            "{4c4c4544-0042-3510-8052-b4c04f4b4d32}",
            "4c4c4544-0042-3510-8052-b4c04f4b4d32-",
            "4c4c4544-0042-3510-8052-b4c04f4b4d32 extra",
            "ÿÿÿÿÿÿÿÿÿÿÿÿÿÿÿÿÿÿ",
            "4c4c4544--042-3510-8052-b4c04f4b4d32",
        ] {
            assert!(
                matches!(normalize(bad), Err(BiosUuidError::Malformed(_))),
                "{bad:?}"
            );
        }
        for placeholder in [
            "00000000-0000-0000-0000-000000000000",
            "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
        ] {
            let err = normalize(placeholder).unwrap_err();
            assert!(matches!(err, BiosUuidError::Placeholder(_)), "{err}");
            assert!(err.to_string().contains("placeholder"));
        }
        let long = "x".repeat(10_000);
        let err = normalize(&long).unwrap_err().to_string();
        assert!(err.len() < 200, "the message quotes a bounded part: {err}");
    }

    #[test]
    fn reading_the_file_yields_the_canonical_form_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("product_uuid");
        assert_eq!(read_from(&path), None, "missing file");
        std::fs::write(&path, "4C4C4544-0042-3510-8052-B4C04F4B4D32\n").unwrap();
        assert_eq!(read_from(&path).as_deref(), Some(CANONICAL));
        std::fs::write(&path, "To Be Filled By O.E.M.\n").unwrap();
        assert_eq!(read_from(&path), None, "garbage");
        std::fs::write(&path, "00000000-0000-0000-0000-000000000000\n").unwrap();
        assert_eq!(read_from(&path), None, "placeholder");
        std::fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
        assert_eq!(read_from(&path), None, "not UTF-8");
        assert_eq!(read_from(dir.path()), None, "a directory");
    }
}
