//! The digests of a file's bytes, computed in one pass over a buffer already in memory, a reader,
//! or a file read once (kept in memory when small): BLAKE3 always — the content identity for
//! duplicates and `verify` on every target — and SHA-1 only when asked (`DigestSet`): the
//! upload protocol's content key, or `--hash sha1`. Knows nothing of the DB or the network.

use sha1::{Digest, Sha1};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Which digests a read computes. BLAKE3 is always one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DigestSet {
    /// BLAKE3 alone: enough to tell content apart (no collision is known for it).
    #[default]
    Blake3,
    /// BLAKE3 and SHA-1: for a target that knows content by SHA-1, or when asked for.
    Blake3AndSha1,
}

impl DigestSet {
    pub fn with_sha1(sha1: bool) -> DigestSet {
        if sha1 {
            DigestSet::Blake3AndSha1
        } else {
            DigestSet::Blake3
        }
    }

    pub fn has_sha1(self) -> bool {
        self == DigestSet::Blake3AndSha1
    }

    /// How the set reads in a message.
    pub fn describe(self) -> &'static str {
        match self {
            DigestSet::Blake3 => "BLAKE3",
            DigestSet::Blake3AndSha1 => "BLAKE3 and SHA-1",
        }
    }

    /// Whether a row's digests (`files.sha1`, `files.blake3`) hold every digest of this set (a
    /// row hashed for another set may not).
    pub fn is_met_by(self, sha1: Option<&str>, blake3: Option<&str>) -> bool {
        blake3.is_some_and(|b| !b.is_empty()) && (!self.has_sha1() || sha1.is_some())
    }
}

/// The digests of the same bytes, as lowercase hex: BLAKE3 always (empty only for a row hashed
/// by a bookferry that did not record it), SHA-1 when it was computed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digests {
    pub sha1: Option<String>,
    pub blake3: String,
}

impl Digests {
    /// Whether both name the same bytes: by BLAKE3 where both have it (and by SHA-1 too where
    /// both have that, as SHA-1 alone has public collisions and is never enough by itself
    /// when a BLAKE3 is known); by SHA-1 only for a row without BLAKE3.
    pub fn same_content(&self, other: &Digests) -> bool {
        let sha1_agrees = match (&self.sha1, &other.sha1) {
            (Some(a), Some(b)) => Some(a == b),
            _ => None,
        };
        if self.blake3.is_empty() || other.blake3.is_empty() {
            return sha1_agrees == Some(true);
        }
        self.blake3 == other.blake3 && sha1_agrees != Some(false)
    }

    /// Which digests these are.
    pub fn set(&self) -> DigestSet {
        DigestSet::with_sha1(self.sha1.is_some())
    }
}

/// Incremental hasher feeding the digests of its set from the same bytes.
#[derive(Clone)]
pub struct Hasher {
    sha1: Option<Sha1>,
    blake3: blake3::Hasher,
    len: u64,
}

impl Hasher {
    pub fn new(set: DigestSet) -> Hasher {
        Hasher {
            sha1: set.has_sha1().then(Sha1::new),
            blake3: blake3::Hasher::new(),
            len: 0,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        if let Some(sha1) = &mut self.sha1 {
            sha1.update(bytes);
        }
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
            sha1: self.sha1.map(|s| hex(&s.finalize())),
            blake3: self.blake3.finalize().to_hex().to_string(),
        }
    }
}

/// Both digests of `bytes`.
pub fn hash_bytes(bytes: &[u8]) -> Digests {
    hash_bytes_with(bytes, DigestSet::Blake3AndSha1)
}

/// The digests of `set` of `bytes`.
pub fn hash_bytes_with(bytes: &[u8], set: DigestSet) -> Digests {
    let mut h = Hasher::new(set);
    h.update(bytes);
    h.finish()
}

/// Both digests of everything a reader yields, and the byte count.
pub fn hash_reader(r: impl Read) -> io::Result<(Digests, u64)> {
    hash_reader_with(r, DigestSet::Blake3AndSha1)
}

/// The digests of `set` of everything a reader yields, and the byte count.
pub fn hash_reader_with(mut r: impl Read, set: DigestSet) -> io::Result<(Digests, u64)> {
    let mut h = Hasher::new(set);
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

/// The first 128 bits of a BLAKE3 given in hex: what in-memory indexes of contents key by (two
/// contents among n share them with a chance of about n²/2¹²⁹). `None` for text that is no
/// BLAKE3.
pub fn blake3_key(blake3_hex: &str) -> Option<u128> {
    Some(key128(&blake3::Hash::from_hex(blake3_hex).ok()?))
}

/// The first 128 bits of a BLAKE3 hash, as a number.
pub fn key128(hash: &blake3::Hash) -> u128 {
    let mut first = [0u8; 16];
    first.copy_from_slice(&hash.as_bytes()[..16]);
    u128::from_be_bytes(first)
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

/// A source file opened to be hashed: a regular file that is not empty, and its size when it
/// was opened. Opened once and stat'ed once ([`open_to_hash`]), then read by one of the
/// `hash_opened*` functions: the hash stage decides by this size whether the file is read into
/// memory or streamed into its staged copy.
pub struct ToHash {
    file: File,
    size: u64,
}

impl ToHash {
    /// The file's size when it was opened.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// Open `path` for hashing: a regular file that is not empty, and its size.
pub fn open_to_hash(path: &Path) -> Result<ToHash, HashError> {
    let io_fail = |what: &'static str, source: std::io::Error| HashError::Io {
        path: path.to_path_buf(),
        what,
        source,
    };
    let file = File::open(path).map_err(|e| io_fail("cannot open", e))?;
    let meta = file.metadata().map_err(|e| io_fail("cannot stat", e))?;
    if !meta.is_file() {
        return Err(HashError::NotAFile(path.to_path_buf()));
    }
    if meta.len() == 0 {
        return Err(HashError::Empty(path.to_path_buf()));
    }
    Ok(ToHash {
        file,
        size: meta.len(),
    })
}

/// Read a file once, hashing it (the digests of `set`) and writing each chunk to `out` as it
/// goes: a large file's copy made from the same read (`target::staged`). A write that fails
/// stops the writing, not the reading: the digests are whole either way, and the second result
/// says whether `out` got every byte.
pub fn hash_file_into(
    path: &Path,
    set: DigestSet,
    out: &mut dyn io::Write,
) -> Result<(Hashed, io::Result<()>), HashError> {
    hash_opened_into(path, &mut open_to_hash(path)?, set, out)
}

/// [`hash_file_into`] of a file already opened (and not read yet); `path` names it in errors.
pub fn hash_opened_into(
    path: &Path,
    opened: &mut ToHash,
    set: DigestSet,
    out: &mut dyn io::Write,
) -> Result<(Hashed, io::Result<()>), HashError> {
    let file = &mut opened.file;
    let mut h = Hasher::new(set);
    let mut buf = vec![0u8; 1 << 20];
    let mut written = Ok(());
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(HashError::Io {
                    path: path.to_path_buf(),
                    what: "cannot read",
                    source,
                })
            }
        };
        h.update(&buf[..n]);
        if written.is_ok() {
            written = out.write_all(&buf[..n]);
        }
    }
    if h.is_empty() {
        return Err(HashError::Empty(path.to_path_buf()));
    }
    let n = h.len();
    let hashed = Hashed {
        digests: h.finish(),
        size: n,
        bytes_read: n,
        data: None,
    };
    Ok((hashed, written))
}

/// Read a file once: hash it (the digests of `set`), and keep its bytes if it is small.
pub fn hash_file(path: &Path, buffer_limit: u64, set: DigestSet) -> Result<Hashed, HashError> {
    hash_opened(path, open_to_hash(path)?, buffer_limit, set)
}

/// [`hash_file`] of a file already opened; `path` names it in errors.
pub fn hash_opened(
    path: &Path,
    opened: ToHash,
    buffer_limit: u64,
    set: DigestSet,
) -> Result<Hashed, HashError> {
    let io_fail = |what: &'static str, source: std::io::Error| HashError::Io {
        path: path.to_path_buf(),
        what,
        source,
    };
    let ToHash { file, size } = opened;
    if size <= buffer_limit {
        let data = read_whole(&file, size).map_err(|e| io_fail("cannot read", e))?;
        if data.is_empty() {
            return Err(HashError::Empty(path.to_path_buf()));
        }
        let n = data.len() as u64;
        return Ok(Hashed {
            digests: hash_bytes_with(&data, set),
            size: n,
            bytes_read: n,
            data: Some(data),
        });
    }
    let (digests, n) = hash_reader_with(file, set).map_err(|e| io_fail("cannot read", e))?;
    Ok(Hashed {
        digests,
        size: n,
        bytes_read: n,
        data: None,
    })
}

/// All of `file`, `size` bytes when it was opened, read to its end (more if it grew since):
/// straight into the buffer's spare capacity, one `read` for the bytes and one that finds the
/// end. (`File::read_to_end` would first stat the file again and ask for its position.)
fn read_whole(file: &File, size: u64) -> io::Result<Vec<u8>> {
    let mut data = Vec::with_capacity(
        usize::try_from(size)
            .unwrap_or(usize::MAX)
            .saturating_add(1),
    );
    loop {
        if data.len() == data.capacity() {
            // It grew since it was opened: keep reading, as `read_to_end` would.
            data.reserve(data.capacity().max(8192));
        }
        match rustix::io::read(file, rustix::buffer::spare_capacity(&mut data)) {
            Ok(0) => return Ok(data),
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn known_vectors() {
        let d = hash_bytes(b"abc");
        assert_eq!(
            d.sha1.as_deref(),
            Some("a9993e364706816aba3e25717850c26c9cd0d89d")
        );
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
        // A row hashed without BLAKE3 (an older bookferry) compares by SHA-1.
        let sha1_only = Digests {
            sha1: da.sha1.clone(),
            blake3: String::new(),
        };
        assert!(sha1_only.same_content(&db));
        // BLAKE3 alone tells them apart, and finds the same bytes hashed with SHA-1 or not.
        let (ba, bb) = (
            hash_bytes_with(&a, DigestSet::Blake3),
            hash_bytes_with(&b, DigestSet::Blake3),
        );
        assert_eq!(ba.sha1, None);
        assert!(!ba.same_content(&bb));
        assert!(ba.same_content(&da) && da.same_content(&ba));
        // Without a BLAKE3 on one side and a SHA-1 on the other, nothing says they agree.
        assert!(!sha1_only.same_content(&ba));
    }

    #[test]
    fn blake3_alone_computes_no_sha1_and_the_same_blake3() {
        let data = b"some bytes of a book";
        let both = hash_bytes(data);
        let one = hash_bytes_with(data, DigestSet::Blake3);
        assert_eq!(one.sha1, None);
        assert_eq!(one.blake3, both.blake3);
        assert_eq!(one.set(), DigestSet::Blake3);
        assert_eq!(both.set(), DigestSet::Blake3AndSha1);
        assert!(DigestSet::Blake3.is_met_by(None, Some(&one.blake3)));
        assert!(!DigestSet::Blake3AndSha1.is_met_by(None, Some(&one.blake3)));
        assert!(!DigestSet::Blake3.is_met_by(both.sha1.as_deref(), None));
    }

    #[test]
    fn reader_and_buffer_agree_across_chunk_boundaries() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let (d, n) = hash_reader(&data[..]).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(d, hash_bytes(&data));
        assert_eq!(Some(sha1_hex(&data)), d.sha1);
    }

    #[test]
    fn a_small_file_is_read_whole_and_to_its_end_even_if_it_grew_after_it_was_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("book.txt");
        let first: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &first).unwrap();
        let opened = open_to_hash(&path).unwrap();
        assert_eq!(opened.size(), 5000);
        // Appended after the stat that sized the buffer: read too, as `read_to_end` would.
        let more = vec![7u8; 20_000];
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&more)
            .unwrap();
        let hashed = hash_opened(&path, opened, 1 << 20, DigestSet::Blake3).unwrap();
        let whole = [first, more].concat();
        assert_eq!(hashed.size, whole.len() as u64);
        assert_eq!(hashed.data.as_deref(), Some(&whole[..]));
        assert_eq!(hashed.digests, hash_bytes_with(&whole, DigestSet::Blake3));
        // And a file read in the ordinary way keeps exactly its bytes.
        let exact = hash_file(&path, 1 << 20, DigestSet::Blake3).unwrap();
        assert_eq!(exact.data.as_deref(), Some(&whole[..]));
    }
}
