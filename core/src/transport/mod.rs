//! Transports: what carries a client's bytes (TCP, TLS, WebSocket, SockJS,
//! HTTP/1.1) and how connections are admitted.
//!
//! A protocol edge (STOMP, XMPP) runs over a link: a reading half that
//! appends client bytes to the edge's own decode buffer, and a writing half
//! that takes whole protocol units (one encoded frame or stanza).
//! Message-oriented transports (WebSocket, SockJS) turn one unit into one
//! message; byte streams just write it. The edge never knows which it has.
//!
//! The lower floor: files here import `config` and each other, never the
//! engine or an edge (`engine`, `stomp`, `xmpp`, `admin`). What runs on a
//! connection is the caller's closure; the accept loop ([`tcp::accept`])
//! takes a [`conn::Admission`] (the node's gate, task tracker, shutdown
//! signal), not the engine. Each edge wires its own listeners on top:
//! `stomp::listen`, `xmpp::listen`, `admin::listen`.
//!
//! - [`conn`]: admission (caps, slots, the spawn helper), client addresses
//!   behind trusted proxies (PROXY protocol, `Forwarded`), CORS, idle deadlines.
//! - [`tcp`]: the accept loop, TLS acceptors, byte-stream link halves.
//! - [`websocket`]: Herald's RFC 6455 WebSocket (sans-IO codec, link halves).
//! - [`http1`]: the small HTTP/1.1 front server (WebSocket upgrades, direct
//!   routes such as BOSH POSTs, everything else to hyper).
//! - [`sockjs`]: the SockJS server protocol; knows nothing of STOMP.
//! - [`forward`]: BOSH and SockJS requests sent on to the node holding
//!   their session (a cluster without sticky sessions).

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};

pub mod conn;
pub mod forward;
pub mod http1;
pub mod http_session;
pub mod sockjs;
pub mod tcp;
pub mod websocket;

/// Initial read buffer of SockJS's WebSocket transport (tungstenite), bytes:
/// small, because most connections are idle and an idle connection's
/// buffers are most of its memory.
pub const WS_READ_BUFFER: usize = 1024;

/// Sessions call this after a login: their connection no longer counts as
/// unauthenticated (`connections.max_unauthenticated*`).
pub use conn::authenticated;

/// Reading half of a client connection.
pub trait LinkRx: Send + 'static {
    /// Waits for client bytes and appends them to `buf`; returns how many were
    /// appended, `0` when the client closed its side.
    ///
    /// Must be cancel-safe: edges call it inside `tokio::select!`, and a
    /// dropped call must not lose bytes that were already read.
    fn recv(&mut self, buf: &mut BytesMut) -> impl Future<Output = io::Result<usize>> + Send;
}

/// Makes room for `need` more bytes in a write buffer. The first unit
/// after a flush takes a chunk at once: a batch of deliveries then fills
/// it without growing it by doubling (each growth a copy), and a flush
/// still releases it, so an idle connection holds none.
pub(crate) fn reserve_write(out: &mut BytesMut, need: usize) {
    const CHUNK: usize = 4096;
    if out.capacity() == 0 {
        out.reserve(need.max(CHUNK));
    } else {
        out.reserve(need);
    }
}

/// Writing half of a client connection.
pub trait LinkTx: Send + 'static {
    /// Queues one complete protocol unit. May buffer until [`LinkTx::flush`].
    fn feed(&mut self, unit: Bytes) -> impl Future<Output = io::Result<()>> + Send;
    /// Queues one unit given in two parts (per-recipient head, shared tail).
    /// Byte streams write both without joining them; message transports
    /// need one contiguous message, which this default builds.
    fn feed_split(&mut self, head: Bytes, tail: Bytes) -> impl Future<Output = io::Result<()>> + Send {
        let mut unit = BytesMut::with_capacity(head.len() + tail.len());
        unit.extend_from_slice(&head);
        unit.extend_from_slice(&tail);
        self.feed(unit.freeze())
    }
    /// Writes out everything fed so far.
    fn flush(&mut self) -> impl Future<Output = io::Result<()>> + Send;
    /// Flushes (best effort) and closes the connection.
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}

/// What an edge knows about where a session comes from.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Remote address, when the transport has one.
    pub addr: Option<SocketAddr>,
    pub transport: Transport,
}

/// How a session's bytes travel. Its name (`as_str`) is what stats, events,
/// the admin API and auth backends see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Tcp,
    Tls,
    Ws,
    SockJs,
    Bosh,
    /// No connection: the application's own calls, and in-process links.
    Local,
}

impl Transport {
    pub const fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::SockJs => "sockjs",
            Transport::Bosh => "bosh",
            Transport::Local => "local",
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Transport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}
