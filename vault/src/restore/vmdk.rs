//! monolithicSparse VMDK ("hosted sparse extent", VMware Virtual Disk Format 1.1).
//!
//! File layout, in 512-byte sectors:
//!
//! ```text
//! 0                      sparse extent header (below)
//! 1 .. 21                embedded descriptor (text, zero padded, 20 sectors)
//! 21                     redundant grain directory (gd_sectors)
//! ...                    redundant grain tables (4 sectors each)
//! gd offset              grain directory
//! ...                    grain tables
//! overhead (÷128)        grains, 128 sectors (64 KiB) each, only for non-zero blocks,
//!                        in block order
//! ```
//!
//! Header (little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0  | 4 | magic `KDMV` (0x564d444b) |
//! | 4  | 4 | version 1 |
//! | 8  | 4 | flags: 1 = newline test valid, 2 = redundant grain tables present |
//! | 12 | 8 | capacity in sectors |
//! | 20 | 8 | grain size in sectors (128) |
//! | 28 | 8 | descriptor offset in sectors (1) |
//! | 36 | 8 | descriptor size in sectors (20) |
//! | 44 | 4 | grain table entries per table (512) |
//! | 48 | 8 | redundant grain directory offset (sectors) |
//! | 56 | 8 | grain directory offset (sectors) |
//! | 64 | 8 | overhead: sectors before the first grain |
//! | 72 | 1 | unclean shutdown, 0 |
//! | 73 | 4 | newline test characters `\n`, ` `, `\r`, `\n` |
//! | 77 | 2 | compression, 0 = none |
//! | 79 | 433 | zero |
//!
//! Grain directory entries are the sector offsets of the grain tables; grain table entries
//! are the sector offsets of grains, 0 for an unallocated (all-zero) grain. All u32.

use crate::BLOCK_SIZE;

const SECTOR: u64 = 512;
const GRAIN_SECTORS: u64 = BLOCK_SIZE as u64 / SECTOR;
const GTES_PER_GT: u64 = 512;
const GT_SECTORS: u64 = GTES_PER_GT * 4 / SECTOR;
const DESCRIPTOR_OFFSET: u64 = 1;
const DESCRIPTOR_SECTORS: u64 = 20;
const FLAG_NEWLINE_TEST: u32 = 1;
const FLAG_REDUNDANT_GT: u32 = 2;

/// The planned file: where every grain goes and the metadata describing it.
#[derive(Debug)]
pub(crate) struct VmdkLayout {
    capacity_sectors: u64,
    /// One entry per block: grain sector offset, 0 = not allocated.
    grain_table: Vec<u32>,
    num_gts: u64,
    gd_sectors: u64,
    rgd_offset: u64,
    gd_offset: u64,
    overhead: u64,
    allocated: u64,
    descriptor: Vec<u8>,
}

impl VmdkLayout {
    /// Plans a file for a disk of `size` bytes; `allocated` says, per block, whether it holds data.
    pub(crate) fn plan(
        size: u64,
        allocated: impl Iterator<Item = bool>,
        extent_file_name: &str,
        cid: u32,
    ) -> Result<Self, String> {
        let capacity_sectors = size.div_ceil(SECTOR);
        let grains = capacity_sectors.div_ceil(GRAIN_SECTORS);
        let num_gts = grains.div_ceil(GTES_PER_GT);
        let gd_sectors = (num_gts * 4).div_ceil(SECTOR);
        let rgd_offset = DESCRIPTOR_OFFSET + DESCRIPTOR_SECTORS;
        let gd_offset = rgd_offset + gd_sectors + num_gts * GT_SECTORS;
        let metadata_end = gd_offset + gd_sectors + num_gts * GT_SECTORS;
        let overhead = metadata_end.div_ceil(GRAIN_SECTORS) * GRAIN_SECTORS;

        let mut grain_table = Vec::with_capacity(grains as usize);
        let mut next = overhead;
        for is_data in allocated.take(grains as usize) {
            if is_data {
                let sector = u32::try_from(next).map_err(|_| {
                    "VMDK sparse extents address at most 2 TiB of grains".to_string()
                })?;
                grain_table.push(sector);
                next += GRAIN_SECTORS;
            } else {
                grain_table.push(0);
            }
        }
        grain_table.resize(grains as usize, 0);
        let allocated = (next - overhead) / GRAIN_SECTORS;
        let descriptor = descriptor_text(capacity_sectors, extent_file_name, cid);
        if descriptor.len() as u64 > DESCRIPTOR_SECTORS * SECTOR {
            return Err("VMDK descriptor too long (file name?)".into());
        }
        Ok(VmdkLayout {
            capacity_sectors,
            grain_table,
            num_gts,
            gd_sectors,
            rgd_offset,
            gd_offset,
            overhead,
            allocated,
            descriptor,
        })
    }

    /// Byte offset of a block's grain; only meaningful for allocated blocks.
    pub(crate) fn grain_offset(&self, block: u64) -> u64 {
        u64::from(self.grain_table[block as usize]) * SECTOR
    }

    pub(crate) fn file_len(&self) -> u64 {
        (self.overhead + self.allocated * GRAIN_SECTORS) * SECTOR
    }

    pub(crate) fn header(&self) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[0..4].copy_from_slice(b"KDMV");
        h[4..8].copy_from_slice(&1u32.to_le_bytes());
        h[8..12].copy_from_slice(&(FLAG_NEWLINE_TEST | FLAG_REDUNDANT_GT).to_le_bytes());
        h[12..20].copy_from_slice(&self.capacity_sectors.to_le_bytes());
        h[20..28].copy_from_slice(&GRAIN_SECTORS.to_le_bytes());
        h[28..36].copy_from_slice(&DESCRIPTOR_OFFSET.to_le_bytes());
        h[36..44].copy_from_slice(&DESCRIPTOR_SECTORS.to_le_bytes());
        h[44..48].copy_from_slice(&(GTES_PER_GT as u32).to_le_bytes());
        h[48..56].copy_from_slice(&self.rgd_offset.to_le_bytes());
        h[56..64].copy_from_slice(&self.gd_offset.to_le_bytes());
        h[64..72].copy_from_slice(&self.overhead.to_le_bytes());
        h[73..77].copy_from_slice(b"\n \r\n");
        h
    }

    fn directory(&self, first_gt: u64) -> Vec<u8> {
        let mut d = vec![0u8; (self.gd_sectors * SECTOR) as usize];
        for i in 0..self.num_gts {
            // Metadata sits in the first few MiB; offsets fit u32 easily.
            let sector = (first_gt + i * GT_SECTORS) as u32;
            d[i as usize * 4..i as usize * 4 + 4].copy_from_slice(&sector.to_le_bytes());
        }
        d
    }

    fn tables(&self) -> Vec<u8> {
        let mut t = vec![0u8; (self.num_gts * GT_SECTORS * SECTOR) as usize];
        for (i, sector) in self.grain_table.iter().enumerate() {
            t[i * 4..i * 4 + 4].copy_from_slice(&sector.to_le_bytes());
        }
        t
    }

    /// Every metadata write as (byte offset, bytes); grains are written separately.
    pub(crate) fn metadata(&self) -> Vec<(u64, Vec<u8>)> {
        let rgt = self.rgd_offset + self.gd_sectors;
        let gt = self.gd_offset + self.gd_sectors;
        let tables = self.tables();
        vec![
            (0, self.header().to_vec()),
            (DESCRIPTOR_OFFSET * SECTOR, self.descriptor.clone()),
            (self.rgd_offset * SECTOR, self.directory(rgt)),
            (rgt * SECTOR, tables.clone()),
            (self.gd_offset * SECTOR, self.directory(gt)),
            (gt * SECTOR, tables),
        ]
    }
}

fn descriptor_text(capacity_sectors: u64, extent_file_name: &str, cid: u32) -> Vec<u8> {
    let name: String = extent_file_name
        .chars()
        .map(|c| if c == '"' || c.is_control() { '_' } else { c })
        .collect();
    let cylinders = (capacity_sectors / (16 * 63)).min(16383);
    format!(
        "# Disk DescriptorFile\n\
         version=1\n\
         CID={cid:08x}\n\
         parentCID=ffffffff\n\
         createType=\"monolithicSparse\"\n\
         \n\
         # Extent description\n\
         RW {capacity_sectors} SPARSE \"{name}\"\n\
         \n\
         # The Disk Data Base\n\
         #DDB\n\
         \n\
         ddb.virtualHWVersion = \"4\"\n\
         ddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"16\"\n\
         ddb.geometry.sectors = \"63\"\n\
         ddb.adapterType = \"lsilogic\"\n"
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fixed_bytes() {
        // 1 GiB disk: 16384 grains -> 32 grain tables, a 1-sector directory.
        let v = VmdkLayout::plan(
            1 << 30,
            [true, false, true].into_iter(),
            "d.vmdk",
            0x1234_5678,
        )
        .unwrap();
        let h = v.header();
        assert_eq!(
            hex::encode(&h[..79]),
            concat!(
                "4b444d56",
                "01000000",
                "03000000",
                "0000200000000000", // 2097152 sectors
                "8000000000000000",
                "0100000000000000",
                "1400000000000000",
                "00020000",
                "1500000000000000", // rgd at 21
                "9600000000000000", // gd at 21 + 1 + 128 = 150
                "8001000000000000", // overhead: 150 + 1 + 128 = 279 -> 384
                "00",
                "0a200d0a",
                "0000"
            )
        );
        assert!(h[79..].iter().all(|b| *b == 0));
        assert_eq!(v.grain_offset(0), 384 * 512);
        assert_eq!(v.grain_offset(1), 0);
        assert_eq!(v.grain_offset(2), (384 + 128) * 512);
        assert_eq!(v.file_len(), (384 + 256) * 512);
        let meta = v.metadata();
        let gd = &meta[4];
        assert_eq!(gd.0, 150 * 512);
        assert_eq!(&gd.1[..8], &[151, 0, 0, 0, 155, 0, 0, 0]);
        let rgd = &meta[2];
        assert_eq!(&rgd.1[..4], &[22, 0, 0, 0]);
        assert_eq!(&meta[5].1[..12], &[128, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0]);
        let text = String::from_utf8(meta[1].1.clone()).unwrap();
        assert!(text.contains("CID=12345678\n"));
        assert!(text.contains("RW 2097152 SPARSE \"d.vmdk\"\n"));
        assert!(text.contains("ddb.geometry.cylinders = \"2080\""));
    }

    #[test]
    fn odd_sizes_and_names() {
        let v = VmdkLayout::plan(1000, std::iter::once(true), "a\"b\n.vmdk", 1).unwrap();
        assert_eq!(v.capacity_sectors, 2);
        assert_eq!(v.grain_table.len(), 1);
        let text = String::from_utf8(v.descriptor.clone()).unwrap();
        assert!(text.contains("\"a_b_.vmdk\""));
        let long = "x".repeat(20 * 512);
        assert!(VmdkLayout::plan(1000, std::iter::once(true), &long, 1).is_err());
        let empty = VmdkLayout::plan(0, std::iter::empty(), "e.vmdk", 1).unwrap();
        assert_eq!(empty.num_gts, 0);
    }
}
