//! Why a session ended, as a public, numbered table.
//!
//! Every protocol edge reports these to its client in its own way (a STOMP
//! ERROR frame's `message` header, an XMPP stream error, a WebSocket close
//! code) and clients may decide from the number whether to reconnect, as with
//! Centrifugo's disconnect codes. Numbers are stable: add, never renumber.

use std::fmt;

/// | code | reason | reconnect? |
/// |------|--------|------------|
/// | 3000 | normal close (client said goodbye) | no need |
/// | 3001 | server shutting down | yes, with back-off |
/// | 3002 | kicked by an operator or the API | no |
/// | 3003 | slow consumer: the outbound queue overflowed | yes |
/// | 3004 | heart-beat timeout: the client went silent | yes |
/// | 3005 | connect timeout: no CONNECT in time | yes |
/// | 3006 | replaced: a new session bound the same XMPP resource | no |
/// | 4000 | protocol error: malformed frame or command | no (fix the client) |
/// | 4001 | frame, header or body over a configured limit | no |
/// | 4002 | authentication failed | no |
/// | 4003 | access refused: vhost or permission | no |
/// | 4004 | not found: queue or exchange | no |
/// | 4005 | precondition failed / resource locked | no |
/// | 4006 | too many: subscriptions, transactions, connections, queues; a full queue; logins busy or backed off | yes, later |
/// | 4007 | unsupported protocol version | no |
/// | 5000 | internal error, backend unavailable, or the node's memory alarm | yes, with back-off |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    Normal = 3000,
    Shutdown = 3001,
    Kicked = 3002,
    SlowConsumer = 3003,
    HeartbeatTimeout = 3004,
    ConnectTimeout = 3005,
    Replaced = 3006,
    Protocol = 4000,
    LimitExceeded = 4001,
    AuthFailed = 4002,
    AccessRefused = 4003,
    NotFound = 4004,
    Precondition = 4005,
    TooMany = 4006,
    Version = 4007,
    Internal = 5000,
}

impl CloseCode {
    pub fn number(self) -> u16 {
        self as u16
    }

    /// Whether a client should try again after this close.
    pub fn reconnect(self) -> bool {
        matches!(
            self,
            CloseCode::Shutdown
                | CloseCode::SlowConsumer
                | CloseCode::HeartbeatTimeout
                | CloseCode::ConnectTimeout
                | CloseCode::TooMany
                | CloseCode::Internal
        )
    }
}

/// A close code with the human-readable detail sent to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    pub code: CloseCode,
    pub message: String,
    /// Longer explanation (a STOMP ERROR body), may be empty.
    pub detail: String,
}

impl CloseReason {
    pub fn new(code: CloseCode, message: impl Into<String>) -> Self {
        CloseReason { code, message: message.into(), detail: String::new() }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code.number())?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}
