//! The vCenter plugin end to end against vcsim (whose ExtensionManager is ours,
//! tests/vcsim/extension.go: vcsim 0.24 has none): an appliance adds the vCenter, registers the
//! plugin (checked with pyvmomi and with our own client), serves the manifest and pages framable by
//! that vCenter only, and signs in plugin calls with a real vCenter session: 403 before the user is
//! mapped to a role, 200 after, 401 for a garbage session and after the session logged out, 503
//! while the vCenter is down. Unregistering removes the extension.
//!
//! The appliance runs with `FERRY_TEST_PLUGIN_SESSION_TTL_SECS=0`, so every plugin call asks the
//! vCenter (the cache itself is unit-tested in `appliance/src/mgmt/plugin_auth_tests.rs`).

use std::process::{Command, Stdio};

use ferry_tests::vcsim::Vcsim;
use ferry_tests::web_harness::{venv_dir, Response, WebAppliance, ADMIN_PASSWORD};
use serde_json::{json, Value};
use vsphere::{Client, Credentials, TlsTrust};

const KEY: &str = "io.ferry.appliance";
/// vcsim started without a login takes any user name; this one is the plugin's user.
const PLUGIN_USER: &str = "VSPHERE.LOCAL\\alice";

/// Reads the extension with pyvmomi (VMware's Python SDK): an independent reader of what we
/// registered. Prints `null` when it is not registered.
const PYVMOMI_FIND: &str = r#"
import json, os, ssl, sys
from pyVim.connect import SmartConnect, Disconnect
ctx = ssl.create_default_context(cafile=sys.argv[3])
si = SmartConnect(host="127.0.0.1", port=int(sys.argv[1]), user=sys.argv[2],
                  pwd=os.environ["VSPHERE_PASSWORD"], sslContext=ctx)
try:
    ext = si.content.extensionManager.FindExtension(sys.argv[4])
    if ext is None:
        print("null")
    else:
        print(json.dumps({
            "key": ext.key, "version": ext.version, "company": ext.company,
            "label": ext.description.label,
            "clients": [{"type": c.type, "url": c.url, "version": c.version} for c in ext.client],
            "servers": [{"type": s.type, "url": s.url, "thumbprint": s.serverThumbprint,
                         "admin_email": list(s.adminEmail)} for s in ext.server],
        }))
finally:
    Disconnect(si)
"#;

fn pyvmomi_find(sim: &Vcsim) -> Value {
    let out = Command::new(venv_dir().join("bin/python"))
        .arg("-c")
        .arg(PYVMOMI_FIND)
        .arg(sim.port.to_string())
        .arg("administrator@vsphere.local")
        .arg(&sim.cert)
        .arg(KEY)
        .env("VSPHERE_PASSWORD", "vc-pass")
        .stdin(Stdio::null())
        .output()
        .expect("run pyvmomi");
    assert!(
        out.status.success(),
        "pyvmomi FindExtension failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("pyvmomi printed JSON")
}

/// SHA-1 of the appliance's server certificate, as `openssl` computes it (colon hex).
fn appliance_sha1(app: &WebAppliance) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha1", "-in"])
        .arg(app.data_dir.join("tls/server.pem"))
        .output()
        .expect("run openssl");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    text.trim()
        .split_once('=')
        .expect("openssl prints NAME=FINGERPRINT")
        .1
        .to_uppercase()
}

fn plugin_get(app: &WebAppliance, path: &str, session: &str, vcenter: Option<&str>) -> Response {
    let auth = format!("vCenter-Session {session}");
    let mut headers = vec![("Authorization", auth.as_str())];
    if let Some(v) = vcenter {
        headers.push(("X-Ferry-vCenter", v));
    }
    app.request("GET", path, &headers, None).expect("request")
}

/// Logs in to vcsim as `user` and returns the client and its session id (the cookie's value).
fn vcenter_session(rt: &tokio::runtime::Runtime, sim: &Vcsim, user: &str) -> (Client, String) {
    let client = rt
        .block_on(Client::connect(
            &sim.url,
            Credentials {
                username: user.into(),
                password: "any".into(),
            },
            TlsTrust::Thumbprint(sim.thumbprint_sha256.clone()),
        ))
        .expect("log in to vcsim");
    let cookie = client.session_cookie().expect("a session cookie");
    let id = cookie
        .strip_prefix("vmware_soap_session=")
        .expect("the SOAP session cookie")
        .to_string();
    (client, id)
}

fn find_extension(rt: &tokio::runtime::Runtime, sim: &Vcsim) -> Option<vsphere::Extension> {
    rt.block_on(async {
        let client = Client::connect(
            &sim.url,
            Credentials {
                username: "reader".into(),
                password: "x".into(),
            },
            TlsTrust::Thumbprint(sim.thumbprint_sha256.clone()),
        )
        .await
        .expect("log in to vcsim");
        let found = client.find_extension(KEY).await.expect("FindExtension");
        client.logout().await.expect("logout");
        found
    })
}

#[test]
fn the_plugin_registers_serves_its_manifest_and_signs_in_vcenter_sessions() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let app = WebAppliance::start_fresh(&[("FERRY_TEST_PLUGIN_SESSION_TTL_SECS", "0")])
        .expect("appliance");
    let admin = app.setup(ADMIN_PASSWORD).expect("setup");
    let mut sim = Vcsim::start(&["-cluster", "1", "-vm", "2"]);
    let origin = format!("https://127.0.0.1:{}", sim.port);

    let added = app
        .post_json(
            "/api/v1/vcenters",
            Some(&admin),
            &json!({"url": sim.url, "username": "administrator@vsphere.local",
                    "password": "vc-pass", "thumbprint": sim.thumbprint_sha256}),
        )
        .unwrap()
        .expect(201, None);
    let id = added["id"].as_str().unwrap().to_string();
    assert_eq!(added["plugin_roles"], json!({}), "{added:#}");
    let plugin_path = format!("/api/v1/vcenters/{id}/plugin");

    // Not registered yet; a bad appliance address is refused before the vCenter is asked.
    let status = app
        .get(&plugin_path, Some(&admin))
        .unwrap()
        .expect(200, None);
    assert_eq!(status["registered"], false, "{status:#}");
    for bad in ["http://127.0.0.1:1", "https://127.0.0.1:1/x", "not a url"] {
        let r = app
            .post_json(&plugin_path, Some(&admin), &json!({"appliance_url": bad}))
            .unwrap();
        assert_eq!(
            r.expect(400, Some("invalid_field"))["message"]
                .as_str()
                .map(|m| m.starts_with("appliance_url")),
            Some(true)
        );
    }
    assert!(pyvmomi_find(&sim).is_null());

    // Registered: the extension as pyvmomi and our client read it back.
    let appliance_url = format!("https://127.0.0.1:{}", app.mgmt_port);
    let manifest_url = format!("{appliance_url}/plugin/plugin.json");
    let registered = app
        .post_json(
            &plugin_path,
            Some(&admin),
            &json!({"appliance_url": appliance_url, "admin_email": "ops@example.test"}),
        )
        .unwrap()
        .expect(200, None);
    assert_eq!(registered["registered"], true, "{registered:#}");
    assert_eq!(registered["manifest_url"], manifest_url.as_str());
    let sha1 = appliance_sha1(&app);
    assert_eq!(registered["server_thumbprint"], sha1.as_str());
    let seen = pyvmomi_find(&sim);
    assert_eq!(seen["key"], KEY, "{seen:#}");
    assert_eq!(seen["company"], "Ferry", "{seen:#}");
    assert_eq!(
        seen["clients"][0]["type"], "vsphere-client-remote",
        "{seen:#}"
    );
    assert_eq!(seen["clients"][0]["url"], manifest_url.as_str(), "{seen:#}");
    assert_eq!(seen["servers"][0]["type"], "HTTPS", "{seen:#}");
    assert_eq!(seen["servers"][0]["thumbprint"], sha1.as_str(), "{seen:#}");
    assert_eq!(
        seen["servers"][0]["admin_email"],
        json!(["ops@example.test"])
    );
    let ours = find_extension(&rt, &sim).expect("registered");
    assert_eq!(ours.clients[0].url, manifest_url);
    assert_eq!(ours.version, seen["version"].as_str().unwrap());
    // Registering again updates the registration.
    let again = app
        .post_json(
            &plugin_path,
            Some(&admin),
            &json!({"appliance_url": appliance_url}),
        )
        .unwrap()
        .expect(200, None);
    assert_eq!(again["registered"], true);
    assert_eq!(
        pyvmomi_find(&sim)["servers"][0]["admin_email"],
        json!(["admin@127.0.0.1"])
    );

    // The manifest and pages: no sign-in, framable by this vCenter only.
    let manifest = app.get("/plugin/plugin.json", None).unwrap();
    let body = manifest.expect(200, None);
    assert_eq!(body["manifestVersion"], "1.1.0", "{body:#}");
    assert_eq!(body["global"]["view"]["uri"], "index.html");
    for page in [
        "/plugin/plugin.json",
        "/plugin/index.html",
        "/plugin/vm-summary.html",
        "/plugin/plugin.js",
    ] {
        let r = app.get(page, None).unwrap();
        assert_eq!(r.status, 200, "{page}");
        let csp = r.header("content-security-policy").unwrap_or("");
        assert!(
            csp.contains(&format!("frame-ancestors {origin};")),
            "{page}: {csp}"
        );
        assert!(!csp.contains("unsafe-inline"), "{page}: {csp}");
        assert_eq!(r.header("x-frame-options"), None, "{page}");
    }
    let index = app.get("/plugin/index.html", None).unwrap().text();
    assert!(index.contains("src=\"plugin.js\""), "{index}");
    // Everything else still refuses framing.
    app.get("/api/v1/status", Some(&admin))
        .unwrap()
        .assert_security_headers("/api/v1/status");

    // A real vCenter session: refused until its user is mapped to a role.
    let (alice, session) = vcenter_session(&rt, &sim, PLUGIN_USER);
    plugin_get(&app, "/api/v1/machines", &session, Some(&id))
        .expect(403, Some("plugin_user_not_mapped"));
    let mapped = app
        .send_json(
            "PATCH",
            &format!("/api/v1/vcenters/{id}"),
            Some(&admin),
            &json!({"plugin_roles": {PLUGIN_USER: "viewer"}}),
        )
        .unwrap()
        .expect(200, None);
    assert_eq!(mapped["plugin_roles"], json!({PLUGIN_USER: "viewer"}));
    let page = plugin_get(&app, "/api/v1/machines", &session, Some(&id)).expect(200, None);
    assert!(page["items"].is_array(), "{page:#}");
    // By the vCenter's origin too (what the plugin page sends).
    plugin_get(&app, "/api/v1/machines", &session, Some(&origin)).expect(200, None);
    let who = plugin_get(&app, "/api/v1/session", &session, Some(&id)).expect(200, None);
    assert_eq!(who["user"], format!("vcenter:{id}:{PLUGIN_USER}"));
    assert_eq!(who["role"], "viewer");

    // A viewer may not change anything; as admin the same header call may, without a CSRF token,
    // and the audit log names the vCenter user.
    let auth = format!("vCenter-Session {session}");
    let body = json!({"appliance_url": appliance_url}).to_string();
    let plugin_register = || {
        app.request(
            "POST",
            &plugin_path,
            &[
                ("Authorization", auth.as_str()),
                ("X-Ferry-vCenter", id.as_str()),
                ("Content-Type", "application/json"),
            ],
            Some(body.as_bytes()),
        )
        .unwrap()
    };
    plugin_register().expect(403, Some("forbidden"));
    app.send_json(
        "PATCH",
        &format!("/api/v1/vcenters/{id}"),
        Some(&admin),
        &json!({"plugin_roles": {PLUGIN_USER: "admin", "*": "viewer"}}),
    )
    .unwrap()
    .expect(200, None);
    plugin_register().expect(200, None);
    let audit = app
        .get("/api/v1/audit?limit=20", Some(&admin))
        .unwrap()
        .expect(200, None);
    let actor = format!("vcenter:{id}:{PLUGIN_USER}");
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == actor.as_str() && e["event"] == "vcenter_plugin_updated"),
        "{audit:#}"
    );

    // Bad plugin headers and sessions.
    plugin_get(&app, "/api/v1/machines", "garbage-session", Some(&id))
        .expect(401, Some("vcenter_session_invalid"));
    plugin_get(&app, "/api/v1/machines", &session, None).expect(400, Some("bad_request"));
    plugin_get(&app, "/api/v1/machines", &session, Some("no-such-vcenter"))
        .expect(401, Some("unauthenticated"));
    plugin_get(&app, "/api/v1/machines", &"x".repeat(600), Some(&id))
        .expect(400, Some("bad_request"));
    // Any other user gets the wildcard's role.
    let (bob, bob_session) = vcenter_session(&rt, &sim, "CORP\\bob");
    let who = plugin_get(&app, "/api/v1/session", &bob_session, Some(&id)).expect(200, None);
    assert_eq!(who["role"], "viewer");
    rt.block_on(bob.logout()).unwrap();

    // The user signs out of the vSphere Client: the session stops working.
    rt.block_on(alice.logout()).unwrap();
    plugin_get(&app, "/api/v1/machines", &session, Some(&id))
        .expect(401, Some("vcenter_session_invalid"));

    // Unregistered: gone for pyvmomi and our client; a second time is 404.
    let r = app.delete(&plugin_path, Some(&admin)).unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(pyvmomi_find(&sim).is_null());
    assert!(find_extension(&rt, &sim).is_none());
    app.delete(&plugin_path, Some(&admin))
        .unwrap()
        .expect(404, Some("not_found"));
    let status = app
        .get(&plugin_path, Some(&admin))
        .unwrap()
        .expect(200, None);
    assert_eq!(status["registered"], false);

    // The vCenter is down: sessions cannot be checked, which is worth a retry.
    let (_carol, carol_session) = vcenter_session(&rt, &sim, "CORP\\carol");
    sim.stop().expect("stop vcsim");
    plugin_get(&app, "/api/v1/machines", &carol_session, Some(&id))
        .expect(503, Some("vcenter_unreachable"));
    app.get(&plugin_path, Some(&admin))
        .unwrap()
        .expect(503, Some("vcenter_unreachable"));
}
