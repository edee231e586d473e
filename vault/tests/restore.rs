//! Restores against a local-folder vault: delta chains, output formats, damaged objects.

mod common;

use std::process::Command;

use common::*;
use vault::{DiskMap, RestoreFormat, VaultError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_chains_restore_byte_exact() {
    let lv = local_vault().await;
    let v = &lv.vault;
    let mut up = Uploader::new(v).await;
    up.max_pack = 200 * 1024; // several packs per upload

    // v0 full; v1 delta; v2 delta and grown (partial last block); v3 full; v4 delta and shrunk.
    let sizes = [
        40 * BS,
        40 * BS,
        43 * BS + 4096,
        43 * BS + 4096,
        30 * BS + 512,
    ];
    let mut images = vec![make_disk(1, sizes[0])];
    for (i, size) in sizes.iter().enumerate().skip(1) {
        let next = mutate(&images[i - 1], 100 + i as u64, *size);
        images.push(next);
    }
    let mut maps: Vec<Vec<vault::BlockRef>> = Vec::new();
    for (i, image) in images.iter().enumerate() {
        let map = up.upload(v, image).await;
        let id = format!("p{i}");
        let parent = (i > 0).then(|| format!("p{}", i - 1));
        let disk_map = if i == 0 || i == 3 {
            DiskMap::Full(map.clone())
        } else {
            DiskMap::Delta(delta(&maps[i - 1], &map))
        };
        let p = point(
            "vm-1",
            &id,
            parent.as_deref(),
            1000 + i as u64,
            vec![disk_point("scsi0-0", image.len(), disk_map)],
        );
        v.put_point(&p).await.unwrap();
        maps.push(map);
    }

    for (i, image) in images.iter().enumerate() {
        let id = format!("p{i}");
        let (size, resolved) = v.resolve_disk_map("vm-1", &id, "scsi0-0").await.unwrap();
        assert_eq!(size, image.len() as u64);
        assert_eq!(resolved, maps[i], "map of {id}");
        let out = lv.out(&format!("{id}.raw"));
        let stats = restore(
            v,
            "vm-1",
            "scsi0-0",
            &id,
            RestoreFormat::Raw,
            &out,
            1 + i * 3,
        )
        .await
        .unwrap();
        let restored = read_file(&out);
        assert!(restored == *image, "{id} differs");
        assert_eq!(stats.bytes, image.len() as u64);
        let zero = maps[i]
            .iter()
            .filter(|b| **b == vault::BlockRef::Zero)
            .count() as u64;
        assert_eq!(stats.zero_blocks, zero);
        assert!(stats.fetched_bytes > 0 && stats.chunks > 0);
        // Raw output is sparse: zero blocks were never written.
        use std::os::unix::fs::MetadataExt;
        let allocated = std::fs::metadata(&out).unwrap().blocks() * 512;
        assert!(
            allocated <= image.len() as u64,
            "{id}: {allocated} bytes allocated"
        );
    }

    let latest = lv.out("latest.raw");
    restore(
        v,
        "vm-1",
        "scsi0-0",
        "latest",
        RestoreFormat::Raw,
        &latest,
        4,
    )
    .await
    .unwrap();
    assert!(read_file(&latest) == images[4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_reports_reach_the_total() {
    let lv = local_vault().await;
    let image = make_disk(5, 20 * BS + 1000);
    store_single_point(&lv, &image).await;
    let seen = std::sync::Mutex::new(Vec::new());
    let req = vault::RestoreRequest {
        machine_id: "m".into(),
        disk_id: "d".into(),
        point_id: "p".into(),
        out: lv.out("p.raw"),
        format: RestoreFormat::Raw,
        parallelism: 3,
    };
    lv.vault
        .restore(&req, &|done, total| {
            seen.lock().unwrap().push((done, total))
        })
        .await
        .unwrap();
    let seen = seen.into_inner().unwrap();
    let (last_done, total) = *seen.last().unwrap();
    assert_eq!(last_done, total);
    assert!(total > 0 && total <= image.len() as u64);
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0));
}

fn qemu_img(args: &[&str]) -> String {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img runs");
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json_u64(json: &str, key: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {json}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhd_and_vmdk_images_convert_back_with_qemu_img() {
    let lv = local_vault().await;
    // Not a MiB multiple (VHD padding) and a short last block; many zero blocks (sparse VMDK).
    let size = 3 * (1 << 20) + 5 * BS + 2560;
    let mut image = make_disk(9, size);
    image[BS * 30..BS * 45].fill(0);
    let map = store_single_point(&lv, &image).await;
    let zero_blocks = map.iter().filter(|b| **b == vault::BlockRef::Zero).count();

    // VHD: raw, zero padding to 4 MiB, footer.
    let vhd = lv.out("disk.vhd");
    restore(&lv.vault, "m", "d", "p", RestoreFormat::Vhd, &vhd, 4)
        .await
        .unwrap();
    let bytes = read_file(&vhd);
    let padded = 4 << 20;
    assert_eq!(bytes.len(), padded + 512);
    assert!(bytes[..size] == image[..]);
    assert!(bytes[size..padded].iter().all(|b| *b == 0));
    assert_eq!(&bytes[padded..padded + 8], b"conectix");
    let info = qemu_img(&["info", "-f", "vpc", "--output=json", vhd.to_str().unwrap()]);
    assert_eq!(json_u64(&info, "virtual-size"), padded as u64);
    let back = lv.out("vhd-back.raw");
    qemu_img(&[
        "convert",
        "-f",
        "vpc",
        "-O",
        "raw",
        vhd.to_str().unwrap(),
        back.to_str().unwrap(),
    ]);
    let back = read_file(&back);
    assert_eq!(back.len(), padded);
    assert!(back[..size] == image[..] && back[size..].iter().all(|b| *b == 0));

    // VMDK: qemu-img finds no errors and converts back to the same bytes.
    let vmdk = lv.out("disk.vmdk");
    restore(&lv.vault, "m", "d", "p", RestoreFormat::Vmdk, &vmdk, 4)
        .await
        .unwrap();
    qemu_img(&["check", "-f", "vmdk", vmdk.to_str().unwrap()]);
    let info = qemu_img(&[
        "info",
        "-f",
        "vmdk",
        "--output=json",
        vmdk.to_str().unwrap(),
    ]);
    assert_eq!(json_u64(&info, "virtual-size"), size as u64);
    assert!(info.contains("monolithicSparse"), "{info}");
    let back = lv.out("vmdk-back.raw");
    qemu_img(&[
        "convert",
        "-f",
        "vmdk",
        "-O",
        "raw",
        vmdk.to_str().unwrap(),
        back.to_str().unwrap(),
    ]);
    assert!(read_file(&back) == image);
    // Zero grains are not stored.
    let vmdk_len = std::fs::metadata(&vmdk).unwrap().len() as usize;
    assert!(
        vmdk_len < size - (zero_blocks - 1) * BS + (1 << 20),
        "{vmdk_len}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_a_pack_fails_the_restore_and_leaves_no_image() {
    let lv = local_vault().await;
    let image = make_disk(3, 12 * BS);
    store_single_point(&lv, &image).await;
    let (pack_name, pack_path) = object_files(&lv.root())
        .into_iter()
        .find(|(n, _)| n.starts_with("packs/"))
        .unwrap();
    let mut bytes = read_file(&pack_path);
    bytes[100] ^= 0x20; // inside the first chunk's ciphertext
    std::fs::write(&pack_path, &bytes).unwrap();

    for format in [RestoreFormat::Raw, RestoreFormat::Vhd, RestoreFormat::Vmdk] {
        let out = lv.out("broken.img");
        let err = restore(&lv.vault, "m", "d", "p", format, &out, 4)
            .await
            .unwrap_err();
        match &err {
            VaultError::Integrity { object, .. } => assert_eq!(object, &pack_name),
            other => panic!("expected Integrity, got {other:?}"),
        }
        assert!(!err.is_retryable());
        assert!(!out.exists());
        assert!(!lv.out("broken.img.partial").exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_or_missing_packs_are_integrity_errors() {
    let lv = local_vault().await;
    let image = make_disk(4, 8 * BS);
    store_single_point(&lv, &image).await;
    let (pack_name, pack_path) = object_files(&lv.root())
        .into_iter()
        .find(|(n, _)| n.starts_with("packs/"))
        .unwrap();
    let bytes = read_file(&pack_path);
    std::fs::write(&pack_path, &bytes[..bytes.len() / 3]).unwrap();
    let out = lv.out("t.raw");
    let err = restore(&lv.vault, "m", "d", "p", RestoreFormat::Raw, &out, 2)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, VaultError::Integrity { object, .. } if *object == pack_name),
        "{err:?}"
    );
    std::fs::remove_file(&pack_path).unwrap();
    let err = restore(&lv.vault, "m", "d", "p", RestoreFormat::Raw, &out, 2)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, VaultError::Integrity { object, .. } if *object == pack_name),
        "{err:?}"
    );
    assert!(!out.exists());
}

#[tokio::test]
async fn unknown_points_and_disks_are_not_found() {
    let lv = local_vault().await;
    let out = lv.out("x.raw");
    let err = restore(&lv.vault, "m", "d", "nope", RestoreFormat::Raw, &out, 1)
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::NotFound(_)), "{err:?}");
    let err = restore(&lv.vault, "m", "d", "latest", RestoreFormat::Raw, &out, 1)
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::NotFound(_)), "{err:?}");
    let p = point(
        "m",
        "p",
        None,
        1,
        vec![disk_point("d", 0, DiskMap::Full(vec![]))],
    );
    lv.vault.put_point(&p).await.unwrap();
    let err = restore(&lv.vault, "m", "other", "p", RestoreFormat::Raw, &out, 1)
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::NotFound(_)), "{err:?}");
    // An empty disk restores to an empty file.
    restore(&lv.vault, "m", "d", "p", RestoreFormat::Raw, &out, 1)
        .await
        .unwrap();
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 0);
}

#[tokio::test]
async fn a_chunk_missing_from_every_index_names_the_point() {
    let lv = local_vault().await;
    let ghost = lv.vault.chunk_id(b"never uploaded");
    let p = point(
        "m",
        "p",
        None,
        1,
        vec![disk_point(
            "d",
            BS,
            DiskMap::Full(vec![vault::BlockRef::Chunk(ghost)]),
        )],
    );
    lv.vault.put_point(&p).await.unwrap();
    let err = restore(
        &lv.vault,
        "m",
        "d",
        "p",
        RestoreFormat::Raw,
        &lv.out("g.raw"),
        1,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, VaultError::Integrity { object, .. } if object == "points/m/p"),
        "{err:?}"
    );
}
