//! The HTTP/1.1 side of the harness's client: the answer type and the parsing of what came back.

use serde_json::Value;
use std::io::Read;

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every header of that name (`Set-Cookie` comes more than once).
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; `Value::Null` when it is not JSON (the assertions then name what came).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The `code` of an error body.
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_string()
    }

    /// Asserts the status and, for errors, the stable code; returns the JSON body.
    #[track_caller]
    pub fn expect(&self, status: u16, code: Option<&str>) -> Value {
        assert_eq!(
            self.status,
            status,
            "expected {status} {code:?}, got {}: {}",
            self.status,
            self.text()
        );
        if let Some(code) = code {
            assert_eq!(
                self.code(),
                code,
                "status {status} with the wrong code: {}",
                self.text()
            );
            assert!(
                self.json()["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "error without a message: {}",
                self.text()
            );
        }
        self.json()
    }

    /// The headers every answer of the management listener carries (docs/MANAGEMENT.md, web/mod.rs).
    #[track_caller]
    pub fn assert_security_headers(&self, what: &str) {
        let hsts = self.header("strict-transport-security").unwrap_or("");
        assert!(hsts.contains("max-age="), "{what}: HSTS missing: {self:?}");
        let csp = self.header("content-security-policy").unwrap_or("");
        assert!(
            csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
            "{what}: CSP missing or weak: {csp:?}"
        );
        assert_eq!(
            self.header("x-content-type-options"),
            Some("nosniff"),
            "{what}: nosniff missing"
        );
        assert_eq!(
            self.header("x-frame-options"),
            Some("DENY"),
            "{what}: X-Frame-Options DENY missing"
        );
    }
}

/// Reads until the peer closes. A TLS peer that closes without close_notify surfaces as an error
/// after the data; the caller decides from what arrived whether the answer is complete.
pub(super) fn read_until_close(r: &mut impl Read, buf: &mut Vec<u8>) -> Option<std::io::Error> {
    let mut chunk = [0u8; 16 << 10];
    loop {
        match r.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Some(e),
        }
    }
}

/// Parses a complete HTTP/1.1 answer (Content-Length, chunked, or delimited by the close).
pub(super) fn parse_response(raw: &[u8]) -> Option<Response> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let body = if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = find("content-length") {
        let len: usize = len.parse().ok()?;
        if rest.len() < len {
            return None;
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Some(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        if rest.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_chunked_and_close_delimited_answers() {
        let r = parse_response(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-A: b\r\n\r\nhi")
            .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (201, &b"hi"[..]));
        assert_eq!(r.header("x-a"), Some("b"));
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, b"abcde");
        let r = parse_response(b"HTTP/1.1 200 OK\r\n\r\nuntil close").unwrap();
        assert_eq!(r.body, b"until close");
    }

    #[test]
    fn incomplete_answers_are_refused() {
        assert!(parse_response(b"").is_none());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n").is_none());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc").is_none());
        assert!(parse_response(b"HTTP/1.1 abc OK\r\n\r\n").is_none());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab")
                .is_none()
        );
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
                .is_none()
        );
    }
}
