//! Supervision: panics injected into the compressor and the uploader cost a restart each, replication
//! carries on, and every acknowledged (fsync'd) extent ends up in a recovery point that restores exactly.

use actors::cache::{Cache, DiskMeta, MachineMeta};
use actors::registry::{AgentCredentials, AgentRegistry, Refusal};
use actors::segment::Record;
use actors::{DataPath, DataPathConfig, FaultInjection};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vault::{KdfParams, RestoreFormat, RestoreRequest, StoreOptions, Vault};

struct NoAgents;
impl AgentRegistry for NoAgents {
    fn register(&self, _: &str, _: &str, _: Option<&str>) -> Result<AgentCredentials, Refusal> {
        Err(Refusal::BadPassphrase)
    }
    fn admit(&self, id: &str) -> Result<(), Refusal> {
        Err(Refusal::Unknown(id.into()))
    }
    fn identify(&self, _: &[u8]) -> Option<String> {
        None
    }
    fn seen(&self, _: &str, _: &str) {}
}

fn acceptor() -> tokio_rustls::TlsAcceptor {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["ferry-appliance".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

fn block(i: u64, round: u8) -> Vec<u8> {
    // Compressible but distinct per block and round, like file data.
    let line = format!("block {i:06} round {round} of a disk that Ferry replicates\n");
    line.as_bytes()
        .iter()
        .cycle()
        .take(65536)
        .copied()
        .collect()
}

/// Appends one extent per block of `round` content (tracking the expected image), then a bookmark, and
/// fsyncs: everything is acknowledged from the cache's point of view.
fn write_round(
    log: &actors::cache::DiskLog,
    image: &mut [u8],
    seq: &mut u64,
    blocks: &[u64],
    round: u8,
    bookmark_id: u64,
    app_consistent: bool,
) {
    for &i in blocks {
        *seq += 1;
        let data = block(i, round);
        image[(i * 65536) as usize..((i + 1) * 65536) as usize].copy_from_slice(&data);
        log.append(&[Record::Extent {
            seq: *seq,
            offset: i * 65536,
            data: data.into(),
        }])
        .unwrap();
    }
    log.append(&[Record::Bookmark {
        last_seq: *seq,
        bookmark_id,
        app_consistent,
    }])
    .unwrap();
    log.sync().unwrap();
}

async fn wait_point(vault: &Vault, n: usize) {
    let start = Instant::now();
    loop {
        if vault.list_points().await.unwrap().len() >= n {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "point {n} never committed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn panics_in_compressor_and_uploader_lose_nothing() {
    let t = tempfile::tempdir().unwrap();
    let store = vault::open_store(
        t.path().join("vault").to_str().unwrap(),
        &StoreOptions::default(),
    )
    .unwrap();
    actix_rt::System::new().block_on(async move {
        let vault = Vault::create(store, "pass", KdfParams::fast_for_tests())
            .await
            .unwrap();
        let cache = Cache::open(&t.path().join("cache"), 1 << 30).unwrap();
        let blocks = 128u64;
        let log = cache
            .register_machine(MachineMeta {
                machine_id: "m1".into(),
                hostname: "h".into(),
                disks: vec![DiskMeta {
                    disk_id: "disk0".into(),
                    size_bytes: blocks * 65536,
                    label: "x".into(),
                }],
            })
            .unwrap()
            .remove(0);
        let faults = Arc::new(FaultInjection::default());
        faults.compressor_panics.store(1, Ordering::SeqCst);
        faults.uploader_panics.store(1, Ordering::SeqCst);
        let config = DataPathConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            maps_dir: t.path().join("maps"),
            compress_threads: 2,
            batch_bytes: 1 << 20,
            pack_target_bytes: 1 << 20,
            full_map_every: 4,
            upload_concurrency: 2,
        };
        let dp = DataPath::start(
            config,
            cache.clone(),
            vault.clone(),
            Arc::new(NoAgents),
            acceptor(),
            faults.clone(),
        );
        let mut points = dp.shared.stats.machines.subscribe();
        // A limit far above what the test moves: exercises the limiter on every pack without slowing it.
        dp.shared.set_upload_limit(1 << 40);
        assert_eq!(dp.shared.upload_limit(), 1 << 40);

        // Round 1: every block, acknowledged (fsync'd) before the faults fire.
        let mut image = vec![0u8; (blocks * 65536) as usize];
        let mut seq = 0;
        let round1: Vec<u64> = (0..blocks).filter(|i| i % 5 != 0).collect(); // leave zero blocks
        write_round(&log, &mut image, &mut seq, &round1, 1, 1000, false);
        wait_point(&vault, 1).await;
        let img1 = image.clone();

        // Round 2: a few blocks change; no faults left.
        write_round(
            &log,
            &mut image,
            &mut seq,
            &[1, 2, 3, 64, 127],
            2,
            2000,
            true,
        );
        wait_point(&vault, 2).await;

        let stats = dp.shared.stats.clone();
        assert!(
            stats.actor_restarts.load(Ordering::SeqCst) >= 2,
            "both injected panics restarted an actor"
        );
        assert_eq!(faults.compressor_panics.load(Ordering::SeqCst), 0);
        assert_eq!(faults.uploader_panics.load(Ordering::SeqCst), 0);
        let health = dp.shared.health.snapshot();
        assert!(health["compressor"].restarts >= 1, "{health:?}");
        assert!(health["uploader"].restarts >= 1, "{health:?}");
        assert!(dp.shared.health.all_running(), "{health:?}");

        for (point, want) in [("00000000000003e8", &img1), ("00000000000007d0", &image)] {
            let out = t.path().join(format!("{point}.raw"));
            vault
                .restore(
                    &RestoreRequest {
                        machine_id: "m1".into(),
                        disk_id: "disk0".into(),
                        point_id: point.into(),
                        out: out.clone(),
                        format: RestoreFormat::Raw,
                        parallelism: 4,
                    },
                    &|_, _| {},
                )
                .await
                .unwrap();
            assert!(
                std::fs::read(&out).unwrap() == *want,
                "point {point} differs"
            );
        }
        // Each point was announced once, in order, as it was committed (the uploader's restart replayed none).
        let first = points.try_recv().unwrap();
        assert_eq!(
            (
                first.machine_id.as_str(),
                first.point_id.as_str(),
                first.kind
            ),
            ("m1", "00000000000003e8", vault::PointKind::Crash)
        );
        assert_eq!(first.disks, [("disk0".to_string(), blocks * 65536)]);
        let second = points.try_recv().unwrap();
        assert_eq!(
            (second.point_id.as_str(), second.kind),
            ("00000000000007d0", vault::PointKind::App)
        );
        assert!(second.created_unix_ms >= first.created_unix_ms);
        assert!(points.try_recv().is_err());
        let facts = dp.shared.stats.machines.get("m1").unwrap();
        assert_eq!(facts.last_point, Some(second));
        assert!(!facts.connected, "no agent session ran");
        let machines = vault.list_machines().await.unwrap();
        assert_eq!(machines.len(), 1, "the vault describes the machine");
        assert_eq!(machines[0].disks[0].size_bytes, blocks * 65536);
        // Everything committed: the cache released all but the segment being written.
        assert_eq!(log.committed().bookmark_id, 2000);
        dp.shutdown(Duration::from_secs(5)).await;
    });
}
