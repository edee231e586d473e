//! Log output: human-readable lines by default, JSON lines with `--log-format json`, filtered
//! by `RUST_LOG` (same syntax as env_logger) with "info" when it is unset.
//!
//! Logs go to stderr; stdout is kept for what commands print (and the first-start secrets).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Filter used when `RUST_LOG` is unset or empty.
pub const DEFAULT_FILTER: &str = "info";

/// Filter of the admin commands: they log only what needs attention.
pub const ADMIN_FILTER: &str = "warn";

/// Builds the filter from a `RUST_LOG`-style directive string, `default` when there is none.
pub fn filter_from(directives: Option<&str>, default: &str) -> anyhow::Result<EnvFilter> {
    let directives = directives
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .unwrap_or(default);
    EnvFilter::try_new(directives)
        .map_err(|e| anyhow::anyhow!("invalid RUST_LOG filter {directives:?}: {e}"))
}

/// Installs the global subscriber with `RUST_LOG`, else `default_filter`. Fails if `RUST_LOG`
/// does not parse or a subscriber is already installed.
pub fn init(format: LogFormat, default_filter: &str) -> anyhow::Result<()> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = filter_from(rust_log.as_deref(), default_filter)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only help a person at a terminal; journald and files get plain text.
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_filter_is_info() {
        for unset in [None, Some(""), Some("  ")] {
            assert_eq!(
                filter_from(unset, DEFAULT_FILTER).unwrap().to_string(),
                "info"
            );
            assert_eq!(
                filter_from(unset, ADMIN_FILTER).unwrap().to_string(),
                "warn"
            );
        }
    }

    #[test]
    fn directives_are_accepted_or_named_when_bad() {
        let f = filter_from(Some("warn,appliance=debug"), DEFAULT_FILTER)
            .unwrap()
            .to_string();
        assert!(f.contains("appliance=debug") && f.contains("warn"), "{f}");
        let err = filter_from(Some("appliance=loud"), DEFAULT_FILTER)
            .unwrap_err()
            .to_string();
        assert!(err.contains("appliance=loud"), "{err}");
    }
}
