//! Cancelling a restore: it stops between ranges and leaves neither the image nor the partial file.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use vault::{DiskMap, RestoreFormat, RestoreRequest, Vault, VaultError};

/// Stores `image` as point `m`/`p` disk `d` with every chunk in its own pack, so each chunk is
/// one range of the restore (ranges never span packs).
async fn store_one_chunk_per_pack(lv: &LocalVault, image: &[u8]) {
    let mut up = Uploader::new(&lv.vault).await;
    up.max_pack = 1;
    let map = up.upload(&lv.vault, image).await;
    let p = point(
        "m",
        "p",
        None,
        1,
        vec![disk_point("d", image.len(), DiskMap::Full(map))],
    );
    lv.vault.put_point(&p).await.unwrap();
}

fn request(lv: &LocalVault, name: &str, format: RestoreFormat) -> RestoreRequest {
    RestoreRequest {
        machine_id: "m".into(),
        disk_id: "d".into(),
        point_id: "p".into(),
        out: lv.out(name),
        format,
        parallelism: 1,
    }
}

async fn restore_cancelled_after_first_range(vault: &Vault, req: &RestoreRequest) -> Vec<u64> {
    let cancel = AtomicBool::new(false);
    let seen = std::sync::Mutex::new(Vec::new());
    let result = vault
        .restore_cancellable(
            req,
            &|done, _total| {
                seen.lock().unwrap().push(done);
                if done > 0 {
                    cancel.store(true, Ordering::Release);
                }
            },
            &cancel,
        )
        .await;
    assert!(
        matches!(result, Err(VaultError::Cancelled)),
        "expected Cancelled, got {result:?}"
    );
    seen.into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_mid_restore_stops_and_leaves_no_file() {
    let lv = local_vault().await;
    // Random blocks only (no zero or repeated ones): 12 chunks, 12 packs, 12 ranges.
    let image: Vec<u8> = (0..12 * BS).map(|i| (i * 7 % 251 + i / BS) as u8).collect();
    store_one_chunk_per_pack(&lv, &image).await;
    for format in [RestoreFormat::Raw, RestoreFormat::Vhd, RestoreFormat::Vmdk] {
        let req = request(&lv, "cancelled.img", format);
        let seen = restore_cancelled_after_first_range(&lv.vault, &req).await;
        // The start report and the first range, nothing after the cancel.
        assert_eq!(seen, vec![0, BS as u64], "{format:?}");
        assert!(!req.out.exists(), "{format:?}: image left behind");
        assert!(
            !req.partial_path().exists(),
            "{format:?}: partial left behind"
        );
    }

    // The same request without a cancel restores byte-exact: the flag is the only difference.
    let req = request(&lv, "whole.img", RestoreFormat::Raw);
    let never = AtomicBool::new(false);
    let stats = lv
        .vault
        .restore_cancellable(&req, &|_, _| {}, &never)
        .await
        .unwrap();
    assert_eq!(stats.bytes, image.len() as u64);
    assert!(read_file(&req.out) == image);
    assert!(!req.partial_path().exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_before_the_start_writes_nothing_and_keeps_an_existing_image() {
    let lv = local_vault().await;
    let image = make_disk(9, 6 * BS + 100);
    store_single_point(&lv, &image).await;
    let req = request(&lv, "kept.raw", RestoreFormat::Raw);
    std::fs::write(&req.out, b"previous image").unwrap();
    let cancel = AtomicBool::new(true);
    let result = lv
        .vault
        .restore_cancellable(&req, &|_, _| {}, &cancel)
        .await;
    assert!(matches!(result, Err(VaultError::Cancelled)), "{result:?}");
    assert_eq!(read_file(&req.out), b"previous image");
    assert!(!req.partial_path().exists());
}

#[test]
fn ids_and_partial_names() {
    for good in ["m", "vm-01", "disk_0", "p.1", &"a".repeat(128)] {
        assert!(RestoreRequest::is_valid_id(good), "{good}");
    }
    for bad in ["", ".p", "a/b", "..", "a b", "x\0", "é", &"a".repeat(129)] {
        assert!(!RestoreRequest::is_valid_id(bad), "{bad:?}");
    }
    let req = RestoreRequest {
        machine_id: "m".into(),
        disk_id: "d".into(),
        point_id: "p".into(),
        out: "/restores/disk.vhd".into(),
        format: RestoreFormat::Vhd,
        parallelism: 1,
    };
    assert_eq!(
        req.partial_path(),
        std::path::PathBuf::from("/restores/disk.vhd.partial")
    );
}
