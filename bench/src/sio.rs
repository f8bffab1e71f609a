//! A minimal Socket.IO 4 client (Engine.IO protocol 4 over WebSocket,
//! Socket.IO protocol 5): just what S6 needs against bench/socketio/server.js.
//! Packets are WebSocket text messages: `0{..}` open (server), `40{auth}`
//! connect, `40{"sid"..}` connected, `42[..]` event, `42<id>[..]` event with
//! an ack, `43<id>[..]` ack, `2` ping (server) answered `3`. Written here so
//! both servers of S6 are driven by the same Rust process model and latency
//! histogram; check.js checks the server with the real socket.io-client.

use std::io;
use std::net::IpAddr;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{self, err, Ws};
use crate::stats::SharedStats;
use crate::worker::Target;

pub const PATH: &str = "/socket.io/?EIO=4&transport=websocket";

pub struct Client {
    ws: Ws,
}

/// A batch of (room, body) for the publisher task, and where its result goes.
type Job = (Vec<(String, String)>, oneshot::Sender<io::Result<()>>);

/// The publishing side of S6 (see [`Client::publisher`]).
pub struct Publisher {
    tx: mpsc::Sender<Job>,
}

impl Publisher {
    /// Sends `push` events (`io.to(room).emit("m", body)` on the server).
    pub async fn push(&mut self, msgs: &[(String, String)]) -> io::Result<()> {
        let (done, wait) = oneshot::channel();
        self.tx.send((msgs.to_vec(), done)).await.map_err(|_| err("publisher connection closed"))?;
        wait.await.map_err(|_| err("publisher connection closed"))?
    }
}

/// One text message from the server; pings are answered on the way.
async fn next_text(ws: &mut Ws) -> io::Result<String> {
    loop {
        match ws.next().await {
            None => return Err(err("closed by server")),
            Some(Err(e)) => return Err(io::Error::other(e)),
            Some(Ok(Message::Text(t))) => {
                if t.as_str() == "2" {
                    ws.send(Message::text("3")).await.map_err(io::Error::other)?;
                    continue;
                }
                return Ok(t.as_str().to_owned());
            }
            Some(Ok(Message::Close(_))) => return Err(err("closed by server")),
            Some(Ok(_)) => continue,
        }
    }
}

impl Client {
    /// Opens the WebSocket, connects to the main namespace as `uid` and joins
    /// `rooms` (each acknowledged, as a STOMP SUBSCRIBE's receipt).
    pub async fn open(t: &Target, src: Option<IpAddr>, uid: &str, rooms: &[&str]) -> io::Result<Client> {
        let host = format!("localhost:{}", t.addr.port());
        let mut ws = conn::ws(t.addr, src, &host, PATH, None).await?;
        let open = next_text(&mut ws).await?;
        if !open.starts_with('0') {
            return Err(err(format!("expected an Engine.IO open packet, got {open:?}")));
        }
        let auth = json!({"uid": uid, "password": t.password});
        ws.send(Message::text(format!("40{auth}"))).await.map_err(io::Error::other)?;
        let connected = next_text(&mut ws).await?;
        if !connected.starts_with("40") {
            return Err(err(format!("connect refused: {connected}")));
        }
        for (i, room) in rooms.iter().filter(|r| !r.is_empty()).enumerate() {
            ws.send(Message::text(format!("42{i}{}", json!(["join", room])))).await.map_err(io::Error::other)?;
            let want = format!("43{i}");
            loop {
                let m = next_text(&mut ws).await?;
                if m.starts_with(&want) {
                    break;
                }
            }
        }
        Ok(Client { ws })
    }

    /// A publisher: a task owns the connection, writes the batches it is
    /// given and answers the server's pings meanwhile (an idle publisher
    /// that does not is dropped after pingInterval + pingTimeout, 45 s).
    pub fn publisher(self) -> Publisher {
        let (tx, mut rx) = mpsc::channel::<Job>(1);
        let mut ws = self.ws;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    job = rx.recv() => {
                        let Some((msgs, done)) = job else { break };
                        let r = async {
                            for (room, body) in &msgs {
                                ws.feed(Message::text(format!("42{}", json!(["push", room, body])))).await?;
                            }
                            ws.flush().await
                        }
                        .await
                        .map_err(io::Error::other);
                        let _ = done.send(r);
                    }
                    m = ws.next() => match m {
                        Some(Ok(Message::Text(t))) if t.as_str() == "2" => {
                            if ws.send(Message::text("3")).await.is_err() { break; }
                        }
                        Some(Ok(_)) => {}
                        _ => break,
                    },
                }
            }
        });
        Publisher { tx }
    }

    /// Counts `m` events until the server closes; answers pings.
    pub async fn run(mut self, stats: SharedStats) {
        let why = loop {
            match next_text(&mut self.ws).await {
                Ok(m) if m.starts_with("42") => stats.borrow_mut().delivered(m.as_bytes()),
                Ok(_) => {}
                Err(e) => break e.to_string(),
            }
        };
        stats.borrow_mut().session_closed(why);
    }
}
