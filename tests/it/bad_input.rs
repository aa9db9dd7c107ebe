//! Bad input: a library of good files salted with every kind of broken, hostile or unreadable
//! file, migrated to a folder by an unprivileged user. The rule checked for each:
//!
//! - bytes that cannot be read (no permission) → `failed`, with a kind and a message
//!   naming the file and the cause; entries that are not regular files (FIFO, device, symlink
//!   loop, dangling link, unreadable folder) → not recorded, with a log line, never read; a
//!   file removed from the source before it was migrated → `skipped` as `source_gone`;
//! - a zero-byte file → `failed` with kind `empty_file`;
//! - bytes that can be read but whose format is broken (zip bomb, billion laughs, truncated or
//!   non-ZIP EPUB, broken or encrypted PDF, non-XML FB2, bad EXTH) → migrated byte for byte, with
//!   a warning in `files.warnings` naming the cause, and metadata from the file name;
//! - hostile names and titles land inside the target and nowhere else; a file rewritten after it
//!   was hashed is never recorded with the stale SHA-1.
//!
//! The HTTP target is not exercised here: `tests/it/http.rs` includes the test server as a
//! private module, and including it a second time would compile it twice.

use crate::util::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{Cursor, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use zip::write::SimpleFileOptions;
use zip::CompressionMethod;

/// Longest any one bookferry invocation may take before the test calls it hung.
const HANG: Duration = Duration::from_secs(180);
/// Peak RSS allowed while a 1 GiB-inflating ZIP entry is in the library.
const MAX_RSS_BYTES: i64 = 300 << 20;
/// Files above the hash stage's buffer limit (8 MiB) are streamed, not buffered.
const BIG: usize = 9 << 20;

// ---------------------------------------------------------------------------------------------
// File builders

fn deflated() -> SimpleFileOptions {
    SimpleFileOptions::default().compression_method(CompressionMethod::Deflated)
}

const CONTAINER: &str = r#"<?xml version="1.0"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
  <rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles>
</container>"#;

/// An OPF whose `<metadata>` holds `dc_xml` (already escaped as the test wants it).
fn opf(prolog: &str, dc_xml: &str) -> Vec<u8> {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>{prolog}
<package xmlns="http://www.idpf.org/2007/opf" version="2.0" unique-identifier="id">
  <metadata xmlns:dc="http://purl.org/dc/elements/1.1/">{dc_xml}<dc:language>en</dc:language></metadata>
  <manifest><item id="c1" href="c1.xhtml" media-type="application/xhtml+xml"/></manifest>
  <spine><itemref idref="c1"/></spine>
</package>"#
    )
    .into_bytes()
}

fn dc(title_xml: &str, author_xml: &str) -> String {
    format!("<dc:title>{title_xml}</dc:title><dc:creator>{author_xml}</dc:creator>")
}

/// A small valid EPUB with this OPF and a chapter holding `body`.
fn epub(opf: &[u8], body: &str) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let stored = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    z.start_file("mimetype", stored).unwrap();
    z.write_all(b"application/epub+zip").unwrap();
    z.start_file("META-INF/container.xml", deflated()).unwrap();
    z.write_all(CONTAINER.as_bytes()).unwrap();
    z.start_file("OEBPS/content.opf", deflated()).unwrap();
    z.write_all(opf).unwrap();
    z.start_file("OEBPS/c1.xhtml", deflated()).unwrap();
    let page = format!(
        "<html xmlns=\"http://www.w3.org/1999/xhtml\"><body><p>{body}</p>{}</body></html>",
        "<p>Lorem ipsum dolor sit amet.</p>".repeat(200)
    );
    z.write_all(page.as_bytes()).unwrap();
    z.finish().unwrap().into_inner()
}

fn good_epub(title: &str, author: &str, body: &str) -> Vec<u8> {
    epub(&opf("", &dc(title, author)), body)
}

/// An EPUB whose OPF inflates to 1 GiB of zeros (about 1 MiB on disk), written to `path`
/// while streaming the zeros through the compressor.
fn write_zip_bomb_epub(path: &Path) {
    let mut z = zip::ZipWriter::new(File::create(path).unwrap());
    let stored = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    z.start_file("mimetype", stored).unwrap();
    z.write_all(b"application/epub+zip").unwrap();
    z.start_file("META-INF/container.xml", deflated()).unwrap();
    z.write_all(CONTAINER.as_bytes()).unwrap();
    z.start_file("OEBPS/content.opf", deflated().large_file(true))
        .unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        z.write_all(&zeros).unwrap();
    }
    z.finish().unwrap().sync_all().unwrap();
}

/// An OPF whose title is the tenth level of the billion-laughs entity tower.
fn billion_laughs_opf() -> Vec<u8> {
    let mut dtd = String::from("\n<!DOCTYPE package [\n<!ENTITY lol \"lol\">\n");
    for i in 1..=9 {
        let prev = if i == 1 {
            "lol".to_string()
        } else {
            format!("lol{}", i - 1)
        };
        dtd.push_str(&format!(
            "<!ENTITY lol{i} \"{}\">\n",
            format!("&{prev};").repeat(10)
        ));
    }
    dtd.push_str("]>");
    opf(&dtd, "<dc:title>&lol9;</dc:title>")
}

/// A classic-xref PDF of these object bodies (object 1 is the catalog).
fn pdf(objects: &[&str], trailer_extra: &str) -> Vec<u8> {
    let mut out = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{body}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for o in offsets {
        out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R {trailer_extra}>>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

const CATALOG: &str = "<< /Type /Catalog /Pages 2 0 R >>";
const PAGES: &str = "<< /Type /Pages /Kids [] /Count 0 >>";

/// A PDF whose `startxref` points past the end of the file and whose xref table is garbage.
fn broken_xref_pdf() -> Vec<u8> {
    let good = pdf(&[CATALOG, PAGES], "");
    let text = String::from_utf8_lossy(&good).into_owned();
    let x = text.rfind("startxref\n").unwrap();
    let mut out = text[..x].replace("xref\n0 3\n", "xref\nGARBAGE here\n");
    out.push_str("startxref\n987654321\n%%EOF\n");
    out.into_bytes()
}

/// A PDF with an /Encrypt dictionary in its trailer (and an Info dictionary whose strings are
/// therefore ciphertext).
fn encrypted_pdf() -> Vec<u8> {
    pdf(
        &[
            CATALOG,
            PAGES,
            "<< /Title (Ciphertext Title) /Author (Ciphertext Author) >>",
            "<< /Filter /Standard /V 1 /R 2 /Length 40 /P -4 \
             /O <0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef> \
             /U <0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef> >>",
        ],
        "/Info 3 0 R /Encrypt 4 0 R /ID [<00112233445566778899aabbccddeeff> <00112233445566778899aabbccddeeff>] ",
    )
}

/// A MOBI with no full name whose first EXTH record claims a length far past record 0 (the
/// title record after it is unreachable).
fn bad_exth_mobi() -> Vec<u8> {
    let title = b"Unreachable Exth Title";
    let mut ex = Vec::new();
    ex.extend_from_slice(&100u32.to_be_bytes());
    ex.extend_from_slice(&0xFFFF_FF00u32.to_be_bytes());
    ex.extend_from_slice(b"Bogus Author");
    ex.extend_from_slice(&503u32.to_be_bytes());
    ex.extend_from_slice(&(title.len() as u32 + 8).to_be_bytes());
    ex.extend_from_slice(title);
    let mut exth = b"EXTH".to_vec();
    exth.extend_from_slice(&(ex.len() as u32 + 12).to_be_bytes());
    exth.extend_from_slice(&2u32.to_be_bytes());
    exth.extend_from_slice(&ex);
    let header_len = 232u32;
    let mut rec = vec![0u8; 16 + header_len as usize];
    rec[16..20].copy_from_slice(b"MOBI");
    rec[20..24].copy_from_slice(&header_len.to_be_bytes());
    rec[28..32].copy_from_slice(&65001u32.to_be_bytes());
    rec[128..132].copy_from_slice(&0x40u32.to_be_bytes());
    rec.extend_from_slice(&exth);
    let name_off = rec.len() as u32;
    rec[84..88].copy_from_slice(&name_off.to_be_bytes());
    rec[88..92].copy_from_slice(&0u32.to_be_bytes());
    let mut f = vec![0u8; 78];
    f[..12].copy_from_slice(b"Bad EXTH Bk\0");
    f[60..68].copy_from_slice(b"BOOKMOBI");
    f[76..78].copy_from_slice(&2u16.to_be_bytes());
    let r0 = 78 + 16 + 2;
    f.extend_from_slice(&(r0 as u32).to_be_bytes());
    f.extend_from_slice(&[0; 4]);
    f.extend_from_slice(&((r0 + rec.len()) as u32).to_be_bytes());
    f.extend_from_slice(&[0; 4]);
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&rec);
    f.extend_from_slice(b"text record");
    f
}

/// `n` bytes that neither compress nor repeat (xorshift), different for each seed.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Make a device node (root can); panics if it cannot.
fn mknod(path: &Path, mode: libc::mode_t, major: u32, minor: u32) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: mknod on a NUL-terminated path we own; makedev is pure arithmetic.
    let made = unsafe { libc::mknod(c.as_ptr(), mode, libc::makedev(major, minor)) == 0 };
    assert!(
        made,
        "mknod {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

// ---------------------------------------------------------------------------------------------
// The bad corpus

/// How one planted file must end.
#[derive(Debug, Clone)]
enum Expect {
    /// Migrated as it is (`uploaded`, same bytes at the target), a warning naming `cause`, and
    /// title and author from the file name.
    Broken {
        cause: &'static str,
        title: &'static str,
        author: &'static str,
    },
    /// `failed` with this kind; the message names the file and holds `cause`.
    Failed {
        kind: &'static str,
        cause: &'static str,
    },
    /// No row; a log line names the entry and holds `cause`.
    NotRecorded { cause: &'static str },
    /// Left the source before it was migrated: `skipped`, `source_gone`, placed nowhere, with
    /// an `events` row naming the file.
    Gone,
    /// Migrated as it is (hostile names and titles: checked separately for where they land).
    Migrated,
}

struct Planted {
    /// Relative to the library root (may not be UTF-8).
    rel: PathBuf,
    expect: Expect,
}

/// Source-relative reference bookferry records for a planted path: as it is when UTF-8, else
/// with each byte that is not UTF-8 written `\xFF`.
fn source_ref(rel: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for chunk in rel.as_os_str().as_bytes().utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    out
}

/// Hostile dc:title values (as XML text) and the part of each that must reach the layout.
const HOSTILE_TITLES: &[(&str, &str, &str)] = &[
    ("Hostile Dotdot.epub", "../../etc/passwd", "passwd"),
    ("Hostile Absolute.epub", "/abs", "abs"),
    ("Hostile Reserved.epub", "CON", "CON"),
    ("Hostile Nul.epub", "Nul\u{0}Byte", "Byte"),
    ("Hostile Newlines.epub", "Line\nBreak\r\nTitle", "Title"),
];

struct BadCorpus {
    planted: Vec<Planted>,
    /// Deleted after `scan`, before anything hashed it.
    vanishing: PathBuf,
    /// Rewritten with other bytes of the same size (mtime restored) after `run --dry-run`.
    rewritten: PathBuf,
    /// Grown by 1 MiB after `run --dry-run`.
    growing: PathBuf,
    /// Two names, one content.
    duplicates: [PathBuf; 2],
    /// Two contents whose metadata gives the same layout path.
    colliding: [PathBuf; 2],
}

/// Puts files into the library and remembers how each must end.
struct Planter<'a> {
    lib: &'a Path,
    planted: Vec<Planted>,
}

impl Planter<'_> {
    /// Write `bytes` as `bad/<name>`.
    fn put(&mut self, name: &[u8], bytes: &[u8], expect: Expect) {
        let rel = Path::new("bad").join(OsStr::from_bytes(name));
        fs::write(self.lib.join(&rel), bytes).unwrap();
        self.add(rel, expect);
    }

    /// An entry made by other means.
    fn add(&mut self, rel: impl Into<PathBuf>, expect: Expect) {
        self.planted.push(Planted {
            rel: rel.into(),
            expect,
        });
    }
}

/// Plant every bad input under `lib/bad/`.
fn build_bad_corpus(lib: &Path) -> BadCorpus {
    let bad = lib.join("bad");
    fs::create_dir_all(&bad).unwrap();
    let mut c = Planter {
        lib,
        planted: Vec::new(),
    };

    // Unreadable bytes.
    c.put(
        b"Empty Book - Test Author.epub",
        b"",
        Expect::Failed {
            kind: "empty_file",
            cause: "empty",
        },
    );
    c.put(
        b"No Permission - Test Author.epub",
        &good_epub("Locked Away", "Test Author", "unreadable"),
        Expect::Failed {
            kind: "unreadable",
            cause: "Permission denied",
        },
    );

    // Readable bytes, broken formats.
    let mut truncated = good_epub("Truncated Real Title", "Real Author", "cut short");
    truncated.truncate(truncated.len() * 3 / 5);
    c.put(
        b"Truncated Epub - Test Author.epub",
        &truncated,
        Expect::Broken {
            cause: "ZIP",
            title: "Truncated Epub",
            author: "Test Author",
        },
    );
    c.put(
        b"Not A Zip - Test Author.epub",
        b"<html><body>This EPUB is an HTML page, not a ZIP container.</body></html>\n",
        Expect::Broken {
            cause: "ZIP",
            title: "Not A Zip",
            author: "Test Author",
        },
    );
    let bomb_rel = PathBuf::from("bad/Zip Bomb - Test Author.epub");
    write_zip_bomb_epub(&lib.join(&bomb_rel));
    assert!(
        fs::metadata(lib.join(&bomb_rel)).unwrap().len() < 4 << 20,
        "the zip bomb should be small on disk"
    );
    c.add(
        bomb_rel,
        Expect::Broken {
            cause: "truncated",
            title: "Zip Bomb",
            author: "Test Author",
        },
    );
    c.put(
        b"Billion Laughs - Test Author.epub",
        &epub(&billion_laughs_opf(), "lol"),
        Expect::Broken {
            cause: "entity",
            title: "Billion Laughs",
            author: "Test Author",
        },
    );
    c.put(
        b"Broken Xref - Test Author.pdf",
        &broken_xref_pdf(),
        Expect::Broken {
            cause: "xref",
            title: "Broken Xref",
            author: "Test Author",
        },
    );
    c.put(
        b"Encrypted Pdf - Test Author.pdf",
        &encrypted_pdf(),
        Expect::Broken {
            cause: "encrypted",
            title: "Encrypted Pdf",
            author: "Test Author",
        },
    );
    c.put(
        b"Bad Exth - Test Author.mobi",
        &bad_exth_mobi(),
        Expect::Broken {
            cause: "EXTH",
            title: "Bad Exth",
            author: "Test Author",
        },
    );
    c.put(
        b"Not Xml - Test Author.fb2",
        b"This FB2 is plain text: no <angle brackets that close, no root element.\n\x00\x01\x02",
        Expect::Broken {
            cause: "not XML",
            title: "Not Xml",
            author: "Test Author",
        },
    );

    // Hostile names.
    c.put(
        b"Caf\xff\xfe Name - Test Author.txt",
        b"a book whose file name is not UTF-8",
        Expect::Migrated,
    );
    let suffix = " - Long Author.txt";
    let long = format!("Long{}{suffix}", "n".repeat(255 - 4 - suffix.len()));
    assert_eq!(long.len(), 255);
    c.put(
        long.as_bytes(),
        b"a book whose file name is 255 bytes long",
        Expect::Migrated,
    );

    // Hostile titles: EPUBs whose dc:title would climb out of the target if used raw.
    for (i, (name, title, _)) in HOSTILE_TITLES.iter().enumerate() {
        let author = if i == 0 { "../.." } else { "Hostile Author" };
        c.put(
            name.as_bytes(),
            &good_epub(title, author, &format!("hostile {i}")),
            Expect::Migrated,
        );
    }

    // Entries that are not regular files: never read, never recorded.
    let lp = bad.join("Self Loop - Test Author.epub");
    std::os::unix::fs::symlink(&lp, &lp).unwrap();
    c.add(
        "bad/Self Loop - Test Author.epub",
        Expect::NotRecorded { cause: "symlink" },
    );
    fs::create_dir_all(bad.join("loop")).unwrap();
    std::os::unix::fs::symlink("../..", bad.join("loop/back to the top")).unwrap();
    c.add(
        "bad/loop/back to the top",
        Expect::NotRecorded {
            cause: "symlink loop",
        },
    );
    std::os::unix::fs::symlink(
        lib.join("bad/nowhere/missing.epub"),
        bad.join("Dangling - Test Author.epub"),
    )
    .unwrap();
    c.add(
        "bad/Dangling - Test Author.epub",
        Expect::NotRecorded { cause: "dangling" },
    );
    let fifo = bad.join("Pipe - Test Author.epub");
    let cpath = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo on a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(cpath.as_ptr(), 0o666) }, 0, "mkfifo");
    c.add(
        "bad/Pipe - Test Author.epub",
        Expect::NotRecorded { cause: "FIFO" },
    );
    // /dev/zero's numbers: reading it would never end.
    if have_root("the device-node case (mknod)") {
        mknod(
            &bad.join("Device - Test Author.epub"),
            libc::S_IFCHR | 0o666,
            1,
            5,
        );
        c.add(
            "bad/Device - Test Author.epub",
            Expect::NotRecorded { cause: "device" },
        );
    }
    let locked = bad.join("locked");
    fs::create_dir_all(&locked).unwrap();
    fs::write(
        locked.join("Inside Locked - Test Author.epub"),
        good_epub("Inside Locked", "Test Author", "locked"),
    )
    .unwrap();
    c.add(
        "bad/locked",
        Expect::NotRecorded {
            cause: "cannot read folder",
        },
    );

    // Vanishing and changing files.
    let vanishing = PathBuf::from("bad/Vanishes - Test Author.epub");
    fs::write(
        lib.join(&vanishing),
        good_epub("Vanishes", "Test Author", "gone"),
    )
    .unwrap();
    c.add(vanishing.clone(), Expect::Gone);
    let rewritten = PathBuf::from("bad/Rewritten Same Size - Test Author.txt");
    fs::write(lib.join(&rewritten), noise(BIG, 1)).unwrap();
    let growing = PathBuf::from("bad/Grows - Test Author.txt");
    fs::write(lib.join(&growing), noise(BIG, 2)).unwrap();

    // Same content, two names; two contents, one layout path.
    let dup = good_epub("Duplicate Content", "Dup Author", "same bytes twice");
    let duplicates = [
        PathBuf::from("bad/Duplicate One.epub"),
        PathBuf::from("bad/dup/Another Name Entirely.epub"),
    ];
    fs::create_dir_all(lib.join("bad/dup")).unwrap();
    for d in &duplicates {
        fs::write(lib.join(d), &dup).unwrap();
    }
    let colliding = [
        PathBuf::from("bad/Collide A.epub"),
        PathBuf::from("bad/Collide B.epub"),
    ];
    for (i, c) in colliding.iter().enumerate() {
        fs::write(
            lib.join(c),
            good_epub("Same Title", "Same Author", &format!("edition {i}")),
        )
        .unwrap();
    }

    // Permissions last (root can still write above, an unprivileged run cannot read these).
    fs::set_permissions(
        lib.join("bad/No Permission - Test Author.epub"),
        fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();

    BadCorpus {
        planted: c.planted,
        vanishing,
        rewritten,
        growing,
        duplicates,
        colliding,
    }
}

// ---------------------------------------------------------------------------------------------
// Running bookferry as an unprivileged user, with a timeout and its peak memory

/// uid and gid to run bookferry as: `nobody` when the tests run as root (root reads anything,
/// so permission cases need another user), else the current user (who cannot read a mode-000
/// file either).
struct Runner {
    drop_to: Option<(u32, u32)>,
    bin: PathBuf,
    _bin_dir: Option<tempfile::TempDir>,
    logs: tempfile::TempDir,
}

struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    max_rss_bytes: i64,
}

impl Runner {
    fn new(ws: &Workspace) -> Runner {
        let logs = tempfile::Builder::new()
            .prefix("bookferry-it-logs-")
            .tempdir()
            .unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Runner {
                drop_to: None,
                bin: bin(),
                _bin_dir: None,
                logs,
            };
        }
        let ok = Command::new("setpriv")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "running as root: `setpriv` (util-linux) is needed to run bookferry unprivileged"
        );
        let (uid, gid) = nobody();
        // The workspace must be traversable by, and the state DB and target writable by, nobody.
        std::os::unix::fs::chown(ws.path(), Some(uid), Some(gid)).unwrap();
        fs::set_permissions(ws.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let mut r = Runner {
            drop_to: Some((uid, gid)),
            bin: bin(),
            _bin_dir: None,
            logs,
        };
        let writable = r
            .privs(Command::new("setpriv"))
            .args(["test", "-w"])
            .arg(ws.path())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            writable,
            "{}: not writable by nobody (is a parent folder closed to others? set TMPDIR)",
            ws.path().display()
        );
        // The binary may sit under a folder nobody cannot enter: then run a copy.
        let reachable = r
            .privs(Command::new("setpriv"))
            .args(["test", "-x"])
            .arg(&r.bin)
            .status()
            .is_ok_and(|s| s.success());
        if !reachable {
            let d = tempfile::Builder::new()
                .prefix("bookferry-it-bin-")
                .tempdir()
                .unwrap();
            fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
            let copy = d.path().join("bookferry");
            fs::copy(&r.bin, &copy).unwrap();
            fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
            r.bin = copy;
            r._bin_dir = Some(d);
        }
        r
    }

    fn privs(&self, mut c: Command) -> Command {
        if let Some((uid, gid)) = self.drop_to {
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups");
        }
        c
    }

    /// Run bookferry with `--state` and `args`; panics if it does not end within `HANG`.
    fn run(&self, ws: &Workspace, label: &str, args: &[&OsStr]) -> Ran {
        let mut c = if self.drop_to.is_some() {
            let mut c = self.privs(Command::new("setpriv"));
            c.arg(&self.bin);
            c
        } else {
            Command::new(&self.bin)
        };
        let out_path = self.logs.path().join(format!("{label}.out"));
        let err_path = self.logs.path().join(format!("{label}.err"));
        c.current_dir(ws.path())
            .arg("--state")
            .arg(ws.state())
            .args(args)
            .env_remove("BOOKFERRY_STATE")
            .env_remove("BOOKFERRY_TOKEN")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(File::create(&out_path).unwrap())
            .stderr(File::create(&err_path).unwrap());
        let child = c.spawn().expect("bookferry starts");
        let pid = child.id() as libc::pid_t;
        let started = Instant::now();
        let (status, ru) = loop {
            let mut status = 0;
            // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: wait4 on our own child, with valid out-pointers.
            let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
            assert!(r >= 0, "wait4: {}", std::io::Error::last_os_error());
            if r == pid {
                break (status, ru);
            }
            if started.elapsed() > HANG {
                // SAFETY: killing and reaping our own child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::wait4(pid, &mut status, 0, &mut ru);
                }
                panic!(
                    "{label}: bookferry hung (still running after {HANG:?}); stderr:\n{}",
                    fs::read_to_string(&err_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        drop(child);
        let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
        Ran {
            code,
            stdout: String::from_utf8_lossy(&fs::read(&out_path).unwrap()).into_owned(),
            stderr: String::from_utf8_lossy(&fs::read(&err_path).unwrap()).into_owned(),
            // Linux reports ru_maxrss in KiB.
            max_rss_bytes: ru.ru_maxrss * 1024,
        }
    }
}

fn nobody() -> (u32, u32) {
    let name = std::ffi::CString::new("nobody").unwrap();
    // SAFETY: getpwnam with a NUL-terminated name; the result is read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(!pw.is_null(), "no user `nobody`");
    // SAFETY: non-null result of getpwnam.
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

// ---------------------------------------------------------------------------------------------
// Reading the outcome

#[derive(Debug, Clone)]
struct Row {
    id: i64,
    state: String,
    /// `files.blake3` (a folder target records no SHA-1).
    blake3: Option<String>,
    target_ref: Option<String>,
    error_kind: Option<String>,
    error: Option<String>,
    warnings: Option<String>,
    metadata: Option<Value>,
    origin: Option<String>,
    skip_reason: Option<String>,
    duplicate_of: Option<i64>,
}

fn rows(ws: &Workspace) -> BTreeMap<String, Row> {
    let db = ws.db();
    let mut st = db
        .prepare(
            "SELECT source_ref, id, state, blake3, target_ref, error_kind, error, warnings, metadata,
                    metadata_origin, skip_reason, duplicate_of FROM files",
        )
        .unwrap();
    st.query_map([], |r| {
        let md: Option<String> = r.get(8)?;
        Ok((
            r.get::<_, String>(0)?,
            Row {
                id: r.get(1)?,
                state: r.get(2)?,
                blake3: r.get(3)?,
                target_ref: r.get(4)?,
                error_kind: r.get(5)?,
                error: r.get(6)?,
                warnings: r.get(7)?,
                metadata: md.map(|m| serde_json::from_str(&m).unwrap()),
                origin: r.get(9)?,
                skip_reason: r.get(10)?,
                duplicate_of: r.get(11)?,
            },
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// Every path below `root`, not following links and not reading anything.
fn list_tree(root: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            out.insert(p.strip_prefix(root).unwrap().to_path_buf());
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

fn os(s: &Path) -> &OsStr {
    s.as_os_str()
}

fn sha1_of(bytes: &[u8]) -> String {
    use sha1::{Digest, Sha1};
    hex(&Sha1::digest(bytes))
}

// ---------------------------------------------------------------------------------------------
// The test

#[test]
fn a_salted_library_migrates_and_each_bad_file_ends_as_the_rule_says() {
    let ws = Workspace::with_corpus(24, 41);
    let lib = ws.lib();
    let corpus = build_bad_corpus(&lib);
    let runner = Runner::new(&ws);

    // Places a hostile path could escape to, and the workspace outside `out/`, before any run.
    let escape_candidates = [
        PathBuf::from("/abs"),
        ws.path().parent().unwrap().join("abs"),
        ws.path().parent().unwrap().join("etc"),
        ws.path().join("etc"),
    ];
    let preexisting: Vec<bool> = escape_candidates
        .iter()
        .map(|p| fs::symlink_metadata(p).is_ok())
        .collect();
    let outside_before = list_tree(ws.path());

    let lib_s = lib.as_os_str();
    let out_s = ws.out();
    let mut peak_rss = Vec::new();

    // 1. Scan, then the vanishing file goes before anything hashes it.
    let scan = runner.run(
        &ws,
        "scan",
        &[OsStr::new("scan"), OsStr::new("--from"), lib_s],
    );
    assert_eq!(scan.code, Some(0), "scan: {}", scan.stderr);
    peak_rss.push(("scan", scan.max_rss_bytes));
    assert!(
        rows(&ws).contains_key(&source_ref(&corpus.vanishing)),
        "the scan recorded the file about to vanish"
    );
    fs::remove_file(lib.join(&corpus.vanishing)).unwrap();

    // 2. A dry run hashes (and parses: the zip bomb too) everything that can be read.
    let dry = runner.run(
        &ws,
        "dry-run",
        &[
            OsStr::new("run"),
            OsStr::new("--from"),
            lib_s,
            OsStr::new("--to"),
            os(&out_s),
            OsStr::new("--dry-run"),
        ],
    );
    assert_eq!(
        dry.code,
        Some(1),
        "dry run: failed rows → exit 1: {}",
        dry.stderr
    );
    peak_rss.push(("dry-run", dry.max_rss_bytes));
    let before = rows(&ws);
    let old_rewritten = fs::read(lib.join(&corpus.rewritten)).unwrap();
    let old_growing = fs::read(lib.join(&corpus.growing)).unwrap();
    for (p, old) in [
        (&corpus.rewritten, &old_rewritten),
        (&corpus.growing, &old_growing),
    ] {
        let r = &before[&source_ref(p)];
        assert_eq!(
            r.state,
            "metadata_cached",
            "{}: after the dry run",
            p.display()
        );
        assert_eq!(
            r.blake3.as_deref(),
            Some(blake3_of(old).as_str()),
            "{}: hashed by the dry run",
            p.display()
        );
    }

    // 3. Between hash and upload: one file rewritten in place (same size, same mtime: only a
    //    re-hash can tell), one grown.
    let new_rewritten = noise(BIG, 3);
    {
        let path = lib.join(&corpus.rewritten);
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        fs::write(&path, &new_rewritten).unwrap();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
    }
    let mut new_growing = old_growing.clone();
    new_growing.extend_from_slice(&noise(1 << 20, 4));
    fs::write(lib.join(&corpus.growing), &new_growing).unwrap();

    // 4. The real run.
    let run = runner.run(
        &ws,
        "run",
        &[
            OsStr::new("run"),
            OsStr::new("--from"),
            lib_s,
            OsStr::new("--to"),
            os(&out_s),
        ],
    );
    peak_rss.push(("run", run.max_rss_bytes));
    assert_eq!(
        run.code,
        Some(1),
        "run: failed rows → exit 1: {}",
        run.stderr
    );

    let status = runner.run(&ws, "status", &[OsStr::new("status"), OsStr::new("--json")]);
    assert_eq!(status.code, Some(0), "status: {}", status.stderr);
    let status: Value = serde_json::from_str(&status.stdout).expect("status --json is JSON");

    let o = Outcome {
        ws: &ws,
        corpus: &corpus,
        rows: rows(&ws),
        target: ws.target_files(),
        log: format!("{}\n{}\n{}", scan.stderr, dry.stderr, run.stderr),
    };
    let mut f = Findings::default();
    memory_stayed_bounded(&peak_rss, &mut f);
    good_files_all_arrived(&o, &mut f);
    each_planted_file_ended_as_the_rule_says(&o, &mut f);
    non_utf8_name_migrated_and_noted(&o, &mut f);
    long_name_fits(&o, &mut f);
    hostile_titles_land_inside_the_target(&o, &mut f);
    nothing_escaped_the_target(
        &o,
        &outside_before,
        &escape_candidates,
        &preexisting,
        &mut f,
    );
    changed_after_hashing_is_never_recorded_stale(
        &o,
        &[
            (&corpus.rewritten, &new_rewritten),
            (&corpus.growing, &new_growing),
        ],
        &mut f,
    );
    duplicates_placed_once(&o, &mut f);
    colliding_layout_paths_both_placed(&o, &mut f);
    state_db_adds_up(&o, &status, &mut f);
    f.finish();
}

/// Everything a finished migration left, to check.
struct Outcome<'a> {
    ws: &'a Workspace,
    corpus: &'a BadCorpus,
    rows: BTreeMap<String, Row>,
    /// out/: relative path → SHA-1.
    target: BTreeMap<String, String>,
    /// stderr of every run.
    log: String,
}

impl Outcome<'_> {
    fn row(&self, key: &str, f: &mut Findings) -> Option<&Row> {
        let r = self.rows.get(key);
        f.check(r.is_some(), || format!("{key}: no row in the state DB"));
        r
    }

    /// SHA-1 of what the row's target_ref points at (None if nothing is there).
    fn placed_sha1(&self, r: &Row) -> Option<String> {
        self.target.get(r.target_ref.as_deref()?).cloned()
    }
}

/// Checks that do not stop at the first failure, so one run reports every misbehaviour.
#[derive(Default)]
struct Findings(Vec<String>);

impl Findings {
    fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            self.0.push(msg());
        }
    }

    fn eq<T: PartialEq + std::fmt::Debug>(
        &mut self,
        got: T,
        want: T,
        what: impl FnOnce() -> String,
    ) {
        if got != want {
            self.0
                .push(format!("{}: got {got:?}, want {want:?}", what()));
        }
    }

    fn finish(self) {
        assert!(
            self.0.is_empty(),
            "{} check(s) failed:\n- {}",
            self.0.len(),
            self.0.join("\n- ")
        );
    }
}

fn memory_stayed_bounded(peak_rss: &[(&str, i64)], f: &mut Findings) {
    for (label, rss) in peak_rss {
        f.check(*rss > 0 && *rss < MAX_RSS_BYTES, || {
            format!(
                "{label}: peak RSS {} MiB with a 1 GiB-inflating ZIP entry in the library (limit {} MiB)",
                rss >> 20,
                MAX_RSS_BYTES >> 20
            )
        });
    }
}

fn good_files_all_arrived(o: &Outcome, f: &mut Findings) {
    for e in &o.ws.manifest {
        let Some(r) = o.row(&e.path, f) else { continue };
        match r.state.as_str() {
            "uploaded" => f.eq(o.placed_sha1(r), Some(e.sha1.clone()), || {
                format!("{}: bytes at {:?}", e.path, r.target_ref)
            }),
            "skipped" => f.check(r.duplicate_of.is_some(), || {
                format!("{}: skipped but not as a duplicate: {r:?}", e.path)
            }),
            s => f.check(false, || {
                format!("{}: a good file ended {s}: {r:?}", e.path)
            }),
        }
    }
}

fn each_planted_file_ended_as_the_rule_says(o: &Outcome, f: &mut Findings) {
    let lib = o.ws.lib();
    for p in &o.corpus.planted {
        let key = source_ref(&p.rel);
        let name = p.rel.file_name().unwrap().to_string_lossy().into_owned();
        match &p.expect {
            Expect::Broken {
                cause,
                title,
                author,
            } => {
                let Some(r) = o.row(&key, f) else { continue };
                f.eq(r.state.as_str(), "uploaded", || {
                    format!(
                        "{key}: readable bytes, broken format: must migrate ({:?})",
                        r.error
                    )
                });
                let bytes = fs::read(lib.join(&p.rel)).unwrap();
                f.eq(o.placed_sha1(r), Some(sha1_of(&bytes)), || {
                    format!("{key}: bytes at the target")
                });
                f.eq(r.blake3.clone(), Some(blake3_of(&bytes)), || {
                    format!("{key}: recorded BLAKE3")
                });
                let w = r.warnings.as_deref().unwrap_or("");
                f.check(w.to_lowercase().contains(&cause.to_lowercase()), || {
                    format!("{key}: files.warnings must name the cause ({cause:?}); got {w:?}")
                });
                f.eq(r.origin.as_deref(), Some("filename"), || {
                    format!("{key}: metadata_origin (metadata {:?})", r.metadata)
                });
                let md = r.metadata.clone().unwrap_or_default();
                f.eq(md["title"].as_str(), Some(*title), || {
                    format!("{key}: title from the file name")
                });
                f.eq(md["authors"][0].as_str(), Some(*author), || {
                    format!("{key}: author from the file name")
                });
            }
            Expect::Failed { kind, cause } => {
                let Some(r) = o.row(&key, f) else { continue };
                f.eq(
                    (r.state.as_str(), r.error_kind.as_deref()),
                    ("failed", Some(*kind)),
                    || format!("{key}: state and kind ({:?})", r.error),
                );
                let msg = r.error.as_deref().unwrap_or("");
                f.check(msg.contains(&name), || {
                    format!("{key}: the message must name the file: {msg:?}")
                });
                f.check(msg.to_lowercase().contains(&cause.to_lowercase()), || {
                    format!("{key}: the message must name the cause ({cause:?}): {msg:?}")
                });
                f.check(!msg.contains('\n'), || format!("{key}: one line: {msg:?}"));
                f.check(r.target_ref.is_none(), || {
                    format!("{key}: placed anyway: {r:?}")
                });
            }
            Expect::NotRecorded { cause } => {
                let under = format!("{key}/");
                let recorded: Vec<&String> = o
                    .rows
                    .keys()
                    .filter(|k| **k == key || k.starts_with(&under))
                    .collect();
                f.check(recorded.is_empty(), || {
                    format!("{key}: not a readable regular file, yet recorded: {recorded:?}")
                });
                f.check(
                    o.log
                        .lines()
                        .any(|l| l.contains(&name) && l.contains(cause)),
                    || format!("{key}: no log line naming it and {cause:?}"),
                );
            }
            Expect::Gone => {
                let Some(r) = o.row(&key, f) else { continue };
                f.eq(
                    (r.state.as_str(), r.skip_reason.as_deref()),
                    ("skipped", Some("source_gone")),
                    || format!("{key}: state and skip reason ({:?})", r.error),
                );
                f.check(r.target_ref.is_none(), || {
                    format!("{key}: placed anyway: {r:?}")
                });
                let detail = events_detail(o.ws, r.id);
                f.check(
                    detail.contains(&name) && detail.contains("source_gone"),
                    || format!("{key}: no event naming it as source_gone: {detail:?}"),
                );
            }
            Expect::Migrated => {
                let Some(r) = o.row(&key, f) else { continue };
                f.eq(r.state.as_str(), "uploaded", || format!("{key}: {r:?}"));
                let sha = sha1_of(&fs::read(lib.join(&p.rel)).unwrap());
                f.eq(o.placed_sha1(r), Some(sha), || {
                    format!("{key}: bytes at the target")
                });
            }
        }
    }
    f.check(!o.rows.keys().any(|k| k.contains("Inside Locked")), || {
        "a file inside an unreadable folder was recorded".into()
    });
}

fn non_utf8_name_migrated_and_noted(o: &Outcome, f: &mut Findings) {
    let odd = o
        .rows
        .iter()
        .find(|(k, _)| k.starts_with("bad/Caf") && k.contains("\\xFF\\xFE"));
    f.check(odd.is_some(), || {
        "the non-UTF-8 name was not recorded".into()
    });
    let Some((key, r)) = odd else { return };
    let noted = format!(
        "{} {}",
        r.warnings.as_deref().unwrap_or(""),
        events_detail(o.ws, r.id)
    )
    .to_lowercase();
    f.check(noted.contains("utf-8") || noted.contains("utf8"), || {
        format!("{key}: the row of a non-UTF-8 file name must note it (warnings or events): {r:?}")
    });
}

fn long_name_fits(o: &Outcome, f: &mut Findings) {
    for (key, r) in o
        .rows
        .iter()
        .filter(|(k, _)| k.ends_with("Long Author.txt"))
    {
        for comp in r.target_ref.as_deref().unwrap_or("").split('/') {
            f.check(comp.len() <= 255, || {
                format!("{key}: target component of {} bytes", comp.len())
            });
        }
    }
}

fn hostile_titles_land_inside_the_target(o: &Outcome, f: &mut Findings) {
    for (name, _, fragment) in HOSTILE_TITLES {
        let key = format!("bad/{name}");
        let Some(r) = o.row(&key, f) else { continue };
        // The hostile title was read from the EPUB, so the layout really met it.
        f.eq(r.origin.as_deref(), Some("embedded"), || {
            format!("{key}: metadata {:?}", r.metadata)
        });
        let tref = r.target_ref.as_deref().unwrap_or("");
        f.check(tref.contains(fragment), || {
            format!("{key}: the title should show in {tref:?}")
        });
        f.check(!tref.starts_with('/'), || {
            format!("{key}: absolute {tref:?}")
        });
        for comp in tref.split('/') {
            let stem = comp.split('.').next().unwrap_or("");
            f.check(
                !comp.is_empty()
                    && comp != "."
                    && comp != ".."
                    && !comp.chars().any(char::is_control)
                    && !stem.trim().eq_ignore_ascii_case("con"),
                || format!("{key}: unsafe component {comp:?} in {tref:?}"),
            );
        }
    }
}

fn nothing_escaped_the_target(
    o: &Outcome,
    outside_before: &BTreeSet<PathBuf>,
    escape_candidates: &[PathBuf],
    preexisting: &[bool],
    f: &mut Findings,
) {
    let ws = o.ws;
    let out = ws.out().canonicalize().unwrap();
    for (k, r) in o.rows.iter().filter(|(_, r)| r.state == "uploaded") {
        let t = ws.out().join(r.target_ref.as_deref().unwrap_or(""));
        match t.canonicalize() {
            Ok(c) => f.check(c.starts_with(&out) && c != out, || {
                format!("{k} landed at {}", c.display())
            }),
            Err(e) => f.check(false, || format!("{k}: {}: {e}", t.display())),
        }
    }
    let uploaded = o.rows.values().filter(|r| r.state == "uploaded").count();
    f.eq(o.target.len(), uploaded, || {
        format!("files in out/ vs uploaded rows: {:?}", o.target.keys())
    });
    f.check(
        !o.target.keys().any(|k| k.contains(".bookferry-tmp")),
        || "temp files left in out/".into(),
    );
    let mut after = list_tree(ws.path());
    after.retain(|p| {
        let first = p.components().next().unwrap().as_os_str().to_string_lossy();
        first != "out" && !(p.components().count() == 1 && first.starts_with("state.db"))
    });
    let mut want = outside_before.clone();
    want.remove(&Path::new("lib").join(&o.corpus.vanishing));
    let appeared: Vec<_> = after.difference(&want).collect();
    let vanished: Vec<_> = want.difference(&after).collect();
    f.check(appeared.is_empty() && vanished.is_empty(), || {
        format!("outside out/: appeared {appeared:?}, vanished {vanished:?}")
    });
    for (p, was) in escape_candidates.iter().zip(preexisting) {
        if !was {
            f.check(fs::symlink_metadata(p).is_err(), || {
                format!("{} appeared", p.display())
            });
        }
    }
}

fn changed_after_hashing_is_never_recorded_stale(
    o: &Outcome,
    changed: &[(&PathBuf, &Vec<u8>)],
    f: &mut Findings,
) {
    for (p, new) in changed {
        let key = source_ref(p);
        let Some(r) = o.row(&key, f) else { continue };
        let want = sha1_of(new);
        f.eq(r.state.as_str(), "uploaded", || format!("{key}: {r:?}"));
        f.eq(o.placed_sha1(r), Some(want), || {
            format!("{key}: the target must hold the new bytes")
        });
        f.eq(r.blake3.clone(), Some(blake3_of(new)), || {
            format!("{key}: the row must carry the BLAKE3 of the new bytes, not a stale one")
        });
    }
}

fn duplicates_placed_once(o: &Outcome, f: &mut Findings) {
    let [a, b] = &o.corpus.duplicates;
    let (Some(ra), Some(rb)) = (o.row(&source_ref(a), f), o.row(&source_ref(b), f)) else {
        return;
    };
    let mut states = [ra.state.as_str(), rb.state.as_str()];
    states.sort();
    f.eq(states, ["skipped", "uploaded"], || {
        format!("duplicates {ra:?} {rb:?}")
    });
    let (up, dup) = if ra.state == "uploaded" {
        (ra, rb)
    } else {
        (rb, ra)
    };
    f.eq(dup.skip_reason.as_deref(), Some("duplicate"), || {
        format!("{dup:?}")
    });
    f.eq(dup.duplicate_of, Some(up.id), || format!("{dup:?}"));
    let sha = sha1_file(&o.ws.lib().join(a));
    f.eq(o.target.values().filter(|s| **s == sha).count(), 1, || {
        "copies of the duplicated content in out/".into()
    });
}

fn colliding_layout_paths_both_placed(o: &Outcome, f: &mut Findings) {
    let mut refs = Vec::new();
    for c in &o.corpus.colliding {
        let key = source_ref(c);
        let Some(r) = o.row(&key, f) else { continue };
        f.eq(r.state.as_str(), "uploaded", || format!("{key}: {r:?}"));
        f.eq(
            o.placed_sha1(r),
            Some(sha1_file(&o.ws.lib().join(c))),
            || format!("{key}: bytes at {:?}", r.target_ref),
        );
        refs.extend(r.target_ref.clone());
    }
    refs.sort();
    f.eq(
        refs,
        vec![
            "Same Author/Same Title/Same Title - Same Author (2).epub".to_string(),
            "Same Author/Same Title/Same Title - Same Author.epub".to_string(),
        ],
        || "colliding layout paths".into(),
    );
}

fn state_db_adds_up(o: &Outcome, s: &Value, f: &mut Findings) {
    assert_status_adds_up(s);
    assert_event_histories_valid(o.ws);
    let mut failed: BTreeMap<&str, u64> = BTreeMap::new();
    for p in &o.corpus.planted {
        if let Expect::Failed { kind, .. } = p.expect {
            *failed.entry(kind).or_default() += 1;
        }
    }
    f.eq(
        s["states"]["failed"].as_u64(),
        Some(failed.values().sum::<u64>()),
        || format!("failed rows in {s}"),
    );
    for (kind, n) in failed {
        f.eq(s["failures"][kind].as_u64(), Some(n), || {
            format!("failures.{kind} in {s}")
        });
    }
}

/// Every event detail of a row, joined.
fn events_detail(ws: &Workspace, id: i64) -> String {
    let db = ws.db();
    let mut st = db
        .prepare("SELECT COALESCE(detail, '') FROM events WHERE file_id = ?1 ORDER BY id")
        .unwrap();
    let details: Vec<String> = st
        .query_map([id], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    details.join(" ")
}

/// Two files whose names differ only in bytes that are not UTF-8 (and a third whose name holds
/// the U+FFFD those bytes decode to) are three books: all three migrate, and the scan of the
/// rest of the library is not disturbed.
#[test]
fn look_alike_non_utf8_names_are_three_books_and_all_migrate() {
    let ws = Workspace::empty();
    let lib = ws.lib();
    let names: [&[u8]; 3] = [
        b"Twin\xfe - Odd Author.txt",
        b"Twin\xff - Odd Author.txt",
        "Twin\u{FFFD} - Odd Author.txt".as_bytes(),
    ];
    for (i, n) in names.iter().enumerate() {
        fs::write(lib.join(OsStr::from_bytes(n)), format!("twin {i}")).unwrap();
    }
    fs::write(lib.join("Plain - Some Author.txt"), "plain").unwrap();
    let out = ws.migrate(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let t = ws.target_files();
    let want: BTreeSet<String> = (0..3)
        .map(|i| sha1_of(format!("twin {i}").as_bytes()))
        .chain([sha1_of(b"plain")])
        .collect();
    let got: BTreeSet<String> = t.values().cloned().collect();
    assert_eq!(got, want, "every look-alike placed: {t:?}");
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM files WHERE state = 'uploaded'"),
        4
    );
}

// ---------------------------------------------------------------------------------------------
// Bad command lines

/// Bidi controls (U+202A–U+202E, U+2066–U+2069, U+200E/U+200F, U+061C) and zero-width
/// characters (U+200B–U+200D, U+2060, U+FEFF) in a title and an author (from an EPUB's OPF and
/// from a file name) never reach a name in the target; the books still arrive, byte for byte.
#[test]
fn bidi_controls_and_zero_width_characters_never_reach_a_target_name() {
    let ws = Workspace::empty();
    let lib = ws.lib();
    let invisible = "\u{202A}\u{202B}\u{202C}\u{202D}\u{202E}\u{2066}\u{2067}\u{2068}\u{2069}\u{200E}\u{200F}\u{061C}\u{200B}\u{200C}\u{200D}\u{2060}\u{FEFF}";
    let epub = good_epub(
        &format!("Evil{invisible}bup.exe"),
        &format!("Ann{invisible} Author"),
        "bidi",
    );
    fs::write(lib.join("Reversed.epub"), &epub).unwrap();
    fs::write(
        lib.join(format!(
            "Name\u{202E}txt.exe{invisible} - Bo\u{200B} Writer.txt"
        )),
        "from the name",
    )
    .unwrap();
    let out = ws.migrate(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let placed = ws.target_files();
    let names: Vec<&String> = placed.keys().collect();
    for name in &names {
        let bad: Vec<String> = name
            .chars()
            .filter(|c| invisible.contains(*c))
            .map(|c| format!("U+{:04X}", c as u32))
            .collect();
        assert!(bad.is_empty(), "{name:?} holds {bad:?}");
    }
    // (The EPUB's parser reads some of them as spaces, which the name keeps.)
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("Ann Author/Evil") && n.ends_with(" - Ann Author.epub")),
        "{names:?}"
    );
    assert!(
        placed.contains_key("Bo Writer/Nametxt.exe/Nametxt.exe - Bo Writer.txt"),
        "{names:?}"
    );
    let want: BTreeSet<String> = [sha1_of(&epub), sha1_of(b"from the name")].into();
    assert_eq!(placed.values().cloned().collect::<BTreeSet<_>>(), want);
}

/// A `--layout` with a `..` folder, or whose file name has no `.{ext}`, is refused before
/// anything is made (exit 2, the message says why; no state DB, no target); before, both were
/// accepted and the first silently dropped its `..`.
#[test]
fn a_layout_leading_out_of_the_target_or_without_an_extension_is_refused_before_anything_is_made() {
    let ws = Workspace::empty();
    fs::write(ws.lib().join("Dune - Frank Herbert.txt"), "dune").unwrap();
    for (layout, says) in [
        ("../{title}.{ext}", "`..`"),
        ("{author}/../../{title}.{ext}", "`..`"),
        ("{author}/{title}", ".{ext}"),
    ] {
        let out = ws.migrate(&["--layout", layout]);
        assert_eq!(out.status.code(), Some(2), "{layout}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{layout}: {}", stderr(&out));
        assert!(!ws.state().exists(), "{layout}: a state DB was made");
        assert!(!ws.out().exists(), "{layout}: the target was made");
    }
    assert!(!ws.path().join("Dune.txt").exists());
}

/// A path of the workspace whose last name holds bytes that are not UTF-8.
fn odd_path(ws: &Workspace, name: &[u8]) -> PathBuf {
    ws.path().join(OsStr::from_bytes(name))
}

/// The newest run record's arguments, as stored.
fn last_arguments(state: &Path) -> String {
    rusqlite::Connection::open(state)
        .unwrap()
        .query_row(
            "SELECT arguments FROM runs ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

/// Paths that are not UTF-8 in `--state`, `--log-file`, `--token-file`, `--from` and `--to`
/// work: the run migrates, `runs.arguments` and the recorded migration hold the bytes escaped
/// as `source_ref` escapes them (`\xFF`), and a plain `run` resumes the recorded migration from
/// them. Before, `std::env::args()` panicked (exit 101) after the state DB and its lock were
/// made.
#[test]
fn paths_that_are_not_utf8_work_and_are_recorded_escaped() {
    let ws = Workspace::empty();
    let lib = odd_path(&ws, b"lib\xff");
    let out = odd_path(&ws, b"out\xfe");
    let state = odd_path(&ws, b"state\xfd.db");
    let log = odd_path(&ws, b"log\xfc.txt");
    let token = odd_path(&ws, b"token\xfb");
    fs::create_dir(&lib).unwrap();
    fs::write(lib.join("Dune - Frank Herbert.txt"), "dune").unwrap();
    fs::write(&token, "not-used-by-a-folder").unwrap();
    fs::set_permissions(&token, fs::Permissions::from_mode(0o600)).unwrap();
    let bookferry = |args: &[&OsStr]| {
        Command::new(bin())
            .current_dir(ws.path())
            .env_remove("BOOKFERRY_STATE")
            .env_remove("BOOKFERRY_TOKEN")
            .arg("--state")
            .arg(&state)
            .args(args)
            .output()
            .unwrap()
    };
    // Only the state DB's path is odd: this panicked in `std::env::args()` (exit 101).
    let plain = ws.path().join("plain");
    fs::create_dir(&plain).unwrap();
    fs::write(plain.join("Plain - Some Author.txt"), "plain").unwrap();
    let other_state = odd_path(&ws, b"other\xfa.db");
    let first = Command::new(bin())
        .env_remove("BOOKFERRY_STATE")
        .arg("--state")
        .arg(&other_state)
        .args(["scan", "--from"])
        .arg(&plain)
        .output()
        .unwrap();
    assert_eq!(
        first.status.code(),
        Some(0),
        "odd --state: {}",
        stderr(&first)
    );
    assert!(
        last_arguments(&other_state).contains(r#"other\\xFA.db"#),
        "{}",
        last_arguments(&other_state)
    );

    let scan = bookferry(&[OsStr::new("scan"), OsStr::new("--from"), lib.as_os_str()]);
    assert_eq!(scan.status.code(), Some(0), "scan: {}", stderr(&scan));
    let run = bookferry(&[
        OsStr::new("--log-file"),
        log.as_os_str(),
        OsStr::new("run"),
        OsStr::new("--from"),
        lib.as_os_str(),
        OsStr::new("--to"),
        out.as_os_str(),
        OsStr::new("--token-file"),
        token.as_os_str(),
    ]);
    assert_eq!(run.status.code(), Some(0), "run: {}", stderr(&run));
    assert!(out
        .join("Frank Herbert/Dune/Dune - Frank Herbert.txt")
        .is_file());
    assert!(
        fs::metadata(&log).unwrap().len() > 0,
        "the log file was written"
    );

    let args: Vec<String> = serde_json::from_str(&last_arguments(&state)).unwrap();
    let escaped = |p: &Path| source_ref(p);
    for (flag, p) in [
        ("--state", &state),
        ("--log-file", &log),
        ("--from", &lib),
        ("--to", &out),
        ("--token-file", &token),
    ] {
        let i = args.iter().position(|a| a == flag).expect(flag);
        assert_eq!(args[i + 1], escaped(p), "{flag} in {args:?}");
    }
    let (source, target): (String, String) = rusqlite::Connection::open(&state)
        .unwrap()
        .query_row("SELECT source, target FROM migration", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(
        source,
        format!("dir:{}", escaped(&lib.canonicalize().unwrap()))
    );
    assert_eq!(
        target,
        format!("dir:{}", escaped(&out.canonicalize().unwrap()))
    );
    assert!(source.ends_with("lib\\xFF"), "{source}");

    // The recorded migration resumes from those escaped paths: a new file arrives.
    fs::write(lib.join("Emma - Jane Austen.txt"), "emma").unwrap();
    let again = bookferry(&[OsStr::new("run")]);
    assert_eq!(again.status.code(), Some(0), "resume: {}", stderr(&again));
    assert!(out
        .join("Jane Austen/Emma/Emma - Jane Austen.txt")
        .is_file());
    let status = bookferry(&[OsStr::new("status")]);
    assert_eq!(status.status.code(), Some(0), "status: {}", stderr(&status));
}

/// `--formats` takes any extension (m4b, lrf, azw4 are real): a name that matches no file is
/// warned about, by name; when nothing at all matches, `run` and `scan` exit 2 listing the
/// formats the source does have, record no row and leave the state DB bound to no migration
/// (so the corrected command, or another migration, may use it). Before, `--formats epbu`
/// reported "0 files seen" and exited 0.
#[test]
fn formats_that_match_nothing_are_named_and_matching_nothing_at_all_exits_2() {
    let ws = Workspace::empty();
    let lib = ws.lib();
    fs::write(
        lib.join("Dune - Frank Herbert.epub"),
        good_epub("Dune", "Frank Herbert", "d"),
    )
    .unwrap();
    fs::write(
        lib.join("Emma - Jane Austen.epub"),
        good_epub("Emma", "Jane Austen", "e"),
    )
    .unwrap();
    fs::write(lib.join("Notes - Ann Author.txt"), "notes").unwrap();
    fs::write(lib.join("README"), "no extension").unwrap();
    for args in [
        vec!["scan", "--from", lib.to_str().unwrap(), "--formats", "epbu"],
        vec![
            "run",
            "--from",
            lib.to_str().unwrap(),
            "--to",
            ws.out().to_str().unwrap(),
            "--formats",
            "epbu,m4b",
        ],
    ] {
        let out = ws.run(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        for said in ["epbu", "epub (2)", "txt (1)", "no extension (1)"] {
            assert!(err.contains(said), "{args:?}: {said:?} not in {err}");
        }
        assert_eq!(count_or_zero(&ws.state(), "SELECT COUNT(*) FROM files"), 0);
        assert_eq!(
            count_or_zero(&ws.state(), "SELECT COUNT(*) FROM migration"),
            0
        );
    }
    let out = ws.migrate(&["--formats", "epub,m4b,lrf"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    for named in ["\"m4b\"", "\"lrf\""] {
        assert!(
            err.lines().any(|l| l.contains("WARN") && l.contains(named)),
            "no warning naming {named}: {err}"
        );
    }
    assert!(
        !err.lines()
            .any(|l| l.contains("WARN") && l.contains("\"epub\"")),
        "{err}"
    );
    assert_eq!(
        ws.count("SELECT COUNT(*) FROM files WHERE state = 'uploaded'"),
        2
    );
}
