//! One STOMP client, from CONNECT to close, over any link.
//!
//! The task owns everything about its session (subscriptions, transactions,
//! the decode buffer); the engine reaches it only through the session's
//! outbox. Every error is fatal for the session, as STOMP requires: an ERROR
//! frame with a `message` header (and `code`, see [`crate::error`]), then
//! close. Nothing another session holds is touched by that.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::time::{Instant, MissedTickBehavior};

use super::frame::{encode, encode_header, Command, Decoded, Decoder, Escaping, Frame, FrameError, Limits};
use crate::auth::{policy, ClientInfo, Identity, Permission, ResourceKind};
use crate::engine::{Engine, LoginError, Origin, Publish};
use crate::error::{CloseCode, CloseReason};
use crate::message::{EncodingSlot, Message, STREAM_EPOCH, STREAM_OFFSET};
use crate::router::destination::TOPIC_EXCHANGE;
use crate::router::{
    AckError, AckMode, ConsumerId, Destination, DestinationError, ExchangeKind, HeaderMatch, Overflow, Queue,
    QueueLimits, QueueOptions, RouteError, Settle, Vhost,
};
use crate::session::{write_within, Delivery, Outbound, OutboxLimits, Protocol, SessionHandle, Written};
use crate::shaper::{self, Shaper};
use crate::store::history::{Recovery, Since};
use crate::store::{Durable, StoreError};
use crate::transport::{LinkRx, LinkTx, Peer};

const SERVER: &str = concat!("Herald/", env!("CARGO_PKG_VERSION"));

/// The `version` header of every ERROR, as RabbitMQ sends it.
const SUPPORTED_VERSIONS: &str = "1.0,1.1,1.2";
/// Most outbox items written before one flush: bounds the time between a
/// client's reads being looked at while a burst is written out.
const WRITE_BATCH: usize = 256;
/// Read buffers larger than this are dropped once empty, so an idle session
/// does not keep a big frame's memory.
/// How long a closing session may still spend writing (its last frames, the
/// ERROR frame) before the connection is just dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Names of the private queues behind `/temp-queue/` (RabbitMQ's), the only
/// queues a `/reply-queue/` SEND reaches.
const TEMP_QUEUE_PREFIX: &str = "amq.gen-";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Version {
    V10,
    V11,
    V12,
}

impl Version {
    fn as_str(self) -> &'static str {
        match self {
            Version::V10 => "1.0",
            Version::V11 => "1.1",
            Version::V12 => "1.2",
        }
    }

    fn escaping(self) -> Escaping {
        match self {
            Version::V10 => Escaping::None,
            Version::V11 => Escaping::V11,
            Version::V12 => Escaping::V12,
        }
    }

    fn slot(self) -> EncodingSlot {
        match self {
            Version::V10 => EncodingSlot::StompRaw,
            Version::V11 => EncodingSlot::StompV11,
            Version::V12 => EncodingSlot::StompV12,
        }
    }
}

/// Ends the session: what the client is told and why.
type Fatal = CloseReason;

/// Why the running session stopped, and whether the connection can still
/// carry an ERROR frame (`broken`: a write was cut off mid-frame or the
/// peer is gone).
struct Stop {
    reason: Fatal,
    receipt: Option<String>,
    broken: bool,
}

impl Stop {
    fn new(reason: Fatal, receipt: Option<String>) -> Stop {
        Stop { reason, receipt, broken: false }
    }
}

fn fatal(code: CloseCode, message: impl Into<String>, detail: impl Into<String>) -> Fatal {
    CloseReason::new(code, message).with_detail(detail)
}

/// A write bounded by `limits.write_timeout_ms` and the close grace.
async fn guarded<T>(
    handle: &SessionHandle,
    limit: Duration,
    work: impl Future<Output = Result<T, Stop>>,
) -> Result<T, Stop> {
    let broken = |reason: Fatal| Stop { reason, receipt: None, broken: true };
    match write_within(handle, limit, CLOSE_GRACE, work).await {
        Written::Done(r) => r,
        Written::CutOff(reason) => Err(broken(reason)),
        Written::TimedOut => Err(broken(fatal(
            CloseCode::SlowConsumer,
            "slow consumer",
            format!("writing to the client took longer than {} ms", limit.as_millis()),
        ))),
    }
}

fn frame_error(e: FrameError) -> Fatal {
    let code = match e {
        FrameError::TooLarge { .. } | FrameError::TooManyHeaders { .. } | FrameError::HeaderTooLong { .. } => {
            CloseCode::LimitExceeded
        }
        _ => CloseCode::Protocol,
    };
    fatal(code, e.to_string(), "the frame could not be read; the connection is closed")
}

fn route_error(e: RouteError) -> Fatal {
    let (code, message) = match e {
        // RabbitMQ's channel-error wording.
        RouteError::NoExchange(ref x, ref v) => {
            return fatal(CloseCode::NotFound, "not_found", format!("NOT_FOUND - no exchange '{x}' in vhost '{v}'"))
        }
        RouteError::NoQueue(ref q, ref v) => {
            return fatal(CloseCode::NotFound, "not_found", format!("NOT_FOUND - no queue '{q}' in vhost '{v}'"))
        }
        RouteError::NoVhost(_) => (CloseCode::NotFound, "not_found"),
        RouteError::Locked(_) | RouteError::Inequivalent { .. } | RouteError::Reserved(_) => {
            (CloseCode::Precondition, "precondition_failed")
        }
        RouteError::Store(_) => (CloseCode::Internal, "internal_error"),
        RouteError::QueueLimit(_) => (CloseCode::TooMany, "queue limit reached"),
        RouteError::QueueFull { .. } => (CloseCode::TooMany, "queue full"),
        // A node condition, not the client's fault: retry later.
        RouteError::MemoryAlarm { .. } => {
            (CloseCode::Internal, "memory alarm: node above its high watermark, publishing refused")
        }
        // The text names the `[routing]` key that refused it.
        RouteError::Limit(e) => return fatal(CloseCode::LimitExceeded, e.to_string(), e.to_string()),
    };
    fatal(code, message, e.to_string())
}

/// Runs one STOMP session until the client leaves or an error closes it.
///
/// Opening (CONNECT, authentication, presence) and closing are boxed: an
/// idle session's memory is this future, so it holds only what waiting needs.
/// A plain `fn` on purpose: an `async fn` keeps its arguments in the future
/// beside what they are moved into (rustc does not overlap the two), and
/// every idle session would carry that dead copy.
pub fn serve<R: LinkRx, W: LinkTx>(engine: Engine, rx: R, tx: W, peer: Peer) -> impl std::future::Future<Output = ()> {
    let opening = Box::pin(open(engine, rx, tx, peer));
    async move {
        let Some(mut open) = opening.await else { return };
        let outcome = open.session.run(&mut open.rx, &mut open.tx, &mut open.decoder, &mut open.buf).await;
        Box::pin(finish(open, outcome)).await;
    }
}

/// A session past CONNECT, with its link and decoder.
struct Open<R, W> {
    session: Session,
    rx: R,
    tx: W,
    decoder: Decoder,
    buf: BytesMut,
}

/// Reads CONNECT, authenticates, answers CONNECTED. `None` when the client
/// left or was refused (it has been told why).
async fn open<R: LinkRx, W: LinkTx>(engine: Engine, mut rx: R, mut tx: W, peer: Peer) -> Option<Open<R, W>> {
    let l = &engine.config.limits;
    let mut decoder = Decoder::new(Limits {
        max_frame_bytes: l.max_frame_bytes,
        max_headers: l.max_headers,
        max_header_bytes: l.max_header_bytes,
    });
    let mut buf = BytesMut::new();
    let connect = match await_connect(&engine, &mut rx, &mut decoder, &mut buf).await {
        Ok(Some(frame)) => frame,
        Ok(None) => {
            tx.close().await;
            return None;
        }
        Err(reason) => {
            send_error_and_close(&mut tx, &reason, None, Escaping::None).await;
            return None;
        }
    };
    let receipt = connect.header("receipt").map(str::to_owned);
    let mut session = match Session::connect(&engine, &connect, &peer).await {
        Ok(s) => {
            crate::transport::authenticated();
            s
        }
        Err(reason) => {
            tracing::debug!(peer = ?peer.addr, %reason, "STOMP CONNECT refused");
            send_error_and_close(&mut tx, &reason, receipt.as_deref(), Escaping::None).await;
            return None;
        }
    };
    decoder.set_escaping(session.version.escaping());
    let connected = session.connected_frame(&connect);
    // In the hub and online (as `stomp-<id>`) from here until `cleanup`.
    engine.attach(&session.handle).await;
    // A `receipt` on CONNECT gets no RECEIPT (CONNECTED answers it), as in RabbitMQ.
    let written = async {
        session.write(&mut tx, &connected).await?;
        session.flush(&mut tx).await
    }
    .await;
    let mut open = Open { session, rx, tx, decoder, buf };
    if let Err(stop) = written {
        finish(open, Err(stop)).await;
        return None;
    }
    // A small first frame's leftovers must not keep the first read buffer.
    if open.buf.is_empty() {
        open.buf = BytesMut::new();
    }
    Some(open)
}

/// Releases the session (queues and the hub first: a client that stopped
/// reading must not hold them while its last bytes time out), then tells the
/// client why it ends, if it should know, and closes.
async fn finish<R: LinkRx, W: LinkTx>(mut open: Open<R, W>, outcome: Result<(), Stop>) {
    open.session.cleanup().await;
    match outcome {
        Err(stop) if !stop.broken && !matches!(stop.reason.code, CloseCode::Normal | CloseCode::HeartbeatTimeout) => {
            send_error_and_close(&mut open.tx, &stop.reason, stop.receipt.as_deref(), open.session.version.escaping())
                .await;
        }
        _ => {
            let _ = tokio::time::timeout(CLOSE_GRACE, open.tx.close()).await;
        }
    }
}

fn io_closed(e: std::io::Error) -> Stop {
    Stop { reason: fatal(CloseCode::Normal, "connection lost", e.to_string()), receipt: None, broken: true }
}

/// Reads until the first frame, which must be CONNECT or STOMP.
async fn await_connect<R: LinkRx>(
    engine: &Engine,
    rx: &mut R,
    decoder: &mut Decoder,
    buf: &mut BytesMut,
) -> Result<Option<Frame>, Fatal> {
    let deadline = tokio::time::sleep(Duration::from_millis(engine.config.limits.connect_timeout_ms));
    tokio::pin!(deadline);
    loop {
        match decoder.decode(buf).map_err(frame_error)? {
            Some(Decoded::Frame(f)) if matches!(f.command, Command::Connect | Command::Stomp) => return Ok(Some(f)),
            Some(Decoded::Frame(f)) => {
                // RabbitMQ's words; `f.command` is in the log, not the answer.
                tracing::debug!(command = f.command.as_str(), "STOMP frame before CONNECT");
                return Err(fatal(CloseCode::Protocol, "Illegal command", "You must log in using CONNECT first"));
            }
            Some(Decoded::Heartbeat) => continue,
            None => {}
        }
        tokio::select! {
            _ = &mut deadline => return Err(fatal(CloseCode::ConnectTimeout, "connect timeout", "no CONNECT frame in time")),
            _ = engine.shutdown.cancelled() => return Err(fatal(CloseCode::Shutdown, "server shutting down", "")),
            n = rx.recv(buf) => match n {
                Ok(0) | Err(_) => return Ok(None),
                Ok(_) => {}
            },
        }
    }
}

/// Best effort, and bounded: the client may already be gone or not reading.
async fn send_error_and_close<W: LinkTx>(tx: &mut W, reason: &CloseReason, receipt: Option<&str>, escaping: Escaping) {
    let mut f = Frame::new(Command::Error)
        .with_header("message", reason.message.as_str())
        .with_header("code", reason.code.number().to_string())
        .with_header("content-type", "text/plain")
        // As RabbitMQ: every ERROR names the versions this server speaks.
        .with_header("version", SUPPORTED_VERSIONS)
        .with_header("content-length", reason.detail.len().to_string());
    if let Some(r) = receipt {
        f = f.with_header("receipt-id", r);
    }
    let f = f.with_body(Bytes::from(reason.detail.clone()));
    let mut out = BytesMut::new();
    encode(&f, escaping, &mut out);
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        let _ = tx.feed(out.freeze()).await;
        let _ = tx.flush().await;
        tx.close().await;
    })
    .await;
}

struct Subscription {
    id: Arc<str>,
    queue: Arc<Queue>,
    consumer: ConsumerId,
    ack: AckMode,
    /// What MESSAGE frames show as `destination` when it differs from the
    /// message's own (temp queues).
    destination: Option<String>,
    /// Made without an `id`: `id` is the destination, as RabbitMQ's consumer
    /// tag `Q_<destination>` (MESSAGE frames carry no `subscription`).
    by_destination: bool,
    /// A `/topic/` subscription: an UNSUBSCRIBE with `durable` or
    /// `persistent` deletes its durable queue (RabbitMQ does it for topics only).
    topic: bool,
}

/// A session's subscriptions by id. A `Vec`, not a map: sessions have a few
/// (one, mostly), a one-entry `HashMap` allocates four buckets (~340 B on
/// every idle session), and a scan of a few short ids is as fast as hashing.
/// `limits.max_subscriptions` bounds the scan.
#[derive(Default)]
struct Subscriptions(Vec<Subscription>);

impl Subscriptions {
    fn get(&self, id: &str) -> Option<&Subscription> {
        self.0.iter().find(|s| &*s.id == id)
    }

    /// The subscription a client names: by `id`, or by destination for one made without an `id`.
    fn named(&self, id: &str, by_destination: bool) -> Option<&Subscription> {
        self.0.iter().find(|s| &*s.id == id && s.by_destination == by_destination)
    }

    fn contains_key(&self, id: &str) -> bool {
        self.get(id).is_some()
    }

    /// Adds `sub`, replacing one with the same id.
    fn insert(&mut self, sub: Subscription) {
        match self.0.iter().position(|s| s.id == sub.id) {
            Some(i) => self.0[i] = sub,
            None => {
                self.0.reserve_exact(1);
                self.0.push(sub);
            }
        }
    }

    fn remove(&mut self, id: &str, by_destination: bool) -> Option<Subscription> {
        let i = self.0.iter().position(|s| &*s.id == id && s.by_destination == by_destination)?;
        Some(self.0.swap_remove(i))
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn take_all(&mut self) -> Vec<Subscription> {
        std::mem::take(&mut self.0)
    }
}

struct Session {
    engine: Engine,
    handle: Arc<SessionHandle>,
    identity: Identity,
    vhost: Arc<Vhost>,
    version: Version,
    subs: Subscriptions,
    /// Open transactions and their frames. Vecs, not maps, here and below:
    /// almost every session has none, and an empty map is 48 B of every
    /// idle session; `limits.max_transactions` keeps the scan short.
    transactions: Vec<(String, Vec<Frame>)>,
    /// Bytes buffered in `transactions` (`limits.max_transaction_bytes`).
    transaction_bytes: usize,
    /// `/temp-queue/<name>` → the private queue made for it.
    temp_queues: Vec<(String, Arc<str>)>,
    /// (server sends every, server expects every) in ms; 0 = off.
    heartbeat: (u64, u64),
    last_read: Instant,
    last_write: Instant,
    /// Inbound rate limits (`[shaper]`); `None` (one pointer) when off.
    shaper: Option<Box<Shaper>>,
    /// Receipts waiting for the queue store; `None` (one pointer) unless a
    /// persistent SEND to a durable queue on disk asked for one.
    pending: Option<Box<PendingReceipts>>,
}

/// Receipts that wait for the disk, answered in order: RECEIPTs of later
/// frames queue behind them, so a client never sees a RECEIPT before an
/// earlier one. The session keeps reading meanwhile (a pipelining publisher
/// gets group commit); at `limits.max_pending_receipts` (or `_bytes`) it
/// stops reading until the oldest are answered.
#[derive(Default)]
struct PendingReceipts {
    entries: std::collections::VecDeque<PendingReceipt>,
    /// Bytes of the receipt ids held.
    bytes: usize,
}

struct PendingReceipt {
    /// Answered together, in this order (a COMMIT's, then its SENDs').
    ids: Vec<String>,
    tickets: Vec<Durable>,
    /// A ticket failed: an ERROR answers instead.
    failed: Option<StoreError>,
}

impl PendingReceipts {
    /// Ready once the oldest entry is settled: every ticket durable, or one
    /// failed. Says only that (a small output keeps the session's `select!`
    /// small); [`Session::answer_receipts`] takes the entry.
    fn poll_head(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        use std::task::Poll;
        let Some(head) = self.entries.front_mut() else { return Poll::Pending };
        while let Some(t) = head.tickets.last_mut() {
            match std::pin::Pin::new(t).poll(cx) {
                Poll::Ready(Ok(())) => {
                    head.tickets.pop();
                }
                Poll::Ready(Err(e)) => {
                    head.failed = Some(e);
                    head.tickets.clear();
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(())
    }

    fn take_head(&mut self) -> PendingReceipt {
        let head = self.entries.pop_front().expect("an entry");
        self.bytes -= head.ids.iter().map(String::len).sum::<usize>();
        head
    }
}

fn negotiate_version(connect: &Frame) -> Result<Version, Fatal> {
    let Some(accept) = connect.header("accept-version") else { return Ok(Version::V10) };
    accept
        .split(',')
        .filter_map(|v| match v.trim() {
            "1.0" => Some(Version::V10),
            "1.1" => Some(Version::V11),
            "1.2" => Some(Version::V12),
            _ => None,
        })
        .max()
        .ok_or_else(|| {
            fatal(CloseCode::Version, "Version mismatch", format!("Supported versions are {SUPPORTED_VERSIONS}\n"))
        })
}

impl Session {
    /// `limits.write_timeout_ms`, read from the config when a write needs it
    /// rather than kept: a field is 16 bytes of every idle session.
    fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.engine.config.limits.write_timeout_ms)
    }

    async fn connect(engine: &Engine, connect: &Frame, peer: &Peer) -> Result<Session, Fatal> {
        let version = negotiate_version(connect)?;
        let login = connect.header("login").unwrap_or("");
        let passcode = connect.header("passcode").unwrap_or("");
        let refused = || fatal(CloseCode::AuthFailed, "Bad CONNECT", format!("Access refused for user '{login}'\n"));
        if login.is_empty() {
            return Err(refused());
        }
        // `host` names the vhost, as in RabbitMQ: one that is not a vhost is
        // refused before the password is looked at (RabbitMQ 3.10 answers
        // `Virtual host 'x' access denied` whatever the credentials), never
        // replaced by the default (stomp.py must be given `vhost="/"`).
        let vhost_name = connect.header("host").unwrap_or(&engine.config.stomp.default_vhost);
        if engine.router.vhost(vhost_name).is_err() {
            return Err(fatal(
                CloseCode::AccessRefused,
                "Bad CONNECT",
                format!("Virtual host '{vhost_name}' access denied"),
            ));
        }
        let client = ClientInfo::new(peer, Protocol::Stomp);
        let identity = match engine.login(login, passcode, &client).await {
            Ok(id) => id,
            Err(LoginError::Refused) => return Err(refused()),
            Err(e @ LoginError::Unavailable(_)) => {
                return Err(fatal(CloseCode::Internal, "Bad CONNECT", e.to_string()))
            }
            Err(e @ (LoginError::Busy | LoginError::Throttled(_))) => {
                return Err(fatal(CloseCode::TooMany, e.to_string(), e.to_string()))
            }
        };
        let auth = engine.auth();
        match auth.authorizer.vhost(&identity, vhost_name, &client).await {
            Ok(true) => {}
            Ok(false) | Err(_) => {
                return Err(fatal(
                    CloseCode::AccessRefused,
                    "Bad CONNECT",
                    format!("Virtual host '{vhost_name}' access denied for user '{}'", identity.uid),
                ))
            }
        }
        let vhost = engine.router.vhost(vhost_name).map_err(route_error)?.clone();
        let handle = SessionHandle::with_limits(
            &identity.uid,
            vhost_name,
            Protocol::Stomp,
            peer,
            OutboxLimits::from_config(&engine.config.limits),
        );
        // Negotiated for 1.0 clients too, as RabbitMQ does (CONNECTED always
        // says `heart-beat`).
        let heartbeat = match connect.header("heart-beat") {
            None => (0, 0),
            Some(hb) => {
                let mut parts = hb.split(',').map(|p| p.trim().parse::<u64>());
                let (Some(Ok(cx)), Some(Ok(cy)), None) = (parts.next(), parts.next(), parts.next()) else {
                    return Err(fatal(CloseCode::Protocol, "Bad CONNECT", format!("invalid heart-beat header {hb:?}")));
                };
                let floor = |ms: u64| if ms == 0 { 0 } else { ms.max(engine.config.stomp.min_heartbeat_ms) };
                // Like RabbitMQ: send as often as the client wants to hear
                // from us, expect what it offers to send.
                (floor(cy), floor(cx))
            }
        };
        let now = Instant::now();
        Ok(Session {
            engine: engine.clone(),
            handle,
            identity,
            vhost,
            version,
            subs: Subscriptions::default(),
            transactions: Vec::new(),
            transaction_bytes: 0,
            temp_queues: Vec::new(),
            heartbeat,
            last_read: now,
            last_write: now,
            shaper: Shaper::new(&engine.config.shaper, true, true),
            pending: None,
        })
    }

    fn connected_frame(&self, _connect: &Frame) -> Frame {
        Frame::new(Command::Connected)
            .with_header("server", SERVER)
            .with_header("session", format!("session-{}", self.handle.id))
            .with_header("heart-beat", format!("{},{}", self.heartbeat.0, self.heartbeat.1))
            .with_header("version", self.version.as_str())
    }

    async fn write<W: LinkTx>(&mut self, tx: &mut W, frame: &Frame) -> Result<(), Stop> {
        let mut out = BytesMut::new();
        encode(frame, self.version.escaping(), &mut out);
        self.last_write = Instant::now();
        let (handle, limit) = (self.handle.clone(), self.write_timeout());
        guarded(&handle, limit, async { tx.feed(out.freeze()).await.map_err(io_closed) }).await
    }

    async fn flush<W: LinkTx>(&mut self, tx: &mut W) -> Result<(), Stop> {
        let (handle, limit) = (self.handle.clone(), self.write_timeout());
        guarded(&handle, limit, async { tx.flush().await.map_err(io_closed) }).await
    }

    /// Writes everything in the outbox, a batch per flush.
    async fn write_outbox<W: LinkTx>(&mut self, tx: &mut W, batch: &mut Vec<Outbound>) -> Result<(), Stop> {
        loop {
            batch.clear();
            if self.handle.drain(batch, WRITE_BATCH) == 0 {
                return Ok(());
            }
            for item in batch.drain(..) {
                match item {
                    Outbound::Deliver(d) => self.write_delivery(tx, d).await?,
                    // Presence reaches STOMP clients through the `presence` exchange.
                    Outbound::Presence(_) | Outbound::RosterChanged => {}
                }
            }
            tx.flush().await.map_err(io_closed)?;
            self.last_write = Instant::now();
        }
    }

    /// The session's loop. A plain `fn` around an `async move` block: an
    /// `async fn` stores each argument twice (as passed, and the local it
    /// is bound to), and this is the state every idle session waits in.
    #[allow(clippy::manual_async_fn)]
    fn run<'a, R: LinkRx, W: LinkTx>(
        &'a mut self,
        rx: &'a mut R,
        tx: &'a mut W,
        decoder: &'a mut Decoder,
        buf: &'a mut BytesMut,
    ) -> impl std::future::Future<Output = Result<(), Stop>> + Send + 'a {
        async move {
            let tick_ms = match self.heartbeat {
                (0, 0) => 0,
                (0, r) | (r, 0) => r,
                (s, r) => s.min(r),
            };
            // No timer at all without heart-beats: most idle sessions have none.
            let mut ticker = (tick_ms > 0).then(|| {
                let mut t = tokio::time::interval(Duration::from_millis(tick_ms / 2 + 1));
                t.set_missed_tick_behavior(MissedTickBehavior::Delay);
                t
            });
            let mut batch = Vec::new();
            // Shutdown closes every session in the hub (`Engine::stop` cancels,
            // then closes them), and closing wakes `handle.notified()`; this
            // catches a session that registered after that sweep.
            if self.engine.shutdown.is_cancelled() {
                return Err(Stop::new(fatal(CloseCode::Shutdown, "server shutting down", ""), None));
            }
            loop {
                // Frame handling is boxed so its state is not part of the
                // resident (waiting) state of every session.
                if !buf.is_empty() && !Box::pin(self.handle_buffered(buf, decoder, tx)).await? {
                    return Ok(());
                }
                // An emptied buffer is dropped, not kept: most sessions are idle
                // most of the time, and the link reserves space again on data.
                if buf.is_empty() && buf.capacity() > 0 {
                    *buf = BytesMut::new();
                }
                Box::pin(self.flush(tx)).await?;
                let paused = shaper::paused(&mut self.shaper);
                tokio::select! {
                    biased;
                    _ = self.handle.notified() => {
                        if self.handle.is_closing() {
                            let reason = self.handle.close_reason().cloned()
                                .unwrap_or_else(|| CloseReason::new(CloseCode::Internal, "closed"));
                            // A slow consumer is not sent its backlog: it is why it closes.
                            return Err(Stop::new(reason, None));
                        }
                        let (handle, limit) = (self.handle.clone(), self.write_timeout());
                        Box::pin(guarded(&handle, limit, self.write_outbox(tx, &mut batch))).await?;
                        if batch.capacity() > WRITE_BATCH {
                            batch = Vec::new();
                        }
                    }
                    // The oldest receipt's tickets resolved: answer it (and
                    // any after it that are ready too). Before reading: a
                    // client that never stops sending must still get them.
                    () = std::future::poll_fn(|cx| match self.pending.as_deref_mut() {
                        Some(p) => p.poll_head(cx),
                        None => std::task::Poll::Pending,
                    }), if self.pending.is_some() => Box::pin(self.answer_receipts(tx)).await?,
                    // Over its rate ([shaper]), the client is not read from
                    // until its tokens refill: its bytes stay in its socket.
                    // Receipts waiting for the disk at their limit: backpressure.
                    n = rx.recv(buf), if !paused && !self.receipts_full() => match n {
                        Ok(0) => return Ok(()),
                        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                            return Err(Stop::new(fatal(CloseCode::Protocol, "invalid transport message", e.to_string()), None));
                        }
                        Err(_) => return Ok(()),
                        Ok(n) => {
                            self.last_read = Instant::now();
                            if let Some(s) = self.shaper.as_deref_mut() {
                                s.read(n);
                            }
                        }
                    },
                    // The pause ended: the loop handles what is buffered. The
                    // client was sending meanwhile, so it counts as heard from
                    // (a long byte pause must not look like a heart-beat timeout).
                    () = shaper::pause(&mut self.shaper), if paused => self.last_read = Instant::now(),
                    _ = async { match ticker.as_mut() { Some(t) => { t.tick().await; } None => std::future::pending().await } }, if tick_ms > 0 => {
                        Box::pin(self.heartbeat_tick(tx)).await?
                    }
                }
            }
        }
    }

    /// Handles every complete frame in `buf`; `false` when the client said
    /// DISCONNECT (everything before it was handled and flushed).
    async fn handle_buffered<W: LinkTx>(
        &mut self,
        buf: &mut BytesMut,
        decoder: &mut Decoder,
        tx: &mut W,
    ) -> Result<bool, Stop> {
        loop {
            // Out of frame tokens: the rest stays buffered, and nothing more is
            // read, until the shaper allows the next frame.
            if self.shaper.as_deref_mut().is_some_and(|s| !s.frame_ready()) {
                return Ok(true);
            }
            // Receipts waiting for the disk at their limit: the rest waits too.
            if self.receipts_full() {
                return Ok(true);
            }
            let Some(decoded) = decoder.decode(buf).map_err(|e| Stop::new(frame_error(e), None))? else { break };
            if let Decoded::Frame(frame) = decoded {
                if let Some(s) = self.shaper.as_deref_mut() {
                    s.take_frame();
                }
                let receipt = frame.header("receipt").map(str::to_owned);
                match self.handle_frame(frame, tx).await {
                    Ok(true) => {}
                    Ok(false) => {
                        self.flush(tx).await?;
                        return Ok(false);
                    }
                    Err(HandleError::Fatal(reason)) => return Err(Stop::new(reason, receipt)),
                    Err(HandleError::Stop(stop)) => return Err(stop),
                }
            }
        }
        Ok(true)
    }

    async fn heartbeat_tick<W: LinkTx>(&mut self, tx: &mut W) -> Result<(), Stop> {
        let (send, expect) = self.heartbeat;
        // Tolerate twice the announced interval: the spec leaves slack to
        // the receiver, and networks and timers jitter.
        if expect > 0 && self.last_read.elapsed() > Duration::from_millis(expect * 2) {
            tracing::debug!(session = self.handle.id, "heart-beat timeout");
            return Err(Stop::new(fatal(CloseCode::HeartbeatTimeout, "heart-beat timeout", ""), None));
        }
        if send > 0 && self.last_write.elapsed() >= Duration::from_millis(send / 2) {
            self.last_write = Instant::now();
            let (handle, limit) = (self.handle.clone(), self.write_timeout());
            guarded(&handle, limit, async { tx.feed(Bytes::from_static(b"\n")).await.map_err(io_closed) }).await?;
        }
        Ok(())
    }

    async fn write_delivery<W: LinkTx>(&mut self, tx: &mut W, d: Delivery) -> Result<(), Stop> {
        let Some(sub) = self.subs.get(&d.subscription) else {
            // Unsubscribed while it was in the outbox; the queue already
            // requeued it when the consumer was cancelled.
            return Ok(());
        };
        let escaping = self.version.escaping();
        // RabbitMQ's form, `<consumer tag>@@<session>@@<delivery tag>`, with its
        // tags `T_<id>` and, for a subscription made without an id, `Q_<destination>`
        // (and then no `subscription` header). Written in place: this runs
        // once per subscriber of every message.
        let tag = if sub.by_destination { "Q_" } else { "T_" };
        let mut head = BytesMut::with_capacity(128);
        head.put_slice(b"MESSAGE\n");
        if !sub.by_destination {
            encode_header("subscription", &d.subscription, escaping, &mut head);
        }
        let destination = sub.destination.as_deref().unwrap_or_else(|| d.message.destination());
        encode_header("destination", destination, escaping, &mut head);
        let id = encode_message_id(&mut head, tag, &d.subscription, self.handle.id, d.tag, escaping);
        head.put_slice(if d.redelivered { b"redelivered:true\n" } else { b"redelivered:false\n" });
        if let Some(id) = id.filter(|_| self.version == Version::V12 && sub.ack != AckMode::Auto) {
            let value = head[id].to_vec();
            head.put_slice(b"ack:");
            head.put_slice(&value);
            head.put_u8(b'\n');
        }
        let tail = d.message.encoded(self.version.slot(), |m| encode_message_tail(m, escaping));
        tx.feed_split(head.freeze(), tail).await.map_err(io_closed)
    }

    /// Applies one client frame. `Ok(false)` ends the session cleanly.
    async fn handle_frame<W: LinkTx>(&mut self, frame: Frame, tx: &mut W) -> Result<bool, HandleError> {
        // A SEND in a transaction is receipted at COMMIT, after the COMMIT's
        // own receipt, and never if it is aborted (RabbitMQ 3.10); ACK and
        // NACK in a transaction are receipted at once, as there.
        let receipt = match frame.command {
            Command::Send if frame.header("transaction").is_some() => None,
            _ => frame.header("receipt").map(str::to_owned),
        };
        let mut committed_receipts = Vec::new();
        // The queue store's tickets the receipts wait for (persistent
        // messages that reached durable queues on disk).
        let mut tickets: Vec<Durable> = Vec::new();
        match frame.command {
            Command::Send => tickets = self.on_send(frame, false).await?,
            Command::Subscribe => {
                // A recovering SUBSCRIBE's RECEIPT says whether nothing was missed.
                if let (Some(r), Some(recovery)) = (receipt.as_deref(), self.on_subscribe(&frame).await?) {
                    // After every earlier receipt (in order), and before the
                    // replay it announces (the outbox is written after this).
                    Box::pin(self.drain_receipts(tx)).await?;
                    let mut f = Frame::new(Command::Receipt).with_header("receipt-id", r);
                    f = f.with_header("x-recovered", if recovery.recovered { "true" } else { "false" });
                    f = f.with_header(STREAM_EPOCH, &*recovery.epoch);
                    f = f.with_header(STREAM_OFFSET, recovery.top.to_string());
                    self.write(tx, &f).await?;
                    return Ok(true);
                }
            }
            Command::Unsubscribe => self.on_unsubscribe(&frame)?,
            Command::Ack | Command::Nack => self.on_settle(frame, false)?,
            Command::Begin => {
                let id = transaction_header(&frame)?;
                if let Some(at) = self.transactions.iter().position(|(t, _)| *t == id) {
                    // RabbitMQ starts it afresh: what was buffered is dropped, no ERROR.
                    let dropped = std::mem::take(&mut self.transactions[at].1);
                    let bytes: usize = dropped.iter().map(frame_bytes).sum();
                    self.transaction_bytes -= bytes;
                    self.engine.router.alarm.transactions_shrank(bytes);
                    return self.receipt_then(tx, receipt).await;
                }
                if self.transactions.len() >= self.engine.config.limits.max_transactions {
                    return Err(HandleError::Fatal(fatal(
                        CloseCode::TooMany,
                        "too many transactions",
                        format!("at most {} open", self.engine.config.limits.max_transactions),
                    )));
                }
                self.transactions.push((id, Vec::new()));
            }
            Command::Commit => {
                let id = transaction_header(&frame)?;
                let frames = self.end_transaction(&id)?;
                for f in frames {
                    match f.command {
                        Command::Send => {
                            let r = f.header("receipt").map(str::to_owned);
                            tickets.extend(self.on_send(f, true).await?);
                            committed_receipts.extend(r);
                        }
                        _ => self.on_settle(f, true)?,
                    }
                }
            }
            Command::Abort => {
                let id = transaction_header(&frame)?;
                self.end_transaction(&id)?;
            }
            Command::Disconnect => {
                // Everything before it is answered first.
                Box::pin(self.drain_receipts(tx)).await?;
                if let Some(r) = receipt {
                    self.write(tx, &Frame::new(Command::Receipt).with_header("receipt-id", r)).await?;
                }
                return Ok(false);
            }
            Command::Connect | Command::Stomp => {
                return Err(HandleError::Fatal(fatal(CloseCode::Protocol, "Bad CONNECT", "already connected")));
            }
            Command::Connected | Command::Message | Command::Receipt | Command::Error | Command::Unknown(_) => {
                return Err(HandleError::Fatal(fatal(
                    CloseCode::Protocol,
                    "Bad command",
                    format!("Could not interpret command {:?}\n", frame.command.as_str()),
                )));
            }
        }
        let ids: Vec<String> = receipt.into_iter().chain(committed_receipts).collect();
        self.receipt_after(tx, ids, tickets).await?;
        Ok(true)
    }

    /// Answers `ids` now, or once `tickets` resolve and every earlier
    /// receipt was answered. Tickets without a receipt are dropped: nobody
    /// was promised anything (a later receipt's ticket covers their writes,
    /// the journal being one ordered log).
    async fn receipt_after<W: LinkTx>(
        &mut self,
        tx: &mut W,
        ids: Vec<String>,
        tickets: Vec<Durable>,
    ) -> Result<(), HandleError> {
        if ids.is_empty() {
            return Ok(());
        }
        if self.pending.is_none() && tickets.iter().all(Durable::is_ready_ok) {
            for r in ids {
                self.write(tx, &Frame::new(Command::Receipt).with_header("receipt-id", r)).await?;
            }
            return Ok(());
        }
        let p = self.pending.get_or_insert_with(Box::default);
        p.bytes += ids.iter().map(String::len).sum::<usize>();
        p.entries.push_back(PendingReceipt { ids, tickets, failed: None });
        Ok(())
    }

    fn receipts_full(&self) -> bool {
        let l = &self.engine.config.limits;
        self.pending
            .as_deref()
            .is_some_and(|p| p.entries.len() >= l.max_pending_receipts || p.bytes >= l.max_pending_receipt_bytes)
    }

    /// Writes the receipts whose tickets resolved, oldest first. A failed
    /// ticket ends the session with an ERROR naming that receipt instead:
    /// the message may not be on disk.
    async fn answer_receipts<W: LinkTx>(&mut self, tx: &mut W) -> Result<(), Stop> {
        while let Some(p) = self.pending.as_deref_mut() {
            if p.poll_head(&mut std::task::Context::from_waker(std::task::Waker::noop())).is_pending() {
                break;
            }
            let head = p.take_head();
            match head.failed {
                None => {
                    for r in head.ids {
                        self.write(tx, &Frame::new(Command::Receipt).with_header("receipt-id", r)).await?;
                    }
                }
                Some(e) => {
                    let receipt = head.ids.into_iter().next();
                    tracing::warn!(session = self.handle.id, error = %e, "persistent message not made durable");
                    let detail = format!(
                        "the queue store failed before the message was on disk ({e}); it was not confirmed \
                         and may or may not be delivered"
                    );
                    return Err(Stop::new(
                        fatal(CloseCode::Internal, "persistent message not stored", detail),
                        receipt,
                    ));
                }
            }
        }
        if self.pending.as_deref().is_some_and(|p| p.entries.is_empty()) {
            self.pending = None;
        }
        Ok(())
    }

    /// Waits for every receipt still waiting for the disk, and answers them.
    async fn drain_receipts<W: LinkTx>(&mut self, tx: &mut W) -> Result<(), Stop> {
        while let Some(p) = self.pending.as_deref_mut() {
            if p.entries.is_empty() {
                self.pending = None;
                break;
            }
            std::future::poll_fn(|cx| p.poll_head(cx)).await;
            self.answer_receipts(tx).await?;
        }
        Ok(())
    }

    async fn receipt_then<W: LinkTx>(&mut self, tx: &mut W, receipt: Option<String>) -> Result<bool, HandleError> {
        if let Some(r) = receipt {
            self.write(tx, &Frame::new(Command::Receipt).with_header("receipt-id", r)).await?;
        }
        Ok(true)
    }

    fn transaction(&mut self, id: &str) -> Option<&mut Vec<Frame>> {
        self.transactions.iter_mut().find(|(t, _)| t == id).map(|(_, frames)| frames)
    }

    /// Removes a transaction (COMMIT, ABORT) and gives its frames.
    fn end_transaction(&mut self, id: &str) -> Result<Vec<Frame>, HandleError> {
        let at = self.transactions.iter().position(|(t, _)| t == id).ok_or_else(|| unknown_tx(id))?;
        let frames = self.transactions.swap_remove(at).1;
        let bytes: usize = frames.iter().map(frame_bytes).sum();
        self.transaction_bytes -= bytes;
        self.engine.router.alarm.transactions_shrank(bytes);
        Ok(frames)
    }

    /// Buffers `frame` if it names a transaction; true when it did.
    fn in_transaction(&mut self, frame: &mut Option<Frame>) -> Result<bool, Fatal> {
        let Some(f) = frame.as_ref() else { return Ok(false) };
        let Some(id) = f.header("transaction") else { return Ok(false) };
        let limit = self.engine.config.limits.max_transaction_frames;
        let max_bytes = self.engine.config.limits.max_transaction_bytes;
        let held = self.transaction_bytes;
        let pending = self.transaction(id).ok_or_else(|| unknown_tx(id))?;
        if pending.len() >= limit {
            return Err(fatal(
                CloseCode::TooMany,
                "transaction too large",
                format!("at most {limit} frames in one transaction"),
            ));
        }
        let mut f = frame.take().expect("checked above");
        // Kept whole (COMMIT applies it without looking for a transaction):
        // a SEND's receipt is answered at COMMIT, and its headers go on as
        // RabbitMQ passes them; an ACK or NACK was receipted already.
        if f.command != Command::Send {
            f.headers.retain(|(k, _)| k != "receipt");
        }
        let size = frame_bytes(&f);
        if held + size > max_bytes {
            return Err(fatal(
                CloseCode::TooMany,
                "transaction too large",
                format!("more than {max_bytes} bytes buffered in open transactions (limits.max_transaction_bytes)"),
            ));
        }
        pending.push(f);
        self.transaction_bytes = held + size;
        self.engine.router.alarm.transactions_grew(size);
        Ok(true)
    }

    /// Resource permissions; for queues, through `auth::policy` (users' own queues).
    async fn check(&self, kind: ResourceKind, name: &str, permission: Permission) -> Result<(), Fatal> {
        let verdict = match kind {
            ResourceKind::Queue => {
                policy::queue(&self.engine, &self.identity, &self.vhost.name, name, permission).await
            }
            ResourceKind::Exchange => match self
                .engine
                .auth()
                .authorizer
                .resource(&self.identity, &self.vhost.name, kind, name, permission)
                .await
            {
                Ok(true) => Ok(()),
                _ => Err(policy::Denied("resource permissions".into())),
            },
        };
        verdict.map_err(|why| {
            fatal(
                CloseCode::AccessRefused,
                "access_refused",
                format!(
                    "access to {} '{}' in vhost '{}' refused for user '{}' ({}): {why}",
                    kind.as_str(),
                    name,
                    self.vhost.name,
                    self.identity.uid,
                    permission.as_str()
                ),
            )
        })
    }

    /// Routing-key access: topic permissions and the addressing-model rules (`auth::policy`).
    async fn check_topic(&self, exchange: &str, key: &str, permission: Permission) -> Result<(), Fatal> {
        policy::topic(&self.engine, &self.identity, &self.vhost, exchange, key, permission).await.map_err(|why| {
            fatal(
                CloseCode::AccessRefused,
                "access_refused",
                format!(
                    "{} access to topic '{key}' in exchange '{exchange}' refused for user '{}': {why}",
                    permission.as_str(),
                    self.identity.uid
                ),
            )
        })
    }

    /// `committing`: applied by COMMIT, not buffered again.
    /// Returns the queue store's tickets for a persistent message.
    async fn on_send(&mut self, frame: Frame, committing: bool) -> Result<Vec<Durable>, Fatal> {
        let mut slot = Some(frame);
        if !committing && self.in_transaction(&mut slot)? {
            return Ok(Vec::new());
        }
        let frame = slot.expect("not buffered");
        if frame.header("message-id").is_some() {
            // A publisher must not choose the id subscribers acknowledge with.
            return Err(fatal(CloseCode::Protocol, "Invalid header", "'message-id' is not allowed on 'SEND'.\n"));
        }
        let dest = Destination::parse(&require(&frame, "destination")?).map_err(destination_error)?;
        // Permissions and queue preparation are STOMP's; the (exchange, key)
        // comes from the router's one mapping below.
        match &dest {
            Destination::Exchange { exchange, key } => {
                if self.vhost.exchange(exchange).is_none() {
                    return Err(route_error(RouteError::NoExchange(exchange.clone(), self.vhost.name.to_string())));
                }
                self.check(ResourceKind::Exchange, exchange, Permission::Write).await?;
                self.check_topic(exchange, key, Permission::Write).await?;
            }
            Destination::Queue(q) => {
                self.check(ResourceKind::Queue, q, Permission::Configure).await?;
                self.check(ResourceKind::Exchange, "amq.default", Permission::Write).await?;
                self.declare(q, queue_options(&frame, true, None), &frame)?;
            }
            Destination::AmqQueue(q) | Destination::ReplyQueue(q) => {
                self.check(ResourceKind::Exchange, "amq.default", Permission::Write).await?;
                if let Destination::AmqQueue(_) = dest {
                    policy::queue_owner(&self.engine, &self.identity, q).await.map_err(|why| {
                        fatal(
                            CloseCode::AccessRefused,
                            "access_refused",
                            format!("access to queue '{q}' refused for user '{}' (write): {why}", self.identity.uid),
                        )
                    })?;
                } else if !q.starts_with(TEMP_QUEUE_PREFIX) {
                    // `/reply-queue/` skips the exclusive lock, for answers to a
                    // `/temp-queue/` reply-to only: any other queue (a user's own,
                    // another session's subscription) is not reached through it.
                    return Err(fatal(
                        CloseCode::AccessRefused,
                        "access_refused",
                        format!("/reply-queue/ names a temp queue ({TEMP_QUEUE_PREFIX}…), not '{q}'"),
                    ));
                }
                match self.vhost.queue(q) {
                    Some(queue)
                        if queue.accessible_by(self.handle.id) || matches!(dest, Destination::ReplyQueue(_)) => {}
                    Some(_) => return Err(route_error(RouteError::Locked(q.clone()))),
                    // As RabbitMQ: routed through the default exchange to no queue, dropped.
                    None if matches!(dest, Destination::AmqQueue(_)) => {}
                    None => return Err(route_error(RouteError::NoQueue(q.clone(), self.vhost.name.to_string()))),
                }
            }
            Destination::Topic(key) => {
                self.check(ResourceKind::Exchange, TOPIC_EXCHANGE, Permission::Write).await?;
                self.check_topic(TOPIC_EXCHANGE, key, Permission::Write).await?;
            }
            Destination::TempQueue(_) => {}
        }
        let Some((exchange, key)) = dest.exchange_and_key() else {
            // `/temp-queue/` names a reply queue in `reply-to` only.
            return Err(not_for(&frame, "SEND"));
        };
        let (exchange, key) = (exchange.to_owned(), key.to_owned());
        let mut headers: Vec<(String, String)> = Vec::with_capacity(frame.headers.len());
        for (k, v) in &frame.headers {
            if matches!(
                k.as_str(),
                // `receipt` and `transaction` go through to subscribers, as in RabbitMQ.
                "destination" | "content-length" | "message-id" | "subscription" | "redelivered" | "ack"
            ) || is_server_header(k)
                || headers.iter().any(|(seen, _)| seen == k)
            {
                continue;
            }
            // As RabbitMQ validates `user-id`: a subscriber may trust it names the publisher.
            if k == "user-id" && *v != self.identity.uid {
                return Err(fatal(
                    CloseCode::Precondition,
                    "precondition_failed",
                    format!("user-id header set to '{v}' but authenticated user was '{}'", self.identity.uid),
                ));
            }
            if k == "reply-to" {
                if let Some(name) = v.strip_prefix("/temp-queue/") {
                    let q = self.temp_queue(name)?;
                    headers.push((k.clone(), format!("/reply-queue/{q}")));
                    continue;
                }
            }
            headers.push((k.clone(), v.clone()));
        }
        let mut message = Message::new(exchange, key, headers, frame.body);
        message.sender = Some(self.identity.uid.clone());
        let publish = Publish { vhost: &self.vhost, message, origin: Origin::Session };
        Ok(self.engine.route(publish).map_err(route_error)?.durable)
    }

    /// The private queue behind `/temp-queue/<name>`, made and subscribed on first use.
    fn temp_queue(&mut self, name: &str) -> Result<Arc<str>, Fatal> {
        if let Some((_, q)) = self.temp_queues.iter().find(|(n, _)| n == name) {
            return Ok(q.clone());
        }
        let limit = self.engine.config.limits.max_subscriptions;
        if self.subs.len() >= limit {
            return Err(fatal(
                CloseCode::TooMany,
                "too many subscriptions",
                format!("at most {limit} per session, temp queues included"),
            ));
        }
        let qname = format!("{TEMP_QUEUE_PREFIX}{}", uuid::Uuid::new_v4().simple());
        let opts = QueueOptions { durable: false, exclusive: Some(self.handle.id), auto_delete: true };
        let queue = self.vhost.declare_queue(&qname, opts, Some(self.handle.id)).map_err(route_error)?;
        let sub_id: Arc<str> = format!("/temp-queue/{name}").into();
        let consumer = queue.consume(self.handle.clone(), sub_id.clone(), AckMode::Auto, 0);
        self.subs.insert(Subscription {
            id: sub_id.clone(),
            queue,
            consumer,
            ack: AckMode::Auto,
            destination: Some(sub_id.to_string()),
            by_destination: false,
            topic: false,
        });
        let qname: Arc<str> = qname.into();
        self.temp_queues.push((name.to_owned(), qname.clone()));
        Ok(qname)
    }

    /// Declares a queue for this session's user, with the length limits a
    /// SUBSCRIBE or SEND asked for (`x-max-length`, `x-max-length-bytes`,
    /// `x-overflow`, as RabbitMQ's STOMP plugin takes them).
    fn declare(&self, name: &str, opts: QueueOptions, frame: &Frame) -> Result<Arc<Queue>, Fatal> {
        let limits = queue_limits(frame, QueueLimits::from_config(&self.engine.config.limits))?;
        self.vhost
            .declare_queue_for(name, opts, Some(self.handle.id), Some(&self.identity.uid), limits)
            .map_err(route_error)
    }

    /// `Some` when the SUBSCRIBE asked to recover from an offset.
    async fn on_subscribe(&mut self, frame: &Frame) -> Result<Option<Recovery>, Fatal> {
        durable_needs_id(frame)?;
        let since = stream_position(frame)?;
        let raw_dest = require(frame, "destination")?;
        // Without an `id` (in any version, as RabbitMQ takes it) the
        // destination names the subscription.
        let (id, by_destination): (Arc<str>, bool) = match frame.header("id") {
            Some(id) => (id.into(), false),
            None => (raw_dest.as_str().into(), true),
        };
        if self.subs.contains_key(&id) {
            return Err(fatal(
                CloseCode::Protocol,
                "Duplicated subscription identifier",
                format!(
                    "A subscription identified by '{}{id}' already exists.",
                    if by_destination { "Q_" } else { "T_" }
                ),
            ));
        }
        let limit = self.engine.config.limits.max_subscriptions;
        if self.subs.len() >= limit {
            return Err(fatal(CloseCode::TooMany, "too many subscriptions", format!("at most {limit} per session")));
        }
        let ack = match frame.header("ack").unwrap_or("auto") {
            "auto" => AckMode::Auto,
            "client" => AckMode::Client,
            "client-individual" => AckMode::ClientIndividual,
            other => return Err(fatal(CloseCode::Protocol, "Bad ack mode", format!("unknown ack mode {other:?}"))),
        };
        let prefetch = match frame.header("prefetch-count") {
            None => 0,
            Some(p) => p
                .trim()
                .parse::<usize>()
                .map_err(|_| fatal(CloseCode::Protocol, "Bad header", format!("invalid prefetch-count {p:?}")))?,
        };
        let dest = Destination::parse(&raw_dest).map_err(destination_error)?;
        let session = self.handle.id;
        let mut recovery = None;
        let queue = match &dest {
            Destination::Exchange { exchange, key } if since.is_some() => {
                let (since, epoch) = since.expect("checked");
                self.check_recoverable(frame, exchange, key)?;
                let queue = self.subscription_queue(frame, &id, exchange, key, false).await?;
                let r = self.vhost.bind_recovering(exchange, &queue, key, since, epoch).map_err(|e| {
                    self.vhost.delete_queue(&queue.name);
                    route_error(e)
                })?;
                recovery = Some(r);
                queue
            }
            _ if since.is_some() => {
                return Err(fatal(
                    CloseCode::Protocol,
                    "Bad header",
                    format!(
                        "x-stream-offset is for /exchange/{}/<uid> and /exchange/{}/<project> only",
                        self.engine.config.exchanges.feed, self.engine.config.exchanges.project
                    ),
                ));
            }
            Destination::Exchange { exchange, key } => self.subscription_queue(frame, &id, exchange, key, true).await?,
            Destination::Topic(key) => self.subscription_queue(frame, &id, TOPIC_EXCHANGE, key, true).await?,
            Destination::Queue(q) => {
                self.check(ResourceKind::Queue, q, Permission::Configure).await?;
                self.check(ResourceKind::Queue, q, Permission::Read).await?;
                let opts = queue_options(frame, true, exclusive_header(frame).then_some(session));
                self.declare(q, opts, frame)?
            }
            Destination::AmqQueue(q) => {
                self.check(ResourceKind::Queue, q, Permission::Read).await?;
                let queue = self
                    .vhost
                    .queue(q)
                    .ok_or_else(|| route_error(RouteError::NoQueue(q.clone(), self.vhost.name.to_string())))?;
                if !queue.accessible_by(session) {
                    return Err(route_error(RouteError::Locked(q.clone())));
                }
                queue
            }
            Destination::TempQueue(_) => return Err(not_for(frame, "SUBSCRIBE")),
            Destination::ReplyQueue(_) => {
                return Err(fatal(CloseCode::Protocol, "Bad destination", "cannot subscribe to a reply queue"));
            }
        };
        let consumer = queue.consume(self.handle.clone(), id.clone(), ack, prefetch);
        let topic = matches!(dest, Destination::Topic(_));
        if queue.is_stored() {
            // The declaration and binding reach the disk with the next sync,
            // asked for now but not waited for: RabbitMQ answers a SUBSCRIBE's
            // RECEIPT before its first MESSAGE, and clients count on that.
            drop(self.vhost.durable());
        }
        self.subs.insert(Subscription { id, queue, consumer, ack, destination: None, by_destination, topic });
        // In a cluster the RECEIPT follows Redis confirming the binding's
        // subscription: a publish on another node after it is not missed.
        self.engine.interests_settled().await;
        Ok(recovery)
    }

    /// A recovering subscription reads one key's history into a queue of its own.
    fn check_recoverable(&self, frame: &Frame, exchange: &str, key: &str) -> Result<(), Fatal> {
        let bad = |why: String| fatal(CloseCode::Protocol, "Bad header", why);
        if !self.vhost.history.covers(exchange) {
            return Err(bad(if self.vhost.history.limits().enabled() {
                format!(
                    "x-stream-offset is for /exchange/{}/<uid> and /exchange/{}/<project> only",
                    self.engine.config.exchanges.feed, self.engine.config.exchanges.project
                )
            } else {
                "x-stream-offset: history is off on this server (history.size or history.ttl_ms is 0)".to_owned()
            }));
        }
        if key.is_empty() || key.contains(['*', '#']) {
            return Err(bad(format!("x-stream-offset needs one routing key, not the pattern {key:?}")));
        }
        if frame.header("x-queue-name").is_some()
            || boolean_header(frame, "durable").or(boolean_header(frame, "persistent")) == Some(true)
        {
            return Err(bad("x-stream-offset needs a private subscription (not durable, no x-queue-name)".into()));
        }
        Ok(())
    }

    /// The queue behind an exchange or topic subscription: private and
    /// auto-deleted, or durable when asked (`durable:true`, RabbitMQ's
    /// durable topic subscriptions), named by `x-queue-name` if given.
    async fn subscription_queue(
        &mut self,
        frame: &Frame,
        id: &str,
        exchange: &str,
        key: &str,
        bind: bool,
    ) -> Result<Arc<Queue>, Fatal> {
        let x = self
            .vhost
            .exchange(exchange)
            .ok_or_else(|| route_error(RouteError::NoExchange(exchange.to_owned(), self.vhost.name.to_string())))?;
        self.vhost.check_binding(&x, key).map_err(route_error)?;
        self.check(ResourceKind::Exchange, exchange, Permission::Read).await?;
        self.check_topic(exchange, key, Permission::Read).await?;
        let durable = boolean_header(frame, "durable").or(boolean_header(frame, "persistent")) == Some(true);
        let name = match frame.header("x-queue-name") {
            Some(n) => n.to_owned(),
            None if durable => format!("stomp-subscription-{}-{}", self.identity.uid, id),
            None => format!("stomp-subscription-{}", uuid::Uuid::new_v4().simple()),
        };
        let opts = if durable {
            QueueOptions { durable: true, exclusive: None, auto_delete: false }
        } else {
            QueueOptions { durable: false, exclusive: Some(self.handle.id), auto_delete: true }
        };
        if frame.header("x-queue-name").is_some() || durable {
            self.check(ResourceKind::Queue, &name, Permission::Configure).await?;
        }
        if frame.header("x-queue-name").is_some() {
            // It may name an existing queue: consuming it is a read, as for
            // `/queue/` and `/amq/queue/`.
            self.check(ResourceKind::Queue, &name, Permission::Read).await?;
        }
        let queue = self.declare(&name, opts, frame)?;
        if bind {
            let headers = (x.kind == ExchangeKind::Headers).then(|| header_match(frame));
            self.vhost.bind(exchange, &queue, key, headers).map_err(route_error)?;
        }
        Ok(queue)
    }

    /// Answers are RabbitMQ 3.10's, texts included.
    fn on_unsubscribe(&mut self, frame: &Frame) -> Result<(), Fatal> {
        durable_needs_id(frame)?;
        let (id, by_destination) = match (frame.header("id"), frame.header("destination")) {
            (Some(id), _) => (id, false),
            (None, Some(d)) => (d, true),
            _ => {
                return Err(fatal(
                    CloseCode::Protocol,
                    "Missing destination or id",
                    "UNSUBSCRIBE must include a 'destination' or 'id' header",
                ))
            }
        };
        if !by_destination && id.starts_with("/temp-queue/") {
            return Err(fatal(CloseCode::Protocol, "Invalid id", "UNSUBSCRIBE 'id' may not start with /temp-queue/\n"));
        }
        let sub = self.subs.remove(id, by_destination).ok_or_else(|| {
            let named = if by_destination { "destination" } else { "id" };
            fatal(
                CloseCode::NotFound,
                "No subscription found",
                format!(
                    "UNSUBSCRIBE must refer to an existing subscription.\nSubscription to \"{named}='{id}'\" not found.\n"
                ),
            )
        })?;
        // `durable:true` or the legacy `persistent:true` ends a durable topic
        // subscription for good: its queue goes (RabbitMQ: topics only, so a
        // `/queue/` is never deleted by an UNSUBSCRIBE).
        let durable =
            boolean_header(frame, "durable") == Some(true) || boolean_header(frame, "persistent") == Some(true);
        let delete = self.release(&sub) || (durable && sub.topic && sub.queue.options.durable);
        if delete {
            self.vhost.delete_queue(&sub.queue.name);
        }
        Ok(())
    }

    /// Cancels a subscription's consumer; true when its queue should go.
    fn release(&self, sub: &Subscription) -> bool {
        let due = sub.queue.cancel(sub.consumer);
        due || sub.queue.options.exclusive == Some(self.handle.id) && sub.queue.consumer_count() == 0
    }

    /// ACK and NACK, with RabbitMQ 3.10's answers: the frame is checked
    /// (header, message id, subscription) before it joins a transaction; an
    /// unknown delivery tag (acked already, or an `auto` subscription's) is
    /// found when it is applied.
    fn on_settle(&mut self, frame: Frame, committing: bool) -> Result<(), Fatal> {
        let command = frame.command.as_str();
        let header = if self.version == Version::V12 { "id" } else { "message-id" };
        let Some(id) = frame.header(header) else {
            return Err(fatal(
                CloseCode::Protocol,
                "Missing header",
                format!("\"{command}\" must include the \"{header}\" header\n"),
            ));
        };
        // `<consumer tag>@@<session>@@<delivery tag>`; the session part is not checked (RabbitMQ's neither).
        let mut parts = id.split("@@");
        let (Some(consumer_tag), Some(_), Some(tag), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(fatal(
                CloseCode::Protocol,
                "Invalid header",
                format!("\"{command}\" must include a valid \"{header}\" header\n"),
            ));
        };
        let Ok(tag) = tag.parse::<u64>() else {
            return Err(fatal(CloseCode::Protocol, "Processing error", "Processing error"));
        };
        let named = match (consumer_tag.strip_prefix("T_"), consumer_tag.strip_prefix("Q_")) {
            (Some(sub_id), _) => Some((sub_id, false)),
            (_, Some(destination)) => Some((destination, true)),
            _ => None,
        };
        let Some((sub_id, by_destination)) = named.filter(|(s, by)| self.subs.named(s, *by).is_some()) else {
            return Err(fatal(
                CloseCode::NotFound,
                "Subscription not found",
                format!("Message with id \"{id}\" has no subscription"),
            ));
        };
        let sub_id = sub_id.to_owned();
        let outcome = match (&frame.command, boolean_header(&frame, "requeue")) {
            (Command::Ack, _) => Settle::Ack,
            // RabbitMQ's `default_nack_requeue`: true.
            (_, Some(false)) => Settle::Drop,
            _ => Settle::Requeue,
        };
        let mut slot = Some(frame);
        if !committing && self.in_transaction(&mut slot)? {
            return Ok(());
        }
        let sub = self.subs.named(&sub_id, by_destination).expect("checked above");
        match sub.queue.settle(sub.consumer, tag, sub.ack == AckMode::Client, outcome) {
            Ok(_) => Ok(()),
            Err(AckError::UnknownTag(_) | AckError::UnknownConsumer) => Err(fatal(
                CloseCode::Precondition,
                "precondition_failed",
                format!("PRECONDITION_FAILED - unknown delivery tag {tag}"),
            )),
        }
    }

    /// Cancels every consumer and drops what this session owned.
    async fn cleanup(&mut self) {
        self.transactions = Vec::new();
        self.engine.router.alarm.transactions_shrank(std::mem::take(&mut self.transaction_bytes));
        let subs = self.subs.take_all();
        for sub in subs {
            if self.release(&sub) {
                self.vhost.delete_queue(&sub.queue.name);
            }
            let _ = &sub.id;
        }
        self.handle.close(CloseReason::new(CloseCode::Normal, "session ended"));
        self.engine.detach(&self.handle).await;
    }
}

/// A frame handler fails either with a protocol-level error for the client
/// or because writing (a receipt) stopped the session.
enum HandleError {
    Fatal(Fatal),
    Stop(Stop),
}

impl From<Fatal> for HandleError {
    fn from(f: Fatal) -> Self {
        HandleError::Fatal(f)
    }
}

impl From<Stop> for HandleError {
    fn from(s: Stop) -> Self {
        HandleError::Stop(s)
    }
}

/// Headers only the server sets (the sender and payload of XMPP messages,
/// `x-xmpp-*`): a client's values are dropped, so a SEND cannot speak for
/// another user (docs/security.md "Identity").
fn is_server_header(name: &str) -> bool {
    name.len() >= crate::xmpp::session::headers::PREFIX.len()
        && name.as_bytes()[..crate::xmpp::session::headers::PREFIX.len()]
            .eq_ignore_ascii_case(crate::xmpp::session::headers::PREFIX.as_bytes())
}

/// `x-stream-offset` (and `x-stream-epoch`) of a SUBSCRIBE, when present.
fn stream_position(frame: &Frame) -> Result<Option<(Since, Option<&str>)>, Fatal> {
    let bad = |why: String| fatal(CloseCode::Protocol, "Bad header", why);
    let epoch = frame.header(STREAM_EPOCH);
    match frame.header(STREAM_OFFSET) {
        Some(v) => Ok(Some((Since::parse(v).map_err(bad)?, epoch))),
        None if epoch.is_some() => Err(bad("x-stream-epoch needs an x-stream-offset".into())),
        None => Ok(None),
    }
}

/// A header the frame must have; the ERROR for its absence is worded as RabbitMQ's.
fn require(frame: &Frame, name: &str) -> Result<String, Fatal> {
    frame.header(name).map(str::to_owned).ok_or_else(|| {
        let command = frame.command.as_str();
        match name {
            "destination" | "transaction" => fatal(
                CloseCode::Protocol,
                if name == "destination" { "Missing destination" } else { "Missing transaction" },
                format!("{command:?} must include a '{name}' header\n"),
            ),
            _ => {
                fatal(CloseCode::Protocol, "Missing header", format!("{command:?} must include the {name:?} header\n"))
            }
        }
    })
}

fn destination_error(e: DestinationError) -> Fatal {
    // RabbitMQ ends these texts with a newline, except the blank one.
    let detail = match e {
        DestinationError::Blank => e.to_string(),
        _ => format!("{e}\n"),
    };
    fatal(CloseCode::Protocol, e.summary(), detail)
}

/// A destination of a kind the command does not take (`/temp-queue/` outside `reply-to`).
fn not_for(frame: &Frame, command: &str) -> Fatal {
    let dest = frame.header("destination").unwrap_or_default();
    fatal(CloseCode::Protocol, "Invalid destination", format!("'{dest}' is not a valid destination for '{command}'\n"))
}

/// What a buffered frame pins: body and headers.
fn frame_bytes(f: &Frame) -> usize {
    f.body.len() + f.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
}

/// RabbitMQ 3.10's answer to a transaction it does not know.
fn unknown_tx(id: &str) -> Fatal {
    fatal(CloseCode::Protocol, "Bad transaction", format!("Invalid transaction identifier: \"{id}\"\n"))
}

/// The `transaction` header of BEGIN, COMMIT or ABORT, with RabbitMQ 3.10's
/// answer when it is missing.
fn transaction_header(frame: &Frame) -> Result<String, Fatal> {
    frame.header("transaction").map(str::to_owned).ok_or_else(|| {
        let command = frame.command.as_str();
        fatal(
            CloseCode::Protocol,
            "Missing transaction",
            format!("\"{command}\" must include a 'transaction' header\n"),
        )
    })
}

/// A boolean header as RabbitMQ reads one: `true`/`false`, and `True`/`False`
/// (Python clients' spelling); anything else is as if absent.
fn boolean_header(frame: &Frame, name: &str) -> Option<bool> {
    match frame.header(name)? {
        "true" | "True" => Some(true),
        "false" | "False" => Some(false),
        _ => None,
    }
}

/// A durable (or legacy `persistent`) SUBSCRIBE or UNSUBSCRIBE must name its
/// subscription: RabbitMQ 3.10's check and answer.
fn durable_needs_id(frame: &Frame) -> Result<(), Fatal> {
    let durable = boolean_header(frame, "durable") == Some(true) || boolean_header(frame, "persistent") == Some(true);
    if durable && frame.header("id").is_none() {
        return Err(fatal(CloseCode::Protocol, "Missing Header", "Header 'id' is required for durable subscriptions"));
    }
    Ok(())
}

fn exclusive_header(frame: &Frame) -> bool {
    frame.header("exclusive") == Some("true")
}

/// Options for a `/queue/` declaration: durable by default, as in RabbitMQ.
fn queue_options(frame: &Frame, default_durable: bool, exclusive: Option<u64>) -> QueueOptions {
    let flag = |name: &str, default: bool| match frame.header(name) {
        Some("true") => true,
        Some("false") => false,
        _ => default,
    };
    QueueOptions { durable: flag("durable", default_durable), exclusive, auto_delete: flag("auto-delete", false) }
}

/// Queue length arguments from a frame's headers, `None` when it has none.
fn queue_limits(frame: &Frame, defaults: QueueLimits) -> Result<Option<QueueLimits>, Fatal> {
    let number = |name: &str| -> Result<Option<usize>, Fatal> {
        match frame.header(name) {
            None => Ok(None),
            Some(v) => v.trim().parse::<usize>().map(Some).map_err(|_| {
                fatal(
                    CloseCode::Protocol,
                    "Bad header",
                    format!("invalid {name} {v:?}: expected a non-negative integer"),
                )
            }),
        }
    };
    let max_len = number("x-max-length")?;
    let max_bytes = number("x-max-length-bytes")?;
    let overflow = match frame.header("x-overflow") {
        None => None,
        Some("drop-head") => Some(Overflow::DropHead),
        Some("reject-publish") => Some(Overflow::RejectPublish),
        Some(other) => {
            return Err(fatal(
                CloseCode::Protocol,
                "Bad header",
                format!("unsupported x-overflow {other:?}: use drop-head or reject-publish"),
            ))
        }
    };
    if max_len.is_none() && max_bytes.is_none() && overflow.is_none() {
        return Ok(None);
    }
    Ok(Some(QueueLimits {
        max_len: max_len.unwrap_or(defaults.max_len),
        max_bytes: max_bytes.unwrap_or(defaults.max_bytes),
        overflow: overflow.unwrap_or(Overflow::DropHead),
    }))
}

/// Headers-exchange binding arguments from a SUBSCRIBE: `x-match` plus every
/// non-STOMP header.
fn header_match(frame: &Frame) -> HeaderMatch {
    const STOMP: &[&str] = &[
        "destination",
        "id",
        "ack",
        "receipt",
        "prefetch-count",
        "durable",
        "persistent",
        "auto-delete",
        "exclusive",
        "x-queue-name",
        "x-match",
        "selector",
        "content-type",
        "content-length",
        "x-max-length",
        "x-max-length-bytes",
        "x-overflow",
    ];
    HeaderMatch {
        all: frame.header("x-match") != Some("any"),
        args: frame.headers.iter().filter(|(k, _)| !STOMP.contains(&k.as_str())).cloned().collect(),
    }
}

/// `message-id:<tag><subscription>@@session-<session>@@<delivery tag>`
/// and its line end, escaped as [`encode_header`] would; returns where the
/// value lies in `out`. Nothing is written (`None`) when the subscription
/// id cannot be written in this version.
fn encode_message_id(
    out: &mut BytesMut,
    tag: &str,
    subscription: &str,
    session: u64,
    delivery_tag: u64,
    escaping: Escaping,
) -> Option<std::ops::Range<usize>> {
    if !crate::stomp::frame::representable("message-id", subscription, escaping) {
        tracing::debug!(?escaping, "message-id left out: subscription id not representable in this STOMP version");
        return None;
    }
    out.put_slice(b"message-id:");
    let start = out.len();
    out.put_slice(tag.as_bytes());
    crate::stomp::frame::write_escaped(subscription, escaping, out);
    out.put_slice(b"@@session-");
    put_decimal(out, session);
    out.put_slice(b"@@");
    put_decimal(out, delivery_tag);
    let end = out.len();
    out.put_u8(b'\n');
    Some(start..end)
}

/// `n` in decimal, without the formatting machinery.
fn put_decimal(out: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[i..]);
}

/// The part of a MESSAGE frame every recipient shares: application headers,
/// content-length, blank line, body, NUL.
fn encode_message_tail(m: &Message, escaping: Escaping) -> Bytes {
    let mut out = BytesMut::with_capacity(m.body.len() + 64 + m.headers.len() * 32);
    for (k, v) in &m.headers {
        encode_header(k, v, escaping, &mut out);
    }
    if let Some(p) = &m.stream {
        encode_header(STREAM_OFFSET, &p.offset.to_string(), escaping, &mut out);
        encode_header(STREAM_EPOCH, &p.epoch, escaping, &mut out);
    }
    encode_header("content-length", &m.body.len().to_string(), escaping, &mut out);
    out.put_u8(b'\n');
    out.put_slice(&m.body);
    out.put_u8(0);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boolean_headers_read_as_rabbitmq_reads_them() {
        // rabbit_stomp_frame:boolean_header/2 (3.10): true/false and Python's True/False;
        // anything else is absent, so NACK's requeue keeps its default (true).
        let nack = |v: &str| Frame::new(Command::Nack).with_header("requeue", v);
        for (v, want) in [("true", Some(true)), ("True", Some(true)), ("false", Some(false)), ("False", Some(false))] {
            assert_eq!(boolean_header(&nack(v), "requeue"), want, "{v}");
        }
        for v in ["FALSE", "TRUE", "0", "no", "", " false"] {
            assert_eq!(boolean_header(&nack(v), "requeue"), None, "{v:?}");
        }
        assert_eq!(boolean_header(&Frame::new(Command::Nack), "requeue"), None);
    }

    #[test]
    fn durable_subscriptions_need_an_id() {
        let sub = |h: &[(&str, &str)]| {
            h.iter().fold(Frame::new(Command::Subscribe).with_header("destination", "/topic/t"), |f, (k, v)| {
                f.with_header(*k, *v)
            })
        };
        for flag in ["durable", "persistent"] {
            let e = durable_needs_id(&sub(&[(flag, "true")])).unwrap_err();
            assert_eq!(
                (e.message.as_str(), e.detail.as_str()),
                ("Missing Header", "Header 'id' is required for durable subscriptions")
            );
            assert!(durable_needs_id(&sub(&[(flag, "true"), ("id", "d1")])).is_ok());
            assert!(durable_needs_id(&sub(&[(flag, "false")])).is_ok());
        }
        assert!(durable_needs_id(&sub(&[])).is_ok());
    }

    #[test]
    fn transaction_errors_are_rabbitmqs() {
        let e = transaction_header(&Frame::new(Command::Begin)).unwrap_err();
        assert_eq!(
            (e.message.as_str(), e.detail.as_str()),
            ("Missing transaction", "\"BEGIN\" must include a 'transaction' header\n")
        );
        let e = unknown_tx("t9");
        assert_eq!(
            (e.message.as_str(), e.detail.as_str()),
            ("Bad transaction", "Invalid transaction identifier: \"t9\"\n")
        );
    }
}
