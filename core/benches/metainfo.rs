//! Prints how fast metainfo is computed for a large blob, beside the raw speed of SHA-256 on
//! this machine, so the two can be compared. Run with
//! `cargo bench -p shoal-core --bench metainfo [-- SIZE]` (default 1GiB).

use std::io::Write;
use std::time::Instant;

use sha2::Digest as _;
use shoal_core::units::ByteSize;
use shoal_core::{Digest, Metainfo};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let size: ByteSize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(ByteSize::gib(1));
    let len = size.bytes() as usize;

    let mut file = tempfile::tempfile()?;
    let chunk: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let mut written = 0;
    while written < len {
        let n = chunk.len().min(len - written);
        file.write_all(&chunk[..n])?;
        written += n;
    }
    file.sync_all()?;

    // One core, one pass, from memory: the speed of SHA-256 itself.
    let t = Instant::now();
    let mut h = sha2::Sha256::new();
    let mut hashed = 0;
    while hashed < len {
        let n = chunk.len().min(len - hashed);
        h.update(&chunk[..n]);
        hashed += n;
    }
    let _ = h.finalize();
    let sha = t.elapsed().as_secs_f64();

    // The metainfo of the file, as an origin computes it for a stored blob (from the page
    // cache, pieces hashed on every core).
    let t = Instant::now();
    let m = Metainfo::compute_from_file(&file, Digest::sha256_of(b"placeholder"))?;
    let meta = t.elapsed().as_secs_f64();

    let gib = len as f64 / (1u64 << 30) as f64;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "blob: {size} in {} pieces of {}",
        m.piece_count(),
        ByteSize(m.piece_length() as u64)
    );
    println!(
        "sha256, one core, from memory: {:.2} s  ({:.2} GiB/s)",
        sha,
        gib / sha
    );
    println!(
        "metainfo from file, {cores} cores:  {:.2} s  ({:.2} GiB/s, {:.2}x one core's sha256)",
        meta,
        gib / meta,
        sha / meta
    );
    Ok(())
}
