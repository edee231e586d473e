//! Reading what a guest says about itself: `uname -sm`, `/etc/os-release`, `df -Pk`, `id -u`, and the
//! small key=value reports the install scripts print. Every parser takes the raw text a command printed
//! and refuses what it does not understand with a reason, never a panic: the text comes from the guest.

use super::PushError;

/// Processor architectures the agent is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// The name used in the agents folder (`<agents dir>/mobility-<name>`) and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }
}

/// Longest piece of guest output quoted in an error or a log line.
const QUOTE_CHARS: usize = 120;

/// Guest text made safe to quote: one line, no control characters, bounded.
pub fn quote(text: &str) -> String {
    let one_line: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(QUOTE_CHARS + 1)
        .collect();
    if one_line.chars().count() > QUOTE_CHARS {
        let cut: String = one_line.chars().take(QUOTE_CHARS).collect();
        format!("{cut}...")
    } else if one_line.is_empty() {
        "(nothing)".to_string()
    } else {
        one_line
    }
}

/// The architecture from `uname -sm` output ("Linux x86_64"), or [`PushError::UnsupportedOs`] naming
/// what was found.
pub fn parse_uname(output: &str) -> Result<Arch, PushError> {
    let unsupported = || PushError::UnsupportedOs {
        found: quote(output),
    };
    let mut words = output.split_whitespace();
    let (Some(kernel), Some(machine), None) = (words.next(), words.next(), words.next()) else {
        return Err(unsupported());
    };
    if kernel != "Linux" {
        return Err(unsupported());
    }
    match machine {
        "x86_64" | "amd64" => Ok(Arch::X86_64),
        // Big-endian aarch64_be is another build target: refused like any other.
        "aarch64" | "arm64" => Ok(Arch::Aarch64),
        _ => Err(unsupported()),
    }
}

/// A readable name of the distribution from `/etc/os-release` (PRETTY_NAME, else NAME and
/// VERSION_ID), or `None` when the text holds neither.
pub fn parse_os_release(text: &str) -> Option<String> {
    let mut fields = std::collections::HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        fields.insert(key.trim(), value.replace("\\\"", "\""));
    }
    let pick = |k: &str| fields.get(k).filter(|v| !v.is_empty()).cloned();
    let name = pick("PRETTY_NAME").or_else(|| match (pick("NAME"), pick("VERSION_ID")) {
        (Some(n), Some(v)) => Some(format!("{n} {v}")),
        (n, _) => n,
    })?;
    Some(quote(&name))
}

/// Free bytes from `df -Pk` output: the header, then one line whose "Available" column (in KiB) is
/// the one before the "Capacity" column (`NN%`). Parsing from the capacity column keeps file system
/// names with spaces from shifting the numbers.
pub fn parse_df_available(output: &str) -> Result<u64, String> {
    let mut lines = output.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().ok_or("df printed nothing")?;
    if !header.contains("Avail") {
        return Err(format!("unexpected df header: {}", quote(header)));
    }
    let line = lines.next().ok_or("df printed no file system line")?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let cap = words
        .iter()
        .position(|w| {
            w.len() > 1 && w.ends_with('%') && w[..w.len() - 1].bytes().all(|b| b.is_ascii_digit())
        })
        .filter(|&i| i >= 3)
        .ok_or_else(|| format!("no capacity column in df output: {}", quote(line)))?;
    let kib: u64 = words[cap - 1]
        .parse()
        .map_err(|_| format!("available space is not a number: {}", quote(words[cap - 1])))?;
    kib.checked_mul(1024)
        .ok_or_else(|| format!("available space out of range: {kib} KiB"))
}

/// The numeric user id from `id -u`.
pub fn parse_uid(output: &str) -> Result<u32, String> {
    output
        .trim()
        .parse()
        .map_err(|_| format!("id -u printed {}", quote(output)))
}

/// The value of `key=` in the lines a script printed (the last one wins), if any.
pub fn report_value<'a>(output: &'a str, key: &str) -> Option<&'a str> {
    output
        .lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .next_back()
        .map(str::trim)
}

/// The first 64 hex digits of `sha256sum` output, lower-cased, if it printed a digest.
pub fn parse_sha256sum(output: &str) -> Option<String> {
    let word = output.split_whitespace().next()?;
    (word.len() == 64 && word.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| word.to_ascii_lowercase())
}

/// The agent id in the agent's `registration.json` (format `ferry-mobility-registration`).
pub fn parse_registration(json: &str) -> Result<String, String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("registration.json: {e}"))?;
    if value["format"] != "ferry-mobility-registration" {
        return Err("registration.json: not an agent registration".into());
    }
    value["agent_id"]
        .as_str()
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 64
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .map(str::to_string)
        .ok_or_else(|| "registration.json: no valid agent_id".into())
}

/// Whether a failed sudo said it needs a password (or a terminal to ask for one).
pub fn sudo_wants_password(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    s.contains("sudo:")
        && (s.contains("password is required")
            || s.contains("a terminal is required")
            || s.contains("no tty present")
            || s.contains("askpass"))
}

#[cfg(test)]
#[path = "probe_tests.rs"]
mod tests;
