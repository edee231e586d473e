//! Which certificate a guest file transfer must present. vCenter answers InitiateFileTransfer* with
//! a URL on the ESXi host that runs the VM (`https://<esxi>/guestFile?...`), and that host has its own
//! certificate, not the vCenter's pinned one. The host's SHA-1 thumbprint as vCenter reports it
//! (`HostSystem.summary.config.sslThumbprint`, read over the vCenter session that is already pinned)
//! is what the transfer is checked against. A URL on the vCenter itself keeps the vCenter's trust.

use vsphere::{Client, MoRef, TlsTrust, VsphereError};

use super::PushError;

/// `host:port` of a URL in the form both sides are compared in (default port made explicit, names in
/// lower case).
fn authority(url: &url::Url) -> Option<String> {
    Some(format!(
        "{}:{}",
        url.host_str()?.to_ascii_lowercase(),
        url.port_or_known_default()?
    ))
}

/// Whether a transfer URL names the vCenter itself (then its pinned trust applies).
pub(super) fn on_vcenter(transfer: &url::Url, vcenter: &url::Url) -> bool {
    authority(transfer).is_some() && authority(transfer) == authority(vcenter)
}

/// The trust for a transfer to `host_name` from the thumbprint vCenter reports for that host.
pub(super) fn host_trust(
    transfer: &url::Url,
    host_name: &str,
    reported: Option<&str>,
) -> Result<TlsTrust, PushError> {
    match reported.map(str::trim).filter(|t| !t.is_empty()) {
        Some(thumbprint) if vsphere::tls::Thumbprint::parse(thumbprint).is_ok() => {
            Ok(TlsTrust::Thumbprint(thumbprint.to_string()))
        }
        other => Err(PushError::CommandFailed {
            step: "file transfer".into(),
            status: -1,
            stderr: format!(
                "the guest file transfer goes to ESXi host {host_name} ({}), and vCenter reports {} \
                 for its certificate, so it cannot be checked; reconnect the host in vCenter so it \
                 records the host's certificate, or push over SSH",
                transfer.host_str().unwrap_or("?"),
                match other {
                    None => "no thumbprint".to_string(),
                    Some(t) => format!("an unreadable thumbprint {t:?}"),
                }
            ),
        }),
    }
}

/// Reads the VM's ESXi host and the thumbprint vCenter recorded for it.
pub(super) async fn reported_host_thumbprint(
    client: &Client,
    vm: &MoRef,
) -> Result<(String, Option<String>), VsphereError> {
    let host = client
        .retrieve_one(vm, &["runtime.host"])
        .await?
        .and_then(|o| o.get("runtime.host").and_then(|v| v.as_moref()).cloned())
        .ok_or_else(|| VsphereError::NotFound {
            what: format!("the ESXi host of {}", vm.value),
        })?;
    let props = client
        .retrieve_one(&host, &["name", "summary.config.sslThumbprint"])
        .await?;
    let text = |path: &str| {
        props
            .as_ref()
            .and_then(|o| o.get(path))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    Ok((
        text("name").unwrap_or_else(|| host.value.clone()),
        text("summary.config.sslThumbprint"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> url::Url {
        url::Url::parse(s).unwrap()
    }

    #[test]
    fn a_url_on_the_vcenter_keeps_its_trust_and_any_other_host_does_not() {
        let vc = url("https://VC.example/sdk");
        assert!(on_vcenter(
            &url("https://vc.example:443/guestFile?id=1"),
            &vc
        ));
        assert!(!on_vcenter(
            &url("https://esx-01.example/guestFile?id=1"),
            &vc
        ));
        assert!(!on_vcenter(&url("https://vc.example:8443/guestFile"), &vc));
        assert!(
            !on_vcenter(&url("http://vc.example/guestFile"), &vc),
            "port 80 is not 443"
        );
    }

    #[test]
    fn the_reported_thumbprint_is_the_trust_and_a_missing_one_says_what_to_do() {
        let transfer = url("https://10.0.0.21/guestFile?id=7");
        let sha1 = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01";
        match host_trust(&transfer, "esx-01", Some(sha1)).unwrap() {
            TlsTrust::Thumbprint(t) => assert_eq!(t, sha1),
            other => panic!("{other:?}"),
        }
        for reported in [None, Some(""), Some("  "), Some("not-a-thumbprint")] {
            let err = host_trust(&transfer, "esx-01", reported).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("esx-01") && text.contains("10.0.0.21"),
                "{text}"
            );
            assert!(!err.is_retryable(), "{text}");
        }
    }
}
