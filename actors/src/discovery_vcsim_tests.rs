//! Discovery with the real vSphere client against vcsim (started by `scripts/vcsim.sh`, which builds it
//! from Debian's govmomi; `scripts/install-test-deps.sh` installs that and the pyvmomi virtualenv): the
//! full list, changes made with pyvmomi arriving through WaitForUpdatesEx, a refused password, a pinned
//! thumbprint that does not match, and vcsim going away.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::tests::{quick, Recorder};
use super::*;

const USER: &str = "ferry";
const PASSWORD: &str = "vcsim-pass-1";
/// Waits for a task by reading its state. Not pyVim's WaitForTask: that calls WaitForUpdates on vcsim's
/// one shared PropertyCollector and so takes the updates meant for discovery's filter (a real vCenter
/// keeps collectors per session).
const WAIT_FOR_TASK: &str = "def WaitForTask(task):\n    while task.info.state not in ('success', 'error'):\n        time.sleep(0.05)\n    if task.info.state == 'error':\n        raise Exception(task.info.error)\n";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A vcsim of this test; stopped (and its folder removed) on drop.
struct Vcsim {
    env: HashMap<String, String>,
    stopped: std::cell::Cell<bool>,
}

impl Vcsim {
    fn start(flags: &[&str]) -> Vcsim {
        let out = Command::new("bash")
            .arg(root().join("scripts/vcsim.sh"))
            .arg("start")
            .args(flags)
            .output()
            .expect("run scripts/vcsim.sh");
        assert!(
            out.status.success(),
            "scripts/vcsim.sh start failed (scripts/install-test-deps.sh installs what it needs): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
            .collect();
        Vcsim {
            env,
            stopped: std::cell::Cell::new(false),
        }
    }

    fn get(&self, key: &str) -> &str {
        self.env.get(key).map_or("", String::as_str)
    }

    fn target(&self, password: &str, thumbprint: &str) -> VcenterTarget {
        VcenterTarget {
            id: "vc1".into(),
            url: self.get("VCSIM_URL").to_string(),
            credentials: Credentials {
                username: USER.into(),
                password: password.into(),
            },
            trust: TlsTrust::Thumbprint(thumbprint.into()),
        }
    }

    fn stop(&self) {
        if self.stopped.replace(true) {
            return;
        }
        let _ = Command::new("bash")
            .arg(root().join("scripts/vcsim.sh"))
            .arg("stop")
            .arg(self.get("VCSIM_DIR"))
            .status();
    }

    /// Runs a pyvmomi snippet with `si` (a logged-in ServiceInstance) and `vms` (by name) defined.
    fn pyvmomi(&self, snippet: &str) {
        let venv = std::env::var_os("FERRY_TEST_VENV").map_or_else(
            || {
                let home = std::env::var_os("HOME").expect("HOME is set");
                PathBuf::from(home).join(".cache/ferry-test/venv")
            },
            PathBuf::from,
        );
        let script = format!(
            "import os, ssl, time\nfrom pyVim.connect import SmartConnect\n\
             from pyVmomi import vim\n\
             ctx = ssl.create_default_context(cafile=os.environ['VCSIM_CERT'])\n\
             si = SmartConnect(host='127.0.0.1', port=int(os.environ['VCSIM_PORT']), user='{USER}', \
             pwd=os.environ['VSPHERE_PASSWORD'], sslContext=ctx)\n\
             view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.VirtualMachine], True)\n\
             vms = {{vm.name: vm for vm in view.view}}\n{WAIT_FOR_TASK}{snippet}\n"
        );
        let out = Command::new(venv.join("bin/python"))
            .arg("-c")
            .arg(script)
            .env("VCSIM_CERT", self.get("VCSIM_CERT"))
            .env("VCSIM_PORT", self.get("VCSIM_PORT"))
            .env("VSPHERE_PASSWORD", PASSWORD)
            .output()
            .expect("run pyvmomi (scripts/install-test-deps.sh makes its virtualenv)");
        assert!(
            out.status.success(),
            "pyvmomi: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Vcsim {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn within(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_rt::test]
async fn discovery_follows_vcsim() {
    // 2 clusters x 4 VMs.
    let vcsim = Vcsim::start(&[
        "-cluster",
        "2",
        "-vm",
        "4",
        "-username",
        USER,
        "-password",
        PASSWORD,
    ]);
    let sha256 = vcsim.get("VCSIM_THUMBPRINT_SHA256").to_string();
    assert!(!sha256.is_empty(), "{:?}", vcsim.env);
    let sink = Arc::new(Recorder::default());
    let discovery = Discovery::start(
        sink.clone(),
        Arc::new(VsphereConnector::default()),
        DiscoveryConfig {
            max_wait: Duration::from_secs(1),
            ..quick()
        },
    );

    // A refused password waits; so does a certificate other than the pinned one.
    discovery.set_target(vcsim.target("wrong", &sha256));
    within(30, "the refused login", || {
        sink.last_health("vc1").is_some()
    })
    .await;
    assert!(matches!(
        sink.last_health("vc1"),
        Some(VcenterHealth::Unhealthy { retryable: false, ref reason, .. }) if reason.contains("user name or password")
    ));
    let flipped = if sha256.starts_with("00") { "11" } else { "00" };
    let other = format!("{flipped}{}", &sha256[2..]);
    discovery.set_target(vcsim.target(PASSWORD, &other));
    within(30, "the certificate mismatch", || {
        matches!(sink.last_health("vc1"), Some(VcenterHealth::Unhealthy { presented_thumbprint: Some(ref t), .. }) if *t == sha256)
    })
    .await;

    // The right credential and thumbprint (the SHA-1 one vSphere shows works as well).
    discovery.set_target(vcsim.target(PASSWORD, vcsim.get("VCSIM_THUMBPRINT")));
    within(30, "the full list", || sink.names("vc1").len() == 8).await;
    assert_eq!(sink.last_health("vc1"), Some(VcenterHealth::Healthy));
    {
        let inventory = sink.inventory.lock().unwrap();
        for vm in inventory["vc1"].values() {
            assert!(
                vm.bios_uuid.is_some() && vm.instance_uuid.is_some(),
                "{vm:?}"
            );
            assert_eq!(
                vm.power_state,
                vsphere::PowerState::PoweredOn,
                "{}",
                vm.name
            );
            assert!(!vm.disks.is_empty(), "{}", vm.name);
            assert!(vm
                .disks
                .iter()
                .all(|d| d.capacity_bytes > 0 && d.file.ends_with(".vmdk")));
        }
    }
    let names = sink.names("vc1");

    // Changes made by someone else arrive incrementally.
    let started = Instant::now();
    vcsim.pyvmomi(&format!(
        "WaitForTask(vms['{a}'].Rename_Task('renamed-by-test'))\n\
         WaitForTask(vms['{b}'].PowerOffVM_Task())\n\
         WaitForTask(vms['{c}'].PowerOffVM_Task())\nWaitForTask(vms['{c}'].Destroy_Task())\n\
         WaitForTask(vms['{d}'].CloneVM_Task(folder=vms['{d}'].parent, name='clone-by-test', \
         spec=vim.vm.CloneSpec(location=vim.vm.RelocateSpec())))",
        a = names[0],
        b = names[1],
        c = names[2],
        d = names[3],
    ));
    within(30, "the changes", || {
        let now = sink.names("vc1");
        now.contains(&"renamed-by-test".to_string())
            && now.contains(&"clone-by-test".to_string())
            && !now.contains(&names[0])
            && !now.contains(&names[2])
    })
    .await;
    let power_off = sink.inventory.lock().unwrap()["vc1"]
        .values()
        .find(|v| v.name == names[1])
        .map(|v| v.power_state);
    assert_eq!(power_off, Some(vsphere::PowerState::PoweredOff));
    assert_eq!(
        sink.replaces.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "incremental, no full list"
    );
    eprintln!(
        "changes seen {:.1} s after they were made",
        started.elapsed().as_secs_f64()
    );

    // vcsim goes away: unhealthy, retrying.
    vcsim.stop();
    within(30, "the failure", || {
        matches!(
            sink.last_health("vc1"),
            Some(VcenterHealth::Unhealthy {
                retryable: true,
                ..
            })
        )
    })
    .await;
    discovery.shutdown().await;
}
