//! SHA-1 and BLAKE3 computed together in one pass, over a buffer already in memory, a reader, or
//! a file read once (kept in memory when small). Knows nothing of the DB or the network.

use sha1::{Digest, Sha1};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Both digests of the same bytes, as lowercase hex. Equal digests are the same content: the
/// pipeline keys duplicates by both (SHA-1 alone has public collisions).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digests {
    pub sha1: String,
    pub blake3: String,
}

impl Digests {
    /// Whether both digests name the same bytes: SHA-1 and BLAKE3 both agree (SHA-1 alone has
    /// public collisions). A BLAKE3 not known (empty) is not compared.
    pub fn same_content(&self, other: &Digests) -> bool {
        self.sha1 == other.sha1
            && (self.blake3.is_empty() || other.blake3.is_empty() || self.blake3 == other.blake3)
    }
}

/// Incremental hasher feeding both digests from the same bytes.
#[derive(Default, Clone)]
pub struct DualHasher {
    sha1: Sha1,
    blake3: blake3::Hasher,
    len: u64,
}

impl DualHasher {
    pub fn new() -> DualHasher {
        DualHasher::default()
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.sha1.update(bytes);
        self.blake3.update(bytes);
        self.len += bytes.len() as u64;
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> Digests {
        Digests {
            sha1: hex(&self.sha1.finalize()),
            blake3: self.blake3.finalize().to_hex().to_string(),
        }
    }
}

pub fn hash_bytes(bytes: &[u8]) -> Digests {
    let mut h = DualHasher::new();
    h.update(bytes);
    h.finish()
}

/// Hash everything a reader yields; returns the digests and the byte count.
pub fn hash_reader(mut r: impl Read) -> io::Result<(Digests, u64)> {
    let mut h = DualHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
    }
    let len = h.len();
    Ok((h.finish(), len))
}

/// SHA-1 alone, for checking bytes about to be sent or already at a destination.
pub fn sha1_hex(bytes: &[u8]) -> String {
    hex(&Sha1::digest(bytes))
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// What one read of a file gave.
pub struct Hashed {
    pub digests: Digests,
    pub size: u64,
    pub bytes_read: u64,
    /// The bytes, when the file fits the buffer limit.
    pub data: Option<Vec<u8>>,
}

/// Why a file could not be hashed; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("{}: {what}: {source}", .path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a regular file", .0.display())]
    NotAFile(PathBuf),
    #[error("{}: the file is empty (0 bytes)", .0.display())]
    Empty(PathBuf),
}

/// Read a file once: hash it, and keep its bytes if it is small.
pub fn hash_file(path: &Path, buffer_limit: u64) -> Result<Hashed, HashError> {
    let io_fail = |what: &'static str, source: std::io::Error| HashError::Io {
        path: path.to_path_buf(),
        what,
        source,
    };
    let mut file = File::open(path).map_err(|e| io_fail("cannot open", e))?;
    let meta = file.metadata().map_err(|e| io_fail("cannot stat", e))?;
    if !meta.is_file() {
        return Err(HashError::NotAFile(path.to_path_buf()));
    }
    let size = meta.len();
    if size == 0 {
        return Err(HashError::Empty(path.to_path_buf()));
    }
    if size <= buffer_limit {
        let mut data = Vec::with_capacity(size as usize + 1);
        // `File::read_to_end` reads the whole file in one call (through `Take`, std would read
        // in chunks growing from 8 KiB: ~6 reads a file).
        file.read_to_end(&mut data)
            .map_err(|e| io_fail("cannot read", e))?;
        if data.is_empty() {
            return Err(HashError::Empty(path.to_path_buf()));
        }
        let n = data.len() as u64;
        return Ok(Hashed {
            digests: hash_bytes(&data),
            size: n,
            bytes_read: n,
            data: Some(data),
        });
    }
    let (digests, n) = hash_reader(file).map_err(|e| io_fail("cannot read", e))?;
    Ok(Hashed {
        digests,
        size: n,
        bytes_read: n,
        data: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        let d = hash_bytes(b"abc");
        assert_eq!(d.sha1, "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(
            d.blake3,
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
    }

    #[test]
    fn a_sha1_collision_is_not_the_same_content() {
        let mut a = include_bytes!("../tests/data/sha1-collision/shattered-1.prefix").to_vec();
        let mut b = include_bytes!("../tests/data/sha1-collision/shattered-2.prefix").to_vec();
        assert_ne!(a, b);
        a.extend_from_slice(b"the same tail on both");
        b.extend_from_slice(b"the same tail on both");
        let (da, db) = (hash_bytes(&a), hash_bytes(&b));
        assert_eq!(da.sha1, db.sha1, "the public collision still collides");
        assert!(!da.same_content(&db));
        assert!(da.same_content(&hash_bytes(&a)));
        // A row hashed without BLAKE3 compares by SHA-1.
        let sha1_only = Digests {
            sha1: da.sha1.clone(),
            blake3: String::new(),
        };
        assert!(sha1_only.same_content(&db));
    }

    #[test]
    fn reader_and_buffer_agree_across_chunk_boundaries() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let (d, n) = hash_reader(&data[..]).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(d, hash_bytes(&data));
        assert_eq!(sha1_hex(&data), d.sha1);
    }
}
