//! PDF: the Info dictionary (Title, Author, Subject, Keywords, CreationDate) and the XMP
//! metadata stream, found by reading only what is needed through a `Source`: the tail
//! (`startxref`), the cross-reference sections (classic tables, PDF 1.5 xref streams,
//! hybrid files, `/Prev` chains), then the Info object, the catalog and its `/Metadata`
//! stream, each by offset. When that chain is broken the file's head and tail (bounded) are
//! scanned for `N G obj` definitions instead. Encrypted files: strings are not decrypted and
//! are skipped; an unencrypted XMP packet is still read.

use super::pdfobj::{decode_stream, text_string, Dict, Obj, Parser};
use super::source::Source;
use super::{xmp, Metadata};
use std::collections::{HashMap, HashSet};

/// Bytes read from the end to find `startxref`.
const TAIL: usize = 8 * 1024;
/// Window read for one object, grown once if too small.
const OBJ_WINDOW: usize = 16 * 1024;
const OBJ_WINDOW_MAX: usize = 1 << 20;
/// Largest stream (raw or decoded) we read: XMP packets, xref and object streams.
const STREAM_CAP: usize = 16 << 20;
/// Head and tail scanned when the xref chain is broken.
const SCAN_WINDOW: u64 = 4 << 20;
const MAX_SECTIONS: usize = 64;
const MAX_OBJECT_LOADS: usize = 256;
/// Total stream bytes (raw read + decoded) one file may cost.
const STREAM_BUDGET: usize = 64 << 20;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Loc {
    Offset(u64),
    InStream(u32, u32),
    Free,
}

/// One cross-reference section: a classic table (entries read lazily by offset) or a decoded
/// xref stream.
enum Section {
    Table {
        subsections: Vec<(u32, u32, u64)>,
    },
    Stream {
        w: [usize; 3],
        index: Vec<(u32, u32)>,
        data: Vec<u8>,
    },
}

/// A decoded object stream: its data and (object number, offset in data) pairs.
type ObjStm = (Vec<u8>, Vec<(u32, usize)>);

struct Doc<'s> {
    src: &'s mut dyn Source,
    sections: Vec<Section>,
    trailers: Vec<Dict>,
    scanned: HashMap<u32, u64>,
    objstm_cache: HashMap<u32, ObjStm>,
    loads: usize,
    stream_budget: usize,
    warnings: Vec<String>,
    /// An XMP packet found as plain text by the scan.
    bare_xmp: Option<Vec<u8>>,
    /// Scanned objects whose text mentions /Title or /Author (Info candidates).
    info_candidates: Vec<u32>,
}

pub fn read(src: &mut dyn Source, md: &mut Metadata, warnings: &mut Vec<String>) {
    let head = match src.read_at(0, 1024) {
        Ok(h) => h,
        Err(e) => {
            warnings.push(format!("PDF unreadable: {e}"));
            return;
        }
    };
    if !head.windows(5).any(|w| w == b"%PDF-") {
        warnings.push("not a PDF (no %PDF- header)".into());
    }
    let mut doc = Doc {
        src,
        sections: Vec::new(),
        trailers: Vec::new(),
        scanned: HashMap::new(),
        objstm_cache: HashMap::new(),
        loads: 0,
        stream_budget: STREAM_BUDGET,
        warnings: Vec::new(),
        bare_xmp: None,
        info_candidates: Vec::new(),
    };
    let chain_ok = doc.load_xref_chain();
    if !chain_ok || doc.trailer_ref("Info").is_none() && doc.trailer_ref("Root").is_none() {
        if chain_ok {
            doc.warnings
                .push("PDF trailer names neither /Info nor /Root: scanning".into());
        }
        doc.scan();
    }
    let found = doc.read_metadata(md);
    if !found && doc.scanned.is_empty() {
        // The xref chain looked fine but led nowhere: try the scan once.
        doc.warnings
            .push("PDF objects not found through the xref: scanning".into());
        doc.scan();
        doc.loads = 0;
        doc.read_metadata(md);
    }
    warnings.append(&mut doc.warnings);
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

impl Doc<'_> {
    fn read(&mut self, off: u64, len: usize) -> Vec<u8> {
        match self.src.read_at(off, len) {
            Ok(b) => b,
            Err(e) => {
                self.warnings.push(format!("PDF read error at {off}: {e}"));
                Vec::new()
            }
        }
    }

    fn trailer_ref(&self, key: &str) -> Option<u32> {
        self.trailers.iter().find_map(|t| t.reference(key))
    }

    fn encrypted(&self) -> bool {
        self.trailers
            .iter()
            .any(|t| t.get("Encrypt").is_some_and(|e| *e != Obj::Null))
    }

    /// Follow startxref and the /Prev chain. False when the chain is unusable.
    fn load_xref_chain(&mut self) -> bool {
        let len = self.src.len();
        let tail_at = len.saturating_sub(TAIL as u64);
        let tail = self.read(tail_at, TAIL);
        let Some(i) = rfind(&tail, b"startxref") else {
            self.warnings.push("PDF without startxref: scanning".into());
            return false;
        };
        let mut p = Parser::new(&tail, i + 9);
        let Some(mut next) = p.uint() else {
            self.warnings
                .push("PDF startxref without an offset: scanning".into());
            return false;
        };
        let mut seen = HashSet::new();
        while seen.insert(next) && self.sections.len() < MAX_SECTIONS {
            let Some(trailer) = self.load_section(next) else {
                self.warnings
                    .push(format!("PDF xref at {next} unreadable: scanning"));
                return false;
            };
            if let Some(x) = trailer.int("XRefStm").and_then(|x| u64::try_from(x).ok()) {
                if seen.insert(x) && self.load_section(x).is_none() {
                    self.warnings
                        .push(format!("PDF hybrid xref stream at {x} unreadable"));
                }
            }
            let prev = trailer.int("Prev").and_then(|x| u64::try_from(x).ok());
            self.trailers.push(trailer);
            match prev {
                Some(p) => next = p,
                None => break,
            }
        }
        !self.sections.is_empty()
    }

    /// Load the xref section at `off`; returns its trailer dictionary.
    fn load_section(&mut self, off: u64) -> Option<Dict> {
        let buf = self.read(off, 1024);
        let mut p = Parser::new(&buf, 0);
        if p.eat_keyword(b"xref") {
            self.load_table(off + p.pos as u64)
        } else {
            let (dict, data) = self.stream_at(off, None)?;
            if dict.name("Type") != Some("XRef") {
                return None;
            }
            let w: Vec<usize> = match dict.get("W") {
                Some(Obj::Array(a)) => a
                    .iter()
                    .map(|o| o.as_int().unwrap_or(0).clamp(0, 8) as usize)
                    .collect(),
                _ => return None,
            };
            let w = [*w.first()?, *w.get(1)?, *w.get(2)?];
            let size = u32::try_from(dict.int("Size")?).ok()?;
            let index = match dict.get("Index") {
                Some(Obj::Array(a)) => a
                    .chunks(2)
                    .filter_map(|c| {
                        Some((
                            u32::try_from(c.first()?.as_int()?).ok()?,
                            u32::try_from(c.get(1)?.as_int()?).ok()?,
                        ))
                    })
                    .collect(),
                _ => vec![(0, size)],
            };
            self.sections.push(Section::Stream { w, index, data });
            Some(dict)
        }
    }

    /// A classic table starting right after the `xref` keyword at `pos`.
    fn load_table(&mut self, mut pos: u64) -> Option<Dict> {
        let mut subsections = Vec::new();
        for _ in 0..10_000 {
            let buf = self.read(pos, 256);
            let mut p = Parser::new(&buf, 0);
            if p.eat_keyword(b"trailer") {
                let at = pos + p.pos as u64;
                let buf = self.read(at, OBJ_WINDOW);
                let trailer = Parser::new(&buf, 0)
                    .object()
                    .and_then(|o| o.as_dict().cloned())?;
                self.sections.push(Section::Table { subsections });
                return Some(trailer);
            }
            let start = u32::try_from(p.uint()?).ok()?;
            let count = u32::try_from(p.uint()?).ok()?;
            p.skip_ws();
            let entries = pos + p.pos as u64;
            subsections.push((start, count, entries));
            pos = entries + u64::from(count) * 20;
        }
        None
    }

    fn lookup(&mut self, num: u32) -> Option<Loc> {
        if let Some(o) = self.scanned.get(&num) {
            return Some(Loc::Offset(*o));
        }
        let mut reads = Vec::new();
        for (si, s) in self.sections.iter().enumerate() {
            match s {
                Section::Table { subsections } => {
                    if let Some((start, _, at)) = subsections
                        .iter()
                        .find(|(st, c, _)| num >= *st && num - st < *c)
                    {
                        reads.push((si, at + u64::from(num - start) * 20));
                    }
                }
                Section::Stream { w, index, data } => {
                    let row = w[0] + w[1] + w[2];
                    let mut base = 0usize;
                    for (st, c) in index {
                        if num >= *st && num - st < *c {
                            let r = (base + (num - st) as usize) * row;
                            let Some(bytes) = data.get(r..r + row) else {
                                break;
                            };
                            let field = |from: usize, n: usize| {
                                bytes[from..from + n]
                                    .iter()
                                    .fold(0u64, |a, b| a << 8 | u64::from(*b))
                            };
                            let kind = if w[0] == 0 { 1 } else { field(0, w[0]) };
                            let f2 = field(w[0], w[1]);
                            let f3 = field(w[0] + w[1], w[2]);
                            return match kind {
                                0 => Some(Loc::Free),
                                1 => Some(Loc::Offset(f2)),
                                2 => Some(Loc::InStream(
                                    u32::try_from(f2).ok()?,
                                    u32::try_from(f3).ok()?,
                                )),
                                _ => None,
                            };
                        }
                        base += *c as usize;
                    }
                }
            }
            // Classic entries are read below, in section order; stop at the first section
            // that has the object.
            if !reads.is_empty() {
                break;
            }
        }
        let (_, at) = reads.first().copied()?;
        let e = self.read(at, 20);
        let mut p = Parser::new(&e, 0);
        let off = p.uint()?;
        p.uint()?;
        if p.eat_keyword(b"n") {
            Some(Loc::Offset(off))
        } else if p.eat_keyword(b"f") {
            Some(Loc::Free)
        } else {
            None
        }
    }

    /// The object `num`, resolved through the xref (or the scan).
    fn object(&mut self, num: u32) -> Option<Obj> {
        self.loads += 1;
        if self.loads > MAX_OBJECT_LOADS {
            return None;
        }
        match self.lookup(num)? {
            Loc::Offset(off) => {
                for window in [OBJ_WINDOW, OBJ_WINDOW_MAX] {
                    let buf = self.read(off, window);
                    let mut p = Parser::new(&buf, 0);
                    if p.obj_header() != Some(num) {
                        return None;
                    }
                    if let Some(o) = p.object() {
                        return Some(o);
                    }
                    if buf.len() < window {
                        return None;
                    }
                }
                None
            }
            Loc::InStream(stm, idx) => self.object_in_stream(stm, idx, num),
            Loc::Free => None,
        }
    }

    fn object_in_stream(&mut self, stm: u32, idx: u32, num: u32) -> Option<Obj> {
        if !self.objstm_cache.contains_key(&stm) {
            let Loc::Offset(off) = self.lookup(stm)? else {
                return None;
            };
            let (dict, data) = self.stream_at(off, Some(stm))?;
            let n = dict.int("N").unwrap_or(0).clamp(0, 1_000_000) as usize;
            let first = usize::try_from(dict.int("First")?).ok()?;
            let mut p = Parser::new(&data, 0);
            let mut offsets = Vec::new();
            for _ in 0..n {
                let (Some(o), Some(at)) = (p.uint(), p.uint()) else {
                    break;
                };
                offsets.push((
                    u32::try_from(o).ok()?,
                    first.saturating_add(usize::try_from(at).ok()?),
                ));
            }
            self.objstm_cache.insert(stm, (data, offsets));
        }
        let (data, offsets) = self.objstm_cache.get(&stm)?;
        let at = offsets
            .get(idx as usize)
            .filter(|(o, _)| *o == num)
            .or_else(|| offsets.iter().find(|(o, _)| *o == num))?
            .1;
        Parser::new(data, at).object()
    }

    /// Parse `N G obj << dict >> stream … endstream` at `off`; decoded data (capped).
    fn stream_at(&mut self, off: u64, expect: Option<u32>) -> Option<(Dict, Vec<u8>)> {
        let buf = self.read(off, OBJ_WINDOW);
        let mut p = Parser::new(&buf, 0);
        let n = p.obj_header()?;
        if expect.is_some_and(|e| e != n) {
            return None;
        }
        let dict = p.object()?.as_dict()?.clone();
        if !p.eat_keyword(b"stream") {
            return None;
        }
        // The data starts after CRLF or LF.
        if buf.get(p.pos) == Some(&b'\r') {
            p.pos += 1;
        }
        if buf.get(p.pos) == Some(&b'\n') {
            p.pos += 1;
        }
        let data_at = off + p.pos as u64;
        let length = match dict.get("Length") {
            Some(Obj::Int(l)) => usize::try_from(*l).ok(),
            Some(Obj::Ref(r, _)) if Some(*r) != expect => self
                .object(*r)
                .and_then(|o| o.as_int())
                .and_then(|l| usize::try_from(l).ok()),
            _ => None,
        };
        let raw = match length {
            Some(l) if l <= STREAM_CAP => self.read(data_at, l),
            _ => {
                // Unknown length: up to `endstream`.
                let raw = self.read(data_at, STREAM_CAP);
                let end = find(&raw, b"endstream").unwrap_or(raw.len());
                raw[..end].to_vec()
            }
        };
        let cap = STREAM_CAP.min(self.stream_budget.saturating_sub(raw.len()));
        if cap == 0 {
            self.warnings.push("PDF stream budget exhausted".into());
            return None;
        }
        let data = decode_stream(&dict, &raw, cap)?;
        self.stream_budget = self.stream_budget.saturating_sub(raw.len() + data.len());
        Some((dict, data))
    }

    /// Scan the head and tail of the file for object definitions and trailers.
    fn scan(&mut self) {
        let len = self.src.len();
        let windows: Vec<(u64, usize)> = if len <= 2 * SCAN_WINDOW {
            vec![(0, len as usize)]
        } else {
            vec![
                (0, SCAN_WINDOW as usize),
                (len - SCAN_WINDOW, SCAN_WINDOW as usize),
            ]
        };
        for (base, size) in windows {
            let buf = self.read(base, size);
            let mut i = 0;
            while let Some(k) = find(&buf[i..], b"obj") {
                let at = i + k;
                i = at + 3;
                // Walk back over "N G " before "obj".
                let mut s = at;
                let mut fields = 0;
                while fields < 2 && s > 0 {
                    while s > 0
                        && (buf[s - 1] == b' ' || buf[s - 1] == b'\r' || buf[s - 1] == b'\n')
                    {
                        s -= 1;
                    }
                    let end = s;
                    while s > 0 && buf[s - 1].is_ascii_digit() {
                        s -= 1;
                    }
                    if s == end {
                        break;
                    }
                    fields += 1;
                }
                if fields == 2 {
                    let mut p = Parser::new(&buf, s);
                    if let Some(n) = p.obj_header() {
                        self.scanned.insert(n, base + s as u64);
                        let body = &buf[p.pos..buf.len().min(p.pos + 4096)];
                        let body = &body[..find(body, b"endobj").unwrap_or(body.len())];
                        if find(body, b"/Title").is_some() || find(body, b"/Author").is_some() {
                            self.info_candidates.push(n);
                        }
                        // An xref stream carries the trailer keys.
                        if find(body, b"/XRef").is_some() {
                            if let Some(Obj::Dict(d)) = p.object() {
                                if d.name("Type") == Some("XRef") {
                                    self.trailers.insert(0, d);
                                }
                            }
                        }
                    }
                }
            }
            let mut i = 0;
            while let Some(k) = find(&buf[i..], b"trailer") {
                let at = i + k + 7;
                i = at;
                if let Some(Obj::Dict(d)) = Parser::new(&buf, at).object() {
                    self.trailers.insert(0, d);
                }
            }
            // A bare XMP packet in the scanned bytes.
            if self.trailer_ref("Root").is_none() {
                if let (Some(s), Some(e)) = (find(&buf, b"<x:xmpmeta"), find(&buf, b"</x:xmpmeta>"))
                {
                    if s < e {
                        self.bare_xmp = Some(buf[s..e + 12].to_vec());
                    }
                }
            }
        }
        if self.trailer_ref("Info").is_none() {
            // No trailer: a scanned dictionary that looks like an Info dictionary.
            for n in std::mem::take(&mut self.info_candidates)
                .into_iter()
                .take(32)
            {
                if let Some(Obj::Dict(d)) = self.object(n) {
                    if d.get("Type").is_none() {
                        self.trailers
                            .push(Dict(vec![("Info".into(), Obj::Ref(n, 0))]));
                        break;
                    }
                }
            }
            self.loads = 0;
        }
    }

    /// Resolve a value that may be an indirect reference.
    fn resolve(&mut self, o: Option<&Obj>) -> Option<Obj> {
        match o? {
            Obj::Ref(n, _) => self.object(*n),
            other => Some(other.clone()),
        }
    }

    /// Apply Info and XMP to `md`. True when the Info or catalog object was found.
    fn read_metadata(&mut self, md: &mut Metadata) -> bool {
        let encrypted = self.encrypted();
        let mut found = false;
        let info = self.trailers.iter().find_map(|t| t.get("Info").cloned());
        if let Some(Obj::Dict(info)) = self.resolve(info.as_ref()) {
            found = true;
            if encrypted {
                self.warnings
                    .push("encrypted PDF: Info strings not decrypted, skipped".into());
            } else {
                self.apply_info(&info, md);
            }
        }
        let root = self.trailer_ref("Root");
        let catalog = root.and_then(|r| self.object(r));
        if let Some(Obj::Dict(cat)) = catalog {
            found = true;
            if let Some(m) = cat.reference("Metadata") {
                if let Some(Loc::Offset(off)) = self.lookup(m) {
                    match self.stream_at(off, Some(m)) {
                        Some((_, data)) if xmp::looks_like_xmp(&data) => {
                            xmp::read(&data, md, &mut self.warnings)
                        }
                        Some(_) if encrypted => self
                            .warnings
                            .push("encrypted PDF: XMP stream not readable".into()),
                        Some(_) => self.warnings.push("PDF /Metadata stream is not XMP".into()),
                        None => self.warnings.push("PDF /Metadata stream unreadable".into()),
                    }
                }
            }
        } else if let Some(x) = self.bare_xmp.take() {
            xmp::read(&x, md, &mut self.warnings);
        }
        found
    }

    fn apply_info(&mut self, info: &Dict, md: &mut Metadata) {
        let mut get = |key: &str| -> Option<String> {
            match self.resolve(info.get(key))? {
                Obj::Str(s) => Some(text_string(&s)),
                _ => None,
            }
        };
        md.title = get("Title").filter(|t| !t.trim().is_empty());
        md.authors = get("Author").into_iter().collect();
        md.description = get("Subject");
        if let Some(k) = get("Keywords") {
            md.tags = k.split([',', ';']).map(str::to_string).collect();
        }
        md.pubdate = get("CreationDate");
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::source::{FileSource, SliceSource};
    use std::io::Write;

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("write");
        e.finish().expect("finish")
    }

    /// A classic-xref PDF with the given Info dictionary body, optional XMP packet (as a
    /// FlateDecode stream) and `pad` bytes of filler stream.
    pub fn build(info: &[u8], xmp: Option<&str>, pad: usize) -> Vec<u8> {
        let mut objs: Vec<Vec<u8>> = vec![
            b"<< /Type /Catalog /Pages 2 0 R /Metadata 5 0 R >>".to_vec(),
            b"<< /Type /Pages /Kids [] /Count 0 >>".to_vec(),
        ];
        let mut filler = format!("<< /Length {pad} >>\nstream\n").into_bytes();
        filler.extend(std::iter::repeat_n(b'x', pad));
        filler.extend_from_slice(b"\nendstream");
        objs.push(filler);
        let mut i = b"<< ".to_vec();
        i.extend_from_slice(info);
        i.extend_from_slice(b" >>");
        objs.push(i);
        let z = zlib(xmp.unwrap_or("").as_bytes());
        let mut m = format!(
            "<< /Type /Metadata /Subtype /XML /Filter /FlateDecode /Length {} >>\nstream\n",
            z.len()
        )
        .into_bytes();
        m.extend_from_slice(&z);
        m.extend_from_slice(b"\nendstream");
        objs.push(m);
        let mut out = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec();
        let mut offs = Vec::new();
        for (n, o) in objs.iter().enumerate() {
            offs.push(out.len());
            out.extend_from_slice(format!("{} 0 obj\n", n + 1).as_bytes());
            out.extend_from_slice(o);
            out.extend_from_slice(b"\nendobj\n");
        }
        let x = out.len();
        out.extend_from_slice(
            format!("xref\n0 {}\n0000000000 65535 f \n", objs.len() + 1).as_bytes(),
        );
        for o in offs {
            out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
        }
        out.extend_from_slice(
            format!(
                "trailer\n<< /Size {} /Root 1 0 R /Info 4 0 R >>\nstartxref\n{x}\n%%EOF\n",
                objs.len() + 1
            )
            .as_bytes(),
        );
        out
    }

    fn run(data: &[u8]) -> (Metadata, Vec<String>, u64) {
        let (mut md, mut w) = (Metadata::default(), Vec::new());
        let mut src = SliceSource::new(data);
        read(&mut src, &mut md, &mut w);
        (md, w, src.bytes_read())
    }

    const INFO: &[u8] = b"/Title (Caf\\351 \\(1\\)) /Author <FEFF00C90063006F> /Subject (About) /Keywords (a, b) /CreationDate (D:19651124120000Z)";

    #[test]
    fn info_dictionary_through_the_xref() {
        let (md, w, _) = run(&build(INFO, None, 10));
        assert_eq!(md.title.as_deref(), Some("Café (1)"));
        assert_eq!(md.authors, vec!["Éco"]);
        assert_eq!(md.description.as_deref(), Some("About"));
        assert_eq!(md.tags, vec!["a", " b"]);
        assert_eq!(md.pubdate.as_deref(), Some("D:19651124120000Z"));
        assert!(w.iter().all(|w| w.contains("not XMP")), "{w:?}");
    }

    #[test]
    fn xmp_overrides_info() {
        let x = r#"<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="r"><rdf:Description xmlns:dc="d"><dc:title><rdf:Alt><rdf:li xml:lang="x-default">XMP Title</rdf:li></rdf:Alt></dc:title><dc:creator><rdf:Seq><rdf:li>X One</rdf:li></rdf:Seq></dc:creator></rdf:Description></rdf:RDF></x:xmpmeta>"#;
        let (md, w, _) = run(&build(INFO, Some(x), 10));
        assert_eq!(md.title.as_deref(), Some("XMP Title"));
        assert_eq!(md.authors, vec!["X One"]);
        assert_eq!(md.description.as_deref(), Some("About"));
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn broken_xref_falls_back_to_scanning() {
        let mut pdf = build(INFO, None, 10);
        // Shift every object by 7 bytes: the xref offsets are all wrong now.
        pdf.splice(15..15, b"garbage".iter().copied());
        let (md, w, _) = run(&pdf);
        assert_eq!(md.title.as_deref(), Some("Café (1)"));
        assert!(w.iter().any(|w| w.contains("scanning")), "{w:?}");
        // No startxref, no trailer at all.
        let cut = pdf.windows(4).rposition(|w| w == b"xref").expect("xref");
        let (md, _, _) = run(&pdf[..cut - 1]);
        assert_eq!(md.title.as_deref(), Some("Café (1)"));
    }

    #[test]
    fn encrypted_info_strings_are_skipped() {
        let mut pdf = build(INFO, None, 10);
        let t = pdf
            .windows(7)
            .rposition(|w| w == b"/Info 4")
            .expect("trailer");
        pdf.splice(t..t, b"/Encrypt << /Filter /Standard >> ".iter().copied());
        let (md, w, _) = run(&pdf);
        assert_eq!(md.title, None);
        assert!(w.iter().any(|w| w.contains("encrypted")));
    }

    /// PDF 1.5: Info and catalog inside a compressed object stream, an xref stream with a PNG
    /// Up predictor.
    #[test]
    fn xref_stream_and_object_stream() {
        let x = r#"<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="r"><rdf:Description xmlns:calibre="c" xmlns:calibreSI="s"><calibre:series rdf:parseType="Resource"><rdf:value>Shelf</rdf:value><calibreSI:series_index>4</calibreSI:series_index></calibre:series></rdf:Description></rdf:RDF></x:xmpmeta>"#;
        let inner: [&[u8]; 3] = [
            b"<< /Type /Catalog /Metadata 4 0 R >>",
            b"<< /Type /Pages /Count 0 >>",
            b"<< /Title (In Stream) /Author (S. Writer) >>",
        ];
        let mut header = String::new();
        let mut body = Vec::new();
        for (i, o) in inner.iter().enumerate() {
            header.push_str(&format!("{} {} ", i + 1, body.len()));
            body.extend_from_slice(o);
            body.push(b' ');
        }
        let mut objstm_data = header.clone().into_bytes();
        objstm_data.extend_from_slice(&body);
        let z = zlib(&objstm_data);
        let mut out = b"%PDF-1.5\n".to_vec();
        let mut offs = [0usize; 7];
        offs[4] = out.len();
        out.extend_from_slice(
            format!(
                "4 0 obj\n<< /Type /Metadata /Length {} >>\nstream\n{x}\nendstream\nendobj\n",
                x.len()
            )
            .as_bytes(),
        );
        offs[5] = out.len();
        out.extend_from_slice(format!("5 0 obj\n<< /Type /ObjStm /N 3 /First {} /Filter /FlateDecode /Length {} >>\nstream\n", header.len(), z.len()).as_bytes());
        out.extend_from_slice(&z);
        out.extend_from_slice(b"\nendstream\nendobj\n");
        offs[6] = out.len();
        // Rows: type(1) field2(4) field3(2).
        let rows: Vec<[u8; 7]> = (0..7u32)
            .map(|n| {
                let (t, f2, f3): (u8, u32, u16) = match n {
                    0 => (0, 0, 65535),
                    1..=3 => (2, 5, (n - 1) as u16),
                    _ => (1, offs[n as usize] as u32, 0),
                };
                let b = f2.to_be_bytes();
                let c = f3.to_be_bytes();
                [t, b[0], b[1], b[2], b[3], c[0], c[1]]
            })
            .collect();
        let mut pred = Vec::new();
        let mut prev = [0u8; 7];
        for r in &rows {
            pred.push(2u8);
            pred.extend(r.iter().zip(prev.iter()).map(|(a, b)| a.wrapping_sub(*b)));
            prev = *r;
        }
        let zx = zlib(&pred);
        out.extend_from_slice(format!("6 0 obj\n<< /Type /XRef /Size 7 /W [1 4 2] /Root 1 0 R /Info 3 0 R /Filter /FlateDecode /DecodeParms << /Columns 7 /Predictor 12 >> /Length {} >>\nstream\n", zx.len()).as_bytes());
        out.extend_from_slice(&zx);
        out.extend_from_slice(
            format!("\nendstream\nendobj\nstartxref\n{}\n%%EOF\n", offs[6]).as_bytes(),
        );
        let (md, w, _) = run(&out);
        assert_eq!(md.title.as_deref(), Some("In Stream"));
        assert_eq!(md.authors, vec!["S. Writer"]);
        assert_eq!(md.series.as_deref(), Some("Shelf"));
        assert_eq!(md.series_index, Some(4.0));
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn large_pdf_is_read_by_range() -> std::io::Result<()> {
        let pdf = build(INFO, None, 20 << 20);
        let mut f = tempfile::tempfile()?;
        f.write_all(&pdf)?;
        let mut src = FileSource::new(f, pdf.len() as u64);
        let (mut md, mut w) = (Metadata::default(), Vec::new());
        read(&mut src, &mut md, &mut w);
        assert_eq!(md.title.as_deref(), Some("Café (1)"));
        assert!(
            src.bytes_read() < 256 * 1024,
            "read {} bytes",
            src.bytes_read()
        );
        Ok(())
    }

    #[test]
    fn junk_is_not_a_pdf() {
        let (md, w, _) = run(b"hello world");
        assert_eq!(md, Metadata::default());
        assert!(!w.is_empty());
    }
}
