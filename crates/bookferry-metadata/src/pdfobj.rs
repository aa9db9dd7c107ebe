//! PDF object syntax: a bounded parser for the objects metadata lives in (numbers, strings,
//! names, arrays, dictionaries, references), text-string decoding (PDFDocEncoding, UTF-16BE
//! with BOM, UTF-8 with BOM) and stream filters (FlateDecode with PNG/TIFF predictors).

use super::charset;
use std::io::Read;

const MAX_DEPTH: usize = 32;
const MAX_ITEMS: usize = 100_000;
const MAX_STRING: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq)]
pub enum Obj {
    Null,
    Bool(bool),
    Int(i64),
    Real(f64),
    Str(Vec<u8>),
    Name(String),
    Array(Vec<Obj>),
    Dict(Dict),
    Ref(u32, u16),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dict(pub Vec<(String, Obj)>);

impl Dict {
    pub fn get(&self, key: &str) -> Option<&Obj> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn int(&self, key: &str) -> Option<i64> {
        self.get(key).and_then(Obj::as_int)
    }

    pub fn name(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Obj::Name(n)) => Some(n),
            _ => None,
        }
    }

    pub fn reference(&self, key: &str) -> Option<u32> {
        match self.get(key) {
            Some(Obj::Ref(n, _)) => Some(*n),
            _ => None,
        }
    }
}

impl Obj {
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Obj::Int(i) => Some(*i),
            Obj::Real(r) if r.is_finite() => Some(*r as i64),
            _ => None,
        }
    }

    pub fn as_dict(&self) -> Option<&Dict> {
        match self {
            Obj::Dict(d) => Some(d),
            _ => None,
        }
    }
}

fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n' | b'\x0c' | b'\0')
}

fn is_delim(c: u8) -> bool {
    matches!(
        c,
        b'(' | b')' | b'<' | b'>' | b'[' | b']' | b'{' | b'}' | b'/' | b'%'
    )
}

pub struct Parser<'a> {
    pub b: &'a [u8],
    pub pos: usize,
}

impl<'a> Parser<'a> {
    pub fn new(b: &'a [u8], pos: usize) -> Self {
        Parser { b, pos }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    pub fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            if is_ws(c) {
                self.pos += 1;
            } else if c == b'%' {
                while let Some(c) = self.peek() {
                    if c == b'\n' || c == b'\r' {
                        break;
                    }
                    self.pos += 1;
                }
            } else {
                break;
            }
        }
    }

    /// A bare word (keyword or number) at the current position, without consuming it.
    pub fn peek_word(&mut self) -> &'a [u8] {
        self.skip_ws();
        let start = self.pos;
        let mut end = start;
        while end < self.b.len() && !is_ws(self.b[end]) && !is_delim(self.b[end]) {
            end += 1;
        }
        &self.b[start..end]
    }

    pub fn eat_keyword(&mut self, kw: &[u8]) -> bool {
        if self.peek_word() == kw {
            self.pos += kw.len();
            true
        } else {
            false
        }
    }

    /// An unsigned integer word.
    pub fn uint(&mut self) -> Option<u64> {
        let w = self.peek_word();
        if w.is_empty() || w.len() > 19 || !w.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let v = std::str::from_utf8(w).ok()?.parse().ok()?;
        self.pos += w.len();
        Some(v)
    }

    /// `N G obj` header; returns N.
    pub fn obj_header(&mut self) -> Option<u32> {
        let n = self.uint()?;
        self.uint()?;
        self.eat_keyword(b"obj").then_some(u32::try_from(n).ok()?)
    }

    pub fn object(&mut self) -> Option<Obj> {
        self.object_at_depth(0)
    }

    fn object_at_depth(&mut self, depth: usize) -> Option<Obj> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.skip_ws();
        let c = self.peek()?;
        match c {
            b'/' => {
                self.pos += 1;
                Some(Obj::Name(self.name()))
            }
            b'(' => {
                self.pos += 1;
                Some(Obj::Str(self.literal()))
            }
            b'<' if self.b.get(self.pos + 1) == Some(&b'<') => {
                self.pos += 2;
                let mut d = Vec::new();
                loop {
                    self.skip_ws();
                    match self.peek() {
                        Some(b'>') => {
                            self.pos += 2;
                            break;
                        }
                        Some(b'/') => {
                            self.pos += 1;
                            let k = self.name();
                            let v = self.object_at_depth(depth + 1)?;
                            if d.len() < MAX_ITEMS {
                                d.push((k, v));
                            }
                        }
                        _ => return None,
                    }
                }
                Some(Obj::Dict(Dict(d)))
            }
            b'<' => {
                self.pos += 1;
                Some(Obj::Str(self.hex()))
            }
            b'[' => {
                self.pos += 1;
                let mut a = Vec::new();
                loop {
                    self.skip_ws();
                    match self.peek() {
                        Some(b']') => {
                            self.pos += 1;
                            break;
                        }
                        None => return None,
                        _ => {
                            let v = self.object_at_depth(depth + 1)?;
                            if a.len() < MAX_ITEMS {
                                a.push(v);
                            }
                        }
                    }
                }
                Some(Obj::Array(a))
            }
            _ => self.word_object(),
        }
    }

    fn word_object(&mut self) -> Option<Obj> {
        let w = self.peek_word();
        if w.is_empty() {
            return None;
        }
        let s = std::str::from_utf8(w).ok()?;
        let obj = match s {
            "true" => Obj::Bool(true),
            "false" => Obj::Bool(false),
            "null" => Obj::Null,
            _ => {
                if let Ok(i) = s.parse::<i64>() {
                    // `N G R`?
                    let save = self.pos + w.len();
                    self.pos = save;
                    if i >= 0 {
                        if let Some(g) = self.uint() {
                            if self.eat_keyword(b"R") {
                                return Some(Obj::Ref(
                                    u32::try_from(i).ok()?,
                                    u16::try_from(g).unwrap_or(0),
                                ));
                            }
                        }
                    }
                    self.pos = save;
                    return Some(Obj::Int(i));
                }
                match s.parse::<f64>() {
                    Ok(r) if r.is_finite() => Obj::Real(r),
                    _ => return None,
                }
            }
        };
        self.pos += w.len();
        Some(obj)
    }

    fn name(&mut self) -> String {
        let mut out = Vec::new();
        while let Some(c) = self.peek() {
            if is_ws(c) || is_delim(c) {
                break;
            }
            self.pos += 1;
            if c == b'#' {
                let h = self
                    .b
                    .get(self.pos..self.pos + 2)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(h) = h {
                    out.push(h);
                    self.pos += 2;
                    continue;
                }
            }
            out.push(c);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    fn literal(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut level = 1usize;
        while let Some(c) = self.peek() {
            self.pos += 1;
            match c {
                b'(' => {
                    level += 1;
                    out.push(c);
                }
                b')' => {
                    level -= 1;
                    if level == 0 {
                        break;
                    }
                    out.push(c);
                }
                b'\\' => {
                    let Some(e) = self.peek() else { break };
                    self.pos += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'0'..=b'7' => {
                            let mut v = u32::from(e - b'0');
                            for _ in 0..2 {
                                match self.peek() {
                                    Some(d @ b'0'..=b'7') => {
                                        v = v * 8 + u32::from(d - b'0');
                                        self.pos += 1;
                                    }
                                    _ => break,
                                }
                            }
                            out.push((v & 0xFF) as u8);
                        }
                        b'\r' => {
                            if self.peek() == Some(b'\n') {
                                self.pos += 1;
                            }
                        }
                        b'\n' => {}
                        other => out.push(other),
                    }
                }
                _ => out.push(c),
            }
            if out.len() > MAX_STRING {
                break;
            }
        }
        out
    }

    fn hex(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut hi: Option<u8> = None;
        while let Some(c) = self.peek() {
            self.pos += 1;
            if c == b'>' {
                break;
            }
            let Some(v) = (c as char).to_digit(16) else {
                continue;
            };
            let v = v as u8;
            match hi.take() {
                Some(h) => out.push(h << 4 | v),
                None => hi = Some(v),
            }
            if out.len() > MAX_STRING {
                break;
            }
        }
        if let Some(h) = hi {
            out.push(h << 4);
        }
        out
    }
}

/// A PDF text string to Rust text: UTF-16BE (BOM FE FF), UTF-8 (BOM EF BB BF), else
/// PDFDocEncoding.
pub fn text_string(b: &[u8]) -> String {
    // FF FE (UTF-16LE) is not in the standard, but some writers use it.
    match charset::decode_bom(b) {
        Some(text) => text.into_owned(),
        None => charset::pdfdoc(b),
    }
}

/// Decode a stream's data per its /Filter (none or FlateDecode, with /DecodeParms
/// predictors). None for filters we do not implement. Output capped at `cap` bytes.
pub fn decode_stream(dict: &Dict, raw: &[u8], cap: usize) -> Option<Vec<u8>> {
    let filters: Vec<&str> = match dict.get("Filter") {
        None | Some(Obj::Null) => Vec::new(),
        Some(Obj::Name(n)) => vec![n.as_str()],
        Some(Obj::Array(a)) => a
            .iter()
            .filter_map(|o| {
                if let Obj::Name(n) = o {
                    Some(n.as_str())
                } else {
                    None
                }
            })
            .collect(),
        _ => return None,
    };
    let parms = match dict.get("DecodeParms") {
        Some(Obj::Dict(d)) => Some(d.clone()),
        Some(Obj::Array(a)) => a.first().and_then(Obj::as_dict).cloned(),
        _ => None,
    };
    match filters.as_slice() {
        [] => Some(raw[..raw.len().min(cap)].to_vec()),
        ["FlateDecode" | "Fl"] => {
            let data = inflate(raw, cap)?;
            match parms {
                Some(p) if p.int("Predictor").unwrap_or(1) > 1 => unpredict(&data, &p),
                _ => Some(data),
            }
        }
        _ => None,
    }
}

/// zlib inflate with an output cap; a truncated or corrupt stream gives what inflated.
pub fn inflate(raw: &[u8], cap: usize) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut d = flate2::read::ZlibDecoder::new(raw).take(cap as u64);
    match d.read_to_end(&mut out) {
        Ok(_) => Some(out),
        Err(_) if !out.is_empty() => Some(out),
        Err(_) => {
            // Some writers omit the zlib header: try raw deflate.
            let mut out = Vec::new();
            let mut d = flate2::read::DeflateDecoder::new(raw).take(cap as u64);
            match d.read_to_end(&mut out) {
                Ok(_) => Some(out),
                Err(_) => (!out.is_empty()).then_some(out),
            }
        }
    }
}

/// Undo PNG (10..=15) predictors; TIFF predictor 2 is rare in metadata/xref streams and left as
/// is.
fn unpredict(data: &[u8], parms: &Dict) -> Option<Vec<u8>> {
    let predictor = parms.int("Predictor").unwrap_or(1);
    if predictor < 10 {
        return Some(data.to_vec());
    }
    let colors = parms.int("Colors").unwrap_or(1).clamp(1, 32) as usize;
    let bpc = parms.int("BitsPerComponent").unwrap_or(8).clamp(1, 16) as usize;
    let columns = parms.int("Columns").unwrap_or(1).clamp(1, 1 << 20) as usize;
    let bpp = (colors * bpc).div_ceil(8).max(1);
    let row = (columns * colors * bpc).div_ceil(8);
    let mut out = Vec::with_capacity(data.len());
    let mut prev = vec![0u8; row];
    for chunk in data.chunks(row + 1) {
        let (&ft, line) = chunk.split_first()?;
        let mut cur = line.to_vec();
        cur.resize(row, 0);
        for i in 0..row {
            let a = if i >= bpp { cur[i - bpp] } else { 0 };
            let b = prev[i];
            let c = if i >= bpp { prev[i - bpp] } else { 0 };
            cur[i] = match ft {
                0 => cur[i],
                1 => cur[i].wrapping_add(a),
                2 => cur[i].wrapping_add(b),
                3 => cur[i].wrapping_add(((u16::from(a) + u16::from(b)) / 2) as u8),
                4 => {
                    let p = i16::from(a) + i16::from(b) - i16::from(c);
                    let (pa, pb, pc) = (
                        (p - i16::from(a)).abs(),
                        (p - i16::from(b)).abs(),
                        (p - i16::from(c)).abs(),
                    );
                    let pred = if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    };
                    cur[i].wrapping_add(pred)
                }
                _ => cur[i],
            };
        }
        out.extend_from_slice(&cur[..line.len().min(row)]);
        prev = cur;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &[u8]) -> Option<Obj> {
        Parser::new(s, 0).object()
    }

    #[test]
    fn objects() {
        let o = parse(b"<< /Title (A \\(b\\) \\101\\n\\\r\nc) /Author <FEFF0041> /Info 7 0 R /A [1 2.5 /N#20x null] >>").expect("dict");
        let d = o.as_dict().expect("dict");
        assert_eq!(d.get("Title"), Some(&Obj::Str(b"A (b) A\nc".to_vec())));
        assert_eq!(
            d.get("Author")
                .map(|a| if let Obj::Str(s) = a {
                    text_string(s)
                } else {
                    String::new()
                })
                .as_deref(),
            Some("A")
        );
        assert_eq!(d.reference("Info"), Some(7));
        assert_eq!(
            d.get("A"),
            Some(&Obj::Array(vec![
                Obj::Int(1),
                Obj::Real(2.5),
                Obj::Name("N x".into()),
                Obj::Null
            ]))
        );
        assert_eq!(
            parse(b"(nested (paren) ok)"),
            Some(Obj::Str(b"nested (paren) ok".to_vec()))
        );
        assert_eq!(parse(b"<41 4>"), Some(Obj::Str(b"A@".to_vec())));
    }

    #[test]
    fn strings_decode() {
        assert_eq!(text_string(b"caf\xe9"), "café");
        assert_eq!(text_string(b"\xfe\xff\x00A\x00\xf3"), "Aó");
        assert_eq!(text_string(b"\xef\xbb\xbf\xc3\xa9"), "é");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let s = "[".repeat(10_000);
        assert_eq!(parse(s.as_bytes()), None);
    }

    #[test]
    fn flate_and_png_up() {
        use std::io::Write;
        let rows = [[2u8, 1, 0, 5], [2, 0, 0, 1]];
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        for r in rows {
            e.write_all(&r).expect("w");
        }
        let z = e.finish().expect("z");
        let d = parse(b"<< /Filter /FlateDecode /DecodeParms << /Predictor 12 /Columns 3 >> >>")
            .expect("d");
        let out = decode_stream(d.as_dict().expect("d"), &z, 1 << 20).expect("decoded");
        assert_eq!(out, vec![1, 0, 5, 1, 0, 6]);
    }
}
