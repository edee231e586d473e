//! Entry points for fuzzing the decoders of outside input (hidden from docs, not an API).
//!
//! [`decode_everything`] runs every decoder on one buffer; it must never panic, hang or
//! allocate more than a bounded multiple of its input. [`samples`] gives valid encodings to
//! start mutations from.

use zeroize::Zeroizing;

use crate::chunk::{open_chunk_body, parse_chunk_header, VaultKeys};
use crate::crypto::{
    aead, decode_config, decode_config_header, encode_config, open_envelope, seal_envelope,
    KdfParams, MasterKeys, KEY_LEN,
};
use crate::index::{decode_index_plain, encode_index_plain};
use crate::manifest::{
    decode_point_plain, decode_point_summary, encode_point_plain, DiskMap, DiskPoint, PointKind,
    PointManifest,
};
use crate::pack::{decode_footer_plain, decode_trailer, TRAILER_LEN};
use crate::{BlockRef, IndexEntry, BLOCK_SIZE};

/// Full maps decoded here expand to at most this many blocks (bounds fuzzing memory).
const FUZZ_MAX_BLOCKS: u64 = 1 << 16;

fn keys() -> VaultKeys {
    VaultKeys::new(&MasterKeys {
        data: Zeroizing::new([0x11; KEY_LEN]),
        chunk_id: Zeroizing::new([0x22; KEY_LEN]),
    })
}

/// Runs every decoder over `data`; returns how many accepted it (a sanity signal for tests).
pub fn decode_everything(data: &[u8]) -> usize {
    let mut accepted = 0;
    let mut count = |ok: bool| accepted += usize::from(ok);
    count(decode_config_header(data).is_ok());
    if data.len() >= TRAILER_LEN {
        count(decode_trailer(&data[data.len() - TRAILER_LEN..], data.len() as u64).is_ok());
    }
    count(decode_footer_plain(data, u64::MAX / 2).is_ok());
    count(decode_index_plain(data).is_ok());
    count(decode_point_plain(data, FUZZ_MAX_BLOCKS).is_ok());
    count(decode_point_summary(data).is_ok());
    count(parse_chunk_header(data).is_ok());
    let k = keys();
    count(open_chunk_body(&k, "fuzz", &[0; 32], data).is_ok());
    count(k.open_chunk("fuzz", &[0; 32], data).is_ok());
    count(open_envelope(&k.cipher, *b"FYPM", "fuzz", data).is_ok());
    accepted
}

/// Runs the passphrase path too (Argon2 with the tiny test parameters when the header
/// parses; forged parameters are bounded by the header check).
pub fn decode_config_with_passphrase(data: &[u8]) -> bool {
    match decode_config_header(data) {
        // Only spend Argon2 time on cheap parameters.
        Ok(h) if h.kdf.m_kib <= 1024 && h.kdf.t <= 2 => decode_config(data, "fuzz").is_ok(),
        _ => false,
    }
}

/// Valid encodings of every layout, as seeds for mutation.
pub fn samples() -> Vec<Vec<u8>> {
    let k = keys();
    let master = MasterKeys {
        data: Zeroizing::new([0x11; KEY_LEN]),
        chunk_id: Zeroizing::new([0x22; KEY_LEN]),
    };
    let config = encode_config(
        &master,
        "fuzz",
        KdfParams::fast_for_tests(),
        [3; 16],
        [4; 24],
    )
    .expect("fixed parameters are valid");
    let point = PointManifest {
        machine_id: "m".into(),
        point_id: "p".into(),
        parent: Some("o".into()),
        kind: PointKind::App,
        bookmark_id: 1,
        created_unix_ms: 2,
        disks: vec![
            DiskPoint {
                disk_id: "a".into(),
                size_bytes: 3 * BLOCK_SIZE as u64,
                seq: 4,
                map: DiskMap::Full(vec![
                    BlockRef::Zero,
                    BlockRef::Chunk([9; 32]),
                    BlockRef::Zero,
                ]),
            },
            DiskPoint {
                disk_id: "b".into(),
                size_bytes: 3 * BLOCK_SIZE as u64,
                seq: 5,
                map: DiskMap::Delta(vec![(1, BlockRef::Zero), (2, BlockRef::Chunk([8; 32]))]),
            },
        ],
    };
    let point_plain = encode_point_plain(&point).expect("sample point encodes");
    let index_plain = encode_index_plain(&[IndexEntry {
        chunk: [5; 32],
        pack: "0123456789abcdef0123456789abcdef".into(),
        offset: 7,
        length: 8,
    }])
    .expect("sample index encodes");
    let plain: Vec<u8> = (0..200u32).map(|i| (i % 7) as u8).collect();
    let chunk = k.seal_chunk(&[0; 32], &plain);
    let mut pack = k.seal_chunk(&[0; 32], b"x");
    let footer_at = pack.len() as u64;
    let footer = seal_envelope(&k.cipher, *b"FYPF", "fuzz", &[0, 0, 0, 0], [1; 24]);
    pack.extend_from_slice(&footer);
    pack.extend_from_slice(b"FYPT\x01\0\0\0");
    pack.extend_from_slice(&footer_at.to_be_bytes());
    pack.extend_from_slice(&(footer.len() as u32).to_be_bytes());
    pack.extend_from_slice(&0u32.to_be_bytes());
    let sealed_point = seal_envelope(
        &aead(&[0x11; KEY_LEN]),
        *b"FYPM",
        "fuzz",
        &point_plain,
        [2; 24],
    );
    vec![config, point_plain, index_plain, chunk, pack, sealed_point]
}
