//! The page shell (header, navigation, footer), notices, state badges, pagers and the formatting of
//! numbers, durations and times that every page shares.

use maud::{html, Markup, DOCTYPE};

use super::Session;
use crate::mgmt::auth::Role;
use crate::mgmt::catalog::ProtectionState;
use crate::mgmt::restore_jobs::JobState;
use crate::mgmt::MgmtError;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The stylesheet, with the version so a new binary's CSS is fetched despite caching.
const CSS_HREF: &str = concat!("/static/ferry.css?v=", env!("CARGO_PKG_VERSION"));
pub const SETUP_JS_HREF: &str = concat!("/static/setup.js?v=", env!("CARGO_PKG_VERSION"));

/// Which navigation entry a page belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nav {
    Dashboard,
    Agents,
    Points,
    Restores,
    Vcenters,
    PushJobs,
    Audit,
    Settings,
}

/// A message at the top of a page after an action.
#[derive(Clone, Debug)]
pub enum Notice {
    Ok(String),
    Error(String),
    /// A secret shown once (a new passphrase or API token).
    Secret {
        title: String,
        value: String,
        note: String,
    },
}

fn head(title: &str, refresh: Option<u32>, scripts: &[&str]) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            @if let Some(secs) = refresh {
                meta http-equiv="refresh" content=(secs);
            }
            title { (title) " · Ferry" }
            link rel="icon" href="data:,";
            link rel="stylesheet" href=(CSS_HREF);
            @for src in scripts {
                script src=(src) defer {}
            }
        }
    }
}

fn brand() -> Markup {
    html! {
        a.brand href="/" {
            svg.logo width="28" height="28" viewBox="0 0 28 28" aria-hidden="true" {
                rect x="0" y="0" width="28" height="28" rx="6" fill="#2563eb" {}
                path d="M5 17 h18 l-3 5 h-12 z" fill="#ffffff" {}
                path d="M9 16 v-7 h7 l3 7 z" fill="#bfdbfe" {}
                path d="M4 24 q3 -2 6 0 t6 0 t6 0" stroke="#ffffff" stroke-width="1.5" fill="none" {}
            }
            span.brand-name { "Ferry" }
            span.brand-sub { "DR appliance" }
            span.version { "v" (VERSION) }
        }
    }
}

/// A page of a signed-in user.
pub fn page(
    session: &Session,
    nav: Nav,
    title: &str,
    refresh: Option<u32>,
    body: Markup,
) -> Markup {
    let link = |id: &str, href: &str, label: &str, entry: Nav| {
        html! { a.active[nav == entry] id=(id) href=(href) { (label) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, refresh, &[]))
            body {
                header.topbar {
                    (brand())
                    nav.mainnav aria-label="Main" {
                        (link("nav-dashboard", "/", "Dashboard", Nav::Dashboard))
                        (link("nav-agents", "/agents", "Agents", Nav::Agents))
                        (link("nav-points", "/points", "Recovery points", Nav::Points))
                        (link("nav-restores", "/restores", "Restores", Nav::Restores))
                        (link("nav-vcenters", "/vcenters", "vCenters", Nav::Vcenters))
                        (link("nav-push-jobs", "/push-jobs", "Push jobs", Nav::PushJobs))
                        @if session.can(Role::Admin) {
                            (link("nav-audit", "/audit", "Audit log", Nav::Audit))
                        }
                        (link("nav-settings", "/settings", "Settings", Nav::Settings))
                    }
                    div.userbox {
                        span.username { (session.user()) }
                        span.badge.badge-muted { (session.principal.role.as_str()) }
                        form.inline method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(session.csrf);
                            button #logout.btn.btn-small.btn-ghost type="submit" { "Sign out" }
                        }
                    }
                }
                main.content {
                    h1 { (title) }
                    (body)
                }
                (footer())
            }
        }
    }
}

fn footer() -> Markup {
    html! {
        footer.footer {
            "Ferry disaster-recovery appliance " (VERSION)
            " · " a href="/api/v1/openapi.json" { "REST API (OpenAPI)" }
        }
    }
}

/// A page without navigation (setup, sign-in, errors): a centred card.
pub fn bare(title: &str, scripts: &[&str], body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, None, scripts))
            body.bare {
                header.topbar { (brand()) }
                main.content.narrow {
                    (body)
                }
                (footer())
            }
        }
    }
}

/// A page explaining why a request failed, with a way back.
pub fn error_page(err: &MgmtError) -> Markup {
    let title = match err {
        MgmtError::Csrf => "Form expired or not from this session",
        MgmtError::Forbidden(_) => "Not allowed",
        MgmtError::NotFound(_) => "Not found",
        MgmtError::TooManyAttempts { .. } => "Too many attempts",
        MgmtError::Unavailable(_) => "Temporarily unavailable",
        MgmtError::Conflict(_) => "Not possible right now",
        MgmtError::Internal(_) => "Something went wrong",
        _ => "The request was refused",
    };
    message_page(title, &sentence(&err.to_string()))
}

/// The core's messages start in lower case (they also end up inside other sentences).
pub fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

pub fn message_page(title: &str, message: &str) -> Markup {
    bare(
        title,
        &[],
        html! {
            section.card {
                h1 { (title) }
                p.error { (message) }
                p { a.btn href="/" { "Back to the dashboard" } }
            }
        },
    )
}

pub fn notice(notice: Option<&Notice>) -> Markup {
    html! {
        @match notice {
            Some(Notice::Ok(text)) => { p.notice.ok role="status" { (text) } }
            Some(Notice::Error(text)) => { p.notice.error role="alert" { (text) } }
            Some(Notice::Secret { title, value, note }) => {
                div.notice.secret role="status" {
                    strong { (title) }
                    code.secret-value { (value) }
                    span.hint { (note) }
                }
            }
            None => {}
        }
    }
}

pub fn badge(label: &str, tone: &str) -> Markup {
    html! { span class=(format!("badge badge-{tone}")) { (label) } }
}

pub fn protection_badge(state: ProtectionState) -> Markup {
    let (label, tone) = match state {
        ProtectionState::Protected => ("Protected", "ok"),
        ProtectionState::InitialSync => ("Initial sync", "info"),
        ProtectionState::RpoExceeded => ("RPO exceeded", "warn"),
        ProtectionState::Disconnected => ("Disconnected", "bad"),
        ProtectionState::Revoked => ("Revoked", "muted"),
    };
    badge(label, tone)
}

pub fn job_badge(state: JobState, cancel_requested: bool) -> Markup {
    let (label, tone) = match state {
        JobState::Running if cancel_requested => ("Cancelling", "warn"),
        JobState::Running => ("Running", "info"),
        JobState::Succeeded => ("Succeeded", "ok"),
        JobState::Failed => ("Failed", "bad"),
        JobState::Cancelled => ("Cancelled", "muted"),
    };
    badge(label, tone)
}

pub fn actor_badge(state: &str) -> Markup {
    let tone = match state {
        "running" => "ok",
        "starting" => "info",
        "restarting" => "warn",
        _ => "bad",
    };
    badge(state, tone)
}

/// "Previous / Next" links of a paged list; `base` already holds any other query parameters.
pub fn pager(base: &str, offset: usize, limit: usize, total: usize) -> Markup {
    let join = if base.contains('?') { '&' } else { '?' };
    let first = if total == 0 { 0 } else { offset + 1 };
    let last = (offset + limit).min(total);
    html! {
        nav.pager aria-label="Pages" {
            span.muted { (first) "–" (last) " of " (total) }
            @if offset > 0 {
                a.btn.btn-small href=(format!("{base}{join}offset={}", offset.saturating_sub(limit))) { "← Newer" }
            }
            @if offset + limit < total {
                a.btn.btn-small href=(format!("{base}{join}offset={}", offset + limit)) { "Older →" }
            }
        }
    }
}

/// A hidden CSRF field and the form around it, for one-button actions.
pub fn action_button(
    session: &Session,
    action: &str,
    label: &str,
    class: &str,
    hidden: &[(&str, &str)],
) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            input type="hidden" name="csrf" value=(session.csrf);
            @for (name, value) in hidden {
                input type="hidden" name=(name) value=(value);
            }
            button type="submit" class=(format!("btn btn-small {class}")) { (label) }
        }
    }
}

/// Bytes with binary units: "1.5 GiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else if value < 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

/// Bytes per second in bits, as network people read them: "12.3 Mbit/s".
pub fn rate(bytes_per_sec: f64) -> String {
    let bits = bytes_per_sec.max(0.0) * 8.0;
    let (value, unit) = if bits >= 1e9 {
        (bits / 1e9, "Gbit/s")
    } else if bits >= 1e6 {
        (bits / 1e6, "Mbit/s")
    } else if bits >= 1e3 {
        (bits / 1e3, "kbit/s")
    } else {
        (bits, "bit/s")
    };
    if value < 10.0 && unit != "bit/s" {
        format!("{value:.1} {unit}")
    } else {
        format!("{value:.0} {unit}")
    }
}

/// A duration in seconds, two units at most, a zero second unit left out: "45 s", "3 min 20 s",
/// "15 min", "2 h 5 min", "3 d".
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let two = |major: u64, major_unit: &str, minor: u64, minor_unit: &str| {
        if minor == 0 {
            format!("{major} {major_unit}")
        } else {
            format!("{major} {major_unit} {minor} {minor_unit}")
        }
    };
    if d > 0 {
        two(d, "d", h, "h")
    } else if h > 0 {
        two(h, "h", m, "min")
    } else if m > 0 {
        two(m, "min", s, "s")
    } else {
        format!("{s} s")
    }
}

/// An RFC 3339 UTC time as "2024-05-01 12:00:03 UTC" (fractions dropped); other text unchanged.
pub fn time(rfc3339: &str) -> String {
    match rfc3339.split_once('T') {
        Some((date, rest)) => {
            let clock: String = rest.chars().take(8).collect();
            format!("{date} {clock} UTC")
        }
        None => rfc3339.to_string(),
    }
}

/// A colon-separated fingerprint ("79:61:…:bc") that wraps only after a colon, never inside a
/// byte: a `<wbr>` after each colon, and the `fingerprint` class keeps the browser from breaking
/// anywhere else.
pub fn fingerprint(id: Option<&str>, text: &str) -> Markup {
    html! {
        code.fingerprint id=[id] {
            @for (i, part) in text.split(':').enumerate() {
                @if i > 0 { ":" wbr; }
                (part)
            }
        }
    }
}

/// A dash for what is not known yet.
pub fn dash() -> Markup {
    html! { span.muted { "—" } }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (for data: URLs, path segments).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
