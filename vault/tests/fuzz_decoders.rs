//! A stable, seeded stand-in for the cargo-fuzz target: 10,000 random and mutated buffers
//! through every decoder of outside input. Passing means: no panic, no hang, no huge allocation.

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use vault::fuzzing::{decode_config_with_passphrase, decode_everything, samples};

fn mutate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        match rng.random_range(0..7) {
            0 if !b.is_empty() => {
                let i = rng.random_range(0..b.len());
                b[i] ^= 1 << rng.random_range(0..8);
            }
            1 if !b.is_empty() => {
                let cut = rng.random_range(0..b.len());
                b.truncate(cut);
            }
            2 => {
                let mut extra = vec![0u8; rng.random_range(1..64)];
                rng.fill_bytes(&mut extra);
                b.extend_from_slice(&extra);
            }
            3 if b.len() >= 8 => {
                // Huge length or count fields.
                let i = rng.random_range(0..=b.len() - 8);
                let v: u64 = [u64::MAX, u64::from(u32::MAX), 1 << 40, 0][rng.random_range(0..4)];
                b[i..i + 8].copy_from_slice(&v.to_be_bytes());
            }
            4 if b.len() >= 4 => {
                let i = rng.random_range(0..=b.len() - 4);
                b[i..i + 4].copy_from_slice(&u32::MAX.to_be_bytes());
            }
            5 if !b.is_empty() => {
                let i = rng.random_range(0..b.len());
                b.insert(i, rng.random());
            }
            _ => {
                if !b.is_empty() {
                    let i = rng.random_range(0..b.len());
                    b.remove(i);
                }
            }
        }
    }
    b
}

#[test]
fn ten_thousand_random_and_mutated_buffers_never_panic() {
    let seeds = samples();
    for s in &seeds {
        assert!(
            decode_everything(s) >= 1,
            "a valid sample must decode somewhere"
        );
    }
    assert!(decode_config_with_passphrase(&seeds[0]));

    let mut rng = StdRng::seed_from_u64(0x5eed_f522);
    let mut accepted = 0;
    for i in 0..10_000 {
        let buf = if i % 5 == 0 {
            let mut b = vec![0u8; rng.random_range(0..600)];
            rng.fill_bytes(&mut b);
            b
        } else {
            let seed = &seeds[rng.random_range(0..seeds.len())];
            mutate(&mut rng, seed)
        };
        accepted += decode_everything(&buf);
        decode_config_with_passphrase(&buf);
    }
    // Mutations that leave a decodable buffer exist (e.g. flips inside chunk ids).
    assert!(accepted > 0);
}
