//! Single-core limits of the two CPU stages of Ferry's data path, measured on the image's own
//! non-zero 64 KiB blocks: lz4_flex block compression and XChaCha20-Poly1305 sealing. The seal is
//! timed twice: through the portable RustCrypto crate, and through the implementation the vault
//! seals chunks with (aws-lc's ChaCha20-Poly1305 under an HChaCha20 subkey, the same output); the
//! limit uses the vault's, so the pipeline is compared with what its own stages can do.

use anyhow::{Context, Result};
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::workload::BLOCK;

/// Blocks read per batch; only the work on a batch is timed, never the reading.
const BATCH_BLOCKS: usize = 128;

/// Throughputs in bytes of input per second, on one core.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of the non-zero blocks both stages ran over.
    pub input_bytes: u64,
    pub lz4_bytes_per_s: f64,
    /// Compressed bytes / input bytes.
    pub lz4_ratio: f64,
    /// XChaCha20-Poly1305 as the vault seals chunks.
    pub seal_bytes_per_s: f64,
    /// The portable RustCrypto XChaCha20-Poly1305, for reference.
    pub seal_portable_bytes_per_s: f64,
}

impl Limits {
    /// The slower of the two stages: what one core can push through the whole pipeline at best.
    pub fn slower_bytes_per_s(&self) -> f64 {
        self.lz4_bytes_per_s.min(self.seal_bytes_per_s)
    }
}

/// Measures both stages over every non-zero block of `img`.
pub fn measure(img: &Path) -> Result<Limits> {
    let mut file = std::fs::File::open(img).with_context(|| format!("open {}", img.display()))?;
    let block = BLOCK as usize;
    let cipher = XChaCha20Poly1305::new(&Key::from([7u8; 32]));
    let mut batch = vec![0u8; BATCH_BLOCKS * block];
    let mut live: Vec<u8> = Vec::with_capacity(batch.len());
    let mut lz4_time = Duration::ZERO;
    let mut seal_time = Duration::ZERO;
    let mut portable_time = Duration::ZERO;
    let mut input = 0u64;
    let mut compressed = 0u64;
    let mut counter = 0u64;
    loop {
        let n = read_full(&mut file, &mut batch)?;
        if n == 0 {
            break;
        }
        live.clear();
        for chunk in batch[..n].chunks(block) {
            if chunk.iter().any(|&b| b != 0) {
                live.extend_from_slice(chunk);
            }
        }
        if live.is_empty() {
            continue;
        }
        input += live.len() as u64;

        let start = Instant::now();
        for chunk in live.chunks(block) {
            compressed += lz4_flex::block::compress(chunk).len() as u64;
        }
        lz4_time += start.elapsed();

        let start = Instant::now();
        for chunk in live.chunks_mut(block) {
            counter += 1;
            let mut nonce = [0u8; 24];
            nonce[..8].copy_from_slice(&counter.to_le_bytes());
            let tag = cipher
                .encrypt_inout_detached(&XNonce::from(nonce), &[], chunk.into())
                .map_err(|e| anyhow::anyhow!("XChaCha20-Poly1305 seal failed: {e}"))?;
            std::hint::black_box(tag);
        }
        portable_time += start.elapsed();

        let start = Instant::now();
        for chunk in live.chunks_mut(block) {
            counter += 1;
            let mut nonce = [0u8; 24];
            nonce[..8].copy_from_slice(&counter.to_le_bytes());
            std::hint::black_box(vault::xchacha_seal_in_place(&[7u8; 32], &nonce, &[], chunk));
        }
        seal_time += start.elapsed();
    }
    anyhow::ensure!(input > 0, "{} has no non-zero block", img.display());
    Ok(Limits {
        input_bytes: input,
        lz4_bytes_per_s: input as f64 / lz4_time.as_secs_f64().max(1e-9),
        lz4_ratio: compressed as f64 / input as f64,
        seal_bytes_per_s: input as f64 / seal_time.as_secs_f64().max(1e-9),
        seal_portable_bytes_per_s: input as f64 / portable_time.as_secs_f64().max(1e-9),
    })
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = file.read(&mut buf[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_only_non_zero_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("img");
        let block = BLOCK as usize;
        let mut data = vec![0u8; 300 * block];
        // 130 text-like blocks (crossing a batch boundary), the rest zeros.
        let text = b"the quick brown fox jumps over the lazy dog 0123456789 ".repeat(block / 8);
        for i in 0..130 {
            let at = (i * 2 + 1) * block;
            data[at..at + block].copy_from_slice(&text[i..i + block]);
        }
        std::fs::write(&img, &data).unwrap();
        let limits = measure(&img).unwrap();
        assert_eq!(limits.input_bytes, 130 * BLOCK);
        assert!(
            limits.lz4_ratio < 0.2,
            "repetitive text compresses: {}",
            limits.lz4_ratio
        );
        assert!(limits.lz4_bytes_per_s > 1e6 && limits.seal_bytes_per_s > 1e6);
        assert!(limits.slower_bytes_per_s() <= limits.seal_bytes_per_s);
    }

    #[test]
    fn an_all_zero_image_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("img");
        std::fs::write(&img, vec![0u8; 4 * BLOCK as usize]).unwrap();
        assert!(measure(&img).is_err());
    }
}
