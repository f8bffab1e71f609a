//! What an XMPP session runs over, whatever carries it.
//!
//! TCP streams one XML document; RFC 7395 WebSocket sends one element per
//! message with `<open/>`/`<close/>` framing; BOSH wraps stanzas in `<body>`
//! documents and turns the stream header into session attributes. Each
//! transport frames its own way and hands the session the same events; the
//! session hands back serialized stanzas that already declare their namespace
//! (`xmlns='jabber:client'`, `xmlns:stream=...` on features and errors), which
//! is valid inside a TCP stream, a WebSocket frame and a BOSH body alike.

use std::future::Future;
use std::io;

use bytes::Bytes;

use super::xml::Element;

/// A framed event from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XmppIn {
    /// A stream header: TCP `<stream:stream>`, WebSocket `<open/>`, BOSH
    /// session creation or `xmpp:restart`. `to` is the domain asked for.
    Open { to: Option<String>, lang: Option<String>, version: Option<String> },
    /// One top-level element (stanza or negotiation element).
    Stanza(Element),
    /// The client closed the stream (`</stream:stream>`, `<close/>`, BOSH terminate).
    Close,
}

/// An RFC 6120 §4.9 stream error: a condition element name and optional text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamError {
    /// e.g. `not-well-formed`, `policy-violation`, `host-unknown`, `conflict`, `system-shutdown`.
    pub condition: &'static str,
    pub text: String,
}

impl StreamError {
    pub fn new(condition: &'static str, text: impl Into<String>) -> StreamError {
        StreamError { condition, text: text.into() }
    }

    /// `<stream:error><condition xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text ...>...</text></stream:error>`.
    pub fn to_element(&self) -> Element {
        const NS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
        let mut e = Element::new("error", super::ns::STREAM).with_child(Element::new(self.condition, NS));
        if !self.text.is_empty() {
            e.push_child(Element::new("text", NS).with_attr("xml:lang", "en").with_text(self.text.clone()));
        }
        e
    }
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.condition)?;
        if !self.text.is_empty() {
            write!(f, ": {}", self.text)?;
        }
        Ok(())
    }
}

/// Reading half. `recv` must be cancel-safe (it is polled in `select!`).
/// `Ok(None)` means the connection is gone without a close; `Err` is a
/// framing or XML error the session reports as a stream error.
pub trait XmppRx: Send + 'static {
    fn recv(&mut self) -> impl Future<Output = Result<Option<XmppIn>, StreamError>> + Send;
    /// The session restarted the stream (after SASL success): expect a new
    /// header. TCP resets its parser; BOSH waits for `xmpp:restart`.
    fn restart(&mut self);
}

/// Writing half.
pub trait XmppTx: Send + 'static {
    /// Sends the server's stream header: `id` is the stream id, `from` the domain.
    fn open(&mut self, id: &str, from: &str) -> impl Future<Output = io::Result<()>> + Send;
    /// Queues one serialized top-level element (stanza, features, SASL reply).
    fn send(&mut self, element: Bytes) -> impl Future<Output = io::Result<()>> + Send;
    fn flush(&mut self) -> impl Future<Output = io::Result<()>> + Send;
    /// Sends the stream error (if any) and the stream close, flushes and
    /// closes the connection; best effort.
    fn close(&mut self, error: Option<StreamError>) -> impl Future<Output = ()> + Send;
}
