//! Fixed VHD: the raw image, padded to a 1 MiB multiple (Azure's requirement), followed by
//! this 512-byte footer (all integers big-endian, per the VHD specification):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0  | 8   | cookie `conectix` |
//! | 8  | 4   | features: 2 (reserved bit, always set) |
//! | 12 | 4   | file format version 0x00010000 |
//! | 16 | 8   | data offset: 0xFFFFFFFFFFFFFFFF for fixed disks |
//! | 24 | 4   | timestamp, seconds since 2000-01-01 00:00:00 UTC |
//! | 28 | 4   | creator application `win ` |
//! | 32 | 4   | creator version 0x000A0000 |
//! | 36 | 4   | creator host OS `Wi2k` |
//! | 40 | 8   | original size |
//! | 48 | 8   | current size |
//! | 56 | 4   | geometry: cylinders u16, heads u8, sectors per track u8 |
//! | 60 | 4   | disk type: 2 = fixed |
//! | 64 | 4   | checksum: one's complement of the byte sum of the footer with this field 0 |
//! | 68 | 16  | unique id |
//! | 84 | 1   | saved state 0 |
//! | 85 | 427 | zero |
//!
//! The creator application is `win ` because readers (Hyper-V, qemu) then take the current
//! size as authoritative; for other creators qemu derives the size from the CHS geometry,
//! which rounds most sizes down and would cut off the end of the disk.

const MIB: u64 = 1 << 20;
pub(crate) const FOOTER_LEN: usize = 512;
/// Seconds from the Unix epoch to the VHD epoch (2000-01-01 UTC).
const VHD_EPOCH_UNIX: u64 = 946_684_800;

/// The image size the footer describes: the disk rounded up to whole MiB.
pub(crate) fn padded_size(size: u64) -> u64 {
    size.div_ceil(MIB) * MIB
}

pub(crate) fn timestamp_now() -> u32 {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(VHD_EPOCH_UNIX);
    u32::try_from(unix.saturating_sub(VHD_EPOCH_UNIX)).unwrap_or(u32::MAX)
}

/// CHS geometry, the algorithm from the VHD specification appendix.
pub(crate) fn geometry(size: u64) -> (u16, u8, u8) {
    let mut total = size / 512;
    if total > 65535 * 16 * 255 {
        total = 65535 * 16 * 255;
    }
    let (spt, heads, cyl_times_heads);
    if total >= 65535 * 16 * 63 {
        spt = 255;
        heads = 16;
        cyl_times_heads = total / spt;
    } else {
        let mut s = 17;
        let mut cth = total / s;
        let mut h = cth.div_ceil(1024).max(4);
        if cth >= h * 1024 || h > 16 {
            s = 31;
            h = 16;
            cth = total / s;
        }
        if cth >= h * 1024 {
            s = 63;
            h = 16;
            cth = total / s;
        }
        spt = s;
        heads = h;
        cyl_times_heads = cth;
    }
    // The clamp above keeps cylinders <= 65535, heads <= 16 and spt <= 255.
    ((cyl_times_heads / heads) as u16, heads as u8, spt as u8)
}

pub(crate) fn footer(current_size: u64, timestamp: u32, unique_id: [u8; 16]) -> [u8; FOOTER_LEN] {
    let mut f = [0u8; FOOTER_LEN];
    f[0..8].copy_from_slice(b"conectix");
    f[8..12].copy_from_slice(&2u32.to_be_bytes());
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    f[16..24].copy_from_slice(&u64::MAX.to_be_bytes());
    f[24..28].copy_from_slice(&timestamp.to_be_bytes());
    f[28..32].copy_from_slice(b"win ");
    f[32..36].copy_from_slice(&0x000A_0000u32.to_be_bytes());
    f[36..40].copy_from_slice(b"Wi2k");
    f[40..48].copy_from_slice(&current_size.to_be_bytes());
    f[48..56].copy_from_slice(&current_size.to_be_bytes());
    let (c, h, s) = geometry(current_size);
    f[56..58].copy_from_slice(&c.to_be_bytes());
    f[58] = h;
    f[59] = s;
    f[60..64].copy_from_slice(&2u32.to_be_bytes());
    f[68..84].copy_from_slice(&unique_id);
    let sum = f
        .iter()
        .fold(0u32, |acc, b| acc.wrapping_add(u32::from(*b)));
    f[64..68].copy_from_slice(&(!sum).to_be_bytes());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footer_fixed_bytes() {
        let f = footer(8 * MIB, 0x2f00_0000, [0xab; 16]);
        assert_eq!(
            hex::encode(&f[..85]),
            concat!(
                "636f6e6563746978", // conectix
                "00000002",
                "00010000",
                "ffffffffffffffff",
                "2f000000",
                "77696e20", // "win "
                "000a0000",
                "5769326b", // Wi2k
                "0000000000800000",
                "0000000000800000",
                "00f0",
                "04",
                "11", // 240 cylinders, 4 heads, 17 sectors
                "00000002",
                "ffffe4ec",
                "abababababababababababababababab",
                "00"
            )
        );
        assert!(f[85..].iter().all(|b| *b == 0));
    }

    #[test]
    fn checksum_makes_the_byte_sum_all_ones() {
        let f = footer(123 * MIB, 5, [7; 16]);
        let mut zeroed = f;
        zeroed[64..68].fill(0);
        let sum = zeroed
            .iter()
            .fold(0u32, |a, b| a.wrapping_add(u32::from(*b)));
        assert_eq!(u32::from_be_bytes(f[64..68].try_into().unwrap()), !sum);
    }

    #[test]
    fn geometry_matches_the_specification_examples() {
        // 127 GiB and larger use 255 sectors per track, 16 heads.
        assert_eq!(geometry(65535 * 16 * 255 * 512 * 2), (65535, 16, 255));
        assert_eq!(geometry(MIB), (30, 4, 17));
        let (c, h, s) = geometry(2 << 30);
        assert!(u64::from(c) * u64::from(h) * u64::from(s) * 512 <= 2 << 30);
        assert_eq!((h, s), (16, 63));
    }

    #[test]
    fn sizes_round_up_to_whole_mib() {
        assert_eq!(padded_size(0), 0);
        assert_eq!(padded_size(1), MIB);
        assert_eq!(padded_size(MIB), MIB);
        assert_eq!(padded_size(MIB + 512), 2 * MIB);
    }
}
