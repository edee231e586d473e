//! The uploader commits batches only in order: one whose predecessor never committed (lost in an uploader
//! restart while queued) is refused, a replayed one is skipped, and a point never lands over a gap.

use actors::cache::{Cache, Cursor, DiskMeta, MachineMeta};
use actors::compress::{PointCommit, SealedBatch};
use actors::upload::Uploader;
use vault::{BlockRef, KdfParams, StoreOptions, Vault};

fn batch(start_seq: u64, end_seq: u64, block: u64) -> SealedBatch {
    SealedBatch {
        machine_id: "m".into(),
        disk_id: "disk0".into(),
        size_bytes: 4 * 65536,
        chunks: vec![],
        updates: vec![(block, BlockRef::Zero)],
        end: Cursor {
            seq: end_seq,
            bookmark_id: 0,
        },
        start_seq,
        plain_bytes: 0,
    }
}

#[tokio::test]
async fn batches_commit_in_order_only() {
    let t = tempfile::tempdir().unwrap();
    let store = vault::open_store(
        t.path().join("v").to_str().unwrap(),
        &StoreOptions::default(),
    )
    .unwrap();
    let vault = Vault::create(store, "p", KdfParams::fast_for_tests())
        .await
        .unwrap();
    let cache = Cache::open(&t.path().join("c"), 1 << 30).unwrap();
    let log = cache
        .register_machine(MachineMeta {
            machine_id: "m".into(),
            hostname: "h".into(),
            disks: vec![DiskMeta {
                disk_id: "disk0".into(),
                size_bytes: 4 * 65536,
                label: "x".into(),
            }],
        })
        .unwrap()
        .remove(0);
    let mut up = Uploader::new(vault, cache.clone(), t.path().join("maps"), 1 << 20, 4);

    up.commit_batch(batch(0, 5, 0)).await.unwrap();
    assert_eq!(log.committed().seq, 5);
    // Batch 6..=9 was lost; 9..=12 must not be applied over the gap.
    let err = up.commit_batch(batch(9, 12, 1)).await.unwrap_err();
    assert!(err.to_string().contains("lost"), "{err}");
    assert_eq!(log.committed().seq, 5);
    // A point that needs seq 12 cannot land either.
    let point = PointCommit {
        machine_id: "m".into(),
        bookmark_id: 77,
        app_consistent: false,
        disks: vec![("disk0".into(), 4 * 65536, 12)],
    };
    assert!(up.commit_point(&point).await.is_err());
    // In order it goes through; a replay of an older batch is skipped and never moves the cursor back.
    up.commit_batch(batch(5, 12, 1)).await.unwrap();
    up.commit_batch(batch(0, 5, 0)).await.unwrap();
    assert_eq!(log.committed().seq, 12);
    up.commit_point(&point).await.unwrap();
    assert_eq!(
        log.committed(),
        Cursor {
            seq: 12,
            bookmark_id: 77
        }
    );
}
