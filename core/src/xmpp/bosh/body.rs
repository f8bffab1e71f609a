//! The BOSH `<body/>` codec, sans-IO: builds response bodies (session
//! attributes, terminal bodies with their condition) and turns a request's
//! parsed `<body/>` into a [`Request`] for the rid-window machine (its kind,
//! the [`XmppIn`] events it carries, its cost).
//!
//! May import: the XML element type ([`crate::xmpp::xml`]) and the XMPP
//! link events ([`crate::xmpp::link`]). Nothing of sessions or HTTP.

use std::time::Duration;

use axum::http::HeaderValue;
use bytes::{Bytes, BytesMut};

use crate::xmpp::link::XmppIn;
use crate::xmpp::xml::{Element, Node};

/// Namespace of the BOSH `<body/>` wrapper.
pub const NS_HTTPBIND: &str = "http://jabber.org/protocol/httpbind";
/// Namespace of the XEP-0206 attributes (`xmpp:version`, `xmpp:restart`).
pub const NS_XBOSH: &str = "urn:xmpp:xbosh";
pub(super) const NS_STREAM: &str = "http://etherx.jabber.org/streams";
pub(super) const NS_CLIENT: &str = "jabber:client";

/// The highest BOSH version spoken.
const VERSION: (u64, u64) = (1, 6);
/// The content type of BOSH answers (unless the creation request asked for
/// another XML type).
pub(super) const XML: &str = "text/xml; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Create,
    Restart,
    Terminate,
    Normal,
}

/// A parsed request body.
pub(super) struct Request {
    pub kind: Kind,
    pub items: Vec<XmppIn>,
    /// Body size, charged to the inbox while its items wait for the app.
    pub cost: usize,
    /// A plain poll: no payload, no restart or terminate.
    pub empty: bool,
}

/// The creation request's `to`, `xml:lang` and `xmpp:version`: what a
/// restart that leaves them out inherits.
#[derive(Debug, Default)]
pub(super) struct OpenDefaults {
    pub to: Option<String>,
    pub lang: Option<String>,
    pub version: Option<String>,
}

impl OpenDefaults {
    pub fn of(body: &Element) -> OpenDefaults {
        OpenDefaults {
            to: body.attr("to").map(str::to_owned),
            lang: body.attr("xml:lang").map(str::to_owned),
            version: xbosh_attr(body, "version").map(str::to_owned),
        }
    }
}

pub(super) fn secs(d: Duration) -> String {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).to_string()
}

fn push_escaped(out: &mut BytesMut, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.extend_from_slice(b"&amp;"),
            '<' => out.extend_from_slice(b"&lt;"),
            '>' => out.extend_from_slice(b"&gt;"),
            '\'' => out.extend_from_slice(b"&apos;"),
            '"' => out.extend_from_slice(b"&quot;"),
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

/// `<body xmlns='…httpbind' attrs…>payload</body>`.
pub(super) fn body_xml(attrs: &[(&str, String)], payload: &[Bytes]) -> Bytes {
    let size: usize = payload.iter().map(Bytes::len).sum();
    let mut out = BytesMut::with_capacity(64 + 32 * attrs.len() + size);
    out.extend_from_slice(b"<body xmlns='");
    out.extend_from_slice(NS_HTTPBIND.as_bytes());
    out.extend_from_slice(b"'");
    for (name, value) in attrs {
        out.extend_from_slice(b" ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"='");
        push_escaped(&mut out, value);
        out.extend_from_slice(b"'");
    }
    if payload.is_empty() {
        out.extend_from_slice(b"/>");
    } else {
        out.extend_from_slice(b">");
        for p in payload {
            out.extend_from_slice(p);
        }
        out.extend_from_slice(b"</body>");
    }
    out.freeze()
}

pub(super) fn empty_body() -> Bytes {
    body_xml(&[], &[])
}

pub(super) fn terminal_body(condition: Option<&str>, payload: &[Bytes]) -> Bytes {
    let mut attrs = vec![("type", "terminate".to_owned())];
    if let Some(c) = condition {
        attrs.push(("condition", c.to_owned()));
    }
    if !payload.is_empty() {
        attrs.push(("xmlns:stream", NS_STREAM.to_owned()));
    }
    body_xml(&attrs, payload)
}

/// An XEP-0206 attribute (`xmpp:NAME`, or another prefix bound to `urn:xmpp:xbosh`).
pub(super) fn xbosh_attr<'a>(body: &'a Element, local: &str) -> Option<&'a str> {
    if let Some(v) = body.attr(&format!("xmpp:{local}")) {
        return Some(v);
    }
    let prefix = body.attrs.iter().find_map(|(k, v)| k.strip_prefix("xmlns:").filter(|_| v == NS_XBOSH))?;
    body.attr(&format!("{prefix}:{local}"))
}

fn is_true(v: Option<&str>) -> bool {
    matches!(v.map(str::trim), Some("true" | "1"))
}

/// Elements without a namespace of their own inherit the body's; they mean
/// `jabber:client` (XEP-0206 §3).
fn into_client_ns(e: &mut Element) {
    if e.ns == NS_HTTPBIND {
        e.ns = NS_CLIENT.to_owned();
    }
    for child in &mut e.children {
        if let Node::Element(c) = child {
            into_client_ns(c);
        }
    }
}

/// `major.minor` as two integers.
fn parse_ver(v: &str) -> Option<(u64, u64)> {
    let (major, minor) = v.trim().split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

pub(super) fn negotiate_ver(asked: Option<&str>) -> String {
    let (major, minor) = asked.and_then(parse_ver).map_or(VERSION, |v| v.min(VERSION));
    format!("{major}.{minor}")
}

/// The `content` attribute of a creation request, when it names an XML type
/// (anything else could make a browser render stanzas as a page).
pub(super) fn content_type(asked: Option<&str>) -> HeaderValue {
    let ok = asked.filter(|c| {
        let media = c.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        media == "text/xml" || media == "application/xml"
    });
    ok.and_then(|c| HeaderValue::from_str(c.trim()).ok()).unwrap_or(HeaderValue::from_static(XML))
}

impl Request {
    /// `defaults`: the session's, which a restart inherits when it leaves
    /// them out.
    pub fn parse(body: Element, creating: bool, size: usize, defaults: Option<&OpenDefaults>) -> Request {
        let kind = if creating {
            Kind::Create
        } else if body.attr("type").map(str::trim) == Some("terminate") {
            Kind::Terminate
        } else if is_true(xbosh_attr(&body, "restart")) {
            Kind::Restart
        } else {
            Kind::Normal
        };
        let mut items = Vec::new();
        if matches!(kind, Kind::Create | Kind::Restart) {
            let pick =
                |own: Option<&str>, default: Option<&String>| own.map(str::to_owned).or_else(|| default.cloned());
            items.push(XmppIn::Open {
                to: pick(body.attr("to"), defaults.and_then(|d| d.to.as_ref())),
                lang: pick(body.attr("xml:lang"), defaults.and_then(|d| d.lang.as_ref())),
                version: pick(xbosh_attr(&body, "version"), defaults.and_then(|d| d.version.as_ref())),
            });
        }
        for child in body.children {
            if let Node::Element(mut e) = child {
                into_client_ns(&mut e);
                items.push(XmppIn::Stanza(e));
            }
        }
        let empty = kind == Kind::Normal && items.is_empty();
        if kind == Kind::Terminate {
            items.push(XmppIn::Close);
        }
        Request { kind, items, cost: size.max(1), empty }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmpp::xml::{parse_element, Limits};

    fn parse(xml: &str, creating: bool, defaults: Option<&OpenDefaults>) -> Request {
        let body = parse_element(xml.as_bytes(), &Limits::default()).unwrap();
        Request::parse(body, creating, xml.len(), defaults)
    }

    #[test]
    fn version_and_content_type_negotiation() {
        assert_eq!(negotiate_ver(Some("1.6")), "1.6");
        assert_eq!(negotiate_ver(Some("1.10")), "1.6");
        assert_eq!(negotiate_ver(Some("1.5")), "1.5");
        assert_eq!(negotiate_ver(Some("2.0")), "1.6");
        assert_eq!(negotiate_ver(None), "1.6");
        assert_eq!(negotiate_ver(Some("x")), "1.6");
        assert_eq!(content_type(Some("text/xml; charset=utf-8")), "text/xml; charset=utf-8");
        assert_eq!(content_type(Some("application/xml")), "application/xml");
        assert_eq!(content_type(Some("text/html")), XML);
        assert_eq!(content_type(None), XML);
        assert_eq!(
            body_xml(&[("a", "<'&\">".to_owned())], &[]),
            format!("<body xmlns='{NS_HTTPBIND}' a='&lt;&apos;&amp;&quot;&gt;'/>")
        );
    }

    #[test]
    fn request_kinds_and_items() {
        let xml = format!("<body xmlns='{NS_HTTPBIND}' rid='2' sid='s'/>");
        let poll = parse(&xml, false, None);
        assert_eq!((poll.kind, poll.empty, poll.items.len()), (Kind::Normal, true, 0));
        assert_eq!(poll.cost, xml.len(), "a request is charged its body size");
        // `pause` (session pause, not implemented) is ignored: still a plain poll.
        let paused = parse(&format!("<body xmlns='{NS_HTTPBIND}' rid='2' sid='s' pause='60'/>"), false, None);
        assert_eq!((paused.kind, paused.empty), (Kind::Normal, true));
        let msg =
            parse(&format!("<body xmlns='{NS_HTTPBIND}' rid='3' sid='s'><message to='a@b'/></body>"), false, None);
        assert_eq!((msg.kind, msg.empty), (Kind::Normal, false));
        // A stanza without a namespace of its own is `jabber:client`.
        assert!(matches!(&msg.items[..], [XmppIn::Stanza(m)] if m.is("message", NS_CLIENT)));
        let term = parse(
            &format!(
                "<body xmlns='{NS_HTTPBIND}' rid='4' sid='s' type='terminate'><presence type='unavailable'/></body>"
            ),
            false,
            None,
        );
        assert_eq!((term.kind, term.empty), (Kind::Terminate, false));
        assert!(matches!(&term.items[..], [XmppIn::Stanza(_), XmppIn::Close]));
    }

    #[test]
    fn restart_inherits_the_creation_attributes() {
        let create = format!(
            "<body xmlns='{NS_HTTPBIND}' rid='1' to='example.com' xml:lang='en' xmpp:version='1.0' xmlns:xmpp='{NS_XBOSH}'/>"
        );
        let body = parse_element(create.as_bytes(), &Limits::default()).unwrap();
        let defaults = OpenDefaults::of(&body);
        let req = Request::parse(body, true, create.len(), None);
        assert_eq!(req.kind, Kind::Create);
        let open =
            XmppIn::Open { to: Some("example.com".into()), lang: Some("en".into()), version: Some("1.0".into()) };
        assert_eq!(req.items, std::slice::from_ref(&open));
        let restart = parse(
            &format!("<body xmlns='{NS_HTTPBIND}' rid='5' sid='s' xmpp:restart='true' xmlns:xmpp='{NS_XBOSH}'/>"),
            false,
            Some(&defaults),
        );
        assert_eq!((restart.kind, restart.empty), (Kind::Restart, false));
        assert_eq!(restart.items, [open]);
    }

    #[test]
    fn response_bodies() {
        assert_eq!(empty_body(), format!("<body xmlns='{NS_HTTPBIND}'/>"));
        assert_eq!(
            terminal_body(Some("item-not-found"), &[]),
            format!("<body xmlns='{NS_HTTPBIND}' type='terminate' condition='item-not-found'/>")
        );
        assert_eq!(
            terminal_body(None, &[Bytes::from_static(b"<a/>"), Bytes::from_static(b"<b/>")]),
            format!("<body xmlns='{NS_HTTPBIND}' type='terminate' xmlns:stream='{NS_STREAM}'><a/><b/></body>")
        );
        assert_eq!(secs(Duration::from_millis(300)), "1");
        assert_eq!(secs(Duration::from_secs(60)), "60");
    }
}
