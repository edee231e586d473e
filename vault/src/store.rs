//! Opening object stores from URLs, and the one Azure call object_store lacks.
//!
//! Accepted URLs:
//! * `file:///abs/dir` or a plain path: a local folder (created if missing), fsync'd writes.
//! * `az://<account>/<container>?endpoint=<account URL>`: Azure Blob with SharedKey; the key
//!   comes from [`StoreOptions::azure_access_key`] or `AZURE_STORAGE_ACCESS_KEY`. Without
//!   `endpoint` the public Azure endpoint of the account is used.
//! * `s3://<bucket>?endpoint=..&region=..`: S3 or compatible (MinIO and the like through
//!   `endpoint`, path-style requests). Credentials, region and endpoint from [`StoreOptions`]
//!   win over the URL's query and the usual `AWS_*` environment variables. (Not exercised
//!   against a live store by this crate's tests.)

use std::sync::Arc;

use base64::Engine;
use hmac::{Hmac, Mac};
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::local::LocalFileSystem;
use object_store::{ObjectStore, ObjectStoreExt};
use sha2::Sha256;

use crate::VaultError;

/// Connection options that do not belong in a URL.
#[derive(Clone, Debug, Default)]
pub struct StoreOptions {
    /// Azure storage account key (base64). Falls back to `AZURE_STORAGE_ACCESS_KEY`.
    pub azure_access_key: Option<String>,
    /// S3 access key id; falls back to `AWS_ACCESS_KEY_ID`.
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key; falls back to `AWS_SECRET_ACCESS_KEY`.
    pub s3_secret_access_key: Option<String>,
    /// S3 region; falls back to the URL's `region=`, then `AWS_REGION` (object_store's default
    /// is us-east-1).
    pub s3_region: Option<String>,
    /// S3-compatible endpoint (e.g. `http://minio:9000`); falls back to the URL's `endpoint=`.
    pub s3_endpoint: Option<String>,
    /// Permit `http://` endpoints (emulators, tests on 127.0.0.1).
    pub allow_http: bool,
}

/// Azure Blob REST version used for the container call.
const AZURE_API_VERSION: &str = "2021-12-02";

fn bad_url(url: &str, reason: impl Into<String>) -> VaultError {
    VaultError::format(format!("store url {url:?}"), reason)
}

fn query_value(u: &url::Url, key: &str) -> Option<String> {
    u.query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// Parsed `az://` URL.
struct AzureTarget {
    account: String,
    container: String,
    endpoint: Option<String>,
}

fn parse_azure(url: &str, u: &url::Url) -> Result<AzureTarget, VaultError> {
    let account = u
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad_url(url, "missing account: az://<account>/<container>"))?
        .to_string();
    let container = u.path().trim_matches('/').to_string();
    if container.is_empty() || container.contains('/') {
        return Err(bad_url(
            url,
            "expected exactly one container: az://<account>/<container>",
        ));
    }
    Ok(AzureTarget {
        account,
        container,
        endpoint: query_value(u, "endpoint"),
    })
}

fn azure_key(opts: &StoreOptions) -> Option<String> {
    opts.azure_access_key
        .clone()
        .or_else(|| std::env::var("AZURE_STORAGE_ACCESS_KEY").ok())
}

/// Opens the object store a URL names. See the module docs for the accepted forms.
pub fn open_store(url: &str, opts: &StoreOptions) -> Result<Arc<dyn ObjectStore>, VaultError> {
    if !url.contains("://") {
        return open_local(url, std::path::Path::new(url));
    }
    let u = url::Url::parse(url).map_err(|e| bad_url(url, e.to_string()))?;
    match u.scheme() {
        "file" => {
            let path = u
                .to_file_path()
                .map_err(|_| bad_url(url, "not an absolute local path"))?;
            open_local(url, &path)
        }
        "az" => {
            let t = parse_azure(url, &u)?;
            let mut b = MicrosoftAzureBuilder::from_env()
                .with_account(&t.account)
                .with_container_name(&t.container)
                .with_allow_http(opts.allow_http);
            if let Some(key) = azure_key(opts) {
                b = b.with_access_key(key);
            }
            if let Some(endpoint) = t.endpoint {
                b = b.with_endpoint(endpoint);
            }
            Ok(Arc::new(b.build()?))
        }
        "s3" => {
            let bucket = u
                .host_str()
                .filter(|h| !h.is_empty())
                .ok_or_else(|| bad_url(url, "missing bucket: s3://<bucket>"))?;
            let mut b = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_allow_http(opts.allow_http);
            if let Some(endpoint) = opts
                .s3_endpoint
                .clone()
                .or_else(|| query_value(&u, "endpoint"))
            {
                b = b.with_endpoint(endpoint);
            }
            if let Some(region) = opts.s3_region.clone().or_else(|| query_value(&u, "region")) {
                b = b.with_region(region);
            }
            if let Some(id) = &opts.s3_access_key_id {
                b = b.with_access_key_id(id);
            }
            if let Some(secret) = &opts.s3_secret_access_key {
                b = b.with_secret_access_key(secret);
            }
            Ok(Arc::new(b.build()?))
        }
        other => Err(bad_url(url, format!("unsupported scheme {other:?}"))),
    }
}

fn open_local(url: &str, path: &std::path::Path) -> Result<Arc<dyn ObjectStore>, VaultError> {
    if path.as_os_str().is_empty() {
        return Err(bad_url(url, "empty path"));
    }
    std::fs::create_dir_all(path)?;
    // fsync: the uploader frees its cache only after the store confirmed a write.
    Ok(Arc::new(
        LocalFileSystem::new_with_prefix(path)?.with_fsync(true),
    ))
}

/// Writes, then deletes, a small object named `name`: proves that the store answers and that its
/// credentials allow writes (setup's connectivity test), without leaving anything behind.
pub async fn probe_write(store: &dyn ObjectStore, name: &str) -> Result<(), VaultError> {
    let path = object_store::path::Path::from(name);
    store
        .put(&path, object_store::PutPayload::from_static(b"ferry probe"))
        .await?;
    store.delete(&path).await?;
    Ok(())
}

/// The SharedKey string to sign for `PUT <container>?restype=container` with no body.
fn container_string_to_sign(date: &str, account: &str, resource_path: &str) -> String {
    format!(
        "PUT\n{}x-ms-date:{date}\nx-ms-version:{AZURE_API_VERSION}\n/{account}{resource_path}\nrestype:container",
        "\n".repeat(11)
    )
}

fn shared_key_signature(key_b64: &str, string_to_sign: &str) -> Result<String, String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64
        .decode(key_b64.trim())
        .map_err(|e| format!("access key is not base64: {e}"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|e| e.to_string())?;
    mac.update(string_to_sign.as_bytes());
    Ok(b64.encode(mac.finalize().into_bytes()))
}

fn azure_http_error(reason: String, retryable: bool) -> VaultError {
    VaultError::Store {
        source: object_store::Error::Generic {
            store: "MicrosoftAzure",
            source: reason.into(),
        },
        retryable,
    }
}

/// Creates the container of an `az://` URL if it does not exist (object_store cannot).
/// 201 Created and 409 Conflict (already there) both count as success.
pub async fn ensure_azure_container(url: &str, opts: &StoreOptions) -> Result<(), VaultError> {
    let u = url::Url::parse(url).map_err(|e| bad_url(url, e.to_string()))?;
    if u.scheme() != "az" {
        return Err(bad_url(url, "not an az:// URL"));
    }
    let t = parse_azure(url, &u)?;
    let key = azure_key(opts)
        .ok_or_else(|| bad_url(url, "no access key (options or AZURE_STORAGE_ACCESS_KEY)"))?;
    let endpoint = t
        .endpoint
        .unwrap_or_else(|| format!("https://{}.blob.core.windows.net", t.account));
    let endpoint_url = url::Url::parse(&endpoint).map_err(|e| bad_url(url, e.to_string()))?;
    if endpoint_url.scheme() == "http" && !opts.allow_http {
        return Err(bad_url(url, "http endpoint needs allow_http"));
    }
    let resource_path = format!(
        "{}/{}",
        endpoint_url.path().trim_end_matches('/'),
        t.container
    );
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let signature = shared_key_signature(
        &key,
        &container_string_to_sign(&date, &t.account, &resource_path),
    )
    .map_err(|e| bad_url(url, e))?;
    let request_url = format!(
        "{}/{}?restype=container",
        endpoint.trim_end_matches('/'),
        t.container
    );
    let response = reqwest::Client::new()
        .put(&request_url)
        .header("x-ms-date", &date)
        .header("x-ms-version", AZURE_API_VERSION)
        .header("Content-Length", "0")
        .header(
            "Authorization",
            format!("SharedKey {}:{signature}", t.account),
        )
        .send()
        .await
        .map_err(|e| azure_http_error(format!("create container {}: {e}", t.container), true))?;
    let status = response.status();
    if status.as_u16() == 201 || status.as_u16() == 409 {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    Err(azure_http_error(
        format!("create container {}: HTTP {status}: {body}", t.container),
        status.is_server_error() || status.as_u16() == 429,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV_KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    #[test]
    fn container_signature_matches_a_known_value() {
        let sts = container_string_to_sign(
            "Wed, 26 Nov 2025 07:00:00 GMT",
            "devstoreaccount1",
            "/devstoreaccount1/replica",
        );
        assert_eq!(
            sts,
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:Wed, 26 Nov 2025 07:00:00 GMT\nx-ms-version:2021-12-02\n/devstoreaccount1/devstoreaccount1/replica\nrestype:container"
        );
        // Pinned from `openssl dgst -sha256 -mac HMAC` over the same string (see azcurl.sh).
        assert_eq!(
            shared_key_signature(DEV_KEY, &sts).unwrap(),
            "smRXHCVlbMBYX9pEsAQDu8Ob8anL1iP6c5ma4YpCxVE="
        );
        assert!(shared_key_signature("not base64!", &sts).is_err());
    }

    #[test]
    fn url_forms() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        open_store(nested.to_str().unwrap(), &StoreOptions::default()).unwrap();
        assert!(nested.is_dir());
        let file_url = format!("file://{}", dir.path().join("c").display());
        open_store(&file_url, &StoreOptions::default()).unwrap();
        assert!(dir.path().join("c").is_dir());

        let opts = StoreOptions {
            azure_access_key: Some(DEV_KEY.into()),
            allow_http: true,
            ..StoreOptions::default()
        };
        open_store(
            "az://devstoreaccount1/replica?endpoint=http://127.0.0.1:1/devstoreaccount1",
            &opts,
        )
        .unwrap();
        for bad in ["az://acct", "az://acct/a/b", "ftp://x/y", "file://relative"] {
            assert!(
                matches!(open_store(bad, &opts), Err(VaultError::Format { .. })),
                "{bad}"
            );
        }
        open_store(
            "s3://bucket?endpoint=http://127.0.0.1:1&region=us-east-1",
            &opts,
        )
        .unwrap();
        let s3 = StoreOptions {
            s3_access_key_id: Some("id".into()),
            s3_secret_access_key: Some("secret".into()),
            s3_region: Some("eu-west-1".into()),
            s3_endpoint: Some("http://127.0.0.1:1".into()),
            allow_http: true,
            ..StoreOptions::default()
        };
        let store = open_store("s3://bucket", &s3).unwrap();
        let shown = store.to_string();
        assert!(shown.contains("bucket"), "{shown}");
        assert!(matches!(
            open_store("s3://", &s3),
            Err(VaultError::Format { .. })
        ));
    }

    #[tokio::test]
    async fn probe_write_leaves_nothing_and_reports_failures() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path().to_str().unwrap(), &StoreOptions::default()).unwrap();
        probe_write(store.as_ref(), "probe-1").await.unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // A store that refuses writes: a file where the folder's object would go.
        let blocked = dir.path().join("blocked");
        std::fs::write(&blocked, b"not a folder").unwrap();
        let inner = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        assert!(probe_write(&inner, "blocked/probe").await.is_err());
    }
}
