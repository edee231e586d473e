//! HTTP for SOAP: one POST per call, the session cookie, timeouts, a response size cap, and the
//! mapping of connection and TLS failures to typed errors.

use std::error::Error as StdError;
use std::time::Duration;

use reqwest::header::{HeaderValue, CONTENT_TYPE, COOKIE, SET_COOKIE};

use crate::error::VsphereError;
use crate::tls::{self, MismatchError, MismatchSlot, Presented, Thumbprint, TlsTrust};
use crate::xml::Limits;

/// The cookie that carries a vSphere SOAP session.
pub const SESSION_COOKIE: &str = "vmware_soap_session";

/// Tuning of a [`crate::Client`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Time to establish a connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// Time for one call, connection to last byte. WaitForUpdatesEx adds its own wait to it.
    pub call_timeout: Duration,
    /// Larger responses fail with `Malformed` before they are parsed.
    pub max_response_bytes: usize,
    /// Responses with more XML elements fail with `Malformed`.
    pub max_elements: usize,
    /// Objects per page of RetrievePropertiesEx (vCenter may send fewer).
    pub page_size: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(120),
            max_response_bytes: 64 << 20,
            max_elements: Limits::default().max_elements,
            page_size: 500,
        }
    }
}

impl ClientOptions {
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_bytes: self.max_response_bytes,
            max_elements: self.max_elements,
            ..Limits::default()
        }
    }
}

/// A response as it came off the wire.
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub status: u16,
    /// `vmware_soap_session=<value>` if the server set it.
    pub session_cookie: Option<String>,
    pub body: Vec<u8>,
}

#[derive(Debug)]
pub(crate) struct Transport {
    http: reqwest::Client,
    pub sdk: url::Url,
    pin: Option<Thumbprint>,
    mismatch: MismatchSlot,
    pub options: ClientOptions,
}

/// `https://vc.example.com` and `https://vc.example.com/sdk` both mean the SDK endpoint.
pub(crate) fn sdk_url(url: &str) -> Result<url::Url, VsphereError> {
    let mut parsed = url::Url::parse(url)
        .map_err(|e| VsphereError::invalid_input(format!("vCenter URL {url:?}: {e}")))?;
    if !matches!(parsed.scheme(), "https" | "http") || parsed.host_str().is_none() {
        return Err(VsphereError::invalid_input(format!(
            "vCenter URL {url:?} must be https://host[:port][/sdk]"
        )));
    }
    if matches!(parsed.path(), "" | "/") {
        parsed.set_path("/sdk");
    }
    parsed.set_query(None);
    parsed.set_fragment(None);
    Ok(parsed)
}

impl Transport {
    pub fn new(url: &str, trust: &TlsTrust, options: ClientOptions) -> Result<Self, VsphereError> {
        let sdk = sdk_url(url)?;
        let mismatch = MismatchSlot::default();
        let (config, pin) = tls::client_config(trust, mismatch.clone())?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .http1_only()
            .no_proxy()
            .connect_timeout(options.connect_timeout)
            .user_agent(concat!("ferry-vsphere/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| VsphereError::Tls {
                reason: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(Transport {
            http,
            sdk,
            pin,
            mismatch,
            options,
        })
    }

    /// The HTTP client with the server-certificate check, for datastore and guest file transfers.
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// POSTs one SOAP envelope and reads the whole answer (up to the size cap).
    pub async fn post(
        &self,
        soap_action: &str,
        cookie: Option<&str>,
        body: String,
        timeout: Duration,
    ) -> Result<RawResponse, VsphereError> {
        let mut request = self
            .http
            .post(self.sdk.clone())
            .timeout(timeout)
            .header(CONTENT_TYPE, "text/xml; charset=utf-8")
            .header("SOAPAction", format!("\"{soap_action}\""))
            .body(body);
        if let Some(cookie) = cookie.and_then(|c| HeaderValue::from_str(c).ok()) {
            request = request.header(COOKIE, cookie);
        }
        let mut response = request.send().await.map_err(|e| self.map_error(e))?;
        let status = response.status().as_u16();
        let session_cookie = response
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .map(str::trim)
            .find(|v| {
                v.strip_prefix(SESSION_COOKIE)
                    .is_some_and(|rest| rest.starts_with('='))
            })
            .map(str::to_string);
        let cap = self.options.max_response_bytes;
        let too_large =
            || VsphereError::malformed(format!("response is larger than the {cap}-byte limit"));
        if response.content_length().is_some_and(|n| n > cap as u64) {
            return Err(too_large());
        }
        let initial = response.content_length().unwrap_or(0).min(cap as u64) as usize;
        let mut body = Vec::with_capacity(initial);
        while let Some(chunk) = response.chunk().await.map_err(|e| self.map_error(e))? {
            if body.len() + chunk.len() > cap {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(RawResponse {
            status,
            session_cookie,
            body,
        })
    }

    pub(crate) fn map_error(&self, e: reqwest::Error) -> VsphereError {
        if e.is_timeout() {
            return VsphereError::Timeout;
        }
        if let Some(rustls_error) = find_in_chain::<rustls::Error>(&e) {
            if let Some(pin) = &self.pin {
                if let Some(presented) = mismatch_in(rustls_error) {
                    return presented.mismatch(pin);
                }
            }
            return VsphereError::Tls {
                reason: rustls_error.to_string(),
            };
        }
        // The rustls error did not survive the wrapping: the verifier's note still says what happened.
        if let (Some(pin), true) = (&self.pin, e.is_connect()) {
            let noted = self
                .mismatch
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(presented) = noted {
                return presented.mismatch(pin);
            }
        }
        VsphereError::Transport {
            reason: chain_text(&e),
        }
    }
}

fn mismatch_in(error: &rustls::Error) -> Option<Presented> {
    match error {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
            let inner: &(dyn StdError + 'static) = &*other.0;
            inner.downcast_ref::<MismatchError>().map(|m| m.0.clone())
        }
        _ => None,
    }
}

/// Finds an error of type `T` in a source chain, looking inside `io::Error` wrappers (whose
/// `source()` skips the error they wrap).
fn find_in_chain<'a, T: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            let inner: &(dyn StdError + 'static) = inner;
            if let Some(found) = find_in_chain::<T>(inner) {
                return Some(found);
            }
        }
        current = e.source();
    }
    None
}

fn chain_text(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut current = error.source();
    while let Some(e) = current {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        current = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdk_urls() {
        assert_eq!(
            sdk_url("https://vc.example.com").unwrap().as_str(),
            "https://vc.example.com/sdk"
        );
        assert_eq!(
            sdk_url("https://127.0.0.1:8989/sdk?x=1").unwrap().as_str(),
            "https://127.0.0.1:8989/sdk"
        );
        for bad in [
            "vc.example.com",
            "ftp://vc/sdk",
            "https://",
            "",
            "file:///sdk",
        ] {
            assert!(
                matches!(sdk_url(bad), Err(VsphereError::InvalidInput { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn chain_search_looks_inside_io_errors() {
        let inner = rustls::Error::General("boom".into());
        let io = std::io::Error::other(inner);
        let found = find_in_chain::<rustls::Error>(&io).unwrap();
        assert_eq!(
            found.to_string(),
            rustls::Error::General("boom".into()).to_string()
        );
        assert!(find_in_chain::<std::fmt::Error>(&io).is_none());
        assert_eq!(chain_text(&io), "unexpected error: boom");
    }
}
