//! The CLI's client of the running daemon's REST API: HTTPS to the management listener, trusting only
//! the appliance CA, authenticated with the local admin token (`<data dir>/admin-token`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::Config;

/// Per-request timeout: the API answers in milliseconds; a hung daemon must not hang scripts.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Page size when the CLI walks a whole list.
const PAGE: usize = 1000;

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the management address: the daemon is not running.
    #[error("the appliance daemon does not answer at {0}: is `appliance run` running?")]
    NotRunning(String),
    /// The API refused the call with its error shape.
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// An authenticated client of one appliance.
pub struct ApiClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// The address a local client reaches a listener on: a wildcard bind is reached over loopback.
pub fn local_base_url(listen: &str) -> String {
    let addr = listen
        .strip_prefix("0.0.0.0:")
        .map(|port| format!("127.0.0.1:{port}"))
        .or_else(|| {
            listen
                .strip_prefix("[::]:")
                .map(|port| format!("[::1]:{port}"))
        })
        .unwrap_or_else(|| listen.to_string());
    format!("https://{addr}")
}

pub fn admin_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin-token")
}

impl ApiClient {
    /// A client for the configured daemon with the data folder's admin token (or `token_file`).
    pub fn from_config(cfg: &Config, token_file: Option<&Path>) -> anyhow::Result<ApiClient> {
        let ca_path = crate::tls::tls_dir(&cfg.data_dir).join("ca.pem");
        let ca = std::fs::read(&ca_path).with_context(|| {
            format!(
                "reading the appliance CA {} (has the appliance run in this data folder?)",
                ca_path.display()
            )
        })?;
        let token_path =
            token_file.map_or_else(|| admin_token_path(&cfg.data_dir), Path::to_path_buf);
        let token = crate::secrets::read_secret_file(&token_path).with_context(|| {
            format!(
                "reading the API token {} (it exists once setup is complete; pass --token-file)",
                token_path.display()
            )
        })?;
        let http = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca).context("the appliance CA")?])
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("building the HTTPS client")?;
        Ok(ApiClient {
            base: local_base_url(&cfg.listen_management),
            token,
            http,
        })
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|err| {
                if err.is_connect() {
                    ClientError::NotRunning(self.base.clone())
                } else {
                    ClientError::Other(anyhow::Error::new(err).context(self.base.clone()))
                }
            })?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| ClientError::Other(e.into()))?;
        if status >= 400 {
            let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            return Err(ClientError::Api {
                status,
                code: parsed["code"].as_str().unwrap_or("unknown").to_string(),
                message: parsed["message"].as_str().map_or_else(
                    || String::from_utf8_lossy(&body).into_owned(),
                    str::to_string,
                ),
            });
        }
        let body = if body.is_empty() {
            &b"null"[..]
        } else {
            &body[..]
        };
        serde_json::from_slice(body)
            .map_err(|e| ClientError::Other(anyhow::anyhow!("unexpected answer from the API: {e}")))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Other(e.into()))?;
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body),
        )
        .await
    }

    pub async fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Other(e.into()))?;
        self.send(
            self.http
                .patch(format!("{}{path}", self.base))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> Result<(), ClientError> {
        self.send::<serde_json::Value>(self.http.delete(format!("{}{path}", self.base)))
            .await
            .map(|_| ())
    }

    /// Every item of a paged list.
    pub async fn get_all(&self, path: &str) -> Result<Vec<serde_json::Value>, ClientError> {
        let mut items = Vec::new();
        let joiner = if path.contains('?') { '&' } else { '?' };
        loop {
            let page: serde_json::Value = self
                .get(&format!(
                    "{path}{joiner}limit={PAGE}&offset={}",
                    items.len()
                ))
                .await?;
            let batch = page["items"].as_array().cloned().unwrap_or_default();
            let total = page["total"].as_u64().unwrap_or(0) as usize;
            let done = batch.is_empty();
            items.extend(batch);
            if done || items.len() >= total {
                return Ok(items);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_binds_are_reached_over_loopback() {
        assert_eq!(local_base_url("0.0.0.0:443"), "https://127.0.0.1:443");
        assert_eq!(local_base_url("[::]:8443"), "https://[::1]:8443");
        assert_eq!(local_base_url("127.0.0.1:8443"), "https://127.0.0.1:8443");
    }
}
