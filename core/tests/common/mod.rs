//! Shared by the wire tests: a raw STOMP client that asserts bytes, not a
//! client library (those are exercised by the suites in `tests/`), and
//! [`link`]: in-process link pairs for the suites that drive sessions
//! without sockets.
#![allow(dead_code)] // each test file uses a different part

pub mod link;
#[cfg(feature = "redis")]
pub mod redis;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// A raw client that reads whole frames (up to NUL) off the socket.
pub struct Raw {
    pub s: TcpStream,
    pending: Vec<u8>,
}

impl Raw {
    pub async fn open(addr: SocketAddr) -> Raw {
        Raw { s: TcpStream::connect(addr).await.unwrap(), pending: Vec::new() }
    }

    /// CONNECT as `login`; returns the client and the server's answer.
    pub async fn login(addr: SocketAddr, login: &str, passcode: &str) -> (Raw, String) {
        let mut c = Raw::open(addr).await;
        c.send(&format!("CONNECT\naccept-version:1.2\nhost:/\nlogin:{login}\npasscode:{passcode}\n\n\0")).await;
        let f = c.frame().await;
        (c, f)
    }

    pub async fn connected(addr: SocketAddr, extra: &str) -> Raw {
        let mut c = Raw::open(addr).await;
        c.send(&format!("CONNECT\naccept-version:1.2\nlogin:guest\npasscode:guest\n{extra}\n\0")).await;
        let f = c.frame().await;
        assert!(f.starts_with("CONNECTED\n"), "{f}");
        c
    }

    pub async fn send(&mut self, s: &str) {
        self.s.write_all(s.as_bytes()).await.unwrap();
    }

    /// Next frame (heart-beat EOLs skipped), or "" when the server closed.
    pub async fn frame(&mut self) -> String {
        loop {
            while self.pending.first().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                self.pending.remove(0);
            }
            if let Some(i) = self.pending.iter().position(|b| *b == 0) {
                let f: Vec<u8> = self.pending.drain(..=i).collect();
                return String::from_utf8_lossy(&f[..f.len() - 1]).into_owned();
            }
            let mut buf = [0u8; 65536];
            let n =
                timeout(Duration::from_secs(5), self.s.read(&mut buf)).await.expect("frame within 5 s").unwrap_or(0);
            if n == 0 {
                return String::new();
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
    }

    /// Reads until the server closes; returns how many bytes came meanwhile.
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        let mut buf = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.s.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }
}

pub fn header<'a>(frame: &'a str, name: &str) -> Option<&'a str> {
    frame.lines().skip(1).take_while(|l| !l.is_empty()).find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
}

impl Raw {
    /// A client over an already connected stream (e.g. bound to a chosen source address).
    pub fn from_stream(s: TcpStream) -> Raw {
        Raw { s, pending: Vec::new() }
    }
}
