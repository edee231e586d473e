//! `/plugin/*`: what the vSphere Client loads for Ferry's remote plugin: the manifest
//! (`plugin.json`, see `mgmt::plugin::manifest`) and the static pages it names. The vSphere Client
//! shows these pages in a frame, so here — and only here — framing is allowed, and only by the
//! vCenters the appliance knows (CSP `frame-ancestors`); every other answer says
//! `X-Frame-Options: DENY` and `frame-ancestors 'none'`.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};

use crate::mgmt::{plugin, Core};
use crate::web::error::ApiError;

/// The path prefix whose answers may be framed by a registered vCenter.
pub const PREFIX: &str = "/plugin/";

const INDEX_HTML: &str = include_str!("plugin_assets/index.html");
const VM_SUMMARY_HTML: &str = include_str!("plugin_assets/vm-summary.html");
const PLUGIN_JS: &str = include_str!("plugin_assets/plugin.js");
const ICON_SVG: &str = include_str!("plugin_assets/icon.svg");

/// The Content-Security-Policy of a plugin answer: like the rest of the listener (no inline
/// script or style), but the known vCenters may frame it and serve the client SDK script.
pub fn plugin_csp(vcenter_origins: &[String]) -> String {
    let origins: Vec<&str> = vcenter_origins
        .iter()
        .map(String::as_str)
        // Stored URLs are normalized, so this only guards the header against a damaged record.
        .filter(|o| o.starts_with("https://") && !o.contains([' ', ';', ',', '\'', '"']))
        .collect();
    let framers = if origins.is_empty() {
        "'none'".to_string()
    } else {
        origins.join(" ")
    };
    let scripts = std::iter::once("'self'")
        .chain(origins.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "default-src 'none'; script-src {scripts}; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; form-action 'none'; frame-ancestors {framers}; base-uri 'none'"
    )
}

/// Adds `X-Frame-Options: DENY` to every answer outside [`PREFIX`] (the plugin pages rely on
/// their CSP `frame-ancestors` instead, which names the vCenters allowed to frame them).
pub async fn frame_options(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let framable = req.path().starts_with(PREFIX);
    let mut res = next.call(req).await?;
    if !framable {
        res.headers_mut()
            .insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    Ok(res)
}

fn plugin_file(
    core: &Core,
    content_type: &'static str,
    body: impl MessageBody + 'static,
) -> Result<HttpResponse, ApiError> {
    let csp = plugin_csp(&core.vcenters.plugin_origins()?);
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, csp))
        .body(body))
}

async fn manifest(core: web::Data<Core>) -> Result<HttpResponse, ApiError> {
    plugin_file(&core, "application/json", plugin::manifest().to_string())
}

async fn index(core: web::Data<Core>) -> Result<HttpResponse, ApiError> {
    plugin_file(&core, "text/html; charset=utf-8", INDEX_HTML)
}

async fn vm_summary(core: web::Data<Core>) -> Result<HttpResponse, ApiError> {
    plugin_file(&core, "text/html; charset=utf-8", VM_SUMMARY_HTML)
}

async fn script(core: web::Data<Core>) -> Result<HttpResponse, ApiError> {
    plugin_file(&core, "text/javascript; charset=utf-8", PLUGIN_JS)
}

async fn icon(core: web::Data<Core>) -> Result<HttpResponse, ApiError> {
    plugin_file(&core, "image/svg+xml", ICON_SVG)
}

/// Registers the plugin's files. They need no sign-in: the vSphere Client fetches them without
/// Ferry credentials, and they hold nothing but code; the data comes from `/api/v1`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(plugin::MANIFEST_PATH, web::get().to(manifest))
        .route("/plugin/index.html", web::get().to(index))
        .route("/plugin/vm-summary.html", web::get().to(vm_summary))
        .route("/plugin/plugin.js", web::get().to(script))
        .route("/plugin/icon.svg", web::get().to(icon));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csp_lets_only_known_vcenters_frame_the_pages() {
        let none = plugin_csp(&[]);
        assert!(none.contains("frame-ancestors 'none'"), "{none}");
        assert!(none.contains("script-src 'self';"), "{none}");
        let two = plugin_csp(&[
            "https://vc1.example.test".into(),
            "https://10.0.0.5:8443".into(),
        ]);
        assert!(
            two.contains("frame-ancestors https://vc1.example.test https://10.0.0.5:8443;"),
            "{two}"
        );
        assert!(!two.contains("unsafe-inline"), "{two}");
        // A damaged record cannot widen the policy.
        let bad = plugin_csp(&["https://x; script-src *".into(), "http://plain".into()]);
        assert!(bad.contains("frame-ancestors 'none'"), "{bad}");
    }

    #[test]
    fn pages_load_no_inline_script() {
        for page in [INDEX_HTML, VM_SUMMARY_HTML] {
            for tag in page.split("<script").skip(1) {
                let open = &tag[..tag.find('>').expect("a closed tag")];
                assert!(
                    open.contains("src="),
                    "inline script in a plugin page: {tag}"
                );
                assert!(tag[open.len() + 1..].starts_with("</script>"), "{tag}");
            }
            assert!(!page.contains("style="), "inline style in a plugin page");
        }
    }
}
