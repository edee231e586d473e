//! The part-2 calls against a real vcsim (govmomi 0.24.2 behind the project's launcher), started
//! on 127.0.0.1 by `scripts/vcsim.sh start` and stopped again by this test: tasks, VM
//! lifecycle, snapshots, datastore HTTP, events, and the typed faults of the calls vcsim lacks
//! (guest operations, extension registration).
//!
//! Skipped, with the reason printed, when neither a vcsim binary (`VCSIM_BIN`) nor Debian's Go
//! and govmomi package (what the script builds it from) is installed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use vsphere::inventory::refresh_vm;
use vsphere::{
    Client, Credentials, DiskSpec, EventFilter, Extension, GuestAuth, GuestFileAttributes,
    GuestProgram, MoRef, NicAdapter, NicSpec, PowerState, ReconfigSpec, Recursion, TlsTrust, Value,
    VmCreateSpec, VsphereError,
};

const GO: &str = "/usr/bin/go";
const GOVMOMI: &str = "/usr/share/gocode/src/github.com/vmware/govmomi/simulator";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Why vcsim cannot be built or run here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    if let Some(bin) = std::env::var_os("VCSIM_BIN") {
        return (!Path::new(&bin).exists()).then(|| format!("VCSIM_BIN={bin:?} does not exist"));
    }
    let go = std::env::var_os("GO").map_or_else(|| PathBuf::from(GO), PathBuf::from);
    if !go.exists() {
        return Some(format!("Go ({}) is not installed", go.display()));
    }
    if !Path::new(GOVMOMI).is_dir() {
        return Some("golang-github-vmware-govmomi-dev is not installed".into());
    }
    for tool in ["curl", "openssl"] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

/// A vcsim this test started; stopped (and its folder removed) on drop.
struct Vcsim {
    url: String,
    sha256: String,
    dir: String,
}

impl Vcsim {
    fn start() -> Vcsim {
        let out = Command::new("bash")
            .arg(root().join("scripts/vcsim.sh"))
            .arg("start")
            .stdin(Stdio::null())
            .output()
            .expect("running scripts/vcsim.sh");
        assert!(
            out.status.success(),
            "scripts/vcsim.sh start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env: HashMap<String, String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
            .collect();
        let get = |k: &str| {
            env.get(k)
                .cloned()
                .unwrap_or_else(|| panic!("scripts/vcsim.sh printed no {k}"))
        };
        Vcsim {
            dir: get("VCSIM_DIR"),
            url: get("VCSIM_URL"),
            sha256: get("VCSIM_THUMBPRINT_SHA256"),
        }
    }
}

impl Drop for Vcsim {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(root().join("scripts/vcsim.sh"))
            .arg("stop")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

async fn prop(client: &Client, obj: &MoRef, path: &str) -> Option<Value> {
    client
        .retrieve_one(obj, &[path])
        .await
        .unwrap()
        .and_then(|mut o| o.take(path))
}

#[tokio::test]
async fn vm_lifecycle_datastore_events_and_faults_against_vcsim() {
    if let Some(reason) = missing_prerequisite() {
        eprintln!("skipping the vcsim test: {reason}");
        return;
    }
    let vcsim = Vcsim::start();
    let client = Client::connect(
        &vcsim.url,
        Credentials {
            username: "user".into(),
            password: "pass".into(),
        },
        TlsTrust::Thumbprint(vcsim.sha256.clone()),
    )
    .await
    .unwrap();
    let since = SystemTime::now() - Duration::from_secs(1);

    // Inventory paths.
    let folder = client
        .find_by_inventory_path("DC0/vm")
        .await
        .unwrap()
        .unwrap();
    let pool = client
        .find_by_inventory_path("DC0/host/DC0_C0/Resources")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (folder.kind.as_str(), pool.kind.as_str()),
        ("Folder", "ResourcePool")
    );
    assert_eq!(
        client.find_by_inventory_path("DC0/vm/nope").await.unwrap(),
        None
    );

    // A VM with a 1 GiB disk, a NIC and a guest IP for vcsim to report.
    let spec = VmCreateSpec {
        name: "ferry-vcsim-vm".into(),
        guest_id: "otherLinux64Guest".into(),
        num_cpus: 1,
        memory_mb: 256,
        datastore: "LocalDS_0".into(),
        disks: vec![DiskSpec {
            capacity_kb: 1 << 20,
        }],
        nics: vec![NicSpec {
            network: "VM Network".into(),
            adapter: NicAdapter::Vmxnet3,
        }],
        extra_config: vec![("SET.guest.ipAddress".into(), "192.0.2.55".into())],
    };
    let vm = client.create_vm(&folder, &spec, &pool, None).await.unwrap();
    assert_eq!(vm.kind, "VirtualMachine");
    let info = refresh_vm(&client, &vm).await.unwrap().unwrap();
    assert_eq!(info.name, "ferry-vcsim-vm");
    assert_eq!(info.power_state, PowerState::PoweredOff);
    assert_eq!(info.disks.len(), 1);
    assert_eq!(info.disks[0].capacity_bytes, 1 << 30);
    assert!(
        info.disks[0].file.starts_with("[LocalDS_0] "),
        "{:?}",
        info.disks
    );
    assert_eq!(info.nics.len(), 1, "{:?}", info.nics);
    assert_eq!(info.nics[0].network.as_deref(), Some("VM Network"));

    // Power on, and again: the second task fails with a typed fault.
    client.power_on(&vm).await.unwrap();
    match client.power_on(&vm).await {
        Err(VsphereError::InvalidPowerState { existing, .. }) => {
            assert_eq!(existing.as_deref(), Some("poweredOn"))
        }
        other => panic!("second power on: {other:?}"),
    }
    let info = refresh_vm(&client, &vm).await.unwrap().unwrap();
    assert_eq!(info.power_state, PowerState::PoweredOn);
    assert_eq!(info.guest_ips, ["192.0.2.55"]);

    // Snapshot and remove it.
    let snapshot = client
        .create_snapshot(&vm, "ferry-1", "replication point", false, false)
        .await
        .unwrap();
    assert_eq!(snapshot.kind, "VirtualMachineSnapshot");
    let current = prop(&client, &vm, "snapshot.currentSnapshot").await;
    assert_eq!(current.as_ref().and_then(Value::as_moref), Some(&snapshot));
    client
        .remove_snapshot(&snapshot, false, true)
        .await
        .unwrap();
    assert_eq!(prop(&client, &vm, "snapshot").await, None);
    assert!(matches!(
        client.remove_snapshot(&snapshot, false, true).await,
        Err(VsphereError::ManagedObjectNotFound { .. })
    ));

    // Rename and reconfigure.
    client.rename(&vm, "ferry-vcsim-renamed").await.unwrap();
    let reconfig = ReconfigSpec {
        num_cpus: Some(2),
        extra_config: vec![("SET.guest.hostName".into(), "web55".into())],
        ..ReconfigSpec::default()
    };
    client.reconfigure(&vm, &reconfig).await.unwrap();
    assert_eq!(
        prop(&client, &vm, "name")
            .await
            .as_ref()
            .and_then(Value::as_str),
        Some("ferry-vcsim-renamed")
    );
    assert_eq!(
        prop(&client, &vm, "config.hardware.numCPU")
            .await
            .as_ref()
            .and_then(Value::as_i64),
        Some(2)
    );
    assert_eq!(
        prop(&client, &vm, "guest.hostName")
            .await
            .as_ref()
            .and_then(Value::as_str),
        Some("web55")
    );
    assert_eq!(
        client
            .find_by_inventory_path("DC0/vm/ferry-vcsim-renamed")
            .await
            .unwrap(),
        Some(vm.clone())
    );

    // Datastore HTTP: PUT, GET whole and a range, and a missing file.
    let payload = b"hello replication".to_vec();
    client
        .datastore_put(
            "DC0",
            "LocalDS_0",
            "ferry-test/payload.txt",
            payload.clone(),
        )
        .await
        .unwrap();
    assert_eq!(
        client
            .datastore_get("DC0", "LocalDS_0", "ferry-test/payload.txt", None)
            .await
            .unwrap(),
        payload
    );
    assert_eq!(
        client
            .datastore_get("DC0", "LocalDS_0", "ferry-test/payload.txt", Some(6..17))
            .await
            .unwrap(),
        b"replication"
    );
    // Streaming both ways: a local file from an offset, then a range into a writer.
    let local = std::env::temp_dir().join(format!("ferry-vcsim-{}.bin", std::process::id()));
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&local, &data).unwrap();
    let mut file = tokio::fs::File::open(&local).await.unwrap();
    tokio::io::AsyncSeekExt::seek(&mut file, std::io::SeekFrom::Start(100))
        .await
        .unwrap();
    let sent = client
        .datastore_put_file("DC0", "LocalDS_0", "ferry-test/seed.bin", file)
        .await
        .unwrap();
    std::fs::remove_file(&local).unwrap();
    assert_eq!(sent, 299_900);
    let mut back = Vec::new();
    let n = client
        .datastore_get_to(
            "DC0",
            "LocalDS_0",
            "ferry-test/seed.bin",
            Some(1000..201_000),
            &mut back,
        )
        .await
        .unwrap();
    assert_eq!(n, 200_000);
    assert_eq!(back, &data[1100..201_100]);
    assert!(matches!(
        client
            .datastore_get("DC0", "LocalDS_0", "ferry-test/missing.txt", None)
            .await,
        Err(VsphereError::NotFound { .. })
    ));
    assert!(matches!(
        client
            .datastore_put("DC0", "NoSuchDS", "x.txt", vec![1])
            .await,
        Err(VsphereError::NotFound { .. })
    ));

    // Events of the VM since the start.
    let filter = EventFilter {
        entity: Some((vm.clone(), Recursion::OnlySelf)),
        begin_time: Some(since),
        ..EventFilter::default()
    };
    let collector = client.create_collector_for_events(&filter).await.unwrap();
    client
        .set_collector_page_size(&collector, 200)
        .await
        .unwrap();
    let mut events = Vec::new();
    loop {
        let page = client.read_next_events(&collector, 50).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(events.len() < 1000, "the collector never ends");
        events.extend(page);
    }
    client.destroy_collector(&collector).await.unwrap();
    let types: Vec<&str> = events.iter().map(|e| e.type_name.as_str()).collect();
    for wanted in ["VmCreatedEvent", "VmPoweredOnEvent"] {
        assert!(types.contains(&wanted), "{wanted} missing from {types:?}");
    }
    assert!(
        events.iter().all(|e| e.vm.as_ref() == Some(&vm)),
        "{events:?}"
    );
    assert!(events
        .iter()
        .all(|e| !e.created_time.is_empty() && e.key > 0));
    // Filtered by type.
    let only_on = EventFilter {
        event_types: vec!["VmPoweredOnEvent".into()],
        ..filter.clone()
    };
    let collector = client.create_collector_for_events(&only_on).await.unwrap();
    let page = client.read_next_events(&collector, 50).await.unwrap();
    client.destroy_collector(&collector).await.unwrap();
    assert!(!page.is_empty());
    assert!(
        page.iter().all(|e| e.type_name == "VmPoweredOnEvent"),
        "{page:?}"
    );

    // Guest operations: vcsim has no VMware Tools behind its VMs.
    let auth = GuestAuth {
        username: "root".into(),
        password: "secret".into(),
    };
    let err = client
        .initiate_file_transfer_to_guest(
            &vm,
            &auth,
            "/tmp/ferry-agent",
            &GuestFileAttributes::default(),
            17,
            true,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, VsphereError::GuestOperationsUnavailable),
        "{err:?}"
    );
    assert!(err.is_retryable());
    let program = GuestProgram {
        path: "/bin/true".into(),
        ..GuestProgram::default()
    };
    assert!(matches!(
        client.start_program_in_guest(&vm, &auth, &program).await,
        Err(VsphereError::MethodNotFound { .. })
    ));
    assert!(matches!(
        client.list_processes_in_guest(&vm, &auth, &[]).await,
        Err(VsphereError::MethodNotFound { .. })
    ));

    // Extension registration: vcsim 0.24 has no ExtensionManager methods; our launcher adds them
    // (tests/vcsim/extension.go), so govmomi's own types decode what we send.
    let ext = Extension {
        key: "io.ferry.dr".into(),
        version: "1.0.0".into(),
        label: "Ferry".into(),
        summary: "Ferry disaster recovery".into(),
        ..Extension::default()
    };
    assert_eq!(client.find_extension(&ext.key).await.unwrap(), None);
    client.register_extension(&ext).await.unwrap();
    let found = client
        .find_extension(&ext.key)
        .await
        .unwrap()
        .expect("registered");
    assert_eq!(
        (found.key.as_str(), found.version.as_str()),
        ("io.ferry.dr", "1.0.0")
    );
    assert_eq!(found.label, "Ferry");
    client.unregister_extension(&ext.key).await.unwrap();
    assert_eq!(client.find_extension(&ext.key).await.unwrap(), None);
    let gone = client.unregister_extension(&ext.key).await.unwrap_err();
    assert!(!gone.is_retryable(), "{gone:?}");

    // Power off (twice: typed fault), destroy, and the VM is gone.
    client.power_off(&vm).await.unwrap();
    assert!(matches!(
        client.power_off(&vm).await,
        Err(VsphereError::InvalidPowerState { .. })
    ));
    client.destroy(&vm).await.unwrap();
    assert_eq!(
        client
            .find_by_inventory_path("DC0/vm/ferry-vcsim-renamed")
            .await
            .unwrap(),
        None
    );
    assert!(matches!(
        client.power_on(&vm).await,
        Err(VsphereError::ManagedObjectNotFound { .. })
    ));
    // A task that does not exist.
    let err = client
        .wait_for_task(
            &MoRef::new("Task", "task-999999"),
            Duration::from_secs(5),
            |_| {},
        )
        .await
        .unwrap_err();
    match err {
        VsphereError::ManagedObjectNotFound { moref } => {
            assert_eq!(moref, MoRef::new("Task", "task-999999"))
        }
        other => panic!("{other:?}"),
    }
    client.logout().await.unwrap();
    drop(vcsim);
}
