//! The REST API against its own OpenAPI document: the document is valid OpenAPI 3 and covers every
//! route, and schemathesis (property-based API testing) finds no answer that breaks it: no 5xx, no
//! undocumented status, content type, header or body shape.

use ferry_tests::web_harness::{
    artifacts_dir, ensure_test_deps, venv_dir, WebAppliance, ADMIN_PASSWORD,
};
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Every operation of `web::api::configure` except the document itself.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/v1/setup"),
    ("post", "/api/v1/setup"),
    ("post", "/api/v1/setup/vault-test"),
    ("post", "/api/v1/session"),
    ("get", "/api/v1/session"),
    ("delete", "/api/v1/session"),
    ("get", "/api/v1/status"),
    ("get", "/api/v1/settings"),
    ("patch", "/api/v1/settings"),
    ("get", "/api/v1/audit"),
    ("get", "/api/v1/agents"),
    ("post", "/api/v1/agents/registration-passphrase"),
    ("get", "/api/v1/agents/{id}"),
    ("post", "/api/v1/agents/{id}/revoke"),
    ("get", "/api/v1/machines"),
    ("get", "/api/v1/machines/{id}"),
    ("get", "/api/v1/points"),
    ("get", "/api/v1/points/{machine}/{point}"),
    ("post", "/api/v1/restores"),
    ("get", "/api/v1/restores"),
    ("get", "/api/v1/restores/{id}"),
    ("post", "/api/v1/restores/{id}/cancel"),
    ("get", "/api/v1/users"),
    ("post", "/api/v1/users"),
    ("patch", "/api/v1/users/{name}"),
    ("delete", "/api/v1/users/{name}"),
    ("get", "/api/v1/tokens"),
    ("post", "/api/v1/tokens"),
    ("delete", "/api/v1/tokens/{id}"),
    ("get", "/api/v1/vcenters"),
    ("post", "/api/v1/vcenters"),
    ("get", "/api/v1/vcenters/{id}"),
    ("patch", "/api/v1/vcenters/{id}"),
    ("delete", "/api/v1/vcenters/{id}"),
    ("get", "/api/v1/vcenters/{id}/vms"),
    ("get", "/api/v1/vcenters/{id}/vms/{moref}"),
    ("get", "/api/v1/vcenters/{id}/plugin"),
    ("post", "/api/v1/vcenters/{id}/plugin"),
    ("delete", "/api/v1/vcenters/{id}/plugin"),
    ("post", "/api/v1/push-jobs"),
    ("get", "/api/v1/push-jobs"),
    ("get", "/api/v1/push-jobs/{id}"),
    ("post", "/api/v1/push-jobs/{id}/cancel"),
    ("delete", "/api/v1/push-host-keys/{host}/{port}"),
];
/// Operations schemathesis must not call: the first two revoke the run's own token; the others make the
/// appliance connect to whatever host the fuzzer invents (a vCenter login, an SSH push), and tests talk
/// only to 127.0.0.1. tests/tests/api_security.rs, discovery_vcsim.rs, push_api.rs and vcenter_plugin.rs
/// cover them.
const EXCLUDED: &[&str] = &[
    "DELETE /api/v1/session",
    "DELETE /api/v1/tokens/{id}",
    "POST /api/v1/vcenters",
    "PATCH /api/v1/vcenters/{id}",
    "GET /api/v1/vcenters/{id}/plugin",
    "POST /api/v1/vcenters/{id}/plugin",
    "DELETE /api/v1/vcenters/{id}/plugin",
    "POST /api/v1/push-jobs",
];
const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];
/// The whole schemathesis run; it normally takes well under this on 2 cores.
const SCHEMATHESIS_TIMEOUT: Duration = Duration::from_secs(300);

/// Every `$ref` below `v`.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    if let Some(s) = x.as_str() {
                        out.push(s.to_string());
                    }
                } else {
                    refs(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[test]
fn openapi_document_is_valid_openapi_3_and_covers_every_route() {
    // The document is public, also before setup (the wizard and clients read it).
    let app = WebAppliance::start_fresh(&[]).expect("start");
    let r = app
        .get("/api/v1/openapi.json", None)
        .expect("GET openapi.json");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "content type {:?}",
        r.header("content-type")
    );
    let doc = r.json();
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3."), "openapi = {version:?}");
    assert!(doc["info"]["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(doc["info"]["version"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    let paths = doc["paths"].as_object().expect("paths is an object");
    assert!(!paths.is_empty(), "no paths");

    let mut documented = BTreeSet::new();
    for (path, item) in paths {
        assert!(path.starts_with("/api/v1/"), "path outside /api/v1: {path}");
        let placeholders: BTreeSet<String> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_string)
            .collect();
        let ops = item.as_object().expect("path item is an object");
        for (method, op) in ops {
            if !METHODS.contains(&method.as_str()) {
                continue;
            }
            let name = format!("{} {path}", method.to_uppercase());
            documented.insert((method.clone(), path.clone()));
            let responses = op["responses"].as_object();
            assert!(
                responses.is_some_and(|r| !r.is_empty()),
                "{name}: no responses"
            );
            for code in responses.into_iter().flat_map(|r| r.keys()) {
                assert!(
                    code == "default"
                        || (code.len() == 3
                            && code.parse::<u16>().is_ok_and(|c| (100..600).contains(&c))),
                    "{name}: response key {code:?} is no status"
                );
            }
            // Every {placeholder} is a declared path parameter, and nothing else is.
            let declared: BTreeSet<String> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .filter_map(|p| p["name"].as_str().map(str::to_string))
                .collect();
            assert_eq!(declared, placeholders, "{name}: path parameters");
            // Operations that need a token say so, with a scheme the document defines.
            for req in op["security"].as_array().into_iter().flatten() {
                for scheme in req.as_object().into_iter().flat_map(|o| o.keys()) {
                    assert!(
                        doc["components"]["securitySchemes"][scheme].is_object(),
                        "{name}: unknown security scheme {scheme}"
                    );
                }
            }
        }
    }
    for (method, path) in ROUTES {
        assert!(
            documented.contains(&(method.to_string(), path.to_string())),
            "{} {path} is served but not documented",
            method.to_uppercase()
        );
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in all {
        let target = r
            .strip_prefix("#/")
            .unwrap_or_else(|| panic!("$ref outside the document: {r}"))
            .split('/')
            .fold(&doc, |v, seg| &v[seg.replace("~1", "/").replace("~0", "~")]);
        assert!(!target.is_null(), "$ref {r} points nowhere");
    }
}

#[test]
fn schemathesis_finds_no_violation_of_the_openapi_document() {
    ensure_test_deps();
    let app = WebAppliance::start_fresh(&[]).expect("start");
    let session = app.setup(ADMIN_PASSWORD).expect("setup");
    let (_, token) = app
        .create_api_token(&session, "schemathesis")
        .expect("API token");
    let artifacts = artifacts_dir("api_schema");
    let seed = std::env::var("FERRY_SCHEMATHESIS_SEED").unwrap_or_else(|_| "20240917".into());
    let schemathesis = venv_dir().join("bin/schemathesis");
    let mut cmd = Command::new(&schemathesis);
    cmd.current_dir(&artifacts)
        .arg("run")
        .arg(format!("{}/api/v1/openapi.json", app.base_url()))
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .arg("--tls-verify")
        .arg(app.ca_path())
        .args(EXCLUDED.iter().flat_map(|op| ["--exclude-name", op]))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance,response_headers_conformance",
            // Bounded: examples, boundary values and random data for each operation; the stateful
            // phase would chain calls without limit.
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "100",
            "--workers",
            "2",
            "--request-timeout",
            "30",
            "--generation-database",
            "none",
            "--seed",
            &seed,
            "--no-color",
            "--report",
            "junit",
            "--report-dir",
        ])
        .arg(&artifacts)
        .stdin(Stdio::null())
        .stdout(Stdio::from(
            std::fs::File::create(artifacts.join("schemathesis.txt")).expect("report file"),
        ))
        .stderr(Stdio::from(
            std::fs::File::create(artifacts.join("schemathesis.err")).expect("report file"),
        ));
    println!("schemathesis report: {}", artifacts.display());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", schemathesis.display()));
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break Some(st);
        }
        if start.elapsed() > SCHEMATHESIS_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let report = std::fs::read_to_string(artifacts.join("schemathesis.txt")).unwrap_or_default();
    let errors = std::fs::read_to_string(artifacts.join("schemathesis.err")).unwrap_or_default();
    println!("schemathesis took {:?}", start.elapsed());
    let ok = status.is_some_and(|s| s.success());
    assert!(
        ok,
        "schemathesis {} (seed {seed}):\n{report}\n{errors}\nappliance log (tail):\n{}",
        status.map_or("timed out".to_string(), |s| s.to_string()),
        tail(&app.log_text(), 60)
    );
    // It really tested: every operation but the excluded ones ran.
    let tested = report
        .lines()
        .find_map(|l| l.trim().strip_prefix("Tested:"))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or(0);
    assert!(
        tested >= ROUTES.len() - EXCLUDED.len(),
        "schemathesis tested {tested} operations:\n{report}"
    );
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
