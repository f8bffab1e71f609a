//! XMPP over WebSocket (RFC 7395): each message is one element; `<open/>`
//! and `<close/>` in the framing namespace stand for the stream header and
//! its end.

use std::io;

use axum::extract::ws::{Message as WsMessage, Utf8Bytes, WebSocket};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};

use super::link::{StreamError, XmppIn, XmppRx, XmppTx};
use super::ns;
use super::xml::{parse_element, Element, Limits};

pub struct WsXmppRx {
    ws: SplitStream<WebSocket>,
    limits: Limits,
}

pub struct WsXmppTx {
    ws: SplitSink<WebSocket, WsMessage>,
}

pub fn split(socket: WebSocket, limits: Limits) -> (WsXmppRx, WsXmppTx) {
    let (tx, rx) = socket.split();
    (WsXmppRx { ws: rx, limits }, WsXmppTx { ws: tx })
}

impl XmppRx for WsXmppRx {
    async fn recv(&mut self) -> Result<Option<XmppIn>, StreamError> {
        loop {
            let text = match self.ws.next().await {
                None | Some(Ok(WsMessage::Close(_))) | Some(Err(_)) => return Ok(None),
                Some(Ok(WsMessage::Text(t))) => t,
                Some(Ok(WsMessage::Binary(_))) => {
                    return Err(StreamError::new("bad-format", "RFC 7395 frames are text"));
                }
                Some(Ok(_)) => continue,
            };
            if text.trim().is_empty() {
                continue; // a whitespace keepalive
            }
            let e = parse_element(text.as_bytes(), &self.limits).map_err(|e| StreamError::new(e.condition(), e.to_string()))?;
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
    async fn text(&mut self, bytes: Bytes) -> io::Result<()> {
        let t = Utf8Bytes::try_from(bytes).map_err(io::Error::other)?;
        self.ws.feed(WsMessage::Text(t)).await.map_err(io::Error::other)
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
        self.ws.flush().await.map_err(io::Error::other)
    }

    async fn close(&mut self, error: Option<StreamError>) {
        if let Some(e) = error {
            let _ = self.text(e.to_element().to_bytes()).await;
        }
        let _ = self.text(Element::new("close", ns::FRAMING).to_bytes()).await;
        let _ = self.ws.flush().await;
        let _ = self.ws.close().await;
    }
}
