//! Checks of what an operator types for a vCenter: its URL, user name, password and thumbprint.

use super::MgmtError;

/// Longest user name and password taken (vSphere's own limits are lower; this only bounds the input).
const MAX_USERNAME_CHARS: usize = 256;
const MAX_PASSWORD_BYTES: usize = 1024;

/// `https://host[:port][/sdk]` as `https://host[:port]/sdk`. Anything else (another scheme or path,
/// credentials, a query) is refused: the URL names the vCenter's API endpoint and nothing more.
pub fn normalize_url(input: &str) -> Result<String, MgmtError> {
    let bad =
        |why: &str| MgmtError::invalid("url", format!("{why}; expected https://host[:port][/sdk]"));
    let input = input.trim();
    if input.is_empty() {
        return Err(bad("missing"));
    }
    // The URL parser reads `https:///sdk` as host "sdk"; an empty host is a typo, not a name.
    if input
        .split_once("://")
        .is_some_and(|(_, rest)| rest.starts_with(['/', '\\']))
    {
        return Err(bad("no host"));
    }
    let url = url::Url::parse(input).map_err(|e| bad(&format!("not a URL ({e})")))?;
    if url.scheme() != "https" {
        return Err(bad(&format!("the scheme is {}, not https", url.scheme())));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "the user name and password go in their own fields, not in the URL",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("a query or fragment is not allowed"));
    }
    let host = match url.host() {
        Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => format!("[{a}]"),
        _ => return Err(bad("no host")),
    };
    if !matches!(url.path(), "" | "/" | "/sdk" | "/sdk/") {
        return Err(bad(&format!("the path is {}, not /sdk", url.path())));
    }
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    Ok(format!("https://{host}{port}/sdk"))
}

/// A certificate thumbprint as colon hex in upper case (`AB:CD:...`), from hex with or without colons:
/// 32 bytes (SHA-256) or 20 bytes (SHA-1, as older vSphere screens show it).
pub fn normalize_thumbprint(input: &str) -> Result<String, MgmtError> {
    let bad = |why: &str| {
        MgmtError::invalid(
            "thumbprint",
            format!("{why}; expected the certificate's SHA-256 (32 bytes) or SHA-1 (20 bytes) thumbprint as hex, with or without colons"),
        )
    };
    let input = input.trim();
    let hex: String = if input.contains(':') {
        let parts: Vec<&str> = input.split(':').collect();
        if parts.iter().any(|p| p.len() != 2) {
            return Err(bad("colons must separate pairs of hex digits"));
        }
        parts.concat()
    } else {
        input.to_string()
    };
    if hex.is_empty() {
        return Err(bad("missing"));
    }
    let bytes = hex::decode(&hex).map_err(|_| bad("not hex"))?;
    if bytes.len() != 32 && bytes.len() != 20 {
        return Err(bad(&format!("{} bytes", bytes.len())));
    }
    Ok(bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// The user name, trimmed; not empty, no control characters.
pub fn username(input: &str) -> Result<String, MgmtError> {
    let name = input.trim();
    if name.is_empty() {
        return Err(MgmtError::invalid("username", "must not be empty"));
    }
    if name.chars().count() > MAX_USERNAME_CHARS {
        return Err(MgmtError::invalid(
            "username",
            format!("at most {MAX_USERNAME_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(MgmtError::invalid(
            "username",
            "must not contain control characters",
        ));
    }
    Ok(name.to_string())
}

/// The password as given (spaces are significant); not empty.
pub fn password(input: &str) -> Result<(), MgmtError> {
    if input.is_empty() {
        return Err(MgmtError::invalid("password", "must not be empty"));
    }
    if input.len() > MAX_PASSWORD_BYTES {
        return Err(MgmtError::invalid(
            "password",
            format!("at most {MAX_PASSWORD_BYTES} bytes"),
        ));
    }
    if input.contains('\0') {
        return Err(MgmtError::invalid("password", "must not contain NUL"));
    }
    Ok(())
}
