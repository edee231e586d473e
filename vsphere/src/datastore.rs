//! Datastore files over HTTP: `/folder/<path>?dcPath=<datacenter>&dsName=<datastore>` on the
//! vCenter (same host and certificate check as the SDK), with the session cookie.
//!
//! GET takes an optional byte range (answered 206); a missing file or datastore is
//! [`VsphereError::NotFound`]. When the session has expired (401) the client logs in again once
//! and repeats the request. Whole files in memory are capped at the client's
//! `max_response_bytes`; [`Client::datastore_get_to`] and [`Client::datastore_put_file`] stream.

use std::io::SeekFrom;
use std::ops::Range;
use std::time::Duration;

use reqwest::header::{HeaderValue, CONTENT_LENGTH, CONTENT_RANGE, COOKIE, RANGE};
use tokio::io::{AsyncSeekExt, AsyncWrite, AsyncWriteExt};

use crate::client::Client;
use crate::error::VsphereError;

/// Extra time a streamed upload gets per MiB on top of the call timeout (a floor of 1 MiB/s).
const UPLOAD_TIME_PER_MIB: Duration = Duration::from_secs(1);

fn invalid(reason: impl Into<String>) -> VsphereError {
    VsphereError::InvalidInput {
        reason: reason.into(),
    }
}

fn io_error(what: &str, e: std::io::Error) -> VsphereError {
    VsphereError::Transport {
        reason: format!("{what}: {e}"),
    }
}

/// The `/folder` URL of a datastore file. `path` is relative to the datastore root
/// (`folder/file.vmdk`); empty segments and `.`/`..` are refused.
pub fn datastore_url(
    sdk: &url::Url,
    datacenter: &str,
    datastore: &str,
    path: &str,
) -> Result<url::Url, VsphereError> {
    for (what, value) in [("datacenter", datacenter), ("datastore", datastore)] {
        if value.trim().is_empty() || value.chars().any(char::is_control) {
            return Err(invalid(format!("bad {what} name {value:?}")));
        }
    }
    let relative = path.strip_prefix('/').unwrap_or(path);
    if relative.is_empty() || relative.chars().any(char::is_control) {
        return Err(invalid(format!("bad datastore path {path:?}")));
    }
    let segments: Vec<&str> = relative.split('/').collect();
    if segments
        .iter()
        .any(|s| s.is_empty() || *s == "." || *s == "..")
    {
        return Err(invalid(format!(
            "datastore path {path:?} has an empty, '.' or '..' part"
        )));
    }
    let mut url = sdk.clone();
    url.set_path("/folder");
    url.path_segments_mut()
        .map_err(|()| invalid(format!("{sdk} cannot have a path")))?
        .extend(segments);
    url.query_pairs_mut()
        .clear()
        .append_pair("dcPath", datacenter)
        .append_pair("dsName", datastore);
    Ok(url)
}

/// `bytes=first-last` for a half-open range.
fn range_header(range: &Range<u64>) -> Result<String, VsphereError> {
    if range.start >= range.end {
        return Err(invalid(format!("empty byte range {range:?}")));
    }
    Ok(format!("bytes={}-{}", range.start, range.end - 1))
}

/// The first byte of a `Content-Range: bytes first-last/total` answer.
fn content_range_start(value: &str) -> Option<u64> {
    let spec = value.trim().strip_prefix("bytes ")?;
    let (span, _total) = spec.split_once('/')?;
    let (first, _last) = span.split_once('-')?;
    first.trim().parse().ok()
}

/// The error for a status that is not success, naming the file.
fn status_error(status: u16, what: &str) -> VsphereError {
    match status {
        404 => VsphereError::NotFound {
            what: what.to_string(),
        },
        401 => VsphereError::NotAuthenticated,
        416 => invalid(format!("the byte range is outside {what}")),
        status => VsphereError::Http { status },
    }
}

impl Client {
    /// Sends one request with the session cookie.
    async fn send_with_cookie(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, VsphereError> {
        let req = match self
            .session_cookie()
            .and_then(|c| HeaderValue::from_str(&c).ok())
        {
            Some(cookie) => req.header(COOKIE, cookie),
            None => req,
        };
        req.send().await.map_err(|e| self.transport().map_error(e))
    }

    /// Logs in again after a 401, unless another call already did since `generation`.
    async fn relogin_since(&self, generation: u64) -> Result<(), VsphereError> {
        if self.session_generation() == generation {
            tracing::info!("datastore request not authenticated; logging in again");
            self.login().await?;
        }
        Ok(())
    }

    /// GET, with one new login on 401.
    async fn datastore_request(
        &self,
        url: &url::Url,
        range: Option<&Range<u64>>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, VsphereError> {
        let range = range.map(range_header).transpose()?;
        let build = || {
            let mut req = self.transport().http().get(url.clone());
            if let Some(t) = timeout {
                req = req.timeout(t);
            }
            match &range {
                Some(r) => req.header(RANGE, r.as_str()),
                None => req,
            }
        };
        let generation = self.session_generation();
        let resp = self.send_with_cookie(build()).await?;
        if resp.status().as_u16() != 401 {
            return Ok(resp);
        }
        self.relogin_since(generation).await?;
        self.send_with_cookie(build()).await
    }

    /// Reads a datastore file (or `range` of it) into memory. A file larger than the client's
    /// `max_response_bytes` is refused; use [`Client::datastore_get_to`] for those.
    pub async fn datastore_get(
        &self,
        datacenter: &str,
        datastore: &str,
        path: &str,
        range: Option<Range<u64>>,
    ) -> Result<Vec<u8>, VsphereError> {
        let cap = self.options().max_response_bytes as u64;
        if range
            .as_ref()
            .is_some_and(|r| r.end.saturating_sub(r.start) > cap)
        {
            return Err(invalid(format!(
                "a range over {cap} bytes does not fit in memory; stream it"
            )));
        }
        let mut out = Vec::new();
        self.get_into(datacenter, datastore, path, range, &mut out, Some(cap))
            .await?;
        Ok(out)
    }

    /// Streams a datastore file (or `range` of it) into `out`; returns the bytes written.
    pub async fn datastore_get_to<W: AsyncWrite + Unpin>(
        &self,
        datacenter: &str,
        datastore: &str,
        path: &str,
        range: Option<Range<u64>>,
        out: &mut W,
    ) -> Result<u64, VsphereError> {
        self.get_into(datacenter, datastore, path, range, out, None)
            .await
    }

    async fn get_into<W: AsyncWrite + Unpin>(
        &self,
        datacenter: &str,
        datastore: &str,
        path: &str,
        range: Option<Range<u64>>,
        out: &mut W,
        cap: Option<u64>,
    ) -> Result<u64, VsphereError> {
        let url = datastore_url(self.sdk_url(), datacenter, datastore, path)?;
        let what = format!("[{datastore}] {path} in {datacenter}");
        let call_timeout = self.options().call_timeout;
        // In memory the whole exchange has the call timeout; a stream only each read.
        let whole = cap.map(|_| call_timeout);
        let mut resp = tokio::time::timeout(
            call_timeout,
            self.datastore_request(&url, range.as_ref(), whole),
        )
        .await
        .map_err(|_| VsphereError::Timeout)??;
        let status = resp.status().as_u16();
        // A server that ignores Range answers 200 with the whole file: skip to the range.
        let (mut skip, mut take) = match (&range, status) {
            (None, 200) => (0, u64::MAX),
            (Some(r), 200) => (r.start, r.end - r.start),
            (Some(r), 206) => {
                let start = resp
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(content_range_start);
                if start != Some(r.start) {
                    return Err(VsphereError::malformed(format!(
                        "asked for bytes from {} of {what}, got Content-Range {start:?}",
                        r.start
                    )));
                }
                (0, r.end - r.start)
            }
            (_, status) => return Err(status_error(status, &what)),
        };
        if let (Some(cap), Some(len), 200) = (cap, resp.content_length(), status) {
            if range.is_none() && len > cap {
                return Err(invalid(format!(
                    "{what} has {len} bytes, over the {cap}-byte limit for reading into memory"
                )));
            }
        }
        let mut written = 0u64;
        while take > 0 {
            let chunk = tokio::time::timeout(call_timeout, resp.chunk())
                .await
                .map_err(|_| VsphereError::Timeout)?
                .map_err(|e| self.transport().map_error(e))?;
            let Some(chunk) = chunk else { break };
            let mut data: &[u8] = &chunk;
            let skipped = skip.min(data.len() as u64);
            data = &data[skipped as usize..];
            skip -= skipped;
            let n = take.min(data.len() as u64);
            if cap.is_some_and(|cap| written + n > cap) {
                return Err(invalid(format!(
                    "{what} is over the limit for reading into memory"
                )));
            }
            out.write_all(&data[..n as usize])
                .await
                .map_err(|e| io_error("writing the datastore file", e))?;
            written += n;
            take -= n;
        }
        if let (Some(r), 206) = (&range, status) {
            // The server cuts a range that reaches past the end of the file short (its
            // Content-Range says where the file ends); short of that the transfer broke.
            let total = resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit('/').next())
                .and_then(|t| t.trim().parse::<u64>().ok());
            let expected = total
                .map_or(r.end, |t| t.min(r.end))
                .saturating_sub(r.start);
            if written < expected {
                return Err(VsphereError::Transport {
                    reason: format!("{what}: the transfer ended after {written} bytes"),
                });
            }
        }
        out.flush()
            .await
            .map_err(|e| io_error("writing the datastore file", e))?;
        Ok(written)
    }

    /// Writes a datastore file (creating parent folders, replacing an existing file).
    pub async fn datastore_put(
        &self,
        datacenter: &str,
        datastore: &str,
        path: &str,
        bytes: Vec<u8>,
    ) -> Result<(), VsphereError> {
        let url = datastore_url(self.sdk_url(), datacenter, datastore, path)?;
        let what = format!("[{datastore}] {path} in {datacenter}");
        let timeout = self.options().call_timeout + upload_time(bytes.len() as u64);
        let req = self
            .transport()
            .http()
            .put(url)
            .timeout(timeout)
            .body(bytes);
        // A byte body clones without copying: kept for a second try after a new login.
        let again = req.try_clone();
        let generation = self.session_generation();
        let mut resp = self.send_with_cookie(req).await?;
        if resp.status().as_u16() == 401 {
            self.relogin_since(generation).await?;
            let again = again.ok_or(VsphereError::NotAuthenticated)?;
            resp = self.send_with_cookie(again).await?;
        }
        put_result(resp.status().as_u16(), &what)
    }

    /// Streams `file` from its current position to its end into a datastore file; returns the
    /// bytes sent.
    pub async fn datastore_put_file(
        &self,
        datacenter: &str,
        datastore: &str,
        path: &str,
        mut file: tokio::fs::File,
    ) -> Result<u64, VsphereError> {
        let url = datastore_url(self.sdk_url(), datacenter, datastore, path)?;
        let what = format!("[{datastore}] {path} in {datacenter}");
        let local = "reading the local file";
        let start = file
            .stream_position()
            .await
            .map_err(|e| io_error(local, e))?;
        let size = file.metadata().await.map_err(|e| io_error(local, e))?.len();
        let len = size.saturating_sub(start);
        // A second handle on the same file, to send it again after a new login.
        let again = file.try_clone().await.map_err(|e| io_error(local, e))?;
        let timeout = self.options().call_timeout + upload_time(len);
        let build = |f: tokio::fs::File| {
            self.transport()
                .http()
                .put(url.clone())
                .timeout(timeout)
                .header(CONTENT_LENGTH, len)
                .body(reqwest::Body::from(f))
        };
        let generation = self.session_generation();
        let mut resp = self.send_with_cookie(build(file)).await?;
        if resp.status().as_u16() == 401 {
            self.relogin_since(generation).await?;
            let mut file = again;
            file.seek(SeekFrom::Start(start))
                .await
                .map_err(|e| io_error(local, e))?;
            resp = self.send_with_cookie(build(file)).await?;
        }
        put_result(resp.status().as_u16(), &what)?;
        Ok(len)
    }
}

fn upload_time(bytes: u64) -> Duration {
    UPLOAD_TIME_PER_MIB * u32::try_from(bytes >> 20).unwrap_or(u32::MAX)
}

fn put_result(status: u16, what: &str) -> Result<(), VsphereError> {
    match status {
        200 | 201 | 204 => Ok(()),
        status => Err(status_error(status, what)),
    }
}

#[cfg(test)]
#[path = "datastore_tests.rs"]
mod tests;
