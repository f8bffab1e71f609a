//! Client connections: TCP from a chosen loopback source address, and
//! WebSocket over it (small buffers: thousands of these live in one worker).

use std::io;
use std::net::{IpAddr, SocketAddr};

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub type Ws = WebSocketStream<TcpStream>;

pub fn err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// Opens a TCP connection to `addr` from `src` (port chosen by the kernel).
pub async fn tcp(addr: SocketAddr, src: Option<IpAddr>) -> io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    if let Some(ip) = src {
        sock.bind(SocketAddr::new(ip, 0))?;
    }
    let s = sock.connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Opens a WebSocket at `ws://host{path}` over a TCP connection to `addr`.
pub async fn ws(
    addr: SocketAddr,
    src: Option<IpAddr>,
    host: &str,
    path: &str,
    subprotocol: Option<&str>,
) -> io::Result<Ws> {
    let stream = tcp(addr, src).await?;
    let mut req = format!("ws://{host}{path}").into_client_request().map_err(io::Error::other)?;
    if let Some(p) = subprotocol.filter(|p| !p.is_empty()) {
        req.headers_mut().insert("Sec-WebSocket-Protocol", p.parse().map_err(io::Error::other)?);
    }
    let cfg = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(req, stream, Some(cfg)).await.map_err(io::Error::other)?;
    Ok(ws)
}

/// A byte-stream view used by STOMP: raw TCP, or one WebSocket message per frame.
pub enum Conn {
    Tcp(TcpStream),
    Ws(Box<Ws>),
}

impl Conn {
    pub async fn send(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.write_all(data).await,
            Conn::Ws(ws) => {
                let text = String::from_utf8_lossy(data).into_owned();
                ws.send(Message::text(text)).await.map_err(io::Error::other)
            }
        }
    }

    /// Appends what arrives next to `buf` (cancel-safe). EOF is an error.
    pub async fn recv(&mut self, buf: &mut BytesMut) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => {
                if buf.capacity() - buf.len() < 1024 {
                    buf.reserve(4096);
                }
                let n = s.read_buf(buf).await?;
                if n == 0 {
                    return Err(err("closed by server"));
                }
                Ok(())
            }
            Conn::Ws(ws) => loop {
                match ws.next().await {
                    None => return Err(err("closed by server")),
                    Some(Err(e)) => return Err(io::Error::other(e)),
                    Some(Ok(Message::Text(t))) => {
                        buf.extend_from_slice(t.as_bytes());
                        return Ok(());
                    }
                    Some(Ok(Message::Binary(b))) => {
                        buf.extend_from_slice(&b);
                        return Ok(());
                    }
                    Some(Ok(Message::Close(_))) => return Err(err("closed by server")),
                    Some(Ok(_)) => continue,
                }
            },
        }
    }

    pub async fn close(self) {
        match self {
            Conn::Tcp(mut s) => {
                let _ = s.shutdown().await;
            }
            Conn::Ws(mut ws) => {
                let _ = WebSocketStream::close(&mut *ws, None).await;
            }
        }
    }
}
