//! Metainfo: what a peer needs to fetch a blob piece by piece and check every piece.
//!
//! `{digest, length, piece_length, piece_hashes[]}` with SHA-256 per piece. The piece length
//! is a power of two chosen from the blob size so that a blob has at most about 2,048
//! pieces (never fewer than 256 KiB, never more than 64 MiB a piece).
//!
//! Binary encoding, all integers big-endian:
//!
//! ```text
//! u8  version (1)
//! u8  digest algorithm (1 = sha256, 2 = sha512), then its raw hash bytes
//! u64 blob length
//! u32 piece length
//! u32 piece count
//! [u8; 32] × piece count
//! ```
//!
//! The metainfo's own content id is the SHA-256 of that encoding.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};

use sha2::Digest as _;

use crate::digest::{Algorithm, Digest, Hasher};

pub const MIN_PIECE_LENGTH: u32 = 256 << 10;
pub const MAX_PIECE_LENGTH: u32 = 64 << 20;
/// The piece count the length is chosen to stay under (until the largest piece length).
pub const TARGET_PIECES: u64 = 2048;
/// The most pieces a decoder accepts: bounds what a hostile encoding can make us allocate.
pub const MAX_PIECES: u32 = 1 << 20;
const VERSION: u8 = 1;
const HEADER_LEN_SHA256: usize = 1 + 1 + 32 + 8 + 4 + 4;

pub type PieceHash = [u8; 32];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetainfoError {
    #[error("metainfo is truncated")]
    Truncated,
    #[error("metainfo version {0} is not supported")]
    Version(u8),
    #[error("metainfo names an unknown digest algorithm {0}")]
    Algorithm(u8),
    #[error("metainfo piece length {0} is out of range")]
    PieceLength(u32),
    #[error("metainfo says {actual} pieces where its length needs {expected}")]
    PieceCount { expected: u64, actual: u32 },
    #[error("metainfo has {0} trailing bytes")]
    Trailing(usize),
}

/// The piece length Shoal uses for a blob of `length` bytes.
pub fn piece_length_for(length: u64) -> u32 {
    let want = length.div_ceil(TARGET_PIECES).max(1).next_power_of_two();
    want.clamp(MIN_PIECE_LENGTH as u64, MAX_PIECE_LENGTH as u64) as u32
}

fn piece_count(length: u64, piece_length: u32) -> u64 {
    length.div_ceil(piece_length as u64)
}

#[derive(Clone, PartialEq, Eq)]
pub struct Metainfo {
    digest: Digest,
    length: u64,
    piece_length: u32,
    piece_hashes: Vec<PieceHash>,
}

impl std::fmt::Debug for Metainfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metainfo")
            .field("digest", &self.digest)
            .field("length", &self.length)
            .field("piece_length", &self.piece_length)
            .field("pieces", &self.piece_hashes.len())
            .finish()
    }
}

impl Metainfo {
    /// Metainfo from parts already known to be consistent, such as those a
    /// [`PieceHasher`] produced. Returns `None` if the piece count does not fit the length.
    pub fn new(
        digest: Digest,
        length: u64,
        piece_length: u32,
        piece_hashes: Vec<PieceHash>,
    ) -> Option<Self> {
        (piece_length > 0 && piece_count(length, piece_length) == piece_hashes.len() as u64)
            .then_some(Metainfo {
                digest,
                length,
                piece_length,
                piece_hashes,
            })
    }

    /// Metainfo of bytes in memory (tests, small blobs).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let length = bytes.len() as u64;
        let piece_length = piece_length_for(length);
        let piece_hashes = bytes
            .chunks(piece_length as usize)
            .map(|c| sha2::Sha256::digest(c).into())
            .collect();
        Metainfo {
            digest: Digest::sha256_of(bytes),
            length,
            piece_length,
            piece_hashes,
        }
    }

    /// Computes the metainfo of a file whose content is already known to hash to `digest`
    /// (the blob store checked it when the file was written). Pieces are hashed on all
    /// cores at once, in fixed-size reads, so memory does not grow with the file.
    pub fn compute_from_file(file: &File, digest: Digest) -> io::Result<Self> {
        let length = file.metadata()?.len();
        let piece_length = piece_length_for(length);
        let count = piece_count(length, piece_length) as usize;
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(count.max(1));
        let next = AtomicUsize::new(0);
        let mut hashes = vec![[0u8; 32]; count];
        let results: Vec<io::Result<Vec<(usize, PieceHash)>>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let mut out = Vec::new();
                        let mut buf = vec![0u8; (1 << 20).min(piece_length as usize)];
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= count {
                                return Ok(out);
                            }
                            let start = i as u64 * piece_length as u64;
                            let end = (start + piece_length as u64).min(length);
                            out.push((i, hash_file_range(file, start..end, &mut buf)?));
                        }
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join()
                        .unwrap_or_else(|_| Err(io::Error::other("piece hashing thread panicked")))
                })
                .collect()
        });
        for r in results {
            for (i, h) in r? {
                hashes[i] = h;
            }
        }
        Ok(Metainfo {
            digest,
            length,
            piece_length,
            piece_hashes: hashes,
        })
    }

    pub fn digest(&self) -> Digest {
        self.digest
    }

    pub fn length(&self) -> u64 {
        self.length
    }

    pub fn piece_length(&self) -> u32 {
        self.piece_length
    }

    pub fn piece_count(&self) -> usize {
        self.piece_hashes.len()
    }

    pub fn piece_hash(&self, index: usize) -> Option<&PieceHash> {
        self.piece_hashes.get(index)
    }

    /// The byte range of piece `index` within the blob, or `None` past the last piece.
    pub fn piece_range(&self, index: usize) -> Option<Range<u64>> {
        if index >= self.piece_hashes.len() {
            return None;
        }
        let start = index as u64 * self.piece_length as u64;
        Some(start..(start + self.piece_length as u64).min(self.length))
    }

    /// The size of piece `index` in bytes (the last piece may be short).
    pub fn piece_size(&self, index: usize) -> Option<u32> {
        self.piece_range(index).map(|r| (r.end - r.start) as u32)
    }

    /// The piece that holds byte `offset` of the blob.
    pub fn piece_at(&self, offset: u64) -> Option<usize> {
        (offset < self.length).then(|| (offset / self.piece_length as u64) as usize)
    }

    /// Whether `bytes` are exactly piece `index`.
    pub fn verify_piece(&self, index: usize, bytes: &[u8]) -> bool {
        self.piece_size(index) == Some(bytes.len() as u32)
            && self.piece_hashes.get(index) == Some(&sha2::Sha256::digest(bytes).into())
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN_SHA256 + 32 * self.piece_hashes.len());
        out.push(VERSION);
        out.push(match self.digest.algorithm() {
            Algorithm::Sha256 => 1,
            Algorithm::Sha512 => 2,
        });
        out.extend_from_slice(self.digest.as_bytes());
        out.extend_from_slice(&self.length.to_be_bytes());
        out.extend_from_slice(&self.piece_length.to_be_bytes());
        out.extend_from_slice(&(self.piece_hashes.len() as u32).to_be_bytes());
        for h in &self.piece_hashes {
            out.extend_from_slice(h);
        }
        out
    }

    /// Decodes and checks an encoding. Every length is bounded before anything is
    /// allocated for it.
    pub fn decode(bytes: &[u8]) -> Result<Self, MetainfoError> {
        let mut r = Reader(bytes);
        let version = r.u8()?;
        if version != VERSION {
            return Err(MetainfoError::Version(version));
        }
        let algorithm = match r.u8()? {
            1 => Algorithm::Sha256,
            2 => Algorithm::Sha512,
            other => return Err(MetainfoError::Algorithm(other)),
        };
        let digest = Digest::from_raw(algorithm, r.take(algorithm.hash_len())?)
            .ok_or(MetainfoError::Truncated)?;
        let length = u64::from_be_bytes(r.array()?);
        let piece_length = u32::from_be_bytes(r.array()?);
        if piece_length == 0 || piece_length > MAX_PIECE_LENGTH {
            return Err(MetainfoError::PieceLength(piece_length));
        }
        let count = u32::from_be_bytes(r.array()?);
        let expected = piece_count(length, piece_length);
        if expected != count as u64 || count > MAX_PIECES {
            return Err(MetainfoError::PieceCount {
                expected,
                actual: count,
            });
        }
        let hashes = r.take(count as usize * 32)?;
        if !r.0.is_empty() {
            return Err(MetainfoError::Trailing(r.0.len()));
        }
        let piece_hashes = hashes
            .chunks_exact(32)
            .map(|c| {
                let mut h = [0u8; 32];
                h.copy_from_slice(c);
                h
            })
            .collect();
        Ok(Metainfo {
            digest,
            length,
            piece_length,
            piece_hashes,
        })
    }

    /// The metainfo's own content id: the SHA-256 of its encoding.
    pub fn id(&self) -> Digest {
        Digest::sha256_of(&self.encode())
    }
}

fn hash_file_range(file: &File, range: Range<u64>, buf: &mut [u8]) -> io::Result<PieceHash> {
    let mut h = sha2::Sha256::new();
    let mut pos = range.start;
    while pos < range.end {
        let want = ((range.end - pos) as usize).min(buf.len());
        let n = file.read_at(&mut buf[..want], pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while its pieces were hashed",
            ));
        }
        h.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(h.finalize().into())
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MetainfoError> {
        if self.0.len() < n {
            return Err(MetainfoError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, MetainfoError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], MetainfoError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
}

/// Hashes a blob's pieces and its whole digest in one pass as its bytes stream by, for
/// writers that see every byte in order anyway (an upload, a download).
#[derive(Debug)]
pub struct PieceHasher {
    length: u64,
    piece_length: u32,
    whole: Hasher,
    piece: sha2::Sha256,
    in_piece: u32,
    seen: u64,
    hashes: Vec<PieceHash>,
}

impl PieceHasher {
    /// For a blob of `length` bytes whose digest uses `algorithm`.
    pub fn new(length: u64, algorithm: Algorithm) -> Self {
        let piece_length = piece_length_for(length);
        PieceHasher {
            length,
            piece_length,
            whole: Hasher::new(algorithm),
            piece: sha2::Sha256::new(),
            in_piece: 0,
            seen: 0,
            hashes: Vec::with_capacity(piece_count(length, piece_length) as usize),
        }
    }

    pub fn update(&mut self, mut bytes: &[u8]) {
        self.whole.update(bytes);
        self.seen += bytes.len() as u64;
        while !bytes.is_empty() {
            let room = (self.piece_length - self.in_piece) as usize;
            let n = room.min(bytes.len());
            self.piece.update(&bytes[..n]);
            self.in_piece += n as u32;
            bytes = &bytes[n..];
            if self.in_piece == self.piece_length {
                self.hashes
                    .push(std::mem::take(&mut self.piece).finalize().into());
                self.in_piece = 0;
            }
        }
    }

    /// The metainfo, or `None` if the bytes seen were not `length` long.
    pub fn finish(mut self) -> Option<Metainfo> {
        if self.seen != self.length {
            return None;
        }
        if self.in_piece > 0 {
            self.hashes.push(self.piece.finalize().into());
        }
        Metainfo::new(
            self.whole.finalize(),
            self.length,
            self.piece_length,
            self.hashes,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    #[test]
    fn piece_lengths_by_size() {
        assert_eq!(piece_length_for(0), MIN_PIECE_LENGTH);
        assert_eq!(piece_length_for(128 << 20), MIN_PIECE_LENGTH);
        assert_eq!(piece_length_for(1 << 30), 512 << 10);
        assert_eq!(piece_length_for(5_000_000_000), 4 << 20);
        assert_eq!(piece_length_for(1 << 50), MAX_PIECE_LENGTH);
        for len in [1u64, 1 << 20, 5 << 30, 100 << 30] {
            let n = piece_count(len, piece_length_for(len));
            assert!(n <= TARGET_PIECES, "{len}: {n}");
        }
    }

    #[test]
    fn empty_blob_has_no_pieces() {
        let m = Metainfo::from_bytes(b"");
        assert_eq!(m.piece_count(), 0);
        assert_eq!(m.piece_range(0), None);
        assert_eq!(Metainfo::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn encode_decode_round_trip_and_id() {
        let data = vec![7u8; 600 << 10];
        let m = Metainfo::from_bytes(&data);
        assert_eq!(m.piece_count(), 3);
        assert_eq!(m.piece_size(2), Some((600 - 512) << 10));
        let enc = m.encode();
        assert_eq!(enc.len(), HEADER_LEN_SHA256 + 3 * 32);
        assert_eq!(Metainfo::decode(&enc).unwrap(), m);
        assert_eq!(m.id(), Digest::sha256_of(&enc));
        assert!(m.verify_piece(0, &data[..256 << 10]));
        assert!(!m.verify_piece(0, &data[..(256 << 10) - 1]));
        assert!(!m.verify_piece(3, b""));
    }

    #[test]
    fn decode_rejects_inconsistent_encodings() {
        let m = Metainfo::from_bytes(&vec![1u8; 300 << 10]);
        let enc = m.encode();
        assert_eq!(
            Metainfo::decode(&enc[..enc.len() - 1]),
            Err(MetainfoError::Truncated)
        );
        let mut extra = enc.clone();
        extra.push(0);
        assert_eq!(Metainfo::decode(&extra), Err(MetainfoError::Trailing(1)));
        let mut v = enc.clone();
        v[0] = 9;
        assert_eq!(Metainfo::decode(&v), Err(MetainfoError::Version(9)));
        let mut count = enc.clone();
        let at = HEADER_LEN_SHA256 - 4;
        count[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            Metainfo::decode(&count),
            Err(MetainfoError::PieceCount { .. })
        ));
    }

    #[test]
    fn file_and_streaming_agree_with_memory() {
        let data: Vec<u8> = (0..(3u32 << 20) + 17)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let expected = Metainfo::from_bytes(&data);
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&data).unwrap();
        let from_file = Metainfo::compute_from_file(&f, expected.digest()).unwrap();
        assert_eq!(from_file, expected);
        let mut ph = PieceHasher::new(data.len() as u64, Algorithm::Sha256);
        for chunk in data.chunks(100_003) {
            ph.update(chunk);
        }
        assert_eq!(ph.finish().unwrap(), expected);
        let mut short = PieceHasher::new(data.len() as u64, Algorithm::Sha256);
        short.update(&data[1..]);
        assert!(short.finish().is_none());
    }

    proptest! {
        #[test]
        fn pieces_cover_every_byte_once(len in prop_oneof![
            Just(0u64), Just(1u64),
            Just(MIN_PIECE_LENGTH as u64), Just(3 * MIN_PIECE_LENGTH as u64),
            Just(MIN_PIECE_LENGTH as u64 * TARGET_PIECES),
            Just(MIN_PIECE_LENGTH as u64 * TARGET_PIECES + 1),
            0u64..(1u64 << 40),
        ]) {
            let pl = piece_length_for(len);
            let n = piece_count(len, pl) as usize;
            let m = Metainfo::new(Digest::sha256_of(b""), len, pl, vec![[0; 32]; n]).unwrap();
            let mut next = 0u64;
            for i in 0..m.piece_count() {
                let r = m.piece_range(i).unwrap();
                prop_assert_eq!(r.start, next);
                prop_assert!(r.end > r.start);
                prop_assert!(r.end - r.start <= pl as u64);
                prop_assert_eq!(m.piece_at(r.start), Some(i));
                prop_assert_eq!(m.piece_at(r.end - 1), Some(i));
                next = r.end;
            }
            prop_assert_eq!(next, len);
            prop_assert_eq!(m.piece_range(m.piece_count()), None);
            prop_assert_eq!(m.piece_at(len), None);
        }

        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Metainfo::decode(&bytes);
        }
    }
}
