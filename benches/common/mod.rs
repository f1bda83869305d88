//! Helpers shared by the benchmarks.
#![allow(dead_code)]

pub mod side;

use std::io::Write;
use std::path::Path;

/// Writes `mib` MiB of incompressible pseudo-random bytes (as model weights are).
pub fn write_weights(path: &Path, mib: u64) -> std::io::Result<()> {
    write_seeded(path, mib, 0x2545_f491_4f6c_dd1d)
}

/// Like [`write_weights`], bytes of their own for each `seed` (files that share no chunk).
pub fn write_seeded(path: &Path, mib: u64, seed: u64) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut x = seed | 1;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for w in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&block)?;
    }
    f.flush()
}
