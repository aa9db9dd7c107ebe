//! Shared ZIP access for the ZIP-based formats (EPUB, CBZ, DOCX, FB2.ZIP): open an archive
//! over any seekable reader, find entries by name, and read an entry with a hard size cap so a
//! zip bomb never allocates more than the cap.

use std::io::{Read, Seek};
use zip::ZipArchive;

/// Cap for metadata documents (container.xml, OPF, ComicInfo.xml, docProps).
pub const ENTRY_CAP: u64 = 4 << 20;
/// Most entries we look at when searching by name.
const MAX_SCAN: usize = 100_000;

pub fn open<R: Read + Seek>(r: R) -> Result<ZipArchive<R>, String> {
    ZipArchive::new(r).map_err(|e| format!("unreadable ZIP container: {e}"))
}

/// Index of the entry with this path: exact match first, then case-insensitive (and with any
/// leading `/` or `./` ignored).
pub fn find<R: Read + Seek>(ar: &ZipArchive<R>, path: &str) -> Option<usize> {
    let want = path.trim_start_matches("./").trim_start_matches('/');
    if let Some(i) = ar.index_for_name(want) {
        return Some(i);
    }
    (0..ar.len().min(MAX_SCAN)).find(|&i| {
        name(ar, i).is_some_and(|n| {
            n.trim_start_matches("./")
                .trim_start_matches('/')
                .eq_ignore_ascii_case(want)
        })
    })
}

/// The name of entry `i` (None when it is not valid text).
pub fn name<R: Read + Seek>(ar: &ZipArchive<R>, i: usize) -> Option<String> {
    ar.name_for_index(i)?.ok().map(|c| c.into_owned())
}

/// Every entry name, in central-directory order (bounded).
pub fn names<R: Read + Seek>(ar: &ZipArchive<R>) -> Vec<String> {
    (0..ar.len().min(MAX_SCAN))
        .filter_map(|i| name(ar, i))
        .collect()
}

/// Read at most `cap` bytes of an entry. A longer entry is truncated with a warning; a corrupt
/// one (bad deflate, CRC mismatch) gives what was read plus a warning.
pub fn read_capped<R: Read + Seek>(
    ar: &mut ZipArchive<R>,
    index: usize,
    cap: u64,
    warnings: &mut Vec<String>,
) -> Option<Vec<u8>> {
    read_until(ar, index, cap, None, warnings)
}

/// Like `read_capped`, but stop early once `needle` has been read (e.g. `</description>`).
pub fn read_until<R: Read + Seek>(
    ar: &mut ZipArchive<R>,
    index: usize,
    cap: u64,
    needle: Option<&[u8]>,
    warnings: &mut Vec<String>,
) -> Option<Vec<u8>> {
    let mut f = match ar.by_index(index) {
        Ok(f) => f,
        Err(e) => {
            warnings.push(format!("ZIP entry #{index} unreadable: {e}"));
            return None;
        }
    };
    let name = f
        .name()
        .map(|n| n.into_owned())
        .unwrap_or_else(|_| format!("#{index}"));
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if out.len() as u64 >= cap {
            warnings.push(format!(
                "ZIP entry {name} larger than {cap} bytes: truncated"
            ));
            break;
        }
        let room = usize::try_from(cap - out.len() as u64)
            .unwrap_or(usize::MAX)
            .min(chunk.len());
        match f.read(&mut chunk[..room]) {
            Ok(0) => break,
            Ok(n) => {
                let from = out.len().saturating_sub(needle.map_or(0, <[u8]>::len));
                out.extend_from_slice(&chunk[..n]);
                if let Some(nd) = needle {
                    if !nd.is_empty() && out[from..].windows(nd.len()).any(|w| w == nd) {
                        break;
                    }
                }
            }
            Err(e) => {
                warnings.push(format!("ZIP entry {name} corrupt: {e}"));
                break;
            }
        }
    }
    Some(out)
}

/// Read an entry by path (see `find`), capped at `ENTRY_CAP`.
pub fn read_named<R: Read + Seek>(
    ar: &mut ZipArchive<R>,
    path: &str,
    warnings: &mut Vec<String>,
) -> Option<Vec<u8>> {
    let i = find(ar, path)?;
    read_capped(ar, i, ENTRY_CAP, warnings)
}

/// Resolve `href` relative to the directory of `base` (an entry path), with `..` handling and
/// percent-decoding: (`OEBPS/content.opf`, `../img/c.jpg`) → `img/c.jpg`.
pub fn resolve(base: &str, href: &str) -> String {
    let href = percent_decode(href.split(['#', '?']).next().unwrap_or(""));
    let mut parts: Vec<&str> = base.split('/').collect();
    parts.pop();
    if href.starts_with('/') {
        parts.clear();
    }
    for seg in href.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::io::{Cursor, Write};
    use zip::write::SimpleFileOptions;

    /// Build an in-memory ZIP (deflated entries) for tests.
    pub fn build(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, data) in entries {
            w.start_file(*name, SimpleFileOptions::default())
                .expect("start");
            w.write_all(data).expect("write");
        }
        w.finish().expect("finish").into_inner()
    }

    #[test]
    fn find_read_and_cap() {
        let big = vec![b'a'; 100_000];
        let z = build(&[("META-INF/container.xml", b"<c/>"), ("Big.bin", &big)]);
        let mut ar = open(Cursor::new(z)).expect("open");
        let mut w = Vec::new();
        assert_eq!(
            read_named(&mut ar, "meta-inf/CONTAINER.xml", &mut w),
            Some(b"<c/>".to_vec())
        );
        let i = find(&ar, "big.bin").expect("found");
        assert_eq!(
            read_capped(&mut ar, i, 1000, &mut w).map(|v| v.len()),
            Some(1000)
        );
        assert_eq!(w.len(), 1);
        let mut w = Vec::new();
        let got = read_until(&mut ar, i, 1 << 20, Some(b"aaa"), &mut w).expect("read");
        assert!(got.len() <= 64 * 1024 && w.is_empty());
    }

    #[test]
    fn zip_bomb_entry_is_capped() {
        let zeros = vec![0u8; 32 << 20];
        let z = build(&[("ComicInfo.xml", &zeros)]);
        assert!(z.len() < 1 << 20);
        let mut ar = open(Cursor::new(z)).expect("open");
        let mut w = Vec::new();
        let got = read_named(&mut ar, "ComicInfo.xml", &mut w).expect("read");
        assert_eq!(got.len() as u64, ENTRY_CAP);
        assert!(w[0].contains("truncated"));
    }

    #[test]
    fn resolve_paths() {
        assert_eq!(resolve("OEBPS/content.opf", "cover.png"), "OEBPS/cover.png");
        assert_eq!(
            resolve("OEBPS/x/content.opf", "../img/c%20d.jpg#x"),
            "OEBPS/img/c d.jpg"
        );
        assert_eq!(resolve("content.opf", "c.jpg"), "c.jpg");
    }
}
