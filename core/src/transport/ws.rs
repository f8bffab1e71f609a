//! STOMP over WebSocket (RabbitMQ Web-STOMP's `/ws`).
//!
//! Several frames may arrive in one WebSocket message and one frame may be
//! split across messages: the link just appends message payloads to the
//! session's decode buffer. Each outgoing frame is one message: text when it
//! is UTF-8 (what stomp.js expects), binary otherwise.

use std::io;

use axum::extract::ws::{Message as WsMessage, WebSocket};
use bytes::{Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};

use super::{LinkRx, LinkTx};

/// Subprotocols offered for STOMP; a client naming none is accepted too.
pub const STOMP_SUBPROTOCOLS: [&str; 3] = ["v12.stomp", "v11.stomp", "v10.stomp"];

pub struct WsRx(pub SplitStream<WebSocket>);
pub struct WsTx(pub SplitSink<WebSocket, WsMessage>);

pub fn split(socket: WebSocket) -> (WsRx, WsTx) {
    let (tx, rx) = socket.split();
    (WsRx(rx), WsTx(tx))
}

impl LinkRx for WsRx {
    async fn recv(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            // `next()` is cancel-safe; the payload is copied before returning.
            match self.0.next().await {
                None | Some(Ok(WsMessage::Close(_))) => return Ok(0),
                // Protocol errors (a message over the size cap, bad UTF-8) are
                // the client's: InvalidData lets the edge say so before closing.
                Some(Err(e)) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                Some(Ok(WsMessage::Text(t))) if !t.is_empty() => {
                    buf.extend_from_slice(t.as_bytes());
                    return Ok(t.len());
                }
                Some(Ok(WsMessage::Binary(b))) if !b.is_empty() => {
                    buf.extend_from_slice(&b);
                    return Ok(b.len());
                }
                // Pings are answered by the WebSocket layer; empty messages carry nothing.
                Some(Ok(_)) => continue,
            }
        }
    }
}

impl LinkTx for WsTx {
    async fn feed(&mut self, unit: Bytes) -> io::Result<()> {
        let msg = match std::str::from_utf8(&unit) {
            Ok(_) => WsMessage::Text(axum::extract::ws::Utf8Bytes::try_from(unit).map_err(io::Error::other)?),
            Err(_) => WsMessage::Binary(unit),
        };
        self.0.feed(msg).await.map_err(io::Error::other)
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.0.flush().await.map_err(io::Error::other)
    }

    async fn close(&mut self) {
        let _ = self.0.flush().await;
        let _ = self.0.close().await;
    }
}
