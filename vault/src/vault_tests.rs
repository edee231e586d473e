//! In-crate tests that need the raw keys: nothing in the store may reveal plaintext or keys.

use super::*;
use crate::manifest::{DiskDescriptor, DiskPoint, PointKind};
use crate::{open_store, StoreOptions, BLOCK_SIZE};
use rand::{RngCore, SeedableRng};
use zeroize::Zeroizing;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn all_files(root: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                out.push((p, bytes));
            }
        }
    }
    out
}

#[tokio::test]
async fn no_object_contains_plaintext_keys_or_names() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path().to_str().unwrap(), &StoreOptions::default()).unwrap();
    let data_key = [0u8; 32].map(|_| rand::random::<u8>());
    let id_key = [0u8; 32].map(|_| rand::random::<u8>());
    let keys = MasterKeys {
        data: Zeroizing::new(data_key),
        chunk_id: Zeroizing::new(id_key),
    };
    let passphrase = "a passphrase that must never be stored";
    let vault = Vault::create_with_keys(store, passphrase, KdfParams::fast_for_tests(), keys)
        .await
        .unwrap();

    // Incompressible 4 KiB runs (stored raw, so only encryption hides them) and
    // compressible text runs (lz4 first).
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut disk = vec![0u8; 24 * BLOCK_SIZE];
    let runs = disk.len() / 4096;
    for r in 0..runs {
        let run = &mut disk[r * 4096..(r + 1) * 4096];
        if r % 3 == 0 {
            let text = format!("row {r} of the customer ledger, secret column; ").repeat(100);
            run.copy_from_slice(&text.as_bytes()[..4096]);
        } else {
            rng.fill_bytes(run);
        }
    }
    let mut pack = vault.new_pack();
    let mut map = Vec::new();
    let mut ids = Vec::new();
    for block in disk.chunks(BLOCK_SIZE) {
        let id = vault.chunk_id(block);
        pack.add(id, &vault.seal_chunk(&id, block));
        map.push(crate::BlockRef::Chunk(id));
        ids.push(id);
    }
    let entries = vault.put_pack(pack.finish()).await.unwrap();
    vault.put_index(&entries).await.unwrap();
    let machine_name = "finance-db-primary.corp.example";
    vault
        .put_machine(&MachineDescriptor {
            machine_id: "m1".into(),
            name: machine_name.into(),
            disks: vec![DiskDescriptor {
                disk_id: "d0".into(),
                size_bytes: disk.len() as u64,
                label: "Hard disk 1".into(),
            }],
        })
        .await
        .unwrap();
    vault
        .put_point(&PointManifest {
            machine_id: "m1".into(),
            point_id: "p1".into(),
            parent: None,
            kind: PointKind::App,
            bookmark_id: 1,
            created_unix_ms: 1,
            disks: vec![DiskPoint {
                disk_id: "d0".into(),
                size_bytes: disk.len() as u64,
                seq: 1,
                map: DiskMap::Full(map),
            }],
        })
        .await
        .unwrap();

    let files = all_files(dir.path());
    assert!(files.len() >= 5, "{files:?}");
    for (path, bytes) in &files {
        for r in 0..runs {
            let run = &disk[r * 4096..(r + 1) * 4096];
            assert!(!contains(bytes, run), "{path:?} contains plaintext run {r}");
            assert!(
                !contains(bytes, &run[..32]),
                "{path:?} contains 32 bytes of run {r}"
            );
        }
        assert!(
            !contains(bytes, &data_key),
            "{path:?} contains the data key"
        );
        assert!(
            !contains(bytes, &id_key),
            "{path:?} contains the chunk-id key"
        );
        assert!(!contains(bytes, passphrase.as_bytes()), "{path:?}");
        assert!(!contains(bytes, machine_name.as_bytes()), "{path:?}");
        assert!(!contains(bytes, b"Hard disk 1"), "{path:?}");
        // Object names carry no content: no chunk id appears in them.
        let name = path.to_string_lossy();
        for id in &ids {
            assert!(!name.contains(&hex::encode(&id[..8])), "{name}");
        }
    }
    // The round trip still works with the same keys.
    let index = vault.load_chunk_index().await.unwrap();
    assert_eq!(index.len(), ids.len());
}

#[test]
fn vault_is_send_sync_and_cheap_to_clone() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Vault>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealing_from_many_threads_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path().to_str().unwrap(), &StoreOptions::default()).unwrap();
    let vault = Vault::create(store, "p", KdfParams::fast_for_tests())
        .await
        .unwrap();
    let handles: Vec<_> = (0..4u8)
        .map(|t| {
            let v = vault.clone();
            std::thread::spawn(move || {
                for i in 0..50u8 {
                    let plain = vec![t ^ i; 1000 + usize::from(i)];
                    let id = v.chunk_id(&plain);
                    let sealed = v.seal_chunk(&id, &plain);
                    assert_eq!(v.open_chunk("o", &id, &sealed).unwrap(), plain);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}
