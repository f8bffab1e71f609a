//! XMPP over WebSocket (RFC 7395): each message is one element; `<open/>`
//! and `<close/>` in the framing namespace stand for the stream header and
//! its end.

use std::io;

use bytes::Bytes;

use super::link::{StreamError, XmppIn, XmppRx, XmppTx};
use super::ns;
use super::xml::{parse_element, Element, Limits};
use crate::shaper::{self, Shaper};
use crate::transport::websocket::{WsError, WsRx, WsTx};

pub struct WsXmppRx {
    ws: WsRx,
    limits: Limits,
    /// Bytes per second (`[shaper]`); `None` when off.
    shaper: Option<Box<Shaper>>,
}

pub struct WsXmppTx {
    ws: WsTx,
}

pub fn link(rx: WsRx, tx: WsTx, limits: Limits, shaper: Option<Box<Shaper>>) -> (WsXmppRx, WsXmppTx) {
    (WsXmppRx { ws: rx, limits, shaper }, WsXmppTx { ws: tx })
}

impl XmppRx for WsXmppRx {
    async fn recv(&mut self) -> Result<Option<XmppIn>, StreamError> {
        loop {
            // Over its byte rate, the client is not read from until its tokens refill.
            if shaper::paused(&mut self.shaper) {
                shaper::pause(&mut self.shaper).await;
            }
            let message = self.ws.read_message().await;
            if let (Ok(Some(m)), Some(s)) = (&message, self.shaper.as_deref_mut()) {
                s.read(m.data.len());
            }
            let text = match message {
                Ok(Some(m)) if m.text => m.data,
                Ok(Some(_)) => return Err(StreamError::new("bad-format", "RFC 7395 frames are text")),
                Ok(None) => return Ok(None),
                // A message over the stanza limit is the client's to hear about.
                Err(e) => match e.get_ref().and_then(|e| e.downcast_ref::<WsError>()) {
                    Some(too_big @ WsError::TooBig(_)) => {
                        return Err(StreamError::new("policy-violation", too_big.to_string()))
                    }
                    _ => return Ok(None),
                },
            };
            if text.trim_ascii().is_empty() {
                continue; // a whitespace keepalive
            }
            let e = parse_element(&text, &self.limits).map_err(|e| StreamError::new(e.condition(), e.to_string()))?;
            // RFC 7395 §3.3.1: the stream is opened and closed by `<open/>` and
            // `<close/>` in the framing namespace; the same names in another
            // namespace, or a TCP-style `<stream:stream>`, are a wrong stream
            // namespace (RFC 6120 §4.9.3.10), not a stanza.
            if (matches!(e.name.as_str(), "open" | "close") && e.ns != ns::FRAMING) || e.is("stream", ns::STREAM) {
                return Err(StreamError::new(
                    "invalid-namespace",
                    format!("expected <{}/> in {}", if e.name == "close" { "close" } else { "open" }, ns::FRAMING),
                ));
            }
            return Ok(Some(if e.is("open", ns::FRAMING) {
                XmppIn::Open {
                    to: e.attr("to").map(str::to_owned),
                    lang: e.attr("xml:lang").map(str::to_owned),
                    version: e.attr("version").map(str::to_owned),
                }
            } else if e.is("close", ns::FRAMING) {
                XmppIn::Close
            } else {
                XmppIn::Stanza(e)
            }));
        }
    }

    fn restart(&mut self) {}
}

impl WsXmppTx {
    /// Elements are serialised from `str`s: always text.
    async fn text(&mut self, bytes: Bytes) -> io::Result<()> {
        self.ws.feed(true, &[&bytes]).await
    }
}

impl XmppTx for WsXmppTx {
    async fn open(&mut self, id: &str, from: &str) -> io::Result<()> {
        let open = Element::new("open", ns::FRAMING)
            .with_attr("from", from)
            .with_attr("id", id)
            .with_attr("version", "1.0")
            .with_attr("xml:lang", "en");
        self.text(open.to_bytes()).await
    }

    async fn send(&mut self, element: Bytes) -> io::Result<()> {
        self.text(element).await
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.ws.flush().await
    }

    async fn close(&mut self, error: Option<StreamError>) {
        if let Some(e) = error {
            let _ = self.text(e.to_element().to_bytes()).await;
        }
        let _ = self.text(Element::new("close", ns::FRAMING).to_bytes()).await;
        self.ws.close().await;
    }
}
