//! STOMP over WebSocket (RabbitMQ Web-STOMP's `/ws`), over Herald's own
//! WebSocket link (transport/websocket.rs).
//!
//! Several frames may arrive in one WebSocket message and one frame may be
//! split across messages: the link just appends message payloads to the
//! session's decode buffer. Each outgoing frame is one message: text when it
//! is UTF-8 (what stomp.js expects), binary otherwise. Imports only
//! `transport`: [`super::listen`] hands the link to the session.

use std::io;

use bytes::{Bytes, BytesMut};

use crate::transport::websocket::{WsRx, WsTx};
use crate::transport::{LinkRx, LinkTx};

/// Subprotocols offered for STOMP, most preferred first: the handshake picks
/// the first one the client offered, so the highest version wins (as in
/// RabbitMQ's Web-STOMP). A client naming none is accepted too.
pub const STOMP_SUBPROTOCOLS: [&str; 3] = ["v12.stomp", "v11.stomp", "v10.stomp"];

impl LinkRx for WsRx {
    async fn recv(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            // Protocol errors (a message over the size cap, bad UTF-8) come
            // as InvalidData: the edge says so in an ERROR before closing.
            match self.read_message().await? {
                None => return Ok(0),
                Some(m) if m.data.is_empty() => continue,
                Some(m) => {
                    buf.extend_from_slice(&m.data);
                    return Ok(m.data.len());
                }
            }
        }
    }
}

impl LinkTx for WsTx {
    async fn feed(&mut self, unit: Bytes) -> io::Result<()> {
        let text = std::str::from_utf8(&unit).is_ok();
        WsTx::feed(self, text, &[&unit]).await
    }

    async fn feed_split(&mut self, head: Bytes, tail: Bytes) -> io::Result<()> {
        // The head ends with a header line's newline, so no character
        // straddles the seam: both halves UTF-8 means the frame is.
        let text = std::str::from_utf8(&head).is_ok() && std::str::from_utf8(&tail).is_ok();
        WsTx::feed(self, text, &[&head, &tail]).await
    }

    async fn flush(&mut self) -> io::Result<()> {
        WsTx::flush(self).await
    }

    async fn close(&mut self) {
        WsTx::close(self).await
    }
}
