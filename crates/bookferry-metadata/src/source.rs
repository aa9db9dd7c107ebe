//! Random access to a file's bytes, counting what is actually read: an in-memory slice (bytes
//! the hash stage already read) or an open file read by range. Range-reading parsers (PDF,
//! MOBI) use this so a large file is never read whole.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

pub trait Source {
    /// Total length in bytes.
    fn len(&self) -> u64;
    /// Up to `len` bytes from `offset` (fewer at end of file; empty past it).
    fn read_at(&mut self, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// Bytes handed out so far.
    fn bytes_read(&self) -> u64;
}

pub struct SliceSource<'a> {
    data: &'a [u8],
    read: u64,
}

impl<'a> SliceSource<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        SliceSource { data, read: 0 }
    }
}

impl Source for SliceSource<'_> {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }

    fn read_at(&mut self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.data.len());
        let end = start.saturating_add(len).min(self.data.len());
        self.read += (end - start) as u64;
        Ok(self.data[start..end].to_vec())
    }

    fn bytes_read(&self) -> u64 {
        self.read
    }
}

pub struct FileSource {
    file: File,
    size: u64,
    read: u64,
}

impl FileSource {
    pub fn new(file: File, size: u64) -> Self {
        FileSource {
            file,
            size,
            read: 0,
        }
    }
}

impl Source for FileSource {
    fn len(&self) -> u64 {
        self.size
    }

    fn read_at(&mut self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        if offset >= self.size {
            return Ok(Vec::new());
        }
        let want = (self.size - offset).min(len as u64);
        self.file.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
        (&mut self.file).take(want).read_to_end(&mut buf)?;
        self.read += buf.len() as u64;
        Ok(buf)
    }

    fn bytes_read(&self) -> u64 {
        self.read
    }
}

/// A `Read + Seek` wrapper that counts the bytes read through it (for ZIP over a file).
pub struct Counting<R> {
    inner: R,
    pub read: u64,
}

impl<R> Counting<R> {
    pub fn new(inner: R) -> Self {
        Counting { inner, read: 0 }
    }
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

impl<R: Seek> Seek for Counting<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_source_clamps_and_counts() {
        let mut s = SliceSource::new(b"hello");
        assert_eq!(s.read_at(3, 10).ok(), Some(b"lo".to_vec()));
        assert_eq!(s.read_at(99, 10).ok(), Some(Vec::new()));
        assert_eq!(s.bytes_read(), 2);
    }

    #[test]
    fn file_source_reads_ranges() -> io::Result<()> {
        let mut f = tempfile::tempfile()?;
        std::io::Write::write_all(&mut f, b"0123456789")?;
        let mut s = FileSource::new(f, 10);
        assert_eq!(s.read_at(8, 5)?, b"89".to_vec());
        assert_eq!(s.read_at(0, 3)?, b"012".to_vec());
        assert_eq!(s.bytes_read(), 5);
        Ok(())
    }
}
