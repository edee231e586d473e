//! The plain-HTTP listener of the image (port 80): it only sends browsers to the HTTPS management
//! listener, so typing the appliance's address without `https://` still lands on the console. It serves
//! nothing else: no API, no health, no cookies.

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use anyhow::Context;
use std::net::SocketAddr;

/// Where a request for `path_and_query` on `host_header` goes: the same host (without its port) on the
/// HTTPS port. `None` when the Host header is missing or not a plausible host name or address, so a
/// hostile header can never shape the Location beyond a host name.
pub fn redirect_location(
    host_header: Option<&str>,
    path_and_query: &str,
    https_port: u16,
) -> Option<String> {
    let host = host_header?.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        let (addr, _) = rest.split_once(']')?;
        if addr.is_empty()
            || !addr
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return None;
        }
        format!("[{addr}]")
    } else {
        let name = host.split(':').next().unwrap_or("");
        if name.is_empty()
            || name.len() > 253
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return None;
        }
        name.to_ascii_lowercase()
    };
    let path = if path_and_query.starts_with('/') && !path_and_query.starts_with("//") {
        path_and_query
    } else {
        "/"
    };
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    Some(format!("https://{name}{port}{path}"))
}

async fn redirect(req: HttpRequest, https_port: web::Data<u16>) -> HttpResponse {
    let host = req
        .headers()
        .get(actix_web::http::header::HOST)
        .and_then(|h| h.to_str().ok());
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    match redirect_location(host, path, **https_port) {
        // 308 keeps the method; browsers follow it for GET as they do 301.
        Some(location) => HttpResponse::PermanentRedirect()
            .insert_header(("Location", location))
            .finish(),
        None => HttpResponse::BadRequest()
            .content_type("text/plain; charset=utf-8")
            .body("use https:// and the appliance's host name or address\n"),
    }
}

/// Binds `listen` and redirects everything to HTTPS on `https_port`.
pub fn start(listen: &str, https_port: u16) -> anyhow::Result<ServerHandle> {
    let addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("listen_redirect {listen:?} is not host:port"))?;
    let port = web::Data::new(https_port);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(port.clone())
            .default_service(web::to(redirect))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .bind(addr)
    .with_context(|| format!("binding the HTTP redirect listener on {addr}"))?
    .run();
    let handle = server.handle();
    actix_rt::spawn(async move {
        if let Err(err) = server.await {
            tracing::error!(%err, "HTTP redirect listener failed");
        }
    });
    tracing::info!(listen = %addr, "HTTP redirect listener started");
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_host_and_path_and_swaps_the_port() {
        assert_eq!(
            redirect_location(Some("ferry.lab:80"), "/agents?x=1", 443).as_deref(),
            Some("https://ferry.lab/agents?x=1")
        );
        assert_eq!(
            redirect_location(Some("10.0.0.5"), "/", 8443).as_deref(),
            Some("https://10.0.0.5:8443/")
        );
        assert_eq!(
            redirect_location(Some("[fd00::5]:80"), "/setup", 443).as_deref(),
            Some("https://[fd00::5]/setup")
        );
    }

    #[test]
    fn hostile_or_missing_hosts_get_no_location() {
        for host in [
            None,
            Some(""),
            Some("evil.example/x"),
            Some("a b"),
            Some("user@evil"),
            Some("[::1"),
            Some("[zz::1]:80"),
            Some("\u{e9}vil"),
        ] {
            assert_eq!(redirect_location(host, "/", 443), None, "{host:?}");
        }
    }

    #[test]
    fn scheme_relative_paths_cannot_redirect_elsewhere() {
        assert_eq!(
            redirect_location(Some("ferry"), "//evil.example/", 443).as_deref(),
            Some("https://ferry/")
        );
    }

    #[actix_web::test]
    async fn answers_308_with_the_location() {
        let app = actix_web::test::init_service(
            App::new()
                .app_data(web::Data::new(8443u16))
                .default_service(web::to(redirect)),
        )
        .await;
        let req = actix_web::test::TestRequest::get()
            .uri("/points")
            .insert_header(("Host", "ferry:80"))
            .to_request();
        let resp = actix_web::test::call_service(&app, req).await;
        assert_eq!(resp.status().as_u16(), 308);
        assert_eq!(
            resp.headers().get("Location").unwrap(),
            "https://ferry:8443/points"
        );
        let req = actix_web::test::TestRequest::get()
            .uri("/")
            .insert_header(("Host", "bad host"))
            .to_request();
        let resp = actix_web::test::call_service(&app, req).await;
        assert_eq!(resp.status().as_u16(), 400);
    }
}
