//! One round of pyvmomi: `scripts/pyvmomi_inventory.py --time` in a new Python process, with the
//! script's property list set to Ferry's `VM_PROPERTIES` before it runs (the script takes no
//! property list on its command line, and its own list is a subset). The time is the script's own
//! `retrieval_seconds`: container view, RetrievePropertiesEx with every continuation page, the
//! view destroyed, the result turned into records; Python's start, the imports and the login are
//! outside it (the process's wall time is kept beside it).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::compare::{PropertySet, VmKey};

/// A run over thousands of VMs takes seconds; this only catches a hang.
const TIMEOUT: Duration = Duration::from_secs(300);
/// How often the process's memory high-water mark is read while it runs.
const POLL: Duration = Duration::from_millis(5);
/// The environment variable that carries the property list (JSON) into the wrapper.
const PROPS_ENV: &str = "DISCOVERY_BENCH_PROPS";
/// The stderr line the wrapper reports the properties on.
const PROPS_LINE: &str = "discovery_bench properties: ";

/// Runs the script's `main` with `PROPS` replaced. Its `retrieve` is wrapped only to keep a
/// reference to the last result (dropped before the next retrieval starts, so the garbage
/// collector sees what it sees without the wrapper), from which the returned property names are
/// read after the timing. `argv[1]` is the script's folder, the rest are the script's arguments.
const WRAPPER: &str = r#"import json, os, sys
sys.path.insert(0, sys.argv[1])
import pyvmomi_inventory as inv
script_props = list(inv.PROPS)
inv.PROPS = json.loads(os.environ["DISCOVERY_BENCH_PROPS"])
last = [None]
_retrieve = inv.retrieve
def retrieve(content):
    last[0] = None
    objects = _retrieve(content)
    last[0] = objects
    return objects
inv.retrieve = retrieve
code = inv.main(sys.argv[2:])
if code == 0 and last[0] is not None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        pyvmomi_version = version("pyvmomi")
    except PackageNotFoundError:
        pyvmomi_version = "(version unknown)"
    objects = last[0]
    info = {
        "requested": list(inv.PROPS),
        "script": script_props,
        "returned": sorted({p.name for oc in objects for p in (oc.propSet or [])}),
        "missing": sorted({m.path for oc in objects for m in (oc.missingSet or [])}),
        "pyvmomi": pyvmomi_version,
        "python": sys.version.split()[0],
    }
    sys.stderr.write("discovery_bench properties: " + json.dumps(info) + "\n")
sys.exit(code)
"#;

/// How to run the script against the vcsim.
#[derive(Debug, Clone)]
pub struct Runner {
    /// The virtualenv's `python`.
    pub python: PathBuf,
    /// The folder of `pyvmomi_inventory.py`.
    pub scripts: PathBuf,
    pub port: u16,
    pub username: String,
    pub password: String,
    /// SHA-256 thumbprint of the server certificate (the script checks it itself).
    pub thumbprint: String,
    pub properties: Vec<String>,
}

/// What one round measured and found.
#[derive(Debug, Clone)]
pub struct PyRound {
    /// The script's `retrieval_seconds`.
    pub retrieval: Duration,
    /// The whole process: start, imports, thumbprint check, login, retrieval, JSON, logout.
    pub wall: Duration,
    pub peak_rss_kib: Option<u64>,
    pub vms: Vec<VmKey>,
    pub properties: PropertySet,
    /// The script's own `PROPS`, which the wrapper replaced.
    pub script_properties: Vec<String>,
    /// `pyvmomi <version>, Python <version>`.
    pub versions: String,
}

#[derive(Deserialize)]
struct Output {
    count: usize,
    vms: Vec<OutputVm>,
    retrieval_seconds: f64,
}

#[derive(Deserialize)]
struct OutputVm {
    moref: String,
    name: Option<String>,
    bios_uuid: Option<String>,
}

#[derive(Deserialize)]
struct PropsLine {
    requested: Vec<String>,
    returned: BTreeSet<String>,
    missing: BTreeSet<String>,
    script: Vec<String>,
    pyvmomi: String,
    python: String,
}

impl Runner {
    fn command(&self) -> Result<tokio::process::Command> {
        let mut cmd = tokio::process::Command::new(&self.python);
        cmd.arg("-c")
            .arg(WRAPPER)
            .arg(&self.scripts)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--user", &self.username, "--thumbprint", &self.thumbprint])
            .args(["--time", "--repeat", "1"])
            .env("VSPHERE_PASSWORD", &self.password)
            .env(PROPS_ENV, serde_json::to_string(&self.properties)?)
            // Nothing written next to the script in the source tree.
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        Ok(cmd)
    }

    /// One timed round.
    pub async fn round(&self) -> Result<PyRound> {
        let stdout = tempfile::tempfile()?;
        let stderr = tempfile::tempfile()?;
        let mut cmd = self.command()?;
        cmd.stdout(stdout.try_clone()?).stderr(stderr.try_clone()?);
        let started = Instant::now();
        let mut child = cmd.spawn().with_context(|| {
            format!(
                "start {} (scripts/install-test-deps.sh makes the virtualenv)",
                self.python.display()
            )
        })?;
        let pid = child.id();
        let mut peak = None;
        let status = loop {
            if let Some(hwm) = pid.and_then(vm_hwm_kib) {
                peak = peak.max(Some(hwm));
            }
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if started.elapsed() > TIMEOUT {
                // kill_on_drop ends it.
                bail!("pyvmomi_inventory.py did not finish within {TIMEOUT:?}");
            }
            tokio::time::sleep(POLL).await;
        };
        let wall = started.elapsed();
        let stdout = read_all(stdout)?;
        let stderr = String::from_utf8_lossy(&read_all(stderr)?).into_owned();
        if !status.success() {
            bail!("pyvmomi_inventory.py failed ({status}): {}", stderr.trim());
        }
        let (retrieval, vms) = parse_output(&stdout)?;
        let (properties, script_properties, versions) = parse_properties(&stderr)?;
        Ok(PyRound {
            retrieval,
            wall,
            peak_rss_kib: peak,
            vms,
            properties,
            script_properties,
            versions,
        })
    }
}

/// The retrieval time and the VMs of the script's JSON.
pub fn parse_output(stdout: &[u8]) -> Result<(Duration, Vec<VmKey>)> {
    let out: Output =
        serde_json::from_slice(stdout).context("pyvmomi_inventory.py printed no valid JSON")?;
    if out.count != out.vms.len() {
        bail!(
            "pyvmomi_inventory.py says {} VMs and lists {}",
            out.count,
            out.vms.len()
        );
    }
    let retrieval = Duration::try_from_secs_f64(out.retrieval_seconds)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("retrieval_seconds {} is not a time", out.retrieval_seconds))?;
    let vms = out
        .vms
        .into_iter()
        .map(|v| VmKey {
            moref: v.moref,
            name: v.name.unwrap_or_default(),
            bios_uuid: v.bios_uuid,
        })
        .collect();
    Ok((retrieval, vms))
}

/// The wrapper's property report on stderr: the properties of the retrieval, the script's own
/// list, and the versions.
pub fn parse_properties(stderr: &str) -> Result<(PropertySet, Vec<String>, String)> {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix(PROPS_LINE))
        .context("the pyvmomi wrapper reported no properties")?;
    let p: PropsLine =
        serde_json::from_str(line).context("the pyvmomi wrapper's property report")?;
    Ok((
        PropertySet {
            requested: p.requested,
            returned: p.returned,
            missing: p.missing,
        },
        p.script,
        format!("pyvmomi {}, Python {}", p.pyvmomi, p.python),
    ))
}

fn read_all(mut f: std::fs::File) -> Result<Vec<u8>> {
    use std::io::{Read, Seek};
    f.rewind()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    Ok(buf)
}

/// `VmHWM` of `/proc/<pid>/status` in KiB: the peak resident set size so far.
pub fn vm_hwm_kib(pid: u32) -> Option<u64> {
    parse_vm_hwm(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

pub fn parse_vm_hwm(status: &str) -> Option<u64> {
    let rest = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    let mut parts = rest.split_whitespace();
    let kib = parts.next()?.parse().ok()?;
    (parts.next() == Some("kB")).then_some(kib)
}

/// The script next to the workspace's other scripts.
pub fn scripts_dir(root: &Path) -> PathBuf {
    root.join("scripts")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_json_is_read() {
        let json = br#"{"about":{},"count":2,"retrieval_seconds":1.5,"vms":[
            {"moref":"vm-1","name":"a","bios_uuid":"u1","disks":[]},
            {"moref":"vm-2","name":null,"bios_uuid":null}]}"#;
        let (t, vms) = parse_output(json).unwrap();
        assert_eq!(t, Duration::from_millis(1500));
        assert_eq!(vms.len(), 2);
        assert_eq!(vms[0].bios_uuid.as_deref(), Some("u1"));
        assert_eq!(
            (vms[1].name.as_str(), vms[1].bios_uuid.as_ref()),
            ("", None)
        );
    }

    #[test]
    fn bad_json_is_refused() {
        for bad in [
            &b""[..],
            b"not json",
            br#"{"count":1,"vms":[],"retrieval_seconds":1}"#,
            br#"{"count":0,"vms":[],"retrieval_seconds":-1}"#,
            br#"{"count":0,"vms":[],"retrieval_seconds":0}"#,
            br#"{"count":0,"vms":[]}"#,
            br#"{"count":0,"vms":[],"retrieval_seconds":[1.0,2.0]}"#,
            br#"{"count":1,"vms":[{"name":"a"}],"retrieval_seconds":1}"#,
        ] {
            assert!(
                parse_output(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn the_property_report_is_read() {
        let stderr = "pyvmomi retrieval: 2 VMs in 0.1 s\n\
            discovery_bench properties: {\"requested\":[\"name\",\"guest.net\"],\"returned\":[\"name\"],\
            \"missing\":[],\"script\":[\"name\"],\"pyvmomi\":\"9.1.1.0\",\"python\":\"3.11.7\"}\n";
        let (p, script, versions) = parse_properties(stderr).unwrap();
        assert_eq!(script, ["name"]);
        assert_eq!(p.requested, ["name", "guest.net"]);
        assert!(p.returned.contains("name") && p.missing.is_empty());
        assert_eq!(versions, "pyvmomi 9.1.1.0, Python 3.11.7");
        assert!(parse_properties("pyvmomi retrieval: 2 VMs in 0.1 s\n").is_err());
        assert!(parse_properties("discovery_bench properties: {\"requested\":1}\n").is_err());
    }

    #[test]
    fn the_wrapper_speaks_the_same_names() {
        assert!(WRAPPER.contains(&format!("os.environ[\"{PROPS_ENV}\"]")));
        assert!(WRAPPER.contains(&format!("\"{PROPS_LINE}\" + json.dumps")));
    }

    /// A stand-in for `pyvmomi_inventory.py` with the same names (`PROPS`, `retrieve`, `main`):
    /// it answers with the properties it was asked for, except `gone`, which is missing.
    const FAKE_SCRIPT: &str = r#"import json, sys
PROPS = ["name", "config.uuid"]
class Prop:
    def __init__(self, name): self.name = name
class Missing:
    def __init__(self, path): self.path = path
class Object:
    def __init__(self):
        self.propSet = [Prop(p) for p in PROPS if p != "gone"]
        self.missingSet = [Missing(p) for p in PROPS if p == "gone"]
def retrieve(content):
    return [Object(), Object()]
def main(argv):
    if "--user" in argv and argv[argv.index("--user") + 1] == "refused":
        print("pyvmomi_inventory: InvalidLogin: no", file=sys.stderr)
        return 3
    objects = retrieve(None)
    vms = [{"moref": "vm-%d" % i, "name": "n%d" % i, "bios_uuid": "u%d" % i} for i in range(len(objects))]
    json.dump({"count": 2, "vms": vms, "retrieval_seconds": 0.25}, sys.stdout)
    return 0
"#;

    fn fake_runner(dir: &Path, user: &str) -> Runner {
        std::fs::write(dir.join("pyvmomi_inventory.py"), FAKE_SCRIPT).unwrap();
        Runner {
            python: PathBuf::from("python3"),
            scripts: dir.to_path_buf(),
            port: 1,
            username: user.into(),
            password: "p".into(),
            thumbprint: "00".into(),
            properties: vec!["name".into(), "gone".into(), "datastore".into()],
        }
    }

    #[tokio::test]
    async fn the_wrapper_replaces_the_scripts_properties() {
        let dir = tempfile::tempdir().unwrap();
        let round = fake_runner(dir.path(), "u").round().await.unwrap();
        assert_eq!(round.retrieval, Duration::from_millis(250));
        assert_eq!(round.vms.len(), 2);
        assert_eq!(round.properties.requested, ["name", "gone", "datastore"]);
        assert_eq!(
            round.properties.returned.iter().collect::<Vec<_>>(),
            ["datastore", "name"]
        );
        assert_eq!(
            round.properties.missing.iter().collect::<Vec<_>>(),
            ["gone"]
        );
        assert_eq!(round.script_properties, ["name", "config.uuid"]);
        assert!(round.versions.starts_with("pyvmomi "), "{}", round.versions);
        assert!(round.peak_rss_kib.is_some_and(|k| k > 0));
        assert!(!dir.path().join("__pycache__").exists());
    }

    #[tokio::test]
    async fn a_failing_script_is_an_error_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let e = fake_runner(dir.path(), "refused")
            .round()
            .await
            .unwrap_err();
        assert!(e.to_string().contains("InvalidLogin"), "{e:#}");
        let mut missing = fake_runner(dir.path(), "u");
        missing.python = dir.path().join("no-python");
        assert!(missing.round().await.is_err());
    }

    #[test]
    fn vm_hwm_needs_kib() {
        assert_eq!(
            parse_vm_hwm("Name:\tpython\nVmHWM:\t   71196 kB\n"),
            Some(71196)
        );
        assert_eq!(parse_vm_hwm("VmHWM:\t71196\n"), None);
        assert_eq!(parse_vm_hwm("VmHWM:\tlots kB\n"), None);
        assert_eq!(parse_vm_hwm(""), None);
        assert!(vm_hwm_kib(std::process::id()).is_some_and(|k| k > 0));
    }
}
