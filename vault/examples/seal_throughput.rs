//! Single-thread throughput of `chunk_id` + `seal_chunk` (and `open_chunk`) on real files,
//! next to the bare lz4 + XChaCha20-Poly1305 work on the same blocks.
//!
//! `cargo run -p vault --release --example seal_throughput -- [DIR] [MiB]`
//! (DIR defaults to /usr; the crypto and lz4 crates are optimized in dev builds too).

use std::time::Instant;

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{Key, KeyInit, XChaCha20Poly1305, XNonce};
use vault::{open_store, KdfParams, StoreOptions, Vault, BLOCK_SIZE};

fn collect(dir: &std::path::Path, want: usize, out: &mut Vec<u8>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if out.len() >= want {
            return;
        }
        let p = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            collect(&p, want, out);
        } else if meta.is_file() {
            if let Ok(bytes) = std::fs::read(&p) {
                out.extend_from_slice(&bytes);
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).map(String::as_str).unwrap_or("/usr");
    let mib: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(256);
    let mut data = Vec::new();
    collect(std::path::Path::new(dir), mib << 20, &mut data);
    data.truncate((data.len() / BLOCK_SIZE) * BLOCK_SIZE);
    let mb = data.len() as f64 / 1e6;

    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path().to_str().unwrap(), &StoreOptions::default()).unwrap();
    let vault = Vault::create(store, "bench", KdfParams::fast_for_tests())
        .await
        .unwrap();

    // Baseline: compress into a buffer, encrypt in place; no framing, no id.
    let cipher = XChaCha20Poly1305::new(&Key::from([7u8; 32]));
    let mut buf = vec![0u8; lz4_flex::block::get_maximum_output_size(BLOCK_SIZE)];
    let t = Instant::now();
    let mut stored = 0usize;
    for block in data.chunks(BLOCK_SIZE) {
        let n = lz4_flex::block::compress_into(block, &mut buf).unwrap();
        let body = if n < block.len() {
            &mut buf[..n]
        } else {
            buf[..block.len()].copy_from_slice(block);
            &mut buf[..block.len()]
        };
        stored += body.len();
        let tag = cipher
            .encrypt_inout_detached(&XNonce::from([1u8; 24]), b"", body.into())
            .unwrap();
        std::hint::black_box(tag);
    }
    let base = mb / t.elapsed().as_secs_f64();

    // As the compressor uses it: each sealed chunk is copied into a pack and freed.
    let t = Instant::now();
    let mut pack = vault.new_pack();
    for block in data.chunks(BLOCK_SIZE) {
        let id = vault.chunk_id(block);
        pack.add(id, &vault.seal_chunk(&id, block));
        if pack.len() > 32 << 20 {
            pack = vault.new_pack();
        }
    }
    let seal = mb / t.elapsed().as_secs_f64();

    let sealed_all: Vec<_> = data
        .chunks(BLOCK_SIZE)
        .map(|block| {
            let id = vault.chunk_id(block);
            (id, vault.seal_chunk(&id, block))
        })
        .collect();

    let t = Instant::now();
    for (id, sealed) in &sealed_all {
        std::hint::black_box(vault.open_chunk("bench", id, sealed).unwrap());
    }
    let open = mb / t.elapsed().as_secs_f64();
    let sealed_bytes: usize = sealed_all.iter().map(|(_, s)| s.len()).sum();

    println!(
        "input {mb:.0} MB from {dir}, lz4 ratio {:.2}",
        data.len() as f64 / stored as f64
    );
    println!("baseline lz4 + XChaCha20-Poly1305   {base:7.0} MB/s");
    println!(
        "chunk_id + seal_chunk + pack.add    {seal:7.0} MB/s ({:.0}% of baseline)",
        100.0 * seal / base
    );
    println!("open_chunk (decrypt, lz4, id check) {open:7.0} MB/s");
    println!(
        "sealed size {:.1}% of input",
        100.0 * sealed_bytes as f64 / data.len() as f64
    );
}
