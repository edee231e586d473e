use super::*;

fn full_point() -> PointManifest {
    PointManifest {
        machine_id: "m1".into(),
        point_id: "p1".into(),
        parent: None,
        kind: PointKind::Crash,
        bookmark_id: 7,
        created_unix_ms: 1000,
        disks: vec![DiskPoint {
            disk_id: "d0".into(),
            size_bytes: 4 * BLOCK_SIZE as u64 - 512,
            seq: 9,
            map: DiskMap::Full(vec![
                BlockRef::Zero,
                BlockRef::Zero,
                BlockRef::Chunk([0xcc; 32]),
                BlockRef::Zero,
            ]),
        }],
    }
}

fn delta_point() -> PointManifest {
    PointManifest {
        machine_id: "m1".into(),
        point_id: "p2".into(),
        parent: Some("p1".into()),
        kind: PointKind::App,
        bookmark_id: 8,
        created_unix_ms: 2000,
        disks: vec![DiskPoint {
            disk_id: "d0".into(),
            size_bytes: 4 * BLOCK_SIZE as u64,
            seq: 10,
            map: DiskMap::Delta(vec![(0, BlockRef::Chunk([0xdd; 32])), (2, BlockRef::Zero)]),
        }],
    }
}

#[test]
fn full_manifest_fixed_bytes() {
    let bytes = encode_point_plain(&full_point()).unwrap();
    assert_eq!(
        hex::encode(&bytes),
        concat!(
            "0002",
            "6d31", // machine id "m1"
            "0002",
            "7031", // point id "p1"
            "00",   // no parent
            "00",   // crash
            "0000000000000007",
            "00000000000003e8",
            "00000001", // one disk
            "0002",
            "6430",
            "000000000003fe00", // size
            "0000000000000009", // seq
            "00",               // full
            "0000000000000033", // map length 51
            "0000000000000004", // 4 blocks
            "00",
            "00000002", // two zero blocks
            "01",
            "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc",
            "00",
            "00000001"
        )
    );
    assert_eq!(
        decode_point_plain(&bytes, MAX_DISK_BLOCKS).unwrap(),
        full_point()
    );
}

#[test]
fn delta_manifest_fixed_bytes() {
    let bytes = encode_point_plain(&delta_point()).unwrap();
    assert_eq!(
        hex::encode(&bytes),
        concat!(
            "0002",
            "6d31",
            "0002",
            "7032",
            "01",
            "0002",
            "7031", // parent "p1"
            "01",   // app
            "0000000000000008",
            "00000000000007d0",
            "00000001",
            "0002",
            "6430",
            "0000000000040000",
            "000000000000000a",
            "01",               // delta
            "000000000000003a", // map length 58
            "0000000000000002",
            "0000000000000000",
            "01",
            "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd",
            "0000000000000002",
            "00"
        )
    );
    assert_eq!(
        decode_point_plain(&bytes, MAX_DISK_BLOCKS).unwrap(),
        delta_point()
    );
    let summary = decode_point_summary(&bytes).unwrap();
    assert_eq!(
        summary,
        PointSummary {
            machine_id: "m1".into(),
            point_id: "p2".into(),
            kind: PointKind::App,
            created_unix_ms: 2000,
            disks: vec![("d0".into(), 4 * BLOCK_SIZE as u64)],
        }
    );
}

#[test]
fn every_truncation_and_trailing_byte_is_an_error() {
    for p in [full_point(), delta_point()] {
        let bytes = encode_point_plain(&p).unwrap();
        for cut in 0..bytes.len() {
            assert!(
                decode_point_plain(&bytes[..cut], MAX_DISK_BLOCKS).is_err(),
                "cut {cut}"
            );
            assert!(decode_point_summary(&bytes[..cut]).is_err(), "cut {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(decode_point_plain(&extra, MAX_DISK_BLOCKS).is_err());
    }
}

#[test]
fn forged_sizes_fail_without_huge_allocations() {
    // A disk size that does not match the map's block count.
    let mut bytes = encode_point_plain(&full_point()).unwrap();
    let size_at = 2 + 2 + 2 + 2 + 1 + 1 + 8 + 8 + 4 + 2 + 2;
    bytes[size_at..size_at + 8].copy_from_slice(&MAX_DISK_BYTES.to_be_bytes());
    assert!(decode_point_plain(&bytes, MAX_DISK_BLOCKS).is_err());
    // Above the caller's bound: refused before expanding.
    let small = encode_point_plain(&full_point()).unwrap();
    assert!(decode_point_plain(&small, 3)
        .unwrap_err()
        .0
        .contains("too large"));
    // Huge map length.
    let map_len_at = size_at + 8 + 8 + 1;
    let mut huge = small.clone();
    huge[map_len_at..map_len_at + 8].copy_from_slice(&u64::MAX.to_be_bytes());
    assert!(decode_point_plain(&huge, MAX_DISK_BLOCKS).is_err());
    // Huge disk count.
    let disks_at = 2 + 2 + 2 + 2 + 1 + 1 + 8 + 8;
    let mut many = small.clone();
    many[disks_at..disks_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(decode_point_plain(&many, MAX_DISK_BLOCKS).is_err());
}

#[test]
fn validation_catches_what_the_decoder_refuses() {
    let ok = |p: &PointManifest| validate_point(p, "points/m1/x");
    ok(&full_point()).unwrap();
    ok(&delta_point()).unwrap();

    let mut short = full_point();
    short.disks[0].size_bytes += BLOCK_SIZE as u64;
    assert!(ok(&short).is_err());

    let mut unordered = delta_point();
    unordered.disks[0].map = DiskMap::Delta(vec![(2, BlockRef::Zero), (1, BlockRef::Zero)]);
    assert!(ok(&unordered).is_err());

    let mut beyond = delta_point();
    beyond.disks[0].map = DiskMap::Delta(vec![(4, BlockRef::Zero)]);
    assert!(ok(&beyond).is_err());

    let mut orphan = delta_point();
    orphan.parent = None;
    assert!(ok(&orphan).is_err());

    let mut dup = full_point();
    dup.disks.push(dup.disks[0].clone());
    assert!(ok(&dup).is_err());

    let mut self_parent = delta_point();
    self_parent.parent = Some("p2".into());
    assert!(ok(&self_parent).is_err());
}

#[test]
fn ids_are_safe_object_name_segments() {
    for good in ["vm-42", "5012a4f0-9b1e", "p_2026.11.26", "A"] {
        validate_id("id", good).unwrap();
    }
    for bad in [
        "",
        ".",
        "..",
        "a/b",
        "a b",
        "é",
        &"x".repeat(129),
        ".hidden",
    ] {
        assert!(validate_id("id", bad).is_err(), "{bad:?}");
    }
    assert_eq!(point_object("m", "p").unwrap(), "points/m/p");
    assert_eq!(machine_object("m").unwrap(), "machines/m");
}

#[test]
fn long_zero_runs_compress() {
    let mut p = full_point();
    p.disks[0].size_bytes = 1 << 30;
    p.disks[0].map = DiskMap::Full(vec![BlockRef::Zero; 1 << 14]);
    let bytes = encode_point_plain(&p).unwrap();
    assert!(bytes.len() < 100);
    assert_eq!(decode_point_plain(&bytes, MAX_DISK_BLOCKS).unwrap(), p);
}

#[test]
fn machine_descriptor_json_is_pinned() {
    let m = MachineDescriptor {
        machine_id: "vm-1".into(),
        name: "db".into(),
        disks: vec![DiskDescriptor {
            disk_id: "scsi0-0".into(),
            size_bytes: 1024,
            label: "Hard disk 1".into(),
        }],
    };
    let json = serde_json::to_string(&m).unwrap();
    assert_eq!(
        json,
        r#"{"machine_id":"vm-1","name":"db","disks":[{"disk_id":"scsi0-0","size_bytes":1024,"label":"Hard disk 1"}]}"#
    );
    assert_eq!(serde_json::from_str::<MachineDescriptor>(&json).unwrap(), m);
    assert!(serde_json::from_str::<MachineDescriptor>(r#"{"machine_id":"x"}"#).is_err());
}
