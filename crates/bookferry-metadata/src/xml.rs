//! A small, bounded XML tree for metadata documents (container.xml, OPF, FB2 description,
//! ComicInfo, XMP, docProps). Built on quick-xml with hard limits: element depth, node count
//! and text size. Entities: only the five predefined ones and character references are
//! resolved; anything declared in a DTD is never expanded (billion laughs is inert).
//! Malformed input yields the tree read so far plus a warning.

use super::charset;
use encoding_rs::Encoding;
use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};
use std::borrow::Cow;

pub const MAX_DEPTH: usize = 256;
pub const MAX_NODES: usize = 200_000;
pub const MAX_TEXT: usize = 8 << 20;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Element {
    /// Qualified name as written, e.g. `dc:title`.
    pub name: String,
    /// (qualified name, value), entity-resolved.
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Element(Element),
    Text(String),
}

fn local(q: &str) -> &str {
    q.rsplit(':').next().unwrap_or(q)
}

impl Element {
    /// The name without its prefix: `dc:title` → `title`.
    pub fn local(&self) -> &str {
        local(&self.name)
    }

    pub fn is(&self, local_name: &str) -> bool {
        self.local().eq_ignore_ascii_case(local_name)
    }

    /// Attribute by local name (`opf:file-as`, `file-as` both match `file-as`); a name with a
    /// colon matches the qualified name exactly.
    pub fn attr(&self, name: &str) -> Option<&str> {
        let exact = name.contains(':');
        self.attrs
            .iter()
            .find(|(k, _)| if exact { k == name } else { local(k) == name })
            .map(|(_, v)| v.as_str())
    }

    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// Direct children with this local name (case-insensitive).
    pub fn children_named<'a>(&'a self, local_name: &'a str) -> impl Iterator<Item = &'a Element> {
        self.elements().filter(move |e| e.is(local_name))
    }

    pub fn child(&self, local_name: &str) -> Option<&Element> {
        self.elements().find(|e| e.is(local_name))
    }

    /// Follow a path of local names: `el.path(&["description", "title-info"])`.
    pub fn path(&self, names: &[&str]) -> Option<&Element> {
        names.iter().try_fold(self, |e, n| e.child(n))
    }

    /// Every descendant (depth-first, document order) with this local name.
    pub fn descendants(&self, local_name: &str) -> Vec<&Element> {
        let mut out = Vec::new();
        let mut stack: Vec<&Element> = vec![self];
        while let Some(e) = stack.pop() {
            if e.is(local_name) && !std::ptr::eq(e, self) {
                out.push(e);
            }
            let kids: Vec<&Element> = e.elements().collect();
            stack.extend(kids.into_iter().rev());
        }
        out
    }

    pub fn descendant(&self, local_name: &str) -> Option<&Element> {
        self.descendants(local_name).into_iter().next()
    }

    /// All text inside, in document order; block children are separated by a space.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let mut stack: Vec<&Node> = self.children.iter().rev().collect();
        while let Some(n) = stack.pop() {
            match n {
                Node::Text(t) => out.push_str(t),
                Node::Element(e) => {
                    out.push(' ');
                    stack.extend(e.children.iter().rev());
                }
            }
        }
        out
    }

    /// Trimmed text, None when empty.
    pub fn text_opt(&self) -> Option<String> {
        let t = self.text();
        let t = t.trim();
        (!t.is_empty()).then(|| t.to_string())
    }
}

/// The encoding of an XML document and its bytes after any BOM: the BOM's, else UTF-16 seen in
/// the first `<?`, else the declaration's `encoding`, else UTF-8 (also for labels we do not know).
fn sniff(bytes: &[u8]) -> (&'static Encoding, &[u8]) {
    if let Some((encoding, bom)) = Encoding::for_bom(bytes) {
        return (encoding, &bytes[bom..]);
    }
    if bytes.starts_with(b"<\0?\0") {
        return (charset::UTF_16LE, bytes);
    }
    if bytes.starts_with(b"\0<\0?") {
        return (charset::UTF_16BE, bytes);
    }
    let declared = declared_label(bytes).and_then(charset::for_label);
    // A declaration we could read as ASCII is not in UTF-16, whatever it says (WHATWG reads a
    // `<meta charset=utf-16>` the same way).
    let encoding = declared.filter(|e| *e != charset::UTF_16LE && *e != charset::UTF_16BE);
    (encoding.unwrap_or(charset::UTF_8), bytes)
}

/// The `encoding` label of an XML declaration at the start of `bytes`.
fn declared_label(bytes: &[u8]) -> Option<&str> {
    let head = &bytes[..bytes.len().min(256)];
    let decl = head.strip_prefix(b"<?xml")?;
    let decl = &decl[..decl.iter().position(|&b| b == b'>')?];
    let decl = std::str::from_utf8(decl).ok()?;
    let at = decl.to_ascii_lowercase().find("encoding")?;
    let rest = decl[at + "encoding".len()..].trim_start_matches([' ', '\t', '\r', '\n', '=']);
    let quote = rest.chars().next().filter(|c| matches!(c, '"' | '\''))?;
    rest[1..].split(quote).next()
}

/// Parse options: stop once an element with this local name has closed (e.g. FB2's
/// `description`, so the book body is never walked).
#[derive(Debug, Clone, Copy, Default)]
pub struct Options<'a> {
    pub stop_after: Option<&'a str>,
}

/// Parse bytes into a tree. Returns the root element (partial on error) and warnings. The bytes
/// are decoded as their BOM or XML declaration says (any encoding encoding_rs has a label for),
/// else as UTF-8; lossily: a bad byte is U+FFFD.
pub fn parse(bytes: &[u8], opts: Options<'_>) -> (Option<Element>, Vec<String>) {
    let (encoding, rest) = sniff(bytes);
    if encoding == encoding_rs::REPLACEMENT {
        let label = declared_label(bytes).unwrap_or_default();
        return (
            None,
            vec![format!(
                "XML declares encoding {label}, which is not decoded: not read"
            )],
        );
    }
    let text = charset::decode(rest, encoding);
    parse_str(&text, opts)
}

fn start_element(e: &BytesStart<'_>) -> Element {
    let attrs = e
        .attributes()
        .with_checks(false)
        .flatten()
        .map(|a| {
            let v = a
                .normalized_value(XmlVersion::Implicit1_0)
                .map(Cow::into_owned)
                .unwrap_or_else(|_| a.value.to_string());
            (a.key.0.to_string(), v)
        })
        .collect();
    Element {
        name: e.name().0.to_string(),
        attrs,
        children: Vec::new(),
    }
}

fn predefined(name: &str) -> Option<char> {
    Some(match name {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "apos" => '\'',
        "quot" => '"',
        "nbsp" => '\u{A0}',
        _ => return None,
    })
}

/// A reader that forgives what ebook tools write: mismatched or unmatched end tags, bare `&`.
fn lenient_reader(src: &str) -> Reader<&[u8]> {
    let mut reader = Reader::from_str(src);
    let c = reader.config_mut();
    c.check_end_names = false;
    c.allow_dangling_amp = true;
    c.allow_unmatched_ends = true;
    c.check_comments = false;
    reader
}

pub fn parse_str(src: &str, opts: Options<'_>) -> (Option<Element>, Vec<String>) {
    let mut reader = lenient_reader(src);
    let mut warnings = Vec::new();
    // stack[0] is a synthetic document node.
    let mut stack: Vec<Element> = vec![Element::default()];
    let mut nodes = 0usize;
    let mut text_bytes = 0usize;
    let mut unknown_entities = 0usize;
    let push_text = |stack: &mut Vec<Element>, t: &str, text_bytes: &mut usize| {
        if stack.len() < 2 || t.is_empty() {
            return; // text outside the root element
        }
        *text_bytes += t.len();
        if let Some(top) = stack.last_mut() {
            if let Some(Node::Text(prev)) = top.children.last_mut() {
                prev.push_str(t);
            } else {
                top.children.push(Node::Text(t.to_string()));
            }
        }
    };
    loop {
        if nodes > MAX_NODES || text_bytes > MAX_TEXT {
            warnings.push("XML too large: stopped reading (node/text limit)".into());
            break;
        }
        let ev = match reader.read_event() {
            Ok(ev) => ev,
            Err(e) => {
                warnings.push(format!(
                    "malformed XML at byte {}: {e}",
                    reader.buffer_position()
                ));
                break;
            }
        };
        match ev {
            Event::Start(e) => {
                nodes += 1;
                if stack.len() > MAX_DEPTH {
                    warnings.push(format!(
                        "XML nested deeper than {MAX_DEPTH}: stopped reading"
                    ));
                    break;
                }
                stack.push(start_element(&e));
            }
            Event::Empty(e) => {
                nodes += 1;
                let el = start_element(&e);
                if let Some(top) = stack.last_mut() {
                    top.children.push(Node::Element(el));
                }
            }
            Event::End(_) => {
                if stack.len() < 2 {
                    continue; // unmatched end at top level
                }
                let Some(done) = stack.pop() else { break };
                let stop = opts.stop_after.is_some_and(|s| done.is(s));
                if let Some(parent) = stack.last_mut() {
                    parent.children.push(Node::Element(done));
                }
                if stop {
                    break;
                }
            }
            Event::Text(t) => push_text(&mut stack, &t.xml10_content(), &mut text_bytes),
            Event::CData(t) => push_text(&mut stack, &t.xml10_content(), &mut text_bytes),
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref() {
                    Ok(Some(c)) => Some(c),
                    Ok(None) => predefined(&r),
                    Err(_) => None,
                };
                match c {
                    Some(c) => push_text(&mut stack, c.encode_utf8(&mut [0; 4]), &mut text_bytes),
                    None => {
                        unknown_entities += 1;
                        if unknown_entities == 1 {
                            warnings.push(format!("entity &{}; not expanded", &*r));
                        }
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if stack.len() > 1 && opts.stop_after.is_none() {
        warnings.push("XML ended before all elements were closed".into());
    }
    (close_open(stack), warnings)
}

/// Close whatever is still open, so a partial tree is kept, and return the root element.
fn close_open(mut stack: Vec<Element>) -> Option<Element> {
    while stack.len() > 1 {
        if let Some(done) = stack.pop() {
            if let Some(parent) = stack.last_mut() {
                parent.children.push(Node::Element(done));
            }
        }
    }
    // The document's first element, moved out of it (a clone would copy the whole tree).
    stack.pop().and_then(|doc| {
        doc.children.into_iter().find_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(s: &str) -> Element {
        parse(s.as_bytes(), Options::default()).0.expect("root")
    }

    #[test]
    fn tree_text_attrs() {
        let r = root(
            r#"<?xml version="1.0"?><a xmlns:dc="x"><dc:title opf:x="1 &amp; 2">T &amp; &#233;<![CDATA[<c>]]></dc:title><b/><c>x<i>y</i>z</c></a>"#,
        );
        let t = r.child("title").expect("title");
        assert_eq!(t.text(), "T & é<c>");
        assert_eq!(t.attr("x"), Some("1 & 2"));
        assert_eq!(t.attr("opf:x"), Some("1 & 2"));
        assert_eq!(
            r.path(&["c", "i"]).and_then(Element::text_opt).as_deref(),
            Some("y")
        );
        assert_eq!(r.child("c").map(|c| c.text()).as_deref(), Some("x yz"));
        assert_eq!(r.descendants("i").len(), 1);
    }

    #[test]
    fn billion_laughs_is_inert() {
        let mut s = String::from("<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">");
        for i in 1..10 {
            s.push_str(&format!(
                "<!ENTITY lol{i} \"{}\">",
                format!("&lol{};", i - 1).repeat(10)
            ));
        }
        s.push_str("]><lolz>&lol9;</lolz>");
        let (r, w) = parse(s.as_bytes(), Options::default());
        assert_eq!(r.map(|r| r.text()).as_deref(), Some(""));
        assert!(w.iter().any(|w| w.contains("not expanded")));
    }

    #[test]
    fn depth_limit_and_partial_tree() {
        let s = "<a>".repeat(1000);
        let (r, w) = parse(s.as_bytes(), Options::default());
        assert!(r.is_some());
        assert!(w.iter().any(|w| w.contains("deeper")));
        let (r, w) = parse(b"<a><b>kept</b><c>trunc", Options::default());
        assert_eq!(
            r.and_then(|r| r.child("b").and_then(Element::text_opt))
                .as_deref(),
            Some("kept")
        );
        assert!(!w.is_empty());
    }

    #[test]
    fn stop_after_and_encodings() {
        let (r, _) = parse(
            b"<x><d>1</d><body>never</body></x>",
            Options {
                stop_after: Some("d"),
            },
        );
        let r = r.expect("root");
        assert!(r.child("body").is_none());
        let cp =
            b"<?xml version=\"1.0\" encoding=\"windows-1251\"?><a>\xcf\xf3\xf8\xea\xe8\xed</a>";
        assert_eq!(root_bytes(cp).text(), "Пушкин");
        let mut u16 = vec![0xFF, 0xFE];
        for u in "<a>é</a>".encode_utf16() {
            u16.extend_from_slice(&u.to_le_bytes());
        }
        assert_eq!(root_bytes(&u16).text(), "é");
    }

    #[test]
    fn declared_encodings() {
        // KOI8-R, cp866 and ISO-8859-5 "Пушкин"; labels in any case.
        for (label, bytes) in [
            ("koi8-r", &b"\xf0\xd5\xdb\xcb\xc9\xce"[..]),
            ("CP866", b"\x8f\xe3\xe8\xaa\xa8\xad"),
            ("iso-8859-5", b"\xbf\xe3\xe8\xda\xd8\xdd"),
        ] {
            let mut doc = format!("<?xml version='1.0' encoding='{label}'?><a>").into_bytes();
            doc.extend_from_slice(bytes);
            doc.extend_from_slice(b"</a>");
            assert_eq!(root_bytes(&doc).text(), "Пушкин", "{label}");
        }
        // ISO-8859-1 is read as Windows-1252: 0x80..=0x9F are the quotes and dashes the writer
        // meant, not C1 control characters.
        let latin1 =
            b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><a>\x93Caf\xe9\x94 \x96 \x80</a>";
        assert_eq!(root_bytes(latin1).text(), "\u{201C}Café\u{201D} \u{2013} €");
        // A declaration readable as ASCII is not UTF-16, whatever it says.
        let liar = "<?xml version=\"1.0\" encoding=\"UTF-16\"?><a>é</a>";
        assert_eq!(root_bytes(liar.as_bytes()).text(), "é");
    }

    #[test]
    fn undecodable_encoding_is_not_guessed() {
        // ISO-2022-KR is 7-bit: read as UTF-8 it would give plausible ASCII nonsense.
        let doc = b"<?xml version=\"1.0\" encoding=\"ISO-2022-KR\"?><a>\x0e!l\x0f</a>";
        let (r, w) = parse(doc, Options::default());
        assert_eq!(r, None);
        assert!(w.iter().any(|w| w.contains("ISO-2022-KR")), "{w:?}");
    }

    fn root_bytes(b: &[u8]) -> Element {
        parse(b, Options::default()).0.expect("root")
    }
}
