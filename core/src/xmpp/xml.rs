//! Sans-IO XML for the XMPP edge: an incremental stream parser and a small element tree.
//!
//! XMPP (RFC 6120) is one long XML document per direction: an unclosed `<stream:stream>`
//! header followed by top-level children (stanzas) and, eventually, `</stream:stream>`.
//! [`StreamParser`] turns the bytes of such a stream into [`XmlEvent`]s, one at a time, the way
//! a codec does: the caller appends whatever the socket delivered to a [`BytesMut`] and calls
//! [`StreamParser::parse`] until it returns `Ok(None)` ("need more bytes"). No I/O happens
//! here, so the same code serves TCP, and with [`parse_element`] the WebSocket (RFC 7395,
//! one element per frame) and BOSH (XEP-0124, one `<body>` document per request) transports.
//!
//! How a stanza is found: a small resumable byte scanner (`Scanner`) walks the buffer, tracking
//! element depth and quoted attribute values, and remembers how far it got, so a large stanza
//! that trickles in through many small reads is scanned once (linear, not quadratic). Only when
//! the closing `>` of the top-level element has arrived are the complete bytes handed to
//! quick-xml and turned into an [`Element`] with namespaces resolved against the stream header.
//! The scanner is also where the limits live: depth, size and attribute count are enforced on
//! partial input, so a peer can never make us buffer more than `max_stanza_bytes` (plus what a
//! single read delivers) or nest deeper than `max_depth`.
//!
//! Restricted XML (RFC 6120 §11.1): comments, processing instructions (other than the XML
//! declaration before the stream header / document element), DTDs and any entity reference
//! other than the five predefined ones and numeric character references are refused with
//! [`XmlError::Restricted`]. Nothing is ever expanded beyond a single character, so entity
//! expansion attacks ("billion laughs") cannot happen. CDATA sections are accepted in content.
//!
//! Text rules:
//! * Whitespace between top-level stanzas (keepalives) is skipped silently; any other character
//!   data at stream level is `not-well-formed`.
//! * Inside a stanza **all text is kept, whitespace-only text included**, after XML 1.0
//!   end-of-line normalization (`\r\n` and `\r` become `\n`). Whitespace can be content
//!   (a message body of `" "`, the space between two XHTML-IM elements), and keeping it
//!   makes parse → serialize → parse exact. Adjacent character data, references and CDATA
//!   sections are merged into one [`Node::Text`]; the parser never produces empty text nodes.
//! * Attribute values are unescaped and normalized as XML 1.0 requires (literal tab, CR, LF
//!   become a space). The serializer writes those characters as character references, so they
//!   survive a round trip.
//!
//! Namespaces: element names are resolved to (local name, namespace URI); the `xml` prefix is
//! predeclared; namespace declarations are not kept in [`Element::attrs`]. Attribute names are
//! kept as written (`xml:lang`, `xmpp:restart`), but their prefixes must be declared.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

const NS_XML: &str = "http://www.w3.org/XML/1998/namespace";
const NS_STREAMS: &str = "http://etherx.jabber.org/streams";
const CDATA_OPEN: &[u8] = b"<![CDATA[";
const UTF8_BOM: &[u8] = &[0xEF, 0xBB, 0xBF];

// ---------------------------------------------------------------------------------------------
// Element tree
// ---------------------------------------------------------------------------------------------

/// An XML element with its namespace resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// Local name, e.g. `"message"`.
    pub name: String,
    /// Resolved namespace URI (`""` if none), e.g. `"jabber:client"`.
    pub ns: String,
    /// Non-namespace-declaration attributes, names as written (`"to"`, `"xml:lang"`,
    /// `"xmpp:restart"`), values unescaped, in document order.
    pub attrs: Vec<(String, String)>,
    /// Child elements and text, in document order.
    pub children: Vec<Node>,
}

/// A child of an [`Element`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
}

impl Element {
    pub fn new(name: impl Into<String>, ns: impl Into<String>) -> Element {
        Element { name: name.into(), ns: ns.into(), attrs: Vec::new(), children: Vec::new() }
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Sets an attribute, replacing its value (in place, keeping the order) if present.
    pub fn set_attr(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self.attrs.iter_mut().find(|(k, _)| *k == name) {
            Some((_, v)) => *v = value,
            None => self.attrs.push((name, value)),
        }
    }

    pub fn remove_attr(&mut self, name: &str) -> Option<String> {
        let i = self.attrs.iter().position(|(k, _)| k == name)?;
        Some(self.attrs.remove(i).1)
    }

    pub fn with_attr(mut self, name: impl Into<String>, value: impl Into<String>) -> Element {
        self.set_attr(name, value);
        self
    }

    pub fn with_child(mut self, child: Element) -> Element {
        self.push_child(child);
        self
    }

    /// Appends text. Empty text is ignored and text following a text node is merged into it,
    /// so a built tree has the same shape as the parsed form of its serialization.
    pub fn with_text(mut self, text: impl Into<String>) -> Element {
        let text = text.into();
        if !text.is_empty() {
            match self.children.last_mut() {
                Some(Node::Text(prev)) => prev.push_str(&text),
                _ => self.children.push(Node::Text(text)),
            }
        }
        self
    }

    pub fn push_child(&mut self, child: Element) {
        self.children.push(Node::Element(child));
    }

    /// The first direct child element with this local name and namespace.
    pub fn child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.elements().find(|e| e.is(name, ns))
    }

    pub fn child_mut(&mut self, name: &str, ns: &str) -> Option<&mut Element> {
        self.children.iter_mut().find_map(|n| match n {
            Node::Element(e) if e.is(name, ns) => Some(e),
            _ => None,
        })
    }

    /// Direct child elements, in document order.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The concatenated direct text children (not the text of descendants).
    pub fn text(&self) -> String {
        let mut s = String::new();
        for n in &self.children {
            if let Node::Text(t) = n {
                s.push_str(t);
            }
        }
        s
    }

    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    /// Serializes. The element always declares its own namespace (`xmlns='...'`) unless `ns` is
    /// empty or equal to `parent_ns`; children declare theirs only when it differs from the
    /// parent's. `stream:`-prefixed output is never produced: an element in
    /// `http://etherx.jabber.org/streams` (features, error) is written as
    /// `<stream:features xmlns:stream='http://etherx.jabber.org/streams'>`.
    /// Attribute values and text are escaped (`&`, `<`, `>`, `'`, `"`), output is UTF-8.
    ///
    /// Details: `parent_ns` is the default namespace in scope where the element is written. A
    /// `stream:` element does not change the default namespace, so its children are compared
    /// with `parent_ns`. An attribute literally named `xmlns` is not written (the `ns` field
    /// governs); other attributes, including `xmlns:p` ones a caller may add to declare the
    /// prefix of a prefixed attribute, are written as they are. Characters XML 1.0 cannot
    /// carry at all (most C0 controls, U+FFFE, U+FFFF) are written as U+FFFD so the output
    /// always stays well-formed; CR in text and TAB/CR/LF in attribute values are written as
    /// character references so they survive the parser's normalization. Names are not checked.
    ///
    /// Because an empty `ns` never declares anything, it means "inherit" when written: an
    /// element parsed from `<a xmlns='u'><b xmlns=''/></a>` (b in no namespace) is written as
    /// `<a xmlns='u'><b/></a>` and reads back with b in `u`. XMPP never undeclares namespaces
    /// that way, and it lets callers build children with `Element::new(name, "")`.
    pub fn write_to(&self, parent_ns: &str, out: &mut BytesMut) {
        self.write_inner(parent_ns, false, out);
    }

    /// The serialization with no namespace in scope (`write_to("", ..)`).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.write_to("", &mut out);
        out.freeze()
    }

    fn write_inner(&self, default_ns: &str, stream_declared: bool, out: &mut BytesMut) {
        let in_streams = self.ns == NS_STREAMS;
        out.put_u8(b'<');
        if in_streams {
            out.put_slice(b"stream:");
        }
        out.put_slice(self.name.as_bytes());
        let (child_default, child_stream_declared) = if in_streams {
            if !stream_declared {
                out.put_slice(b" xmlns:stream='");
                out.put_slice(NS_STREAMS.as_bytes());
                out.put_u8(b'\'');
            }
            // A prefixed element leaves the default namespace as it was.
            (default_ns, true)
        } else {
            if !self.ns.is_empty() && self.ns != default_ns {
                out.put_slice(b" xmlns='");
                escape_into(&self.ns, true, out);
                out.put_u8(b'\'');
            }
            let d = if self.ns.is_empty() { default_ns } else { self.ns.as_str() };
            (d, stream_declared)
        };
        for (k, v) in &self.attrs {
            if k == "xmlns" || (in_streams && k == "xmlns:stream") {
                continue;
            }
            out.put_u8(b' ');
            out.put_slice(k.as_bytes());
            out.put_slice(b"='");
            escape_into(v, true, out);
            out.put_u8(b'\'');
        }
        if self.children.is_empty() {
            out.put_slice(b"/>");
            return;
        }
        out.put_u8(b'>');
        for child in &self.children {
            match child {
                Node::Element(e) => e.write_inner(child_default, child_stream_declared, out),
                Node::Text(t) => escape_into(t, false, out),
            }
        }
        out.put_slice(b"</");
        if in_streams {
            out.put_slice(b"stream:");
        }
        out.put_slice(self.name.as_bytes());
        out.put_u8(b'>');
    }
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.to_bytes();
        // The serializer only ever writes UTF-8; lossy conversion is just a no-panic guarantee.
        f.write_str(&String::from_utf8_lossy(&bytes))
    }
}

/// Escapes `s` for use in text (`attr == false`) or a single-quoted attribute value.
fn escape_into(s: &str, attr: bool, out: &mut BytesMut) {
    let mut run_start = 0;
    for (i, c) in s.char_indices() {
        let rep: &str = match c {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            '\'' => "&apos;",
            '"' => "&quot;",
            // The parser turns a literal CR into LF (end-of-line handling) and, in attribute
            // values, TAB/LF into spaces; references are how these characters survive.
            '\r' => "&#13;",
            '\t' if attr => "&#9;",
            '\n' if attr => "&#10;",
            c if !is_xml_char(c) => "\u{FFFD}",
            _ => continue,
        };
        out.put_slice(&s.as_bytes()[run_start..i]);
        out.put_slice(rep.as_bytes());
        run_start = i + c.len_utf8();
    }
    out.put_slice(&s.as_bytes()[run_start..]);
}

// ---------------------------------------------------------------------------------------------
// Limits, events, errors
// ---------------------------------------------------------------------------------------------

/// Resource limits, enforced on partial input as well as on complete stanzas.
///
/// * `max_depth`: nesting depth of a stanza; the stanza element itself is depth 1 (the
///   stream element does not count), so `<iq><query/></iq>` has depth 2.
/// * `max_stanza_bytes`: bytes of one top-level element as it appears on the wire (also applied
///   to the stream header and the XML declaration; whitespace between stanzas is not counted).
/// * `max_attrs`: attributes on one element, namespace declarations included (they cost the
///   same to process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_depth: usize,
    pub max_stanza_bytes: usize,
    pub max_attrs: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        // ejabberd's default max_stanza_size is 256 KiB for c2s.
        Limits { max_depth: 32, max_stanza_bytes: 262_144, max_attrs: 64 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XmlEvent {
    /// The `<stream:stream ...>` header (name "stream", ns `http://etherx.jabber.org/streams`),
    /// attributes only. Its default namespace (jabber:client) becomes the namespace of
    /// unprefixed top-level stanzas.
    ///
    /// The parser does not check the header's name or namespace: a wrong one is reported
    /// here as is, so the caller can answer with the right stream error (invalid-namespace).
    StreamOpen(Element),
    /// One complete top-level child of the stream (a stanza, `<auth/>`, `<starttls/>`...),
    /// namespaces resolved.
    Stanza(Element),
    /// `</stream:stream>` (also produced right after StreamOpen for a self-closed header).
    StreamClose,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("not well-formed: {0}")]
    NotWellFormed(String),
    /// DOCTYPE/DTD, entity declarations, processing instructions other than the XML
    /// declaration, comments, unknown entity references.
    #[error("restricted XML: {0}")]
    Restricted(String),
    #[error("element nesting deeper than {0}")]
    TooDeep(usize),
    #[error("stanza larger than {0} bytes")]
    TooLarge(usize),
    #[error("more than {0} attributes")]
    TooManyAttributes(usize),
    #[error("undeclared namespace prefix {0:?}")]
    BadNamespacePrefix(String),
    /// XML declaration (or byte order mark) announcing an encoding other than UTF-8.
    #[error("unsupported encoding {0:?}")]
    UnsupportedEncoding(String),
}

impl XmlError {
    /// The RFC 6120 §4.9.3 stream error condition element name for this error.
    pub fn condition(&self) -> &'static str {
        match self {
            XmlError::NotWellFormed(_) => "not-well-formed",
            XmlError::Restricted(_) => "restricted-xml",
            XmlError::TooDeep(_) | XmlError::TooLarge(_) | XmlError::TooManyAttributes(_) => "policy-violation",
            XmlError::BadNamespacePrefix(_) => "bad-namespace-prefix",
            XmlError::UnsupportedEncoding(_) => "unsupported-encoding",
        }
    }
}

fn nwf(msg: impl Into<String>) -> XmlError {
    XmlError::NotWellFormed(msg.into())
}

fn restricted(msg: impl Into<String>) -> XmlError {
    XmlError::Restricted(msg.into())
}

fn qx_err(e: impl fmt::Display) -> XmlError {
    nwf(e.to_string())
}

// ---------------------------------------------------------------------------------------------
// Resumable scanner: finds where one top-level item ends
// ---------------------------------------------------------------------------------------------

/// Lexical state of the scanner between two bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Lex {
    /// Character data (inside an element; at depth 0 only before the item's first `<`).
    #[default]
    Text,
    /// Just after `<`.
    Lt,
    /// Inside a start tag; `quote` is the open quote of an attribute value, `slash` whether the
    /// previous byte was a `/` outside quotes (which must then be followed by `>`), `closed`
    /// whether it was the closing quote of a value (which must be followed by whitespace, `/`
    /// or `>`: quick-xml would accept `a='1'b='2'`).
    StartTag { quote: Option<u8>, slash: bool, closed: bool },
    /// Inside an end tag.
    EndTag,
    /// After `<!`, until enough bytes are there to tell CDATA from comment/DTD.
    Bang,
    /// Inside a CDATA section; `brackets` counts the `]` just seen (up to 2).
    CData { brackets: u8 },
    /// Inside `<?xml ... ?>`; `qmark` whether the previous byte was `?`.
    Decl { qmark: bool },
}

impl Lex {
    /// Inside a start tag, outside quotes, no constraint on the next byte.
    const IN_TAG: Lex = Lex::StartTag { quote: None, slash: false, closed: false };
}

/// A complete top-level item found at the front of the buffer; lengths are in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    /// `<?...?>` (only reported where an XML declaration is allowed).
    Decl(usize),
    /// A whole element, or in header mode the header's start tag.
    Element { len: usize, self_closing: bool },
    /// An end tag at depth 0: the stream's end.
    EndTag(usize),
}

/// Resumable scanner over one item at the front of a buffer that only grows between calls.
#[derive(Debug, Default, Clone)]
struct Scanner {
    /// Bytes of the item already examined.
    pos: usize,
    lex: Lex,
    /// Elements open in the item.
    depth: usize,
    /// `=` seen outside quotes in the current start tag: one per attribute.
    attrs: usize,
    /// Offset of the `<` of the markup being examined (for `<!` look-ahead).
    tag_start: usize,
    /// Name offsets of the open elements, so a mismatched end tag is refused
    /// when it arrives, not when the (never balanced) nesting would close.
    open: Vec<usize>,
}

/// The element name starting at `start` (up to whitespace, `/` or `>`).
fn name_at(buf: &[u8], start: usize) -> &[u8] {
    let rest = buf.get(start..).unwrap_or_default();
    let len = rest.iter().position(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'/' | b'>')).unwrap_or(rest.len());
    &rest[..len]
}

impl Scanner {
    /// Continues scanning the item starting at `buf[0]` (which must be `<`).
    ///
    /// `header`: stop after the first start tag (the unclosed stream header).
    /// `allow_decl`: a `<?...?>` item is acceptable here (the XML declaration).
    fn scan(&mut self, buf: &[u8], limits: &Limits, header: bool, allow_decl: bool) -> Result<Option<Item>, XmlError> {
        // Never look past max_stanza_bytes: the item is too large if it has not ended by then,
        // which bounds both our work and what a peer can make us buffer.
        let end = buf.len().min(limits.max_stanza_bytes);
        while self.pos < end {
            let i = self.pos;
            let b = buf[i];
            self.pos += 1;
            self.lex = match self.lex {
                Lex::Text => match b {
                    b'<' => {
                        self.tag_start = i;
                        Lex::Lt
                    }
                    _ if self.depth == 0 => return Err(nwf("character data outside of stanzas")),
                    _ => Lex::Text,
                },
                Lex::Lt => match b {
                    b'/' => Lex::EndTag,
                    b'?' if allow_decl && self.depth == 0 && i == 1 => Lex::Decl { qmark: false },
                    b'?' => return Err(restricted("processing instruction")),
                    b'!' => Lex::Bang,
                    _ if is_name_start_byte(b) => {
                        // Checked when the element starts, not when it is complete, so a
                        // deep nest is refused before it has been buffered.
                        if !header && self.depth >= limits.max_depth {
                            return Err(XmlError::TooDeep(limits.max_depth));
                        }
                        if !(header && self.depth == 0) {
                            self.open.push(i);
                        }
                        self.attrs = 0;
                        Lex::IN_TAG
                    }
                    _ => return Err(nwf("invalid character after '<'")),
                },
                Lex::StartTag { quote: Some(q), .. } => {
                    if b == q {
                        Lex::StartTag { quote: None, slash: false, closed: true }
                    } else if b == b'<' {
                        return Err(nwf("'<' in an attribute value"));
                    } else {
                        Lex::StartTag { quote: Some(q), slash: false, closed: false }
                    }
                }
                Lex::StartTag { quote: None, closed: true, .. }
                    if !matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'/' | b'>') =>
                {
                    return Err(nwf("no whitespace between attributes"));
                }
                Lex::StartTag { quote: None, slash: true, .. } => {
                    if b != b'>' {
                        return Err(nwf("'/' not followed by '>' in a start tag"));
                    }
                    self.open.pop();
                    if self.depth == 0 {
                        return Ok(Some(Item::Element { len: self.pos, self_closing: true }));
                    }
                    Lex::Text
                }
                Lex::StartTag { quote: None, slash: false, .. } => match b {
                    b'>' => {
                        if header && self.depth == 0 {
                            return Ok(Some(Item::Element { len: self.pos, self_closing: false }));
                        }
                        self.depth += 1;
                        Lex::Text
                    }
                    b'/' => Lex::StartTag { quote: None, slash: true, closed: false },
                    b'"' | b'\'' => Lex::StartTag { quote: Some(b), slash: false, closed: false },
                    b'=' => {
                        self.attrs += 1;
                        if self.attrs > limits.max_attrs {
                            return Err(XmlError::TooManyAttributes(limits.max_attrs));
                        }
                        Lex::IN_TAG
                    }
                    b'<' => return Err(nwf("'<' inside a start tag")),
                    _ => Lex::IN_TAG,
                },
                Lex::EndTag => match b {
                    b'>' => {
                        if self.depth == 0 {
                            return Ok(Some(Item::EndTag(self.pos)));
                        }
                        let closing = buf.get(self.tag_start + 2..i).unwrap_or_default().trim_ascii_end();
                        let opened = self.open.pop().map(|start| name_at(buf, start)).unwrap_or_default();
                        if closing != opened {
                            return Err(nwf("mismatched end tag"));
                        }
                        self.depth -= 1;
                        if self.depth == 0 {
                            return Ok(Some(Item::Element { len: self.pos, self_closing: false }));
                        }
                        Lex::Text
                    }
                    b'<' | b'"' | b'\'' => return Err(nwf("invalid character in an end tag")),
                    _ => Lex::EndTag,
                },
                Lex::Bang => {
                    let seen = buf.get(self.tag_start..self.pos).unwrap_or_default();
                    if seen.starts_with(b"<!-") {
                        return Err(restricted("comment"));
                    } else if CDATA_OPEN.starts_with(seen) {
                        if seen.len() < CDATA_OPEN.len() {
                            Lex::Bang
                        } else if self.depth == 0 {
                            return Err(nwf("CDATA section outside of stanzas"));
                        } else {
                            Lex::CData { brackets: 0 }
                        }
                    } else if seen.get(2).is_some_and(u8::is_ascii_uppercase) {
                        return Err(restricted("DTD markup (DOCTYPE, ENTITY, ...)"));
                    } else {
                        return Err(nwf("invalid markup after '<!'"));
                    }
                }
                Lex::CData { brackets } => match b {
                    b']' => Lex::CData { brackets: (brackets + 1).min(2) },
                    b'>' if brackets == 2 => Lex::Text,
                    _ => Lex::CData { brackets: 0 },
                },
                Lex::Decl { qmark } => {
                    if qmark && b == b'>' {
                        return Ok(Some(Item::Decl(self.pos)));
                    }
                    Lex::Decl { qmark: b == b'?' }
                }
            };
        }
        if buf.len() > limits.max_stanza_bytes {
            return Err(XmlError::TooLarge(limits.max_stanza_bytes));
        }
        Ok(None)
    }
}

// ---------------------------------------------------------------------------------------------
// Stream parser
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the stream header; an XML declaration may still come.
    Prolog { decl_seen: bool },
    /// Between stanzas.
    Stream,
    /// A self-closed header was returned; StreamClose is due.
    PendingClose,
    /// After `</stream:stream>`.
    Closed,
}

/// Incremental parser for one direction of an XMPP stream. See the module documentation.
#[derive(Debug, Clone)]
pub struct StreamParser {
    limits: Limits,
    state: State,
    scan: Scanner,
    /// Namespace bindings declared on the stream header (prefix `""` is the default
    /// namespace); stanzas are resolved against them.
    stream_ns: Vec<(String, String)>,
    /// The header's name as written, so the end tag can be matched literally as XML requires.
    header_qname: String,
    /// Nothing consumed since new()/reset(): the only place a byte order mark may appear.
    at_start: bool,
    /// A stream error ends the stream; the error is returned again until reset().
    failed: Option<XmlError>,
}

impl StreamParser {
    pub fn new(limits: Limits) -> StreamParser {
        StreamParser {
            limits,
            state: State::Prolog { decl_seen: false },
            scan: Scanner::default(),
            stream_ns: Vec::new(),
            header_qname: String::new(),
            at_start: true,
            failed: None,
        }
    }

    /// Forget everything and expect a new stream header (after STARTTLS or SASL success,
    /// RFC 6120 stream restart).
    pub fn reset(&mut self) {
        *self = StreamParser::new(self.limits);
    }

    /// The default namespace declared on the stream header (`"jabber:client"` for c2s), `""`
    /// before the header or if it declared none. Lets the caller answer a wrong content
    /// namespace with `invalid-namespace` right at the header (RFC 6120 §4.8.5).
    pub fn stream_default_ns(&self) -> &str {
        lookup(&[], &self.stream_ns, "").unwrap_or("")
    }

    /// Takes at most one event off the front of `buf` (an optional `<?xml ...?>` declaration
    /// and whitespace between stanzas are skipped). `Ok(None)`: more bytes are needed.
    ///
    /// Between calls the caller may only append to `buf` (bytes this call did not consume are
    /// remembered as scanned). After an error the stream is dead: the same error is returned
    /// until [`reset`](Self::reset).
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<XmlEvent>, XmlError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.parse_inner(buf);
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    fn parse_inner(&mut self, buf: &mut BytesMut) -> Result<Option<XmlEvent>, XmlError> {
        loop {
            match self.state {
                State::PendingClose => {
                    self.state = State::Closed;
                    return Ok(Some(XmlEvent::StreamClose));
                }
                State::Closed => {
                    skip_whitespace(buf);
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    return Err(nwf("data after the end of the stream"));
                }
                State::Prolog { .. } | State::Stream => {}
            }
            // Defensive: a caller that shrank the buffer invalidates what we scanned.
            if self.scan.pos > buf.len() {
                self.scan = Scanner::default();
            }
            if self.scan.pos == 0 {
                if self.at_start {
                    match check_bom(buf, false)? {
                        None => return Ok(None),
                        Some(n) => {
                            let _ = buf.split_to(n);
                            self.at_start = false;
                        }
                    }
                }
                skip_whitespace(buf);
                match buf.first() {
                    None => return Ok(None),
                    Some(b'<') => {}
                    Some(_) => return Err(nwf("character data outside of stanzas")),
                }
            }
            let header = matches!(self.state, State::Prolog { .. });
            let allow_decl = self.state == State::Prolog { decl_seen: false };
            let Some(item) = self.scan.scan(buf, &self.limits, header, allow_decl)? else {
                return Ok(None);
            };
            self.scan = Scanner::default();
            match item {
                Item::Decl(len) => {
                    check_decl(&buf.split_to(len))?;
                    self.state = State::Prolog { decl_seen: true };
                }
                Item::Element { len, self_closing } if header => {
                    let raw = buf.split_to(len);
                    let open = self.parse_header(&raw)?;
                    self.state = if self_closing { State::PendingClose } else { State::Stream };
                    return Ok(Some(XmlEvent::StreamOpen(open)));
                }
                Item::Element { len, .. } => {
                    let raw = buf.split_to(len);
                    let el = build_element(&raw, &self.stream_ns, &self.limits)?;
                    return Ok(Some(XmlEvent::Stanza(el)));
                }
                Item::EndTag(len) => {
                    if header {
                        return Err(nwf("end tag before the stream header"));
                    }
                    let raw = buf.split_to(len);
                    let name = raw.get(2..raw.len().saturating_sub(1)).unwrap_or_default().trim_ascii_end();
                    if name != self.header_qname.as_bytes() {
                        return Err(nwf(format!(
                            "end tag </{}> does not match <{}>",
                            String::from_utf8_lossy(name),
                            self.header_qname
                        )));
                    }
                    self.state = State::Closed;
                    return Ok(Some(XmlEvent::StreamClose));
                }
            }
        }
    }

    fn parse_header(&mut self, raw: &[u8]) -> Result<Element, XmlError> {
        let src = xml_str(raw)?;
        let mut reader = Reader::from_str(src);
        let start = match reader.read_event().map_err(qx_err)? {
            Event::Start(s) | Event::Empty(s) => s,
            _ => return Err(nwf("expected the stream header")),
        };
        let mut local = Vec::new();
        let open = open_element(&start, &[], &mut local, &self.limits)?;
        self.header_qname = start.name().0.to_owned();
        self.stream_ns = local;
        Ok(open)
    }
}

/// Parses one complete standalone element (a WebSocket XMPP frame per RFC 7395, or a BOSH
/// `<body>` document with its children). Same limits and restrictions as [`StreamParser`]; an
/// XML declaration and surrounding whitespace are allowed, anything else around the element
/// is not.
pub fn parse_element(bytes: &[u8], limits: &Limits) -> Result<Element, XmlError> {
    let mut rest = bytes.get(check_bom(bytes, true)?.unwrap_or(0)..).unwrap_or_default();
    let mut allow_decl = true;
    loop {
        rest = rest.trim_ascii_start();
        match rest.first() {
            None => return Err(nwf("no element")),
            Some(b'<') => {}
            Some(_) => return Err(nwf("character data outside of the element")),
        }
        match Scanner::default().scan(rest, limits, false, allow_decl)? {
            None => return Err(nwf("incomplete element")),
            Some(Item::EndTag(_)) => return Err(nwf("unexpected end tag")),
            Some(Item::Decl(len)) => {
                check_decl(rest.get(..len).unwrap_or_default())?;
                rest = rest.get(len..).unwrap_or_default();
                allow_decl = false;
            }
            Some(Item::Element { len, .. }) => {
                let el = build_element(rest.get(..len).unwrap_or_default(), &[], limits)?;
                let tail = rest.get(len..).unwrap_or_default().trim_ascii_start();
                if !tail.is_empty() {
                    // Let a trailing comment/PI/DOCTYPE be reported as what it is.
                    if tail.first() == Some(&b'<') {
                        Scanner::default().scan(tail, limits, false, false)?;
                    }
                    return Err(nwf("data after the element"));
                }
                return Ok(el);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Building elements from complete bytes (quick-xml)
// ---------------------------------------------------------------------------------------------

/// Builds the element whose complete bytes (found by the scanner) are `raw`, resolving
/// namespaces against `base` (the stream header's declarations).
fn build_element(raw: &[u8], base: &[(String, String)], limits: &Limits) -> Result<Element, XmlError> {
    let src = xml_str(raw)?;
    let mut reader = Reader::from_str(src);
    // Declarations made inside the stanza, innermost last; truncated when an element ends.
    let mut local: Vec<(String, String)> = Vec::new();
    // Open elements with the length of `local` before their own declarations.
    let mut stack: Vec<(Element, usize)> = Vec::new();
    // Character data of the current element not yet pushed as a node (merges refs and CDATA).
    let mut text = String::new();
    loop {
        match reader.read_event().map_err(qx_err)? {
            Event::Start(s) => {
                flush_text(&mut stack, &mut text);
                if stack.len() >= limits.max_depth {
                    return Err(XmlError::TooDeep(limits.max_depth));
                }
                let mark = local.len();
                let el = open_element(&s, base, &mut local, limits)?;
                stack.push((el, mark));
            }
            Event::Empty(s) => {
                flush_text(&mut stack, &mut text);
                if stack.len() >= limits.max_depth {
                    return Err(XmlError::TooDeep(limits.max_depth));
                }
                let mark = local.len();
                let el = open_element(&s, base, &mut local, limits)?;
                local.truncate(mark);
                if let Some(root) = close_element(&mut stack, el) {
                    return Ok(root);
                }
            }
            Event::End(_) => {
                flush_text(&mut stack, &mut text);
                let Some((el, mark)) = stack.pop() else {
                    return Err(nwf("unexpected end tag"));
                };
                local.truncate(mark);
                if let Some(root) = close_element(&mut stack, el) {
                    return Ok(root);
                }
            }
            Event::Text(t) => {
                if stack.is_empty() {
                    return Err(nwf("character data outside of the element"));
                }
                if t.contains("]]>") {
                    return Err(nwf("']]>' in character data"));
                }
                text.push_str(&t.xml10_content());
            }
            Event::CData(c) => {
                if stack.is_empty() {
                    return Err(nwf("CDATA section outside of the element"));
                }
                text.push_str(&c.xml10_content());
            }
            Event::GeneralRef(r) => {
                if stack.is_empty() {
                    return Err(nwf("reference outside of the element"));
                }
                text.push(resolve_reference(&r)?);
            }
            // The scanner refuses these before quick-xml sees them; kept as a second line.
            Event::Comment(_) => return Err(restricted("comment")),
            Event::PI(_) | Event::Decl(_) => return Err(restricted("processing instruction")),
            Event::DocType(_) => return Err(restricted("DOCTYPE")),
            Event::Eof => return Err(nwf("unexpected end of element")),
        }
    }
}

fn flush_text(stack: &mut [(Element, usize)], text: &mut String) {
    if text.is_empty() {
        return;
    }
    if let Some((top, _)) = stack.last_mut() {
        top.children.push(Node::Text(std::mem::take(text)));
    }
}

/// Attaches a finished element to its parent, or returns it if it was the root.
fn close_element(stack: &mut [(Element, usize)], el: Element) -> Option<Element> {
    match stack.last_mut() {
        Some((parent, _)) => {
            parent.children.push(Node::Element(el));
            None
        }
        None => Some(el),
    }
}

/// Turns a start tag into an [`Element`] (no children), pushing its namespace declarations
/// onto `local`.
fn open_element(
    start: &BytesStart<'_>,
    base: &[(String, String)],
    local: &mut Vec<(String, String)>,
    limits: &Limits,
) -> Result<Element, XmlError> {
    let qname = start.name().0;
    let (prefix, name) = split_qname(qname)?;
    let mut attrs = Vec::new();
    let mut count = 0;
    // quick-xml checks the attribute syntax and duplicate names (with_checks is on).
    for attr in start.attributes() {
        let attr = attr.map_err(qx_err)?;
        count += 1;
        if count > limits.max_attrs {
            return Err(XmlError::TooManyAttributes(limits.max_attrs));
        }
        let key = attr.key.0;
        split_qname(key)?;
        let value = unescape_attr(&attr.value)?;
        if key == "xmlns" {
            local.push((String::new(), value));
        } else if let Some(p) = key.strip_prefix("xmlns:") {
            // Namespaces in XML 1.0 §3: prefixes cannot be undeclared, `xmlns` is reserved and
            // `xml` may only be bound to its own namespace (which no other prefix may use).
            if value.is_empty() {
                return Err(nwf(format!("empty namespace for prefix {p:?}")));
            }
            if p == "xmlns" || (p == "xml") != (value == NS_XML) {
                return Err(nwf(format!("reserved prefix or namespace in xmlns:{p}")));
            }
            local.push((p.to_owned(), value));
        } else {
            attrs.push((key.to_owned(), value));
        }
    }
    let ns = match prefix {
        Some(p) => lookup(base, local, p).ok_or_else(|| XmlError::BadNamespacePrefix(p.to_owned()))?,
        None => lookup(base, local, "").unwrap_or(""),
    }
    .to_owned();
    for (k, _) in &attrs {
        if let Some((p, _)) = k.split_once(':') {
            if lookup(base, local, p).is_none() {
                return Err(XmlError::BadNamespacePrefix(p.to_owned()));
            }
        }
    }
    Ok(Element { name: name.to_owned(), ns, attrs, children: Vec::new() })
}

/// Resolves a prefix (`""`: the default namespace) against the innermost declaration.
/// An undeclared default namespace (`xmlns=''`) resolves to `""`.
fn lookup<'a>(base: &'a [(String, String)], local: &'a [(String, String)], prefix: &str) -> Option<&'a str> {
    if prefix == "xml" {
        return Some(NS_XML);
    }
    local.iter().rev().chain(base.iter().rev()).find(|(p, _)| p == prefix).map(|(_, uri)| uri.as_str())
}

/// Splits and checks a qualified name (`NCName (':' NCName)?`).
fn split_qname(qname: &str) -> Result<(Option<&str>, &str), XmlError> {
    let (prefix, local) = match qname.split_once(':') {
        Some((p, l)) => (Some(p), l),
        None => (None, qname),
    };
    if !is_ncname(local) || prefix.is_some_and(|p| !is_ncname(p)) {
        return Err(nwf(format!("invalid name {qname:?}")));
    }
    Ok((prefix, local))
}

/// Unescapes an attribute value and applies XML 1.0 attribute-value normalization.
fn unescape_attr(raw: &str) -> Result<String, XmlError> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find(['&', '<', '\t', '\n', '\r']) {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        rest = match rest.as_bytes()[i] {
            b'<' => return Err(nwf("'<' in an attribute value")),
            b'&' => {
                let end = after.find(';').ok_or_else(|| nwf("unterminated reference"))?;
                out.push(resolve_reference(&after[..end])?);
                &after[end + 1..]
            }
            b'\r' => {
                out.push(' ');
                after.strip_prefix('\n').unwrap_or(after)
            }
            _ => {
                out.push(' ');
                after
            }
        };
    }
    out.push_str(rest);
    Ok(out)
}

/// Resolves the name of a reference (`amp`, `#60`, `#x3C`): only the five predefined entities
/// and character references exist here; any other entity would need a DTD.
fn resolve_reference(name: &str) -> Result<char, XmlError> {
    match name {
        "lt" => return Ok('<'),
        "gt" => return Ok('>'),
        "amp" => return Ok('&'),
        "apos" => return Ok('\''),
        "quot" => return Ok('"'),
        _ => {}
    }
    if let Some(num) = name.strip_prefix('#') {
        let (digits, radix) = match num.strip_prefix('x') {
            Some(hex) => (hex, 16),
            None => (num, 10),
        };
        // from_str_radix alone would also accept a leading '+'.
        let code = if !digits.is_empty() && digits.chars().all(|c| c.is_digit(radix)) {
            u32::from_str_radix(digits, radix).ok()
        } else {
            None
        };
        return code
            .and_then(char::from_u32)
            .filter(|&c| is_xml_char(c))
            .ok_or_else(|| nwf(format!("invalid character reference &{name};")));
    }
    if is_ncname(name) {
        Err(restricted(format!("entity reference &{name};")))
    } else {
        Err(nwf("malformed reference"))
    }
}

/// Checks an `<?...?>` found before the header / document element: only the XML declaration,
/// and only for UTF-8 (RFC 6120 §11.6).
fn check_decl(raw: &[u8]) -> Result<(), XmlError> {
    let src = xml_str(raw)?;
    match Reader::from_str(src).read_event().map_err(qx_err)? {
        Event::Decl(d) => {
            d.version().map_err(qx_err)?;
            if let Some(enc) = d.encoding() {
                let enc = enc.map_err(qx_err)?;
                if !enc.eq_ignore_ascii_case("utf-8") {
                    return Err(XmlError::UnsupportedEncoding(enc.into_owned()));
                }
            }
            Ok(())
        }
        Event::PI(_) => Err(restricted("processing instruction")),
        _ => Err(nwf("malformed XML declaration")),
    }
}

/// Byte order mark handling at the very start of a stream or document: skips a UTF-8 BOM and
/// refuses UTF-16 (by BOM or by the `<` encoded as two bytes). `None`: too few bytes to tell.
fn check_bom(b: &[u8], complete: bool) -> Result<Option<usize>, XmlError> {
    if b.starts_with(UTF8_BOM) {
        return Ok(Some(UTF8_BOM.len()));
    }
    if b.starts_with(&[0xFE, 0xFF])
        || b.starts_with(&[0xFF, 0xFE])
        || b.starts_with(&[0x00, b'<'])
        || b.starts_with(&[b'<', 0x00])
    {
        return Err(XmlError::UnsupportedEncoding("UTF-16".to_owned()));
    }
    if !complete && (b.len() < 2 || b == &UTF8_BOM[..2]) {
        return Ok(None);
    }
    Ok(Some(0))
}

/// The bytes as UTF-8 containing only characters XML 1.0 allows.
fn xml_str(raw: &[u8]) -> Result<&str, XmlError> {
    let s = std::str::from_utf8(raw).map_err(|_| nwf("invalid UTF-8"))?;
    match s.chars().find(|&c| !is_xml_char(c)) {
        Some(c) => Err(nwf(format!("character U+{:04X} not allowed in XML", c as u32))),
        None => Ok(s),
    }
}

fn skip_whitespace(buf: &mut BytesMut) {
    let n = buf.len() - buf.trim_ascii_start().len();
    if n > 0 {
        let _ = buf.split_to(n);
    }
}

/// XML 1.0 `Char` (Rust `char`s are never surrogates).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Whether a byte can start a name; non-ASCII is let through and checked on the full name.
fn is_name_start_byte(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':' || b >= 0x80
}

fn is_name_start_char(c: char) -> bool {
    matches!(c,
        'A'..='Z' | '_' | 'a'..='z' | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}'
        | '\u{F8}'..='\u{2FF}' | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}'
        | '\u{200C}'..='\u{200D}' | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}'
        | '\u{3001}'..='\u{D7FF}' | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}'
        | '\u{10000}'..='\u{EFFFF}')
}

fn is_name_char(c: char) -> bool {
    is_name_start_char(c)
        || matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

/// XML Namespaces `NCName`: a Name without colons.
fn is_ncname(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(is_name_start_char) && chars.all(is_name_char)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0' xml:lang='en'>";
    const AUTH: &str = "<auth mechanism='PLAIN' xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>AGp1bGlldAByMG0zMA==</auth>";
    const ROSTER: &str = "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>";
    const MESSAGE: &str = "<message to='juliet@example.com' type='chat' xml:lang='fr'>\
        <body>Ça va ? 日本語 🎉 &lt;b&gt; &amp; &quot;q&quot; &apos;a&apos; &#x263A;&#65;</body></message>";
    const CLOSE: &str = "</stream:stream>";

    fn client_stream() -> String {
        format!("{HEADER}\n{AUTH} {ROSTER}\r\n\t{MESSAGE}  {CLOSE}")
    }

    fn header_element() -> Element {
        Element::new("stream", NS_STREAMS)
            .with_attr("to", "localhost")
            .with_attr("version", "1.0")
            .with_attr("xml:lang", "en")
    }

    fn expected_client_events() -> Vec<XmlEvent> {
        vec![
            XmlEvent::StreamOpen(header_element()),
            XmlEvent::Stanza(
                Element::new("auth", "urn:ietf:params:xml:ns:xmpp-sasl")
                    .with_attr("mechanism", "PLAIN")
                    .with_text("AGp1bGlldAByMG0zMA=="),
            ),
            XmlEvent::Stanza(
                Element::new("iq", "jabber:client")
                    .with_attr("type", "get")
                    .with_attr("id", "r1")
                    .with_child(Element::new("query", "jabber:iq:roster")),
            ),
            XmlEvent::Stanza(
                Element::new("message", "jabber:client")
                    .with_attr("to", "juliet@example.com")
                    .with_attr("type", "chat")
                    .with_attr("xml:lang", "fr")
                    .with_child(
                        Element::new("body", "jabber:client").with_text("Ça va ? 日本語 🎉 <b> & \"q\" 'a' ☺A"),
                    ),
            ),
            XmlEvent::StreamClose,
        ]
    }

    /// Feeds `input` in the given chunks, draining events after each chunk.
    fn feed(parser: &mut StreamParser, chunks: &[&[u8]]) -> Result<Vec<XmlEvent>, XmlError> {
        let mut buf = BytesMut::new();
        let mut events = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(ev) = parser.parse(&mut buf)? {
                events.push(ev);
            }
        }
        Ok(events)
    }

    fn parse_all(input: &[u8]) -> Result<Vec<XmlEvent>, XmlError> {
        parse_all_with(input, Limits::default())
    }

    fn parse_all_with(input: &[u8], limits: Limits) -> Result<Vec<XmlEvent>, XmlError> {
        feed(&mut StreamParser::new(limits), &[input])
    }

    fn stanza(input: &str) -> Result<Element, XmlError> {
        let events = parse_all(format!("{HEADER}{input}").as_bytes())?;
        match events.as_slice() {
            [XmlEvent::StreamOpen(_), XmlEvent::Stanza(e)] => Ok(e.clone()),
            other => panic!("unexpected events {other:?}"),
        }
    }

    fn stanza_err(input: &str) -> XmlError {
        parse_all(format!("{HEADER}{input}").as_bytes()).unwrap_err()
    }

    #[test]
    fn header_and_stanzas_in_one_buffer() {
        assert_eq!(parse_all(client_stream().as_bytes()).unwrap(), expected_client_events());
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let input = client_stream();
        let input = input.as_bytes();
        let expected = expected_client_events();
        for i in 0..=input.len() {
            let mut p = StreamParser::new(Limits::default());
            let events = feed(&mut p, &[&input[..i], &input[i..]]).unwrap();
            assert_eq!(events, expected, "split at {i}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        let mut p = StreamParser::new(Limits::default());
        assert_eq!(feed(&mut p, &bytes).unwrap(), expected);
    }

    #[test]
    fn incomplete_input_leaves_buffer_and_waits() {
        let mut p = StreamParser::new(Limits::default());
        let mut buf = BytesMut::from(format!("{HEADER}<iq type='get' id='r1'><query xmlns='jabber:iq").as_bytes());
        assert!(matches!(p.parse(&mut buf), Ok(Some(XmlEvent::StreamOpen(_)))));
        assert_eq!(p.parse(&mut buf), Ok(None));
        assert_eq!(p.parse(&mut buf), Ok(None));
        assert!(buf.starts_with(b"<iq"));
        buf.extend_from_slice(b":roster'/></iq>");
        assert!(matches!(p.parse(&mut buf), Ok(Some(XmlEvent::Stanza(_)))));
        assert!(buf.is_empty());
    }

    #[test]
    fn whitespace_keepalives_are_consumed() {
        let mut p = StreamParser::new(Limits::default());
        let mut buf = BytesMut::from(HEADER.as_bytes());
        assert!(matches!(p.parse(&mut buf), Ok(Some(XmlEvent::StreamOpen(_)))));
        for _ in 0..3 {
            buf.extend_from_slice(b" ");
            assert_eq!(p.parse(&mut buf), Ok(None));
            assert!(buf.is_empty(), "whitespace must not accumulate");
        }
        buf.extend_from_slice(b"\n\r\n\t<presence/>");
        assert_eq!(p.parse(&mut buf), Ok(Some(XmlEvent::Stanza(Element::new("presence", "jabber:client")))));
    }

    #[test]
    fn whitespace_text_inside_stanzas_is_kept() {
        let e = stanza("<message>\n  <body> </body>\r\n</message>").unwrap();
        assert_eq!(
            e.children,
            vec![
                Node::Text("\n  ".into()),
                Node::Element(Element::new("body", "jabber:client").with_text(" ")),
                Node::Text("\n".into()),
            ]
        );
        assert_eq!(e.child("body", "jabber:client").unwrap().text(), " ");
    }

    #[test]
    fn cdata_refs_and_text_merge_into_one_node() {
        let e = stanza("<body>a<![CDATA[<b>&amp;]]]]>&gt;c\r\nd</body>").unwrap();
        assert_eq!(e.children, vec![Node::Text("a<b>&amp;]]>c\nd".into())]);
    }

    #[test]
    fn reset_expects_a_new_header() {
        let mut p = StreamParser::new(Limits::default());
        let first = feed(&mut p, &[format!("{HEADER}{AUTH}").as_bytes()]).unwrap();
        assert_eq!(first.len(), 2);
        p.reset();
        let restart = format!("{HEADER}{ROSTER}");
        let events = feed(&mut p, &[restart.as_bytes()]).unwrap();
        assert_eq!(events[0], XmlEvent::StreamOpen(header_element()));
        assert!(matches!(&events[1], XmlEvent::Stanza(e) if e.is("iq", "jabber:client")));
        // Without a reset, a second header is just a (never ending) stanza; with one, the
        // header may even arrive in the same buffer as the stanza before it.
        let mut p = StreamParser::new(Limits::default());
        let mut buf = BytesMut::from(format!("{HEADER}{AUTH}{HEADER}").as_bytes());
        assert!(matches!(p.parse(&mut buf), Ok(Some(XmlEvent::StreamOpen(_)))));
        assert!(matches!(p.parse(&mut buf), Ok(Some(XmlEvent::Stanza(_)))));
        p.reset();
        assert_eq!(p.parse(&mut buf), Ok(Some(XmlEvent::StreamOpen(header_element()))));
        assert_eq!(p.stream_default_ns(), "jabber:client");
    }

    #[test]
    fn server_side_stream_prefix_resolves() {
        let input = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' \
            from='localhost' id='abc' version='1.0'><stream:features><mechanisms \
            xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms>\
            </stream:features><stream:error><not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
            </stream:error></stream:stream>";
        let events = parse_all(input.as_bytes()).unwrap();
        let XmlEvent::Stanza(features) = &events[1] else { panic!() };
        assert!(features.is("features", NS_STREAMS));
        let mechs = features.child("mechanisms", "urn:ietf:params:xml:ns:xmpp-sasl").unwrap();
        assert_eq!(mechs.child("mechanism", "urn:ietf:params:xml:ns:xmpp-sasl").unwrap().text(), "PLAIN");
        let XmlEvent::Stanza(error) = &events[2] else { panic!() };
        assert!(error.is("error", NS_STREAMS));
        assert!(error.child("not-well-formed", "urn:ietf:params:xml:ns:xmpp-streams").is_some());
        assert_eq!(events[3], XmlEvent::StreamClose);
    }

    #[test]
    fn stanza_level_prefixes_and_defaults() {
        let e = stanza("<x:foo xmlns:x='urn:x' x:a='1'><bar/><x:baz xmlns='urn:d'><q/></x:baz></x:foo>").unwrap();
        assert!(e.is("foo", "urn:x"));
        assert_eq!(e.attrs, vec![("x:a".to_owned(), "1".to_owned())]);
        let kids: Vec<_> = e.elements().collect();
        assert!(kids[0].is("bar", "jabber:client"));
        assert!(kids[1].is("baz", "urn:x"));
        assert!(kids[1].elements().next().unwrap().is("q", "urn:d"));
        // Undeclaring the default namespace.
        let e = stanza("<a xmlns=''/>").unwrap();
        assert!(e.is("a", ""));
        // A stream without a default namespace leaves unprefixed stanzas in no namespace.
        let input = "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'><message/>";
        let events = parse_all(input.as_bytes()).unwrap();
        assert_eq!(events[1], XmlEvent::Stanza(Element::new("message", "")));
    }

    #[test]
    fn self_closed_header_opens_and_closes() {
        let input = "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' to='a'/>";
        let events = parse_all(input.as_bytes()).unwrap();
        assert_eq!(
            events,
            vec![XmlEvent::StreamOpen(Element::new("stream", NS_STREAMS).with_attr("to", "a")), XmlEvent::StreamClose]
        );
    }

    #[test]
    fn mismatched_stream_end_and_trailing_data() {
        assert_eq!(stanza_err("</stream:strea>").condition(), "not-well-formed");
        let mut p = StreamParser::new(Limits::default());
        let mut buf = BytesMut::from(format!("{HEADER}{CLOSE} \n").as_bytes());
        assert!(matches!(p.parse(&mut buf), Ok(Some(XmlEvent::StreamOpen(_)))));
        assert_eq!(p.parse(&mut buf), Ok(Some(XmlEvent::StreamClose)));
        assert_eq!(p.parse(&mut buf), Ok(None));
        buf.extend_from_slice(b"<x/>");
        assert_eq!(p.parse(&mut buf).unwrap_err().condition(), "not-well-formed");
    }

    #[test]
    fn not_well_formed_inputs() {
        for bad in [
            "<a></b>",
            "<a b='1' b='2'/>",
            "<a b='1'c='2'/>",
            "<a b=1/>",
            "<a b='<'/>",
            "<a>&amp</a>",
            "<a>&#xD800;</a>",
            "<a>&#0;</a>",
            "<a>&#+65;</a>",
            "<a>x]]>y</a>",
            "<a>\u{1}</a>",
            "<1a/>",
            "<a:b:c xmlns:a='x'/>",
            "<a/ >",
            "< a/>",
            "<a xmlns:p=''/>",
            "<a xmlns:xml='urn:other'/>",
            "<a><![CDATX[x]]></a>",
        ] {
            assert_eq!(stanza_err(bad).condition(), "not-well-formed", "{bad}");
        }
        assert_eq!(stanza_err("hello").condition(), "not-well-formed");
        assert_eq!(parse_all(b"GET / HTTP/1.1\r\n").unwrap_err().condition(), "not-well-formed");
        let mut raw = format!("{HEADER}<a>").into_bytes();
        raw.extend_from_slice(&[0xC3, 0x28]);
        raw.extend_from_slice(b"</a>");
        assert_eq!(parse_all(&raw).unwrap_err().condition(), "not-well-formed");
    }

    #[test]
    fn errors_are_sticky_until_reset() {
        let mut p = StreamParser::new(Limits::default());
        let mut buf = BytesMut::from(format!("{HEADER}<!-- hi -->").as_bytes());
        assert!(p.parse(&mut buf).unwrap().is_some());
        let err = p.parse(&mut buf).unwrap_err();
        assert_eq!(p.parse(&mut buf), Err(err));
        p.reset();
        let mut buf = BytesMut::from(HEADER.as_bytes());
        assert!(p.parse(&mut buf).unwrap().is_some());
    }

    #[test]
    fn restricted_xml_is_refused() {
        let cases = [
            "<!DOCTYPE stream [<!ENTITY lol 'lol'>]>",
            "<!-- comment -->",
            "<?php echo 1 ?>",
            "<message><!-- c --></message>",
            "<message><?pi x?></message>",
            "<message><!ENTITY x 'y'></message>",
            "<message><body>&lol;</body></message>",
            "<message to='&lol;'/>",
            "<message>&nbsp;</message>",
        ];
        for bad in cases {
            let err = stanza_err(bad);
            assert_eq!(err.condition(), "restricted-xml", "{bad}: {err}");
        }
        // Before the header, too, including the billion laughs preamble.
        let laughs = "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'><!ENTITY lol2 \
            '&lol;&lol;&lol;&lol;'>]><stream:stream>&lol2;";
        assert_eq!(parse_all(laughs.as_bytes()).unwrap_err(), restricted("DTD markup (DOCTYPE, ENTITY, ...)"));
        assert_eq!(parse_all(b"<!-- x --><stream:stream>").unwrap_err().condition(), "restricted-xml");
        assert_eq!(parse_all(b"<?xml-stylesheet href='x'?><stream:stream>").unwrap_err().condition(), "restricted-xml");
        // A second XML declaration is a processing instruction like any other.
        let twice = format!("<?xml version='1.0'?>{HEADER}");
        assert_eq!(parse_all(twice.as_bytes()).unwrap_err().condition(), "restricted-xml");
        // Refused as soon as the markup is recognizable, not when it is complete.
        let mut p = StreamParser::new(Limits::default());
        assert_eq!(feed(&mut p, &[format!("{HEADER}<a><!-").as_bytes()]).unwrap_err().condition(), "restricted-xml");
        let mut p = StreamParser::new(Limits::default());
        assert_eq!(feed(&mut p, &[b"<!D"]).unwrap_err().condition(), "restricted-xml");
    }

    #[test]
    fn undeclared_prefixes() {
        assert_eq!(stanza_err("<x:foo/>"), XmlError::BadNamespacePrefix("x".into()));
        assert_eq!(stanza_err("<foo y:a='1'/>"), XmlError::BadNamespacePrefix("y".into()));
        assert_eq!(stanza_err("<a><x:b xmlns:x='u'/><x:c/></a>"), XmlError::BadNamespacePrefix("x".into()));
        let err = parse_all(b"<stream:stream xmlns='jabber:client'>").unwrap_err();
        assert_eq!(err.condition(), "bad-namespace-prefix");
    }

    #[test]
    fn encodings() {
        let utf8 =
            "<?xml version='1.0' encoding='UTF-8'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams'>";
        assert!(parse_all(utf8.as_bytes()).is_ok());
        let latin = "<?xml version='1.0' encoding='ISO-8859-1'?><stream:stream>";
        assert_eq!(parse_all(latin.as_bytes()), Err(XmlError::UnsupportedEncoding("ISO-8859-1".into())));
        assert_eq!(parse_all(&[0xFF, 0xFE, b'<', 0]).unwrap_err().condition(), "unsupported-encoding");
        let mut bom = UTF8_BOM.to_vec();
        bom.extend_from_slice(HEADER.as_bytes());
        let chunks: Vec<&[u8]> = bom.chunks(1).collect();
        assert_eq!(feed(&mut StreamParser::new(Limits::default()), &chunks).unwrap().len(), 1);
        assert_eq!(
            parse_element(b"<?xml version='1.0' encoding='utf-16'?><a/>", &Limits::default()).unwrap_err().condition(),
            "unsupported-encoding"
        );
    }

    #[test]
    fn mismatched_end_tag_is_refused_at_once() {
        let mut p = StreamParser::new(Limits::default());
        let mut buf = BytesMut::from(
            &b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"[..],
        );
        assert!(matches!(p.parse(&mut buf), Ok(Some(XmlEvent::StreamOpen(_)))));
        // The nesting never balances: the error must not wait for more input.
        buf.extend_from_slice(b"<message to='bob@localhost'><body>broken</mess>");
        assert_eq!(p.parse(&mut buf).unwrap_err().condition(), "not-well-formed");
        let mut p = StreamParser::new(Limits::default());
        let mut buf = BytesMut::from(&b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'><a><b/><c></c ></a>"[..]);
        assert!(matches!(p.parse(&mut buf), Ok(Some(XmlEvent::StreamOpen(_)))));
        assert!(
            matches!(p.parse(&mut buf), Ok(Some(XmlEvent::Stanza(e))) if e.name == "a"),
            "matching names with trailing space pass"
        );
    }

    #[test]
    fn depth_limit() {
        let limits = Limits { max_depth: 3, ..Limits::default() };
        let ok = format!("{HEADER}<a><b><c/></b></a>");
        assert_eq!(feed(&mut StreamParser::new(limits), &[ok.as_bytes()]).unwrap().len(), 2);
        let deep = format!("{HEADER}<a><b><c><d/></c></b></a>");
        assert_eq!(feed(&mut StreamParser::new(limits), &[deep.as_bytes()]), Err(XmlError::TooDeep(3)));
        // Partial input: refused at the fourth start tag, long before the stanza ends.
        let partial = format!("{HEADER}<a><b><c><d");
        let err = feed(&mut StreamParser::new(limits), &[partial.as_bytes()]).unwrap_err();
        assert_eq!(err, XmlError::TooDeep(3));
        assert_eq!(err.condition(), "policy-violation");
        assert_eq!(parse_element(b"<a><b><c><d/></c></b></a>", &limits), Err(XmlError::TooDeep(3)));
        // An unbounded nest fed in small pieces never gets past the limit.
        let mut p = StreamParser::new(Limits::default());
        let mut buf = BytesMut::from(HEADER.as_bytes());
        p.parse(&mut buf).unwrap();
        let mut result = Ok(None);
        for _ in 0..1000 {
            buf.extend_from_slice(b"<a>");
            result = p.parse(&mut buf);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(XmlError::TooDeep(32)));
        assert!(buf.len() < 200);
    }

    #[test]
    fn size_limit() {
        let limits = Limits { max_stanza_bytes: 64, ..Limits::default() };
        let body = "x".repeat(40);
        let fits = format!("<message><body>{}</body></message>", &body[..64 - 32]);
        assert_eq!(fits.len(), 64);
        let input = format!("{HEADER}{fits}{fits}");
        assert_eq!(
            feed(&mut StreamParser::new(Limits { max_stanza_bytes: 300, ..limits }), &[input.as_bytes()])
                .unwrap()
                .len(),
            3
        );
        let mut p = StreamParser::new(Limits { max_stanza_bytes: 300, ..limits });
        let mut buf = BytesMut::from(HEADER.as_bytes());
        p.parse(&mut buf).unwrap();
        p.limits.max_stanza_bytes = 64;
        buf.extend_from_slice(fits.as_bytes());
        assert!(matches!(p.parse(&mut buf), Ok(Some(XmlEvent::Stanza(_)))));
        let too_big = format!("<message><body>{body}</body></message>");
        buf.extend_from_slice(too_big.as_bytes());
        assert_eq!(p.parse(&mut buf), Err(XmlError::TooLarge(64)));
        // Partial input: a stanza that never ends is refused once it passes the limit.
        let mut p = StreamParser::new(Limits { max_stanza_bytes: 300, ..limits });
        let mut buf = BytesMut::from(HEADER.as_bytes());
        p.parse(&mut buf).unwrap();
        p.limits.max_stanza_bytes = 64;
        buf.extend_from_slice(b"<message><body>");
        let mut result = Ok(None);
        for _ in 0..100 {
            buf.extend_from_slice(b"yyyyyyy");
            result = p.parse(&mut buf);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(XmlError::TooLarge(64)));
        assert!(buf.len() <= 64 + 7);
        assert_eq!(XmlError::TooLarge(1).condition(), "policy-violation");
        // The header is bounded too (an endless start tag).
        let mut p = StreamParser::new(limits);
        let endless = format!("<stream:stream a='{}", "z".repeat(100));
        assert_eq!(feed(&mut p, &[endless.as_bytes()]), Err(XmlError::TooLarge(64)));
        assert_eq!(parse_element(too_big.as_bytes(), &limits), Err(XmlError::TooLarge(64)));
    }

    #[test]
    fn attribute_limit() {
        let limits = Limits { max_attrs: 3, ..Limits::default() };
        // The header counts too: this one has two attributes.
        const HEADER: &str = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
        assert_eq!(
            parse_all_with(HEADER.as_bytes(), Limits { max_attrs: 1, ..limits }),
            Err(XmlError::TooManyAttributes(1))
        );
        let ok = format!("{HEADER}<a b='1' c='2' d='3'/>");
        assert_eq!(feed(&mut StreamParser::new(limits), &[ok.as_bytes()]).unwrap().len(), 2);
        let bad = format!("{HEADER}<a b='1' c='2' d='3' e='4'/>");
        assert_eq!(feed(&mut StreamParser::new(limits), &[bad.as_bytes()]), Err(XmlError::TooManyAttributes(3)));
        // Partial input: the start tag is not finished yet.
        let partial = format!("{HEADER}<a b='1' c='2' d='3' e='");
        let err = feed(&mut StreamParser::new(limits), &[partial.as_bytes()]).unwrap_err();
        assert_eq!(err, XmlError::TooManyAttributes(3));
        assert_eq!(err.condition(), "policy-violation");
        // '=' inside values does not count; namespace declarations do.
        assert!(parse_element(b"<a b='=' c='==' d='x=y'/>", &limits).is_ok());
        assert_eq!(
            parse_element(b"<a xmlns='u' xmlns:p='v' c='1' d='2'/>", &limits),
            Err(XmlError::TooManyAttributes(3))
        );
    }

    #[test]
    fn large_stanza_in_small_reads_is_linear() {
        // 200 KB in 3-byte reads: quadratic rescanning would take ~7e9 steps.
        let body = "0123456789".repeat(20_000);
        let input = format!("{HEADER}<message><body>{body}</body></message>");
        let mut p = StreamParser::new(Limits::default());
        let mut buf = BytesMut::new();
        let mut events = Vec::new();
        for chunk in input.as_bytes().chunks(3) {
            buf.extend_from_slice(chunk);
            while let Some(ev) = p.parse(&mut buf).unwrap() {
                events.push(ev);
            }
        }
        let XmlEvent::Stanza(m) = &events[1] else { panic!() };
        assert_eq!(m.child("body", "jabber:client").unwrap().text(), body);
    }

    #[test]
    fn attribute_values_are_unescaped_and_normalized() {
        let e = stanza("<a v='x&amp;&lt;&gt;&quot;&apos;&#65;&#x42;' w=\"it's\" n='a\r\nb\tc\nd&#10;e'/>").unwrap();
        assert_eq!(e.attr("v"), Some("x&<>\"'AB"));
        assert_eq!(e.attr("w"), Some("it's"));
        assert_eq!(e.attr("n"), Some("a b c d\ne"));
    }

    #[test]
    fn element_accessors() {
        let mut e = Element::new("iq", "jabber:client")
            .with_attr("type", "get")
            .with_attr("id", "1")
            .with_attr("type", "set")
            .with_text("a")
            .with_text("")
            .with_text("b")
            .with_child(Element::new("query", "jabber:iq:roster"))
            .with_text("c");
        assert_eq!(e.attrs.len(), 2);
        assert_eq!(e.attr("type"), Some("set"));
        assert_eq!(e.text(), "abc");
        assert_eq!(e.children.len(), 3);
        assert_eq!(e.remove_attr("id"), Some("1".into()));
        assert_eq!(e.remove_attr("id"), None);
        e.child_mut("query", "jabber:iq:roster").unwrap().set_attr("ver", "7");
        assert_eq!(e.child("query", "jabber:iq:roster").unwrap().attr("ver"), Some("7"));
        assert!(e.child("query", "other").is_none());
        e.push_child(Element::new("x", "y"));
        assert_eq!(e.elements().count(), 2);
    }

    #[test]
    fn serialization_escapes_attributes_and_text() {
        let e = Element::new("message", "jabber:client")
            .with_attr("to", "a'b\"c<d>&e\tf\ng\rh")
            .with_child(Element::new("body", "jabber:client").with_text("<b>&'\"</b>\r\n\u{1}ü"));
        assert_eq!(
            e.to_string(),
            "<message xmlns='jabber:client' to='a&apos;b&quot;c&lt;d&gt;&amp;e&#9;f&#10;g&#13;h'>\
             <body>&lt;b&gt;&amp;&apos;&quot;&lt;/b&gt;&#13;\n\u{FFFD}ü</body></message>"
        );
        let mut out = BytesMut::new();
        e.write_to("jabber:client", &mut out);
        assert!(out.starts_with(b"<message to="));
        // Everything but the control character comes back.
        let back = parse_element(&e.to_bytes(), &Limits::default()).unwrap();
        assert_eq!(back.attr("to"), e.attr("to"));
        assert_eq!(back.elements().next().unwrap().text(), "<b>&'\"</b>\r\n\u{FFFD}ü");
    }

    #[test]
    fn stream_namespace_output_form() {
        let features = Element::new("features", NS_STREAMS)
            .with_child(
                Element::new("starttls", "urn:ietf:params:xml:ns:xmpp-tls")
                    .with_child(Element::new("required", "urn:ietf:params:xml:ns:xmpp-tls")),
            )
            .with_child(Element::new("bind", "urn:ietf:params:xml:ns:xmpp-bind"))
            .with_child(Element::new("ver", "jabber:client"));
        let mut out = BytesMut::new();
        features.write_to("jabber:client", &mut out);
        assert_eq!(
            &out[..],
            b"<stream:features xmlns:stream='http://etherx.jabber.org/streams'>\
              <starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>\
              <bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/><ver/></stream:features>"
        );
        let error = Element::new("error", NS_STREAMS)
            .with_child(Element::new("not-well-formed", "urn:ietf:params:xml:ns:xmpp-streams"));
        assert_eq!(
            error.to_string(),
            "<stream:error xmlns:stream='http://etherx.jabber.org/streams'>\
             <not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"
        );
        assert_eq!(Element::new("a", "").to_string(), "<a/>");
        // And the parser reads it back, with or without the stream's own declaration.
        assert_eq!(parse_element(&error.to_bytes(), &Limits::default()).unwrap(), error);
        let mut buf = BytesMut::from(HEADER.as_bytes());
        let mut p = StreamParser::new(Limits::default());
        p.parse(&mut buf).unwrap();
        buf.extend_from_slice(&out);
        assert_eq!(p.parse(&mut buf), Ok(Some(XmlEvent::Stanza(features))));
    }

    #[test]
    fn round_trip_of_client_stanzas() {
        for ev in expected_client_events() {
            if let XmlEvent::Stanza(e) = ev {
                assert_eq!(parse_element(&e.to_bytes(), &Limits::default()).unwrap(), e);
                let mut out = BytesMut::new();
                e.write_to("jabber:client", &mut out);
                let again = stanza(std::str::from_utf8(&out).unwrap()).unwrap();
                assert_eq!(again, e);
            }
        }
    }

    #[test]
    fn websocket_open_frame() {
        let open = parse_element(
            b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>",
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(
            open,
            Element::new("open", "urn:ietf:params:xml:ns:xmpp-framing")
                .with_attr("to", "localhost")
                .with_attr("version", "1.0")
        );
    }

    #[test]
    fn bosh_body() {
        let body = parse_element(
            b"<body rid='1' xmlns='http://jabber.org/protocol/httpbind'><message xmlns='jabber:client' \
              to='a@b'><body>hi</body></message></body>",
            &Limits::default(),
        )
        .unwrap();
        assert!(body.is("body", "http://jabber.org/protocol/httpbind"));
        assert_eq!(body.attr("rid"), Some("1"));
        let msg = body.child("message", "jabber:client").unwrap();
        assert_eq!(msg.attr("to"), Some("a@b"));
        assert_eq!(msg.child("body", "jabber:client").unwrap().text(), "hi");
        // XEP-0206 restart: prefixed attribute with its declaration.
        let restart = parse_element(
            b"<?xml version='1.0'?>\n<body rid='2' xmlns='http://jabber.org/protocol/httpbind' \
              xmlns:xmpp='urn:xmpp:xbosh' xmpp:restart='true'/>\n",
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(restart.attr("xmpp:restart"), Some("true"));
    }

    #[test]
    fn parse_element_refusals() {
        let l = Limits::default();
        assert_eq!(parse_element(b"", &l).unwrap_err().condition(), "not-well-formed");
        assert_eq!(parse_element(b"  ", &l).unwrap_err().condition(), "not-well-formed");
        assert_eq!(parse_element(b"<a>", &l).unwrap_err().condition(), "not-well-formed");
        assert_eq!(parse_element(b"<a/><b/>", &l).unwrap_err().condition(), "not-well-formed");
        assert_eq!(parse_element(b"<a/>x", &l).unwrap_err().condition(), "not-well-formed");
        assert_eq!(parse_element(b"<a/><!-- c -->", &l).unwrap_err().condition(), "restricted-xml");
        assert_eq!(parse_element(b"<!DOCTYPE a><a/>", &l).unwrap_err().condition(), "restricted-xml");
        assert_eq!(parse_element(b"<a>&x;</a>", &l).unwrap_err().condition(), "restricted-xml");
        assert_eq!(parse_element(b"</a>", &l).unwrap_err().condition(), "not-well-formed");
    }

    // ---- property tests ----

    fn xml_text() -> impl Strategy<Value = String> {
        any::<String>().prop_map(|s| s.chars().map(|c| if is_xml_char(c) { c } else { '?' }).collect())
    }

    fn name() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["a", "b", "message", "body", "x-y", "q.1", "_z", "é", "日本"]).prop_map(String::from)
    }

    fn ns() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["jabber:client", "urn:x", "urn:y:z", NS_STREAMS, "http://e.com/?a=1&b='2'\t"])
            .prop_map(String::from)
    }

    fn attrs() -> impl Strategy<Value = Vec<(String, String)>> {
        let key = prop::sample::select(vec!["to", "from", "id", "type", "xml:lang", "a-b", "x.y"]);
        prop::collection::btree_map(key, xml_text(), 0..4)
            .prop_map(|m| m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    fn element() -> impl Strategy<Value = Element> {
        let leaf = (name(), ns(), attrs()).prop_map(|(n, ns, attrs)| Element { attrs, ..Element::new(n, ns) });
        leaf.prop_recursive(4, 32, 5, |inner| {
            let child = prop_oneof![inner.prop_map(Node::Element), xml_text().prop_map(Node::Text)];
            (name(), ns(), attrs(), prop::collection::vec(child, 0..5)).prop_map(|(n, ns, attrs, kids)| {
                let mut e = Element { attrs, ..Element::new(n, ns) };
                for k in kids {
                    e = match k {
                        Node::Element(c) => e.with_child(c),
                        Node::Text(t) => e.with_text(t),
                    };
                }
                e
            })
        })
    }

    /// Splits `input` at the given (arbitrary) points.
    fn split_at_points(input: &[u8], mut points: Vec<usize>) -> Vec<&[u8]> {
        points.iter_mut().for_each(|p| *p %= input.len() + 1);
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut last = 0;
        for p in points {
            chunks.push(&input[last..p]);
            last = p;
        }
        chunks.push(&input[last..]);
        chunks
    }

    /// Tokens that steer random input into every scanner state.
    fn xmlish() -> impl Strategy<Value = Vec<u8>> {
        let token = prop::sample::select(vec![
            "<",
            ">",
            "/",
            "'",
            "\"",
            "=",
            " ",
            "a",
            "x:",
            "stream:stream",
            "</stream:stream>",
            "xmlns='u'",
            "xmlns:stream='http://etherx.jabber.org/streams'",
            "&amp;",
            "&",
            ";",
            "&#x1F600;",
            "<![CDATA[",
            "]]>",
            "]",
            "<?xml version='1.0'?>",
            "<?",
            "?>",
            "<!--",
            "<!DOCTYPE",
            "\u{e9}",
            "\u{0}",
            "\r\n",
            HEADER,
        ]);
        prop::collection::vec(token, 0..40).prop_map(|t| t.concat().into_bytes())
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            data in prop::collection::vec(any::<u8>(), 0..300),
            points in prop::collection::vec(any::<usize>(), 0..6),
            with_header in any::<bool>(),
        ) {
            let mut input = if with_header { HEADER.as_bytes().to_vec() } else { Vec::new() };
            input.extend_from_slice(&data);
            let limits = Limits { max_depth: 4, max_stanza_bytes: 128, max_attrs: 3 };
            let _ = feed(&mut StreamParser::new(limits), &split_at_points(&input, points));
            let _ = parse_element(&input, &limits);
        }

        #[test]
        fn xmlish_input_never_panics_and_chunking_does_not_matter(
            input in xmlish(),
            points in prop::collection::vec(any::<usize>(), 0..6),
        ) {
            let limits = Limits { max_depth: 4, max_stanza_bytes: 256, max_attrs: 3 };
            let whole = feed(&mut StreamParser::new(limits), &[&input]);
            let split = feed(&mut StreamParser::new(limits), &split_at_points(&input, points));
            prop_assert_eq!(whole, split);
            let _ = parse_element(&input, &limits);
        }

        #[test]
        fn elements_round_trip(e in element()) {
            let bytes = e.to_bytes();
            prop_assert_eq!(&parse_element(&bytes, &Limits::default()).unwrap(), &e);
            let shown = e.to_string();
            prop_assert_eq!(shown.as_bytes(), &bytes[..]);
        }

        #[test]
        fn elements_round_trip_through_a_split_stream(
            stanzas in prop::collection::vec(element(), 1..4),
            points in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut out = BytesMut::from(HEADER.as_bytes());
            for s in &stanzas {
                s.write_to("jabber:client", &mut out);
            }
            out.extend_from_slice(CLOSE.as_bytes());
            let events = feed(&mut StreamParser::new(Limits::default()), &split_at_points(&out, points)).unwrap();
            let mut expected = vec![XmlEvent::StreamOpen(header_element())];
            expected.extend(stanzas.into_iter().map(XmlEvent::Stanza));
            expected.push(XmlEvent::StreamClose);
            prop_assert_eq!(events, expected);
        }
    }
}
