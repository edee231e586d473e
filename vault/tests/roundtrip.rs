//! Round trips of every object through a local-folder store, and damaged objects.

mod common;

use common::*;
use vault::{
    open_store, BlockRef, DiskDescriptor, DiskMap, KdfParams, MachineDescriptor, PackId, PointKind,
    StoreOptions, Vault, VaultError,
};

#[tokio::test]
async fn create_open_and_passphrase_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path().to_str().unwrap(), &StoreOptions::default()).unwrap();
    assert!(!Vault::is_initialized(&store).await.unwrap());
    assert!(matches!(
        Vault::open(store.clone(), PASS).await,
        Err(VaultError::NotInitialized)
    ));
    let created = Vault::create(store.clone(), PASS, KdfParams::fast_for_tests())
        .await
        .unwrap();
    assert!(Vault::is_initialized(&store).await.unwrap());
    assert!(matches!(
        Vault::create(store.clone(), PASS, KdfParams::fast_for_tests()).await,
        Err(VaultError::AlreadyInitialized)
    ));
    let err = Vault::open(store.clone(), "wrong").await.unwrap_err();
    assert!(matches!(err, VaultError::WrongPassphrase));
    assert!(!err.is_retryable());

    // The reopened vault has the same keys: same chunk ids, opens the other's chunks.
    let opened = Vault::open(store.clone(), PASS).await.unwrap();
    let id = created.chunk_id(b"block");
    assert_eq!(opened.chunk_id(b"block"), id);
    let sealed = created.seal_chunk(&id, b"block");
    assert_eq!(opened.open_chunk("o", &id, &sealed).unwrap(), b"block");

    // A second vault elsewhere has other keys.
    let dir2 = tempfile::tempdir().unwrap();
    let store2 = open_store(dir2.path().to_str().unwrap(), &StoreOptions::default()).unwrap();
    let other = Vault::create(store2, PASS, KdfParams::fast_for_tests())
        .await
        .unwrap();
    assert_ne!(other.chunk_id(b"block"), id);
    assert!(matches!(
        other.open_chunk("o", &id, &sealed),
        Err(VaultError::Integrity { .. })
    ));

    // A truncated config is an integrity error, not a wrong passphrase.
    let config = dir.path().join("config");
    let bytes = std::fs::read(&config).unwrap();
    std::fs::write(&config, &bytes[..bytes.len() - 1]).unwrap();
    assert!(matches!(
        Vault::open(store, PASS).await,
        Err(VaultError::Integrity { ref object, .. }) if object == "config"
    ));
}

#[tokio::test]
async fn packs_indexes_and_footers_round_trip() {
    let lv = local_vault().await;
    let v = &lv.vault;
    assert!(v.load_chunk_index().await.unwrap().is_empty());
    let blocks: Vec<Vec<u8>> = (0..5u8)
        .map(|i| vec![i + 1; 1000 * usize::from(i + 1)])
        .collect();
    let mut pack = v.new_pack();
    for b in &blocks {
        let id = v.chunk_id(b);
        pack.add(id, &v.seal_chunk(&id, b));
    }
    assert_eq!(pack.chunk_count(), 5);
    let finished = pack.finish();
    let kept = finished.clone();
    let entries = v.put_pack(finished).await.unwrap();
    // Repeating the same upload (a retry after an unclear failure) succeeds.
    assert_eq!(v.put_pack(kept.clone()).await.unwrap(), entries);
    v.put_index(&entries[..2]).await.unwrap();
    v.put_index(&entries[2..]).await.unwrap();

    let index = v.load_chunk_index().await.unwrap();
    assert_eq!(index.len(), 5);
    let pack_id = PackId::from_hex(&kept.id_hex()).unwrap();
    assert_eq!(v.read_pack_footer(&pack_id).await.unwrap(), entries);
    let pack_bytes = read_file(&lv.root().join(kept.object_name()));
    for (b, e) in blocks.iter().zip(&entries) {
        let loc = index.get(&e.chunk).unwrap();
        assert_eq!(loc.pack, pack_id);
        let sealed = &pack_bytes[loc.offset as usize..loc.offset as usize + loc.length as usize];
        assert_eq!(
            &v.open_chunk(&kept.object_name(), &e.chunk, sealed).unwrap(),
            b
        );
    }

    // Truncated index and footer: Integrity naming the object.
    let (index_name, index_path) = object_files(&lv.root())
        .into_iter()
        .find(|(n, _)| n.starts_with("index/"))
        .unwrap();
    let bytes = read_file(&index_path);
    std::fs::write(&index_path, &bytes[..bytes.len() - 5]).unwrap();
    assert!(matches!(
        v.load_chunk_index().await,
        Err(VaultError::Integrity { ref object, .. }) if *object == index_name
    ));
    let pack_path = lv.root().join(kept.object_name());
    std::fs::write(&pack_path, &pack_bytes[..pack_bytes.len() - 30]).unwrap();
    assert!(matches!(
        v.read_pack_footer(&pack_id).await,
        Err(VaultError::Integrity { ref object, .. }) if *object == kept.object_name()
    ));
    std::fs::write(&pack_path, &pack_bytes[..10]).unwrap();
    assert!(matches!(
        v.read_pack_footer(&pack_id).await,
        Err(VaultError::Integrity { .. })
    ));
    // Same id, different bytes: refused.
    assert!(v.put_pack(kept).await.is_err());
}

fn machine(id: &str, name: &str) -> MachineDescriptor {
    MachineDescriptor {
        machine_id: id.into(),
        name: name.into(),
        disks: vec![DiskDescriptor {
            disk_id: "scsi0-0".into(),
            size_bytes: 1 << 30,
            label: "Hard disk 1".into(),
        }],
    }
}

#[tokio::test]
async fn machines_round_trip_and_overwrite() {
    let lv = local_vault().await;
    let v = &lv.vault;
    assert!(v.list_machines().await.unwrap().is_empty());
    v.put_machine(&machine("vm-2", "web")).await.unwrap();
    v.put_machine(&machine("vm-1", "db")).await.unwrap();
    v.put_machine(&machine("vm-2", "web-renamed"))
        .await
        .unwrap();
    let listed = v.list_machines().await.unwrap();
    assert_eq!(
        listed,
        vec![machine("vm-1", "db"), machine("vm-2", "web-renamed")]
    );
    assert!(matches!(
        v.put_machine(&machine("../escape", "x")).await,
        Err(VaultError::Format { .. })
    ));
}

#[tokio::test]
async fn points_round_trip_list_and_refuse_changes() {
    let lv = local_vault().await;
    let v = &lv.vault;
    let chunk = BlockRef::Chunk([7; 32]);
    let p1 = point(
        "vm-b",
        "p1",
        None,
        200,
        vec![
            disk_point(
                "d0",
                3 * BS,
                DiskMap::Full(vec![BlockRef::Zero, chunk, BlockRef::Zero]),
            ),
            disk_point("d1", 100, DiskMap::Full(vec![chunk])),
        ],
    );
    let mut p2 = point(
        "vm-b",
        "p2",
        Some("p1"),
        100,
        vec![disk_point("d0", 3 * BS, DiskMap::Delta(vec![(2, chunk)]))],
    );
    p2.kind = PointKind::App;
    let p3 = point("vm-a", "p1", None, 300, vec![]);
    for p in [&p1, &p2, &p3] {
        v.put_point(p).await.unwrap();
    }
    v.put_point(&p1).await.unwrap(); // identical again: fine
    let mut changed = p1.clone();
    changed.bookmark_id += 1;
    assert!(matches!(
        v.put_point(&changed).await,
        Err(VaultError::Format { .. })
    ));

    assert_eq!(v.get_point("vm-b", "p1").await.unwrap(), p1);
    assert_eq!(v.get_point("vm-b", "p2").await.unwrap(), p2);
    assert!(matches!(
        v.get_point("vm-b", "p9").await,
        Err(VaultError::NotFound(_))
    ));
    let listed: Vec<_> = v
        .list_points()
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.machine_id, s.point_id, s.created_unix_ms, s.kind, s.disks))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("vm-a".into(), "p1".into(), 300, PointKind::Crash, vec![]),
            (
                "vm-b".into(),
                "p2".into(),
                100,
                PointKind::App,
                vec![("d0".into(), 3 * BS as u64)]
            ),
            (
                "vm-b".into(),
                "p1".into(),
                200,
                PointKind::Crash,
                vec![("d0".into(), 3 * BS as u64), ("d1".into(), 100)]
            ),
        ]
    );

    let (size, map) = v.resolve_disk_map("vm-b", "p2", "d0").await.unwrap();
    assert_eq!(size, 3 * BS as u64);
    assert_eq!(map, vec![BlockRef::Zero, chunk, chunk]);
    // d1 is not in p2 at all.
    assert!(matches!(
        v.resolve_disk_map("vm-b", "p2", "d1").await,
        Err(VaultError::NotFound(_))
    ));

    // Invalid manifests are refused before anything is written.
    let bad = point(
        "vm-b",
        "p3",
        None,
        1,
        vec![disk_point("d0", 3 * BS, DiskMap::Full(vec![]))],
    );
    assert!(matches!(
        v.put_point(&bad).await,
        Err(VaultError::Format { .. })
    ));
    let bad = point("vm b", "p3", None, 1, vec![]);
    assert!(matches!(
        v.put_point(&bad).await,
        Err(VaultError::Format { .. })
    ));
}

#[tokio::test]
async fn moved_truncated_or_orphaned_points_are_integrity_errors() {
    let lv = local_vault().await;
    let v = &lv.vault;
    let p1 = point(
        "m",
        "p1",
        None,
        1,
        vec![disk_point("d", BS, DiskMap::Full(vec![BlockRef::Zero]))],
    );
    v.put_point(&p1).await.unwrap();
    let root = lv.root();
    // A manifest copied under another name does not open (its name is authenticated).
    std::fs::copy(root.join("points/m/p1"), root.join("points/m/p2")).unwrap();
    assert!(matches!(
        v.get_point("m", "p2").await,
        Err(VaultError::Integrity { ref object, .. }) if object == "points/m/p2"
    ));
    assert!(matches!(
        v.list_points().await,
        Err(VaultError::Integrity { .. })
    ));
    std::fs::remove_file(root.join("points/m/p2")).unwrap();

    // A delta whose parent is missing.
    let orphan = point(
        "m",
        "p3",
        Some("gone"),
        3,
        vec![disk_point(
            "d",
            BS,
            DiskMap::Delta(vec![(0, BlockRef::Zero)]),
        )],
    );
    v.put_point(&orphan).await.unwrap();
    assert!(matches!(
        v.resolve_disk_map("m", "p3", "d").await,
        Err(VaultError::Integrity { ref object, .. }) if object == "points/m/p3"
    ));

    let bytes = read_file(&root.join("points/m/p1"));
    for cut in [0, 3, 31, bytes.len() - 1] {
        std::fs::write(root.join("points/m/p1"), &bytes[..cut]).unwrap();
        assert!(matches!(
            v.get_point("m", "p1").await,
            Err(VaultError::Integrity { ref object, .. }) if object == "points/m/p1"
        ));
    }
}
