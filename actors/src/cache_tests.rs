//! Tests of the cache: durability, torn tails, segment roll-over and release, the size limit.
use super::*;

fn meta() -> MachineMeta {
    MachineMeta {
        machine_id: "m1".into(),
        hostname: "h".into(),
        disks: vec![DiskMeta {
            disk_id: "disk0".into(),
            size_bytes: 1 << 20,
            label: "/dev/x".into(),
        }],
    }
}

fn extent(seq: u64, fill: u8) -> Record {
    Record::Extent {
        seq,
        offset: (seq % 16) * 65536,
        data: bytes::Bytes::from(vec![fill; 65536]),
    }
}

#[test]
fn append_sync_read_commit_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), 1 << 30).unwrap();
    let log = cache.register_machine(meta()).unwrap().remove(0);
    log.append(&[extent(1, 1), extent(2, 2)]).unwrap();
    // Not durable yet: the reader must not see it.
    assert!(log
        .read_from(&log.start_pos(), 1 << 30)
        .unwrap()
        .0
        .is_empty());
    assert_eq!(log.sync().unwrap(), 2);
    log.append(&[
        Record::Bookmark {
            last_seq: 2,
            bookmark_id: 10,
            app_consistent: false,
        },
        extent(3, 3),
    ])
    .unwrap();
    log.sync().unwrap();
    let (recs, pos) = log.read_from(&log.start_pos(), 1 << 30).unwrap();
    assert_eq!(recs.len(), 3, "stops after the bookmark");
    let (rest, _) = log.read_from(&pos, 1 << 30).unwrap();
    assert_eq!(rest, vec![extent(3, 3)]);
    cache
        .commit(
            &log,
            Cursor {
                seq: 2,
                bookmark_id: 10,
            },
        )
        .unwrap();
    drop(log);
    drop(cache);
    let cache = Cache::open(dir.path(), 1 << 30).unwrap();
    let log = cache.disk("m1", "disk0").unwrap();
    assert_eq!(log.durable_seq(), 3);
    assert_eq!(
        log.committed(),
        Cursor {
            seq: 2,
            bookmark_id: 10
        }
    );
}

#[test]
fn torn_tail_is_cut_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let cache = Cache::open(dir.path(), 1 << 30).unwrap();
        let log = cache.register_machine(meta()).unwrap().remove(0);
        log.append(&[extent(1, 1), extent(2, 2)]).unwrap();
        log.sync().unwrap();
    }
    let seg = dir.path().join("m1/disk0/seg-00000000000000000001.log");
    let len = std::fs::metadata(&seg).unwrap().len();
    // Half of a third record, as a crash mid-write leaves it.
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    let third = extent(3, 3);
    f.write_all(&segment::encode_header(&third)).unwrap();
    f.write_all(&[3u8; 1000]).unwrap();
    drop(f);
    let cache = Cache::open(dir.path(), 1 << 30).unwrap();
    let log = cache.disk("m1", "disk0").unwrap();
    assert_eq!(log.durable_seq(), 2);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len);
    let (recs, _) = log.read_from(&log.start_pos(), 1 << 30).unwrap();
    assert_eq!(recs, vec![extent(1, 1), extent(2, 2)]);
}

#[test]
fn segments_roll_and_are_released_after_commit() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), 1 << 30).unwrap();
    let log = cache.register_machine(meta()).unwrap().remove(0);
    let per_seg = segment_target(1 << 30) / (65536 + 28) + 1;
    let n = per_seg * 2 + 3;
    for seq in 1..=n {
        assert!(cache.reserve(65536 + 28, &|| false));
        log.append(&[extent(seq, seq as u8)]).unwrap();
    }
    log.sync().unwrap();
    let segs = || {
        std::fs::read_dir(dir.path().join("m1/disk0"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("seg-")
            })
            .count()
    };
    assert_eq!(segs(), 3);
    let (all, _) = log.read_from(&log.start_pos(), u64::MAX).unwrap();
    assert_eq!(all.len() as u64, n);
    let used = cache.used_bytes();
    cache
        .commit(
            &log,
            Cursor {
                seq: per_seg,
                bookmark_id: 0,
            },
        )
        .unwrap();
    assert_eq!(segs(), 2);
    assert!(cache.used_bytes() < used);
    cache
        .commit(
            &log,
            Cursor {
                seq: n,
                bookmark_id: 0,
            },
        )
        .unwrap();
    assert_eq!(segs(), 1, "the segment being written is kept");
}

#[test]
fn full_cache_blocks_until_space_is_released() {
    let dir = tempfile::tempdir().unwrap();
    let mib = 1u64 << 20;
    let cache = Cache::open(dir.path(), 64 * mib).unwrap();
    assert!(cache.reserve(48 * mib, &|| false));
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let h =
            s.spawn(|| cache.reserve(48 * mib, &|| stop.load(std::sync::atomic::Ordering::SeqCst)));
        std::thread::sleep(Duration::from_millis(300));
        assert!(!h.is_finished(), "a full cache must make the writer wait");
        cache.unreserve(48 * mib);
        assert!(h.join().unwrap());
    });
    let waited = cache.reserve(60 * mib, &|| true);
    assert!(!waited, "shutdown ends the wait without writing");
}

#[test]
fn a_cache_holding_only_its_active_segment_never_blocks() {
    // The segment being written cannot be released; waiting for the cache to drain below it would
    // deadlock, so a batch that does not fit even then is let through.
    let dir = tempfile::tempdir().unwrap();
    let max = 40u64 << 20;
    let cache = Cache::open(dir.path(), max).unwrap();
    assert!(cache.reserve(segment_target(max), &|| false));
    assert!(
        cache.reserve(max, &|| true),
        "must not wait with only one segment used"
    );
}
