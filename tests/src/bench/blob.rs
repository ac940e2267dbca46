//! Random blobs written to disk with their digest, too large to hold in memory: the
//! harness's [`crate::data::noise`] a MiB at a time, each MiB from its own seed.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use shoal_core::Digest;
use shoal_core::digest::{Algorithm, Hasher};

use super::{BenchError, Result};

/// A blob written to a file.
#[derive(Debug, Clone)]
pub struct BlobFile {
    pub path: PathBuf,
    pub digest: Digest,
    pub length: u64,
}

const CHUNK: u64 = 1 << 20;

/// Writes `length` incompressible bytes to `path`. Different seeds give different blobs, so
/// that one run's blobs never deduplicate against each other.
pub fn random_blob(path: &Path, length: u64, seed: u64) -> Result<BlobFile> {
    let f = File::create(path).map_err(BenchError::io("cannot create", path))?;
    let mut out = BufWriter::with_capacity(CHUNK as usize, f);
    let mut hasher = Hasher::new(Algorithm::Sha256);
    let mut written = 0u64;
    let mut chunk = 0u64;
    while written < length {
        let n = (length - written).min(CHUNK);
        // Seeds spaced apart so that the blobs of neighbouring seeds share no chunk.
        let bytes = crate::data::noise(seed.wrapping_mul(1 << 32).wrapping_add(chunk), n as usize);
        out.write_all(&bytes)
            .map_err(BenchError::io("cannot write", path))?;
        hasher.update(&bytes);
        written += n;
        chunk += 1;
    }
    out.flush().map_err(BenchError::io("cannot write", path))?;
    Ok(BlobFile {
        path: path.to_owned(),
        digest: hasher.finalize(),
        length,
    })
}

/// A seed that differs from run to run.
pub fn fresh_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ u64::from(std::process::id()) << 40
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_file_has_its_length_and_digest() {
        let dir = tempfile::tempdir().unwrap();
        let b = random_blob(&dir.path().join("b"), 3 << 20 | 5, 7).unwrap();
        let bytes = std::fs::read(&b.path).unwrap();
        assert_eq!(bytes.len() as u64, b.length);
        assert_eq!(Digest::sha256_of(&bytes), b.digest);
        let other = random_blob(&dir.path().join("c"), 3 << 20 | 5, 8).unwrap();
        assert_ne!(other.digest, b.digest);
    }
}
