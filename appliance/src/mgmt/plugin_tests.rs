//! The plugin's registration pieces: the manifest, the extension, the appliance address, the
//! certificate thumbprint. Registration against a vCenter is tested end to end with vcsim
//! (tests/tests/vcenter_plugin.rs).

use super::*;

#[test]
fn the_manifest_is_a_remote_plugin_manifest_with_a_global_and_a_vm_view() {
    let m = manifest();
    assert_eq!(m["manifestVersion"], "1.1.0");
    let name_key = m["configuration"]["nameKey"].as_str().unwrap();
    assert_eq!(
        m["definitions"]["i18n"]["definitions"][name_key]["en-US"],
        "Ferry"
    );
    assert_eq!(m["definitions"]["i18n"]["locales"][0], "en-US");
    let icon = m["configuration"]["icon"]["name"].as_str().unwrap();
    assert!(m["definitions"]["iconSpriteSheet"]["definitions"][icon].is_object());
    assert_eq!(m["global"]["view"]["uri"], "index.html");
    assert_eq!(
        m["objects"]["VirtualMachine"]["summary"]["view"]["uri"],
        "vm-summary.html"
    );
    // Every page and image it names is relative to the manifest, and served under /plugin/.
    let uris = [
        &m["global"]["view"]["uri"],
        &m["objects"]["VirtualMachine"]["summary"]["view"]["uri"],
        &m["definitions"]["iconSpriteSheet"]["uri"],
    ];
    for uri in uris {
        let uri = uri.as_str().unwrap();
        assert!(!uri.starts_with('/') && !uri.contains(".."), "{uri}");
        assert!(
            ["index.html", "vm-summary.html", "icon.svg"].contains(&uri),
            "{uri} is not served"
        );
    }
}

#[test]
fn the_extension_points_the_vsphere_client_at_the_manifest() {
    let thumb = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01";
    let ext = extension("https://dr.example.test:8443", thumb, "ops@example.test");
    assert_eq!(ext.key, "io.ferry.appliance");
    assert_eq!(ext.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(ext.clients.len(), 1);
    let client = &ext.clients[0];
    assert_eq!(client.type_name, "vsphere-client-remote");
    assert_eq!(
        client.url,
        "https://dr.example.test:8443/plugin/plugin.json"
    );
    assert_eq!(client.version, ext.version);
    let server = &ext.servers[0];
    assert_eq!(server.type_name, "HTTPS");
    assert_eq!(server.thumbprint.as_deref(), Some(thumb));
    assert_eq!(server.admin_emails, ["ops@example.test"]);
    assert_eq!(server.url, client.url);

    let status = status_of("vc-1", Some(ext));
    assert!(status.registered);
    assert_eq!(
        status.manifest_url.as_deref(),
        Some("https://dr.example.test:8443/plugin/plugin.json")
    );
    assert_eq!(status.server_thumbprint.as_deref(), Some(thumb));
    let none = status_of("vc-1", None);
    assert!(!none.registered && none.manifest_url.is_none() && none.version.is_none());
}

fn field(err: MgmtError) -> String {
    match err {
        MgmtError::InvalidField { field, .. } => field,
        other => panic!("not an invalid field: {other:?}"),
    }
}

#[test]
fn the_appliance_url_is_https_host_and_port_only() {
    let ok = |given: &str| appliance_url(Some(given), "127.0.0.1:8443").unwrap();
    assert_eq!(ok("https://dr.example.test"), "https://dr.example.test");
    assert_eq!(
        ok(" https://dr.example.test:8443/ "),
        "https://dr.example.test:8443"
    );
    assert_eq!(ok("https://10.0.0.5:443"), "https://10.0.0.5");
    assert_eq!(ok("https://[fd00::5]:8443"), "https://[fd00::5]:8443");
    for bad in [
        "",
        "dr.example.test",
        "http://dr.example.test",
        "https://",
        "https://user:pw@dr.example.test",
        "https://dr.example.test/ferry",
        "https://dr.example.test/?a=b",
        "https://dr.example.test/#x",
        "https://0.0.0.0:8443",
        "https://[::]:8443",
        "https://dr.example.test:99999",
    ] {
        let err = appliance_url(Some(bad), "127.0.0.1:8443").unwrap_err();
        assert_eq!(field(err), "appliance_url", "{bad:?}");
    }
    // Without one: the management listener, unless it binds every interface.
    assert_eq!(
        appliance_url(None, "127.0.0.1:8443").unwrap(),
        "https://127.0.0.1:8443"
    );
    assert_eq!(
        field(appliance_url(None, "0.0.0.0:443").unwrap_err()),
        "appliance_url"
    );
    assert_eq!(
        field(appliance_url(None, "[::]:443").unwrap_err()),
        "appliance_url"
    );
}

#[test]
fn admin_emails_are_checked_and_default_to_the_appliance_host() {
    assert_eq!(
        admin_email(None, "https://dr.example.test:8443").unwrap(),
        "admin@dr.example.test"
    );
    assert_eq!(
        admin_email(Some(" ops@example.test "), "https://x").unwrap(),
        "ops@example.test"
    );
    let long = format!("{}@example.test", "a".repeat(250));
    for bad in [
        "",
        "ops",
        "@example.test",
        "ops@",
        "a b@example.test",
        "<a@b>",
        long.as_str(),
    ] {
        assert_eq!(
            field(admin_email(Some(bad), "https://x").unwrap_err()),
            "admin_email"
        );
    }
}

#[test]
fn the_server_thumbprint_is_the_sha1_of_the_served_certificate() {
    let dir = tempfile::tempdir().unwrap();
    // No certificate yet: an internal error, not a made-up thumbprint.
    assert!(matches!(
        server_thumbprint(dir.path()),
        Err(MgmtError::Internal(_))
    ));
    let tls = crate::tls::ApplianceTls::load_or_create(dir.path(), &[]).unwrap();
    let thumb = server_thumbprint(dir.path()).unwrap();
    assert_eq!(thumb.len(), 20 * 3 - 1, "{thumb}");
    assert!(thumb.split(':').all(|b| b.len() == 2
        && b.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())));
    // It is the server certificate's, not the CA's (whose SHA-256 the agents pin).
    let pem = std::fs::read(crate::tls::tls_dir(dir.path()).join("server.pem")).unwrap();
    let der = CertificateDer::from_pem_slice(&pem).unwrap();
    assert_ne!(der.as_ref(), tls.ca_der().as_ref());
    let sha1 = aws_lc_sha1(der.as_ref());
    assert_eq!(thumb, sha1);
}

/// SHA-1 by the `openssl` command when it is there, else by the vSphere crate: an independent
/// check where one is available.
fn aws_lc_sha1(der: &[u8]) -> String {
    use std::io::Write;
    let child = std::process::Command::new("openssl")
        .args(["dgst", "-sha1", "-binary"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn();
    if let Ok(mut child) = child {
        child.stdin.take().unwrap().write_all(der).unwrap();
        let out = child.wait_with_output().unwrap();
        if out.status.success() && out.stdout.len() == 20 {
            return vsphere::tls::colon_hex(&out.stdout);
        }
    }
    vsphere::tls::colon_hex(&vsphere::tls::Presented::of(der).sha1)
}
