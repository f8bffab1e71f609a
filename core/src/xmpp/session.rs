//! One XMPP client, from stream header to close, over any [`super::link`].
//!
//! The session negotiates (SASL, then resource binding), then translates:
//! messages become publishes on the `feed` (to a user) or `project` (to a
//! project) exchange, so STOMP and XMPP meet in one router; presence goes
//! to the engine's presence service; roster requests read the directory.
//! What arrives for the session (deliveries from its private queue,
//! contacts' presence, roster changes) comes through its outbox.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;

use super::jid::Jid;
use super::link::{StreamError, XmppIn, XmppRx, XmppTx};
use super::ns;
use super::sm::{self, Handover, Sm, SmLimits, Unacked};
use super::xml::{Element, Limits};
use crate::auth::sasl::{self, Mechanism, ScramServer};
use crate::auth::{AuthError, ClientInfo, Identity};
use crate::engine::{Engine, Inbox, LoginError, Origin, Parcel, Publish, ToUser, ToUserError};
use crate::error::{CloseCode, CloseReason};
use crate::message::Message;
use crate::presence::Availability;
use crate::router::RouteError;
use crate::session::{write_within, Delivery, Outbound, Protocol, SessionHandle, Written};
use crate::shaper::{self, Shaper};
use crate::store::now_ms;
use crate::transport::Peer;

const WRITE_BATCH: usize = 256;
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// SASL attempts before the stream is closed (RFC 6120 §6.4.5 lets the
/// server choose; ejabberd allows a few).
const MAX_AUTH_ATTEMPTS: u32 = 3;

/// Headers that carry XMPP semantics through the router (see DESIGN.md's
/// addressing model). STOMP subscribers see them as ordinary headers.
///
/// Every header starting with [`headers::PREFIX`] is the server's: a STOMP
/// SEND's are dropped (`stomp::session`), an XMPP message's are built here
/// from the authenticated session.
pub mod headers {
    pub const PREFIX: &str = "x-xmpp-";
    pub const TYPE: &str = "x-xmpp-type";
    pub const FROM: &str = "x-xmpp-from";
    pub const ID: &str = "x-xmpp-id";
    /// Resource of a full-JID recipient: other resources skip the message.
    pub const TO_RESOURCE: &str = "x-xmpp-to-resource";
    /// Serialized child elements other than `<body>` (chat states, receipts…).
    pub const PAYLOAD: &str = "x-xmpp-payload";
}

/// What ends a session: a stream error to send, or a quiet end.
#[derive(Debug)]
enum End {
    /// Client closed the stream, or ended it before binding.
    Quiet,
    /// The connection is gone without a stream close (a resumable session
    /// waits for its client to come back).
    Lost,
    Error(StreamError),
    /// A write was cut off mid-stanza: nothing more can be sent.
    Broken,
    /// A resuming stream (XEP-0198) takes the session over from this one
    /// (its request is in the session's takeover slot).
    TakenOver,
}

impl From<StreamError> for End {
    fn from(e: StreamError) -> End {
        End::Error(e)
    }
}

fn io_end(_: std::io::Error) -> End {
    End::Broken
}

/// The stream error a client sees for an engine-side close.
fn stream_error_for(reason: &CloseReason) -> StreamError {
    let condition = match reason.code {
        CloseCode::Shutdown => "system-shutdown",
        CloseCode::Replaced => "conflict",
        CloseCode::Kicked => "policy-violation",
        CloseCode::SlowConsumer => "policy-violation",
        CloseCode::ConnectTimeout | CloseCode::HeartbeatTimeout => "connection-timeout",
        CloseCode::AuthFailed | CloseCode::AccessRefused => "not-authorized",
        CloseCode::LimitExceeded => "policy-violation",
        CloseCode::Protocol => "bad-format",
        _ => "internal-server-error",
    };
    let text = if reason.detail.is_empty() {
        reason.message.clone()
    } else {
        format!("{}: {}", reason.message, reason.detail)
    };
    StreamError::new(condition, text)
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Runs one XMPP session until the client leaves or an error closes it.
///
/// A plain `fn` returning the future: an `async fn` would keep its arguments
/// twice (as arguments and as the locals they are moved into), for the
/// session's whole life.
pub fn serve<R: XmppRx, W: XmppTx>(engine: Engine, rx: R, tx: W, peer: Peer) -> impl std::future::Future<Output = ()> {
    let (mut s, mut rx, mut tx) = (Session::new(engine, peer), rx, tx);
    async move {
        // Negotiation, stanza handling and cleanup are boxed: an idle session's
        // memory is this future, so it keeps only what waiting needs.
        let end = match Box::pin(s.negotiate(&mut rx, &mut tx)).await {
            Ok(()) => s.run(&mut rx, &mut tx).await,
            Err(e) => Err(e),
        };
        // Updated in place: a second `End` would be kept across the awaits below.
        let mut end = end;
        if matches!(end, Err(End::TakenOver)) {
            // The resuming stream gets the session; this link only closes.
            s.hand_over();
            end = Err(End::Error(StreamError::new("conflict", "replaced by a resumed stream")));
        } else if matches!(end, Err(End::Lost | End::Broken)) && s.resumable() {
            // XEP-0198: kept for resumption, without the connection.
            drop((rx, tx));
            Box::new(s).park();
            return;
        }
        Box::pin(s.cleanup()).await;
        let error = match end {
            Ok(()) | Err(End::Quiet | End::Lost | End::TakenOver) => None,
            Err(End::Error(e)) => Some(e),
            Err(End::Broken) => {
                // Half a stanza may be on the wire: just drop the connection.
                drop(tx);
                return;
            }
        };
        if let Some(e) = &error {
            tracing::debug!(uid = s.identity.as_ref().map(|i| i.uid.as_str()), error = %e, "XMPP stream closed with an error");
        }
        // Boxed: the closing write (~550 B of state) is not part of every waiting session.
        let _ = Box::pin(tokio::time::timeout(CLOSE_GRACE, tx.close(error))).await;
    }
}

struct Bound {
    handle: Arc<SessionHandle>,
    jid: Jid,
    /// The session's private queue, bound to the user's feed and projects.
    inbox: Inbox,
}

pub(crate) struct Session {
    engine: Engine,
    peer: Peer,
    limits: Limits,
    identity: Option<Identity>,
    bound: Option<Bound>,
    /// Sent initial presence: receives contacts' presence from now on.
    available: bool,
    /// Asked for the roster: receives roster pushes.
    roster_requested: bool,
    /// Contacts and their groups as last sent (to compute roster pushes).
    roster: BTreeMap<String, Vec<String>>,
    /// Stanzas per second once bound (`[shaper]`; bytes are shaped by the
    /// transport); `None` (one pointer) when off.
    shaper: Option<Box<Shaper>>,
    /// XEP-0198 once the client enabled it; `None` (one pointer) otherwise.
    sm: Option<Box<Sm>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("uid", &self.identity.as_ref().map(|i| i.uid.as_str()))
            .field("jid", &self.bound.as_ref().map(|b| b.jid.to_string()))
            .finish_non_exhaustive()
    }
}

impl Session {
    fn new(engine: Engine, peer: Peer) -> Session {
        let x = &engine.config.xmpp;
        let limits = Limits { max_depth: x.max_depth, max_stanza_bytes: x.max_stanza_bytes, ..Limits::default() };
        Session {
            limits,
            engine,
            peer,
            identity: None,
            bound: None,
            available: false,
            roster_requested: false,
            roster: BTreeMap::new(),
            shaper: None,
            sm: None,
        }
    }

    /// `xmpp.domain`, read from the config rather than copied into every
    /// session (a `String` each, and its allocation).
    fn domain(&self) -> &str {
        &self.engine.config.xmpp.domain
    }

    /// Whether `domain` is the projects' MUC domain, `projects.<domain>`.
    fn is_projects_domain(&self, domain: &str) -> bool {
        domain.strip_prefix("projects.") == Some(self.domain())
    }

    fn handle(&self) -> Option<&Arc<SessionHandle>> {
        self.bound.as_ref().map(|b| &b.handle)
    }

    fn write_limit(&self) -> Duration {
        Duration::from_millis(self.engine.config.limits.write_timeout_ms)
    }

    /// Sends a stanza or negotiation element; with SM on, a stanza is kept
    /// until the client acknowledges it.
    async fn send<W: XmppTx>(&mut self, tx: &mut W, e: &Element) -> Result<(), End> {
        let bytes = e.to_bytes();
        if let Some(sm) = self.sm.as_deref_mut().filter(|_| sm::is_stanza(e)) {
            let u = Unacked { stanza: bytes.clone(), sent_ms: now_ms(), offline_from: sm::offline_from(e) };
            if let Err(why) = sm.record(u) {
                return Err(StreamError::new("resource-constraint", why.to_string()).into());
            }
        }
        self.bounded(tx.send(bytes)).await
    }

    /// Writes an element that SM does not count (SASL replies, SM's own).
    async fn write<W: XmppTx>(&self, tx: &mut W, e: &Element) -> Result<(), End> {
        self.bounded(tx.send(e.to_bytes())).await
    }

    async fn flush<W: XmppTx>(&self, tx: &mut W) -> Result<(), End> {
        self.bounded(tx.flush()).await
    }

    /// A write bounded by the write timeout and, once bound, by the
    /// session's close signal.
    async fn bounded(&self, work: impl Future<Output = std::io::Result<()>>) -> Result<(), End> {
        let limit = self.write_limit();
        match self.handle() {
            Some(h) => match write_within(h, limit, CLOSE_GRACE, work).await {
                Written::Done(r) => r.map_err(io_end),
                Written::CutOff(_) | Written::TimedOut => Err(End::Broken),
            },
            None => match tokio::time::timeout(limit, work).await {
                Ok(r) => r.map_err(io_end),
                Err(_) => Err(End::Broken),
            },
        }
    }

    /// Waits for the next inbound event, up to `deadline` before binding.
    async fn next<R: XmppRx>(&self, rx: &mut R, deadline: tokio::time::Instant) -> Result<XmppIn, End> {
        tokio::select! {
            r = rx.recv() => match r {
                Ok(Some(x)) => Ok(x),
                Ok(None) => Err(End::Quiet),
                Err(e) => Err(End::Error(e)),
            },
            _ = tokio::time::sleep_until(deadline) => Err(End::Error(StreamError::new("connection-timeout", "authentication took too long"))),
            _ = self.engine.shutdown.cancelled() => Err(End::Error(StreamError::new("system-shutdown", "server shutting down"))),
        }
    }

    /// Stream header, SASL, restart, resource binding.
    async fn negotiate<R: XmppRx, W: XmppTx>(&mut self, rx: &mut R, tx: &mut W) -> Result<(), End> {
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.engine.config.limits.connect_timeout_ms);
        self.open_stream(rx, tx, deadline).await?;
        let mechanisms: &[Mechanism] = if self.engine.auth().authenticator.offers_scram() {
            &[Mechanism::ScramSha256, Mechanism::ScramSha1, Mechanism::Plain]
        } else {
            &[Mechanism::Plain]
        };
        let mut features = Element::new("features", ns::STREAM);
        let mut mechs = Element::new("mechanisms", ns::SASL);
        for &m in mechanisms {
            mechs.push_child(Element::new("mechanism", ns::SASL).with_text(m.name()));
        }
        features.push_child(mechs);
        self.send(tx, &features).await?;
        self.flush(tx).await?;

        let mut failures = 0;
        let identity = loop {
            let stanza = match self.next(rx, deadline).await? {
                XmppIn::Stanza(s) => s,
                XmppIn::Close => return Err(End::Quiet),
                XmppIn::Open { .. } => return Err(StreamError::new("bad-format", "unexpected stream header").into()),
            };
            if stanza.is("abort", ns::SASL) {
                // RFC 6120 §6.4.4: an abort is answered with <aborted/>, also
                // when no exchange is under way (ejabberd does the same).
                self.sasl_failure(tx, "aborted").await?;
                continue;
            }
            if !stanza.is("auth", ns::SASL) {
                return Err(StreamError::new("not-authorized", "authenticate first").into());
            }
            match self.authenticate(rx, tx, &stanza, deadline).await? {
                Some(id) => break id,
                None => {
                    failures += 1;
                    if failures >= MAX_AUTH_ATTEMPTS {
                        return Err(
                            StreamError::new("policy-violation", "too many failed authentication attempts").into()
                        );
                    }
                }
            }
        };
        self.identity = Some(identity);
        crate::transport::authenticated();
        rx.restart();
        self.open_stream(rx, tx, deadline).await?;
        let mut features = Element::new("features", ns::STREAM)
            .with_child(Element::new("bind", ns::BIND))
            .with_child(Element::new("session", ns::SESSION).with_child(Element::new("optional", ns::SESSION)));
        if self.sm_offered() {
            features.push_child(Element::new("sm", sm::NS));
        }
        self.send(tx, &features).await?;
        self.flush(tx).await?;

        // Until bound, only the bind (and session) IQs are allowed.
        loop {
            let stanza = match self.next(rx, deadline).await? {
                XmppIn::Stanza(s) => s,
                XmppIn::Close => return Err(End::Quiet),
                XmppIn::Open { .. } => return Err(StreamError::new("bad-format", "unexpected stream header").into()),
            };
            if stanza.is("iq", ns::CLIENT) && stanza.attr("type") == Some("set") {
                if let Some(bind) = stanza.child("bind", ns::BIND) {
                    let resource = bind.child("resource", ns::BIND).map(|r| r.text()).filter(|r| !r.trim().is_empty());
                    let reply = self.bind(resource, &stanza).await;
                    self.send(tx, &reply).await?;
                    self.flush(tx).await?;
                    if self.bound.is_some() {
                        return Ok(());
                    }
                    continue;
                }
                if stanza.child("session", ns::SESSION).is_some() {
                    self.send(tx, &iq_result(&stanza)).await?;
                    self.flush(tx).await?;
                    continue;
                }
            }
            if stanza.ns == sm::NS && self.sm_offered() {
                if stanza.name == "resume" && self.resume(tx, &stanza).await? {
                    return Ok(());
                }
                if stanza.name != "resume" {
                    // XEP-0198 §3: SM is enabled on a bound resource.
                    self.write(tx, &sm::failed("unexpected-request")).await?;
                }
                self.flush(tx).await?;
                continue;
            }
            return Err(StreamError::new("not-authorized", "bind a resource first").into());
        }
    }

    async fn open_stream<R: XmppRx, W: XmppTx>(
        &self,
        rx: &mut R,
        tx: &mut W,
        deadline: tokio::time::Instant,
    ) -> Result<(), End> {
        match self.next(rx, deadline).await? {
            XmppIn::Open { to, version, .. } => {
                tx.open(&new_id(), self.domain()).await.map_err(io_end)?;
                if let Some(to) = to {
                    if !to.eq_ignore_ascii_case(self.domain()) {
                        return Err(
                            StreamError::new("host-unknown", format!("this server serves {}", self.domain())).into()
                        );
                    }
                }
                if version.as_deref().is_some_and(|v| !v.starts_with("1.")) {
                    return Err(StreamError::new("unsupported-version", "XMPP 1.0 only").into());
                }
                Ok(())
            }
            XmppIn::Close => Err(End::Quiet),
            XmppIn::Stanza(_) => {
                tx.open(&new_id(), self.domain()).await.map_err(io_end)?;
                Err(StreamError::new("bad-format", "expected a stream header").into())
            }
        }
    }

    /// One SASL exchange. `Ok(None)` = failed (a `<failure/>` was sent).
    async fn authenticate<R: XmppRx, W: XmppTx>(
        &mut self,
        rx: &mut R,
        tx: &mut W,
        auth: &Element,
        deadline: tokio::time::Instant,
    ) -> Result<Option<Identity>, End> {
        let Some(name) = auth.attr("mechanism") else {
            // No mechanism named at all is a malformed request (as ejabberd answers).
            self.sasl_failure(tx, "malformed-request").await?;
            return Ok(None);
        };
        let Some(mechanism) = Mechanism::from_name(name) else {
            self.sasl_failure(tx, "invalid-mechanism").await?;
            return Ok(None);
        };
        let Some(initial) = self.sasl_payload(tx, auth).await? else { return Ok(None) };
        let authn = self.engine.auth().authenticator;
        let client = ClientInfo::new(&self.peer, Protocol::Xmpp);
        if mechanism == Mechanism::Plain {
            let creds = match sasl::parse_plain(&initial) {
                Ok(c) => c,
                Err(e) => {
                    self.sasl_failure(tx, e.condition()).await?;
                    return Ok(None);
                }
            };
            // An authzid may only name the user itself (bare JID or local part).
            if let Some(z) = &creds.authzid {
                let own = z == &creds.authcid
                    || Jid::parse(z)
                        .is_ok_and(|j| j.local.as_deref() == Some(creds.authcid.as_str()) && j.domain == self.domain());
                if !own {
                    self.sasl_failure(tx, "invalid-authzid").await?;
                    return Ok(None);
                }
            }
            return match self.engine.login(&creds.authcid, &creds.password, &client).await {
                Ok(id) => {
                    self.send(tx, &Element::new("success", ns::SASL)).await?;
                    self.flush(tx).await?;
                    Ok(Some(id))
                }
                Err(LoginError::Refused) => {
                    self.sasl_failure(tx, "not-authorized").await?;
                    Ok(None)
                }
                Err(e) => {
                    if let LoginError::Unavailable(why) = &e {
                        tracing::warn!(error = %why, "authentication backend unavailable");
                    }
                    self.sasl_failure_text(tx, "temporary-auth-failure", &e.to_string()).await?;
                    Ok(None)
                }
            };
        }
        // SCRAM: client-first → server-first → client-final → server-final.
        let mut scram = ScramServer::new(mechanism);
        let username = match scram.client_first(&initial) {
            Ok(u) => u,
            Err(e) => {
                self.sasl_failure(tx, e.condition()).await?;
                return Ok(None);
            }
        };
        // The failed-login limits apply before any key is looked up or derived.
        if let Err(e) = self.engine.login_allowed(&username, &client) {
            self.sasl_failure_text(tx, "temporary-auth-failure", &e.to_string()).await?;
            return Ok(None);
        }
        let (creds, identity) = match authn.scram_credentials(&username, mechanism).await {
            Ok(Some((c, id))) => (c, Some(id)),
            // Unknown user, or one without stored credentials: run the
            // exchange with fake ones so the failure looks the same.
            Ok(None) => (ScramServer::fake_credentials(mechanism, &username), None),
            Err(e) => {
                if matches!(e, AuthError::Unavailable(_)) {
                    tracing::warn!(error = %e, "authentication backend unavailable");
                }
                self.sasl_failure_text(tx, "temporary-auth-failure", &e.to_string()).await?;
                return Ok(None);
            }
        };
        let challenge = match scram.server_first(&creds) {
            Ok(c) => c,
            Err(e) => {
                self.sasl_failure(tx, e.condition()).await?;
                return Ok(None);
            }
        };
        self.send(tx, &Element::new("challenge", ns::SASL).with_text(b64(&challenge))).await?;
        self.flush(tx).await?;
        let response = match self.next(rx, deadline).await? {
            XmppIn::Stanza(r) if r.is("response", ns::SASL) => r,
            XmppIn::Stanza(a) if a.is("abort", ns::SASL) => {
                self.sasl_failure(tx, "aborted").await?;
                return Ok(None);
            }
            XmppIn::Close => return Err(End::Quiet),
            _ => return Err(StreamError::new("not-authorized", "expected a SASL response").into()),
        };
        let Some(final_msg) = self.sasl_payload(tx, &response).await? else { return Ok(None) };
        // Counted like a PLAIN login (a wrong proof is a wrong password).
        match (scram.client_final(&final_msg), identity) {
            (Ok(server_final), Some(id)) => {
                let _ = self.engine.login_finished(&username, &client, Ok(id.clone()));
                self.send(tx, &Element::new("success", ns::SASL).with_text(b64(&server_final))).await?;
                self.flush(tx).await?;
                Ok(Some(id))
            }
            (Ok(_), None) | (Err(_), _) => {
                let _ = self.engine.login_finished(&username, &client, Err(AuthError::Refused));
                self.sasl_failure(tx, "not-authorized").await?;
                Ok(None)
            }
        }
    }

    /// Base64 content of `<auth>`/`<response>`; `=` means empty.
    async fn sasl_payload<W: XmppTx>(&self, tx: &mut W, e: &Element) -> Result<Option<Vec<u8>>, End> {
        let text = e.text();
        let text = text.trim();
        if text.is_empty() || text == "=" {
            return Ok(Some(Vec::new()));
        }
        match base64::engine::general_purpose::STANDARD.decode(text) {
            Ok(v) => Ok(Some(v)),
            Err(_) => {
                self.sasl_failure(tx, "incorrect-encoding").await?;
                Ok(None)
            }
        }
    }

    async fn sasl_failure<W: XmppTx>(&self, tx: &mut W, condition: &str) -> Result<(), End> {
        let f = Element::new("failure", ns::SASL).with_child(Element::new(condition, ns::SASL));
        self.write(tx, &f).await?;
        self.flush(tx).await
    }

    /// A failure with a `<text/>` saying why (busy, backed off).
    async fn sasl_failure_text<W: XmppTx>(&self, tx: &mut W, condition: &str, text: &str) -> Result<(), End> {
        let f = Element::new("failure", ns::SASL)
            .with_child(Element::new(condition, ns::SASL))
            .with_child(Element::new("text", ns::SASL).with_text(text));
        self.write(tx, &f).await?;
        self.flush(tx).await
    }

    /// Binds a resource: registers the session, subscribes its private queue
    /// to the user's feed and the user's projects. A resource already in use
    /// by the same user replaces the old session (it gets `conflict`), as
    /// ejabberd does by default.
    async fn bind(&mut self, resource: Option<String>, iq: &Element) -> Element {
        let identity = self.identity.clone().expect("authenticated before bind");
        let resource = resource.unwrap_or_else(|| format!("herald-{}", &new_id()[..8]));
        let jid = Jid::full(&identity.uid.to_lowercase(), self.domain(), &resource);
        let Ok(jid) = Jid::parse(&jid.to_string()) else {
            return stanza_error(iq, "modify", "bad-request");
        };
        // From here on the resource is the bound JID's, the one presence is
        // announced from: for an odd uid (`org/alice`) it is not the one asked.
        let resource = jid.resource.clone().unwrap_or(resource);
        self.engine.replace_resource(&identity.uid, &resource);
        let vhost_name = self.engine.config.stomp.default_vhost.clone();
        if self.engine.router.vhost(&vhost_name).is_err() {
            return stanza_error(iq, "wait", "internal-server-error");
        }
        // XMPP sessions live in the default vhost: the authorizer decides
        // whether this user may, as for a STOMP CONNECT to it.
        let client = ClientInfo::new(&self.peer, Protocol::Xmpp);
        match self.engine.auth().authorizer.vhost(&identity, &vhost_name, &client).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(uid = %identity.uid, vhost = %vhost_name, "XMPP bind refused: no access to the vhost");
                return stanza_error(iq, "auth", "forbidden");
            }
            Err(e) => {
                tracing::warn!(uid = %identity.uid, error = %e, "XMPP bind: vhost access not decided");
                return stanza_error(iq, "wait", "internal-server-error");
            }
        }
        let handle = SessionHandle::with_limits(
            &identity.uid,
            &vhost_name,
            Protocol::Xmpp,
            &self.peer,
            crate::session::OutboxLimits::from_config(&self.engine.config.limits),
        );
        let _ = handle.resource.set(resource.clone());
        // The uid is the auth source's (a JWT `sub`, a name an HTTP backend
        // accepts): bound as a pattern, `#` or `x.*` would read other users'
        // feeds. The same rule as a STOMP SUBSCRIBE to `feed/<uid>`.
        let feed = &self.engine.config.exchanges.feed;
        if let Err(why) =
            crate::auth::policy::addressing(&self.engine, &identity, feed, &identity.uid, crate::auth::Permission::Read)
                .await
        {
            tracing::info!(uid = %identity.uid, %why, "XMPP bind refused");
            return stanza_error(iq, "cancel", "not-allowed");
        }
        let inbox = match self.engine.open_inbox(&handle).await {
            Ok(inbox) => inbox,
            Err(e) => {
                tracing::warn!(error = %e, "XMPP session queue not set up");
                return stanza_error(iq, "wait", "internal-server-error");
            }
        };
        self.engine.attach(&handle).await;
        let reply = iq_result(iq).with_child(
            Element::new("bind", ns::BIND).with_child(Element::new("jid", ns::BIND).with_text(jid.to_string())),
        );
        self.bound = Some(Bound { handle, jid, inbox });
        reply
    }

    async fn run<R: XmppRx, W: XmppTx>(&mut self, rx: &mut R, tx: &mut W) -> Result<(), End> {
        let handle = self.handle().expect("bound").clone();
        let mut batch = Vec::new();
        // Shutdown closes every session in the hub (`Engine::stop` cancels,
        // then closes them), and closing wakes `handle.notified()`; this catches a
        // session bound after that sweep.
        if self.engine.shutdown.is_cancelled() {
            return Err(End::Error(StreamError::new("system-shutdown", "server shutting down")));
        }
        self.shaper = Shaper::new(&self.engine.config.shaper, false, true);
        if self.sm.is_some() {
            // Resumed: what queued while the session was detached goes out
            // after the retransmitted stanzas (its wake-up may have been taken).
            handle.wake();
        }
        loop {
            // Out of stanza tokens ([shaper]): nothing is read (the stanzas
            // stay in the client's socket, as with ejabberd's shaper) until one
            // is there again.
            let paused = self.shaper.as_deref_mut().is_some_and(|s| !s.frame_ready());
            tokio::select! {
                biased;
                _ = handle.notified() => {
                    if handle.is_closing() {
                        let reason = handle.close_reason().cloned().unwrap_or_else(|| CloseReason::new(CloseCode::Internal, "closed"));
                        return Err(End::Error(stream_error_for(&reason)));
                    }
                    if self.sm.as_ref().and_then(|s| s.takeover.as_ref()).is_some_and(|t| t.lock().is_some()) {
                        return Err(End::TakenOver);
                    }
                    Box::pin(self.write_outbox(tx, &handle, &mut batch)).await?;
                    if batch.capacity() > WRITE_BATCH {
                        batch = Vec::new();
                    }
                }
                () = shaper::pause(&mut self.shaper), if paused => {}
                r = rx.recv(), if !paused => match r {
                    Ok(Some(XmppIn::Stanza(s))) => {
                        if let Some(shaper) = self.shaper.as_deref_mut() {
                            shaper.take_frame();
                        }
                        Box::pin(async {
                            if s.ns == sm::NS {
                                self.on_sm(tx, s).await?;
                            } else {
                                if let Some(sm) = self.sm.as_deref_mut() {
                                    sm.handled();
                                }
                                self.inbound(tx, s).await?;
                            }
                            self.flush(tx).await?;
                            self.request_ack(tx).await
                        })
                        .await?;
                    }
                    Ok(Some(XmppIn::Close)) => return Ok(()),
                    Ok(None) => return Err(End::Lost),
                    Ok(Some(XmppIn::Open { .. })) => return Err(StreamError::new("bad-format", "unexpected stream header").into()),
                    Err(e) => return Err(End::Error(e)),
                },
            }
        }
    }

    /// Writes everything waiting in the outbox.
    async fn write_outbox<W: XmppTx>(
        &mut self,
        tx: &mut W,
        handle: &SessionHandle,
        batch: &mut Vec<Outbound>,
    ) -> Result<(), End> {
        loop {
            batch.clear();
            if handle.drain(batch, WRITE_BATCH) == 0 {
                return self.request_ack(tx).await;
            }
            for item in batch.drain(..) {
                self.outbound(tx, item).await?;
            }
            self.flush(tx).await?;
        }
    }

    fn jid(&self) -> &Jid {
        &self.bound.as_ref().expect("bound").jid
    }

    fn uid(&self) -> &str {
        &self.identity.as_ref().expect("authenticated").uid
    }

    /// A stanza from the client.
    async fn inbound<W: XmppTx>(&mut self, tx: &mut W, mut stanza: Element) -> Result<(), End> {
        if stanza.ns != ns::CLIENT {
            return Err(StreamError::new("invalid-namespace", format!("stanzas must be in {}", ns::CLIENT)).into());
        }
        // The server stamps `from`: clients cannot speak for others.
        stanza.set_attr("from", self.jid().to_string());
        let to = match stanza.attr("to").map(Jid::parse) {
            None => None,
            Some(Ok(j)) => Some(j),
            Some(Err(_)) => {
                if stanza.attr("type") != Some("error") && stanza.attr("type") != Some("result") {
                    let reply = stanza_error(&stanza, "modify", "jid-malformed");
                    self.send(tx, &reply).await?;
                }
                return Ok(());
            }
        };
        match stanza.name.as_str() {
            "iq" => self.on_iq(tx, stanza, to).await,
            "presence" => self.on_presence(tx, stanza, to).await,
            "message" => self.on_message(tx, stanza, to).await,
            _ => Err(StreamError::new("unsupported-stanza-type", format!("<{}/> is not a stanza", stanza.name)).into()),
        }
    }

    async fn on_iq<W: XmppTx>(&mut self, tx: &mut W, iq: Element, to: Option<Jid>) -> Result<(), End> {
        let kind = iq.attr("type").unwrap_or("").to_owned();
        if kind == "result" || kind == "error" {
            return Ok(()); // answers to our roster pushes or pings
        }
        if kind != "get" && kind != "set" || iq.attr("id").is_none() || iq.elements().count() != 1 {
            let reply = stanza_error(&iq, "modify", "bad-request");
            return self.send(tx, &reply).await;
        }
        let for_server = match &to {
            None => true,
            Some(j) => {
                j.resource.is_none()
                    && (j.local.is_none() && j.domain == self.domain() || j.bare() == self.jid().bare())
            }
        };
        // Another local account's bare JID: the server answers on its behalf
        // (RFC 6121 §8.5.1), as ejabberd does.
        let for_account =
            to.as_ref().is_some_and(|j| j.resource.is_none() && j.local.is_some() && j.domain == self.domain());
        let foreign = to.as_ref().is_some_and(|j| j.domain != self.domain() && !self.is_projects_domain(&j.domain));
        let payload = iq.elements().next().cloned().expect("one child checked");
        let mut reply = match (kind.as_str(), payload.name.as_str(), payload.ns.as_str()) {
            _ if foreign => stanza_error(&iq, "cancel", "remote-server-not-found"),
            ("get", "query", ns::ROSTER) if for_server => self.roster_result(&iq).await,
            // RFC 6121 §2.3.3: a roster set carries exactly one item.
            ("set", "query", ns::ROSTER) if for_server && payload.elements().count() != 1 => {
                stanza_error(&iq, "modify", "bad-request")
            }
            ("set", "query", ns::ROSTER) if for_server => stanza_error(&iq, "cancel", "not-allowed"),
            // RFC 6121 §2.1.5: only the user's own roster.
            (_, "query", ns::ROSTER) if for_account => stanza_error(&iq, "auth", "forbidden"),
            ("set", "session", ns::SESSION) => {
                let mut r = iq_result(&iq);
                r.set_attr("from", self.domain().to_owned());
                r
            }
            ("get", "ping", ns::PING) if for_server || for_account => iq_result(&iq),
            ("get", "query", ns::DISCO_INFO) if for_server => self.disco_info(&iq, to.as_ref()),
            ("get", "query", ns::DISCO_ITEMS) if for_server => {
                iq_result(&iq).with_child(Element::new("query", ns::DISCO_ITEMS))
            }
            _ => stanza_error(&iq, "cancel", "service-unavailable"),
        };
        if iq.attr("to").is_none() && reply.attr("from").is_none() {
            // RFC 6120 §10.3.3: an IQ without `to` is handled for the
            // account, so the answer comes from the user's bare JID.
            reply.set_attr("from", self.jid().bare().to_string());
        }
        self.send(tx, &reply).await
    }

    fn disco_info(&self, iq: &Element, to: Option<&Jid>) -> Element {
        let mut q = Element::new("query", ns::DISCO_INFO);
        let account = to.is_some_and(|j| j.local.is_some());
        let (category, kind) = if account { ("account", "registered") } else { ("server", "im") };
        q.push_child(
            Element::new("identity", ns::DISCO_INFO)
                .with_attr("category", category)
                .with_attr("type", kind)
                .with_attr("name", "Herald"),
        );
        for f in [ns::DISCO_INFO, ns::DISCO_ITEMS, ns::PING, ns::ROSTER] {
            q.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", f));
        }
        if self.engine.config.xmpp.offline.enabled {
            q.push_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", super::offline::FEATURE));
        }
        iq_result(iq).with_child(q)
    }

    async fn roster_result(&mut self, iq: &Element) -> Element {
        let contacts = match self.engine.contacts(self.uid()).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "directory unavailable for a roster request");
                return stanza_error(iq, "wait", "internal-server-error");
            }
        };
        self.roster_requested = true;
        let mut q = Element::new("query", ns::ROSTER);
        for (uid, groups) in &contacts {
            q.push_child(self.roster_item(uid, groups));
        }
        self.roster = contacts.into_iter().collect();
        iq_result(iq).with_child(q)
    }

    fn roster_item(&self, uid: &str, groups: &[String]) -> Element {
        let mut item = Element::new("item", ns::ROSTER)
            .with_attr("jid", format!("{uid}@{}", self.domain()))
            .with_attr("name", uid)
            .with_attr("subscription", "both");
        for g in groups {
            item.push_child(Element::new("group", ns::ROSTER).with_text(g.clone()));
        }
        item
    }

    async fn on_presence<W: XmppTx>(&mut self, tx: &mut W, p: Element, to: Option<Jid>) -> Result<(), End> {
        let kind = p.attr("type").unwrap_or("available").to_owned();
        if let Some(to) = to {
            if kind == "probe" {
                if let Some(uid) = to.local.as_deref().filter(|_| to.domain == self.domain()) {
                    // A probe may come before the roster was asked for or
                    // initial presence sent (RFC 6121 §4.3): load the contacts.
                    if self.roster.is_empty() {
                        if let Ok(c) = self.engine.contacts(self.uid()).await {
                            self.roster = c.into_iter().collect();
                        }
                    }
                    if self.roster.contains_key(uid) || uid == self.uid() {
                        self.send_presence_of(tx, uid).await?;
                    }
                }
            }
            // Subscriptions follow project membership: requests are
            // acknowledged by the roster, not stored. Directed presence
            // (to a contact or a room) is not routed.
            return Ok(());
        }
        let handle = self.handle().expect("bound").clone();
        let resource = self.jid().resource.clone().unwrap_or_default();
        match kind.as_str() {
            "available" => {
                let show = p.child("show", ns::CLIENT).map(|s| s.text());
                let availability = match show.as_deref().map(str::trim) {
                    None | Some("") => Availability::Online,
                    Some("chat") => Availability::Chat,
                    Some("away") => Availability::Away,
                    Some("xa") => Availability::Xa,
                    Some("dnd") => Availability::Dnd,
                    Some(_) => {
                        let reply = stanza_error(&p, "modify", "bad-request");
                        return self.send(tx, &reply).await;
                    }
                };
                let status = p.child("status", ns::CLIENT).map(|s| s.text()).unwrap_or_default();
                let priority =
                    p.child("priority", ns::CLIENT).and_then(|s| s.text().trim().parse::<i8>().ok()).unwrap_or(0);
                let initial = !self.available;
                self.available = true;
                self.engine.set_session_presence(&handle, &resource, availability, &status, priority).await;
                // RFC 6121 §4.2.2 and §4.4.2: the resource that sent its
                // presence gets it back (it is subscribed to itself).
                let own = presence_element(self.jid(), self.jid(), availability, &status, priority);
                self.send(tx, &own).await?;
                if initial {
                    // RFC 6121 §4.2.2: the new resource learns its contacts'
                    // (and its own other resources') presence.
                    if self.roster.is_empty() {
                        if let Ok(c) = self.engine.contacts(self.uid()).await {
                            self.roster = c.into_iter().collect();
                        }
                    }
                    let mut uids: Vec<String> = self.roster.keys().cloned().collect();
                    uids.push(self.uid().to_owned());
                    for uid in uids {
                        self.send_presence_of(tx, &uid).await?;
                    }
                    // A negative priority takes no messages to the bare JID
                    // (RFC 6121 §8.5.2.1.1), so none of the kept ones either.
                    if priority >= 0 {
                        self.send_offline_messages(tx).await?;
                    }
                }
                Ok(())
            }
            "unavailable" => {
                self.available = false;
                self.engine.remove_session_presence(&handle, &resource).await;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// XEP-0160: at initial presence, what was kept while the user had no
    /// available resource, oldest first with `<delay/>`; removed from the
    /// store once written and flushed (at least once).
    async fn send_offline_messages<W: XmppTx>(&mut self, tx: &mut W) -> Result<(), End> {
        let kept = match self.engine.offline_messages(self.uid()) {
            Ok(k) if !k.is_empty() => k,
            Ok(_) => return Ok(()),
            Err(e) => {
                tracing::warn!(uid = self.uid(), error = %e, "offline messages not read");
                return Ok(());
            }
        };
        for m in &kept {
            match super::offline::delayed(&m.stanza, m.stamp_ms, self.domain(), &self.limits) {
                Some(e) => self.send(tx, &e).await?,
                None => tracing::warn!(uid = self.uid(), seq = m.seq, "unreadable offline message dropped"),
            }
        }
        self.flush(tx).await?;
        let last = kept.last().map_or(0, |m| m.seq);
        if let Err(e) = self.engine.offline_delivered(self.uid(), last) {
            tracing::warn!(uid = self.uid(), error = %e, "delivered offline messages not removed");
        }
        Ok(())
    }

    /// Sends the current presence of every available resource of `uid`.
    async fn send_presence_of<W: XmppTx>(&mut self, tx: &mut W, uid: &str) -> Result<(), End> {
        let own = self.handle().map(|h| h.id);
        for r in self.engine.user_resources(uid).await {
            if Some(r.session) == own {
                continue;
            }
            let from = Jid::full(uid, self.domain(), &r.resource);
            let e = presence_element(&from, self.jid(), r.availability, &r.status, r.priority);
            self.send(tx, &e).await?;
        }
        Ok(())
    }

    async fn on_message<W: XmppTx>(&mut self, tx: &mut W, m: Element, to: Option<Jid>) -> Result<(), End> {
        let kind = m.attr("type").unwrap_or("normal").to_owned();
        if kind == "error" {
            return Ok(());
        }
        let Some(to) = to else {
            return Ok(()); // to our own account: nothing to deliver it to
        };
        let body = m.child("body", ns::CLIENT).map(|b| b.text()).unwrap_or_default();
        let mut payload = bytes::BytesMut::new();
        for child in m.elements().filter(|c| !c.is("body", ns::CLIENT)) {
            child.write_to(ns::CLIENT, &mut payload);
        }
        let mut headers = vec![
            ("content-type".to_owned(), "text/plain; charset=utf-8".to_owned()),
            (headers::TYPE.to_owned(), kind.clone()),
        ];
        if let Some(id) = m.attr("id") {
            headers.push((headers::ID.to_owned(), id.to_owned()));
        }
        if !payload.is_empty() {
            headers.push((headers::PAYLOAD.to_owned(), String::from_utf8_lossy(&payload).into_owned()));
        }
        let vhost = self.engine.config.stomp.default_vhost.clone();
        // XEP-0160: what the engine keeps when the user has no available
        // resource; only messages to a user (the feed) are ever kept.
        let mut parcel = None;
        let (exchange, key) = if self.is_projects_domain(&to.domain) {
            let Some(project) = to.local.clone() else {
                let reply = stanza_error(&m, "cancel", "item-not-found");
                return self.send(tx, &reply).await;
            };
            let exchange = self.engine.config.exchanges.project.clone();
            // Members only (`auth::policy`), the same door as a STOMP SEND.
            if !self.may_write(&vhost, &exchange, &project).await {
                let reply = stanza_error(&m, "auth", "forbidden");
                return self.send(tx, &reply).await;
            }
            headers.push((headers::FROM.to_owned(), format!("{project}@projects.{}/{}", self.domain(), self.uid())));
            (exchange, project)
        } else if to.domain == self.domain() {
            let Some(uid) = to.local.clone() else {
                return Ok(()); // to the server itself: nothing to do
            };
            let exchange = self.engine.config.exchanges.feed.clone();
            // `access.chat_policy`, shared with STOMP SENDs to `/exchange/feed/<uid>`.
            if !self.may_write(&vhost, &exchange, &uid).await {
                let reply = stanza_error(&m, "auth", "forbidden");
                return self.send(tx, &reply).await;
            }
            headers.push((headers::FROM.to_owned(), self.jid().to_string()));
            if let Some(r) = &to.resource {
                headers.push((headers::TO_RESOURCE.to_owned(), r.clone()));
            }
            if super::offline::storable(&m) {
                parcel =
                    Some(Parcel { from: self.jid().to_string(), stanza: m.to_bytes(), resource: to.resource.clone() });
            }
            (exchange, uid)
        } else {
            let reply = stanza_error(&m, "cancel", "remote-server-not-found");
            return self.send(tx, &reply).await;
        };
        let mut message = Message::new(exchange, key, headers, Bytes::from(body));
        message.sender = Some(self.uid().to_owned());
        let routed = match self.engine.router.vhost(&vhost) {
            Ok(vhost) => self.engine.route_to_user(Publish { vhost, message, origin: Origin::Session }, parcel).await,
            Err(e) => Err(ToUserError::from(e)),
        };
        if let Ok(ToUser::Parked(durable)) = routed {
            // Not awaited: the ticket alone makes the syncer write it out
            // promptly; the sender is not told when (ejabberd says nothing either).
            drop(durable);
            return Ok(());
        }
        if let Err(e) = routed {
            // Memory alarm or a full reject-publish queue: the sender may retry later.
            let condition = match e {
                ToUserError::Route(RouteError::MemoryAlarm { .. } | RouteError::QueueFull { .. }) => {
                    "resource-constraint"
                }
                // XEP-0160 §3: the recipient's offline storage is full.
                ToUserError::Offline(crate::store::offline::OfflineError::Full(_)) => "resource-constraint",
                // A key beyond `[routing]` is the sender's doing, not the server's.
                ToUserError::Route(RouteError::Limit(_)) => "policy-violation",
                _ => {
                    tracing::warn!(error = %e, "XMPP message not routed");
                    "internal-server-error"
                }
            };
            let kind = if condition == "policy-violation" { "modify" } else { "wait" };
            let reply = stanza_error(&m, kind, condition);
            return self.send(tx, &reply).await;
        }
        Ok(())
    }

    /// Whether this user may publish `key` on `exchange` (`auth::policy`:
    /// topic permissions, then the addressing-model rules).
    async fn may_write(&self, vhost: &str, exchange: &str, key: &str) -> bool {
        let Some(identity) = self.identity.as_ref() else { return false };
        let Ok(vhost) = self.engine.router.vhost(vhost) else { return false };
        match crate::auth::policy::topic(&self.engine, identity, vhost, exchange, key, crate::auth::Permission::Write)
            .await
        {
            Ok(()) => true,
            Err(why) => {
                tracing::debug!(uid = %identity.uid, exchange, key, %why, "XMPP message refused");
                false
            }
        }
    }

    /// Something the engine pushed to this session.
    async fn outbound<W: XmppTx>(&mut self, tx: &mut W, item: Outbound) -> Result<(), End> {
        match item {
            Outbound::Deliver(d) => {
                if let Some(m) = self.render_delivery(&d) {
                    self.send(tx, &m).await?;
                }
                Ok(())
            }
            Outbound::Presence(n) => {
                if !self.available {
                    return Ok(());
                }
                let from = Jid::full(&n.uid, self.domain(), &n.state.resource);
                let e = presence_element(&from, self.jid(), n.state.availability, &n.state.status, n.state.priority);
                self.send(tx, &e).await
            }
            Outbound::RosterChanged => self.roster_changed(tx).await,
        }
    }

    /// A routed message as a `<message/>` for this session.
    fn render_delivery(&self, d: &Delivery) -> Option<Element> {
        let msg = &d.message;
        if msg.parked {
            // Kept for this user's next initial presence, which hands it over.
            return None;
        }
        if let Some(r) = msg.header(headers::TO_RESOURCE) {
            if Some(r) != self.jid().resource.as_deref() {
                return None;
            }
        }
        let project_x = &self.engine.config.exchanges.project;
        let from = match msg.header(headers::FROM) {
            Some(f) => f.to_owned(),
            None if &msg.exchange == project_x => format!("{}@projects.{}", msg.routing_key, self.domain()),
            None => match &msg.sender {
                Some(uid) => format!("{uid}@{}", self.domain()),
                None => self.domain().to_owned(),
            },
        };
        let kind = msg.header(headers::TYPE).unwrap_or("headline");
        let id = msg.header(headers::ID).map(str::to_owned).unwrap_or_else(|| format!("h{}", msg.id));
        let mut e = Element::new("message", ns::CLIENT)
            .with_attr("from", from)
            .with_attr("to", self.jid().to_string())
            .with_attr("type", kind)
            .with_attr("id", id);
        if let Some(subject) = msg.header("subject") {
            e.push_child(Element::new("subject", ns::CLIENT).with_text(subject));
        }
        if !msg.body.is_empty() {
            e.push_child(Element::new("body", ns::CLIENT).with_text(String::from_utf8_lossy(&msg.body).into_owned()));
        }
        if let Some(payload) = msg.header(headers::PAYLOAD) {
            let wrapped = format!("<x xmlns='{}'>{payload}</x>", ns::CLIENT);
            if let Ok(x) = super::xml::parse_element(wrapped.as_bytes(), &self.limits) {
                for child in x.elements() {
                    e.push_child(child.clone());
                }
            }
        }
        Some(e)
    }

    /// Project membership changed: rebind project queues, push roster diffs.
    async fn roster_changed<W: XmppTx>(&mut self, tx: &mut W) -> Result<(), End> {
        let uid = self.uid().to_owned();
        if let Some(b) = self.bound.as_mut() {
            if self.engine.follow_projects(&b.handle, &mut b.inbox).await.is_err() {
                return Ok(());
            }
        }
        let Ok(contacts) = self.engine.contacts(&uid).await else { return Ok(()) };
        let new: BTreeMap<String, Vec<String>> = contacts.into_iter().collect();
        if self.roster_requested {
            let mut pushes = Vec::new();
            for (c, groups) in &new {
                if self.roster.get(c) != Some(groups) {
                    pushes.push(self.roster_item(c, groups));
                }
            }
            for c in self.roster.keys().filter(|c| !new.contains_key(*c)) {
                pushes.push(
                    Element::new("item", ns::ROSTER)
                        .with_attr("jid", format!("{c}@{}", self.domain()))
                        .with_attr("subscription", "remove"),
                );
            }
            for item in pushes {
                let push = Element::new("iq", ns::CLIENT)
                    .with_attr("type", "set")
                    .with_attr("id", format!("push-{}", &new_id()[..12]))
                    .with_attr("to", self.jid().to_string())
                    .with_child(Element::new("query", ns::ROSTER).with_child(item));
                self.send(tx, &push).await?;
            }
        }
        self.roster = new;
        Ok(())
    }

    async fn cleanup(&mut self) {
        if self.bound.is_none() {
            return;
        }
        if let Some(mut sm) = self.sm.take() {
            if let Some(id) = &sm.resume_id {
                self.engine.edge_state::<sm::Registry>().unregister(id);
            }
            Box::pin(self.store_unacked(sm.take_pending())).await;
        }
        let Some(b) = self.bound.take() else { return };
        self.engine.close_inbox(&b.handle, b.inbox);
        b.handle.close(CloseReason::new(CloseCode::Normal, "session ended"));
        // Unavailable goes out whether the client said goodbye or vanished.
        self.engine.detach(&b.handle).await;
    }
}

/// How long a resuming stream waits for the session's owner to hand it
/// over (a live owner may be in a bounded write).
const RESUME_WAIT: Duration = Duration::from_secs(5);

/// XEP-0198: enabling, acknowledging, resuming, and the detached wait.
impl Session {
    /// SM is offered on c2s and WebSocket streams, not BOSH (whose requests
    /// acknowledge themselves).
    fn sm_offered(&self) -> bool {
        self.engine.config.xmpp.stream_management && self.peer.transport != crate::transport::Transport::Bosh
    }

    /// Bound, with resumption enabled: a lost connection parks the session.
    fn resumable(&self) -> bool {
        self.bound.is_some() && self.sm.as_ref().is_some_and(|s| s.resume_id.is_some())
    }

    /// Gives the session to the resuming stream that asked for it, leaving
    /// this one unbound (its cleanup a no-op). Should that stream be gone,
    /// the session waits detached for another.
    fn hand_over(&mut self) {
        let unbound = Session::new(self.engine.clone(), self.peer.clone());
        let mut old = Box::new(std::mem::replace(self, unbound));
        match old.takeover_requested() {
            Some(to) => {
                if let Err(mut back) = to.send(old) {
                    back.reregister();
                    back.park();
                }
            }
            None => {
                old.reregister();
                old.park();
            }
        }
    }

    /// (Re)registers the session for resumption with its id; the registry
    /// entry is gone once a resuming stream asked for the session.
    fn reregister(&mut self) {
        let uid = self.uid().to_owned();
        let Some(handle) = self.handle().cloned() else { return };
        if let Some(sm) = self.sm.as_deref_mut() {
            if let Some(id) = &sm.resume_id {
                sm.takeover = Some(self.engine.edge_state::<sm::Registry>().register(id, &uid, &handle));
            }
        }
    }

    /// A resuming stream asked for this session (its handle was woken).
    fn takeover_requested(&self) -> Option<Handover> {
        self.sm.as_ref()?.takeover.as_ref()?.lock().take()
    }

    /// An XEP-0198 element on a bound stream.
    async fn on_sm<W: XmppTx>(&mut self, tx: &mut W, e: Element) -> Result<(), End> {
        if !self.sm_offered() {
            return Err(StreamError::new("unsupported-stanza-type", "stream management is not offered here").into());
        }
        match e.name.as_str() {
            "enable" => self.enable(tx, &e).await,
            "r" => match self.sm.as_deref() {
                Some(sm) => self.write(tx, &sm::ack(sm.inbound)).await,
                None => self.write(tx, &sm::failed("unexpected-request")).await,
            },
            "a" => {
                let Some(sm) = self.sm.as_deref_mut() else { return Ok(()) };
                let Some(h) = sm::parse_h(&e) else {
                    return Err(StreamError::new("bad-format", "<a/> needs h, a 32-bit unsigned integer").into());
                };
                sm.requested = false;
                match sm.ack(h) {
                    Ok(()) => Ok(()),
                    Err(why) => Err(self.too_high(tx, why).await),
                }
            }
            "resume" => self.write(tx, &sm::failed("unexpected-request")).await,
            other => Err(StreamError::new("unsupported-stanza-type", format!("<{other}/> in {}", sm::NS)).into()),
        }
    }

    /// XEP-0198 §4: an `h` beyond what was sent ends the stream with
    /// `undefined-condition` and `<handled-count-too-high/>`.
    async fn too_high<W: XmppTx>(&self, tx: &mut W, why: sm::SmError) -> End {
        let sm::SmError::HandledCountTooHigh { h, sent } = why else {
            return StreamError::new("undefined-condition", why.to_string()).into();
        };
        tracing::debug!(uid = self.identity.as_ref().map(|i| i.uid.as_str()), h, sent, "XEP-0198 h too high");
        match self.write(tx, &sm::too_high_error(h, sent)).await {
            // The error is written; the stream close follows it.
            Ok(()) => End::Quiet,
            Err(e) => e,
        }
    }

    /// `<enable/>`: counting starts; with `resume='true'` the session gets a
    /// random resumption id and may outlive its connection.
    async fn enable<W: XmppTx>(&mut self, tx: &mut W, e: &Element) -> Result<(), End> {
        if self.sm.is_some() {
            return self.write(tx, &sm::failed("unexpected-request")).await;
        }
        let x = &self.engine.config.xmpp;
        let limits = SmLimits { max_unacked: x.sm_max_unacked, max_unacked_bytes: x.sm_max_unacked_bytes };
        let ceiling = u32::try_from(x.resume_timeout_secs).unwrap_or(u32::MAX);
        let mut state = Box::new(Sm::new(limits));
        let mut enabled = Element::new("enabled", sm::NS);
        if matches!(e.attr("resume"), Some("true" | "1")) && ceiling > 0 {
            // The client's `max` may only shorten the server's time.
            let secs = match e.attr("max").and_then(|m| m.trim().parse::<u32>().ok()) {
                Some(m) if m > 0 => m.min(ceiling),
                _ => ceiling,
            };
            let id = new_id();
            let handle = self.handle().expect("bound").clone();
            let registry = self.engine.edge_state::<sm::Registry>();
            // Over the per-user cap the stream is managed but not resumable.
            if let Some(slot) = registry.try_register(&id, self.uid(), &handle, x.sm_max_resumable_per_user) {
                state.takeover = Some(slot);
                enabled.set_attr("id", id.clone());
                enabled.set_attr("resume", "true");
                enabled.set_attr("max", secs.to_string());
                state.resume_id = Some(id.into());
                state.resume_secs = secs;
            } else {
                tracing::info!(uid = self.uid(), "stream management without resumption: too many resumable sessions");
            }
        }
        self.sm = Some(state);
        self.write(tx, &enabled).await
    }

    /// `<resume previd h/>` before binding: the session is taken over from
    /// the task holding it (detached, or live on another connection) and
    /// goes on here with the same full JID and presence. `Ok(false)`:
    /// `<failed/>` was sent and binding goes on.
    async fn resume<W: XmppTx>(&mut self, tx: &mut W, e: &Element) -> Result<bool, End> {
        let (Some(previd), Some(h)) = (e.attr("previd"), sm::parse_h(e)) else {
            self.write(tx, &sm::failed("bad-request")).await?;
            return Ok(false);
        };
        let uid = self.uid().to_owned();
        let (to, from) = tokio::sync::oneshot::channel();
        let old = if self.engine.edge_state::<sm::Registry>().request(previd, &uid, to) {
            tokio::time::timeout(RESUME_WAIT, from).await.ok().and_then(Result::ok)
        } else {
            None
        };
        let Some(old) = old else {
            tracing::debug!(uid, "XEP-0198 resumption refused: unknown, expired or another user's id");
            self.write(tx, &sm::failed("item-not-found")).await?;
            return Ok(false);
        };
        // The new authentication stands (fresher than the old one); the rest
        // is the old session's.
        let (peer, identity) = (self.peer.clone(), self.identity.take());
        *self = *old;
        self.peer = peer;
        self.identity = identity;
        self.reregister();
        let sm = self.sm.as_deref_mut().expect("a resumable session has SM");
        sm.requested = false;
        if let Err(why) = sm.ack(h) {
            return Err(self.too_high(tx, why).await);
        }
        let id = sm.resume_id.clone().unwrap_or_default();
        let resumed = Element::new("resumed", sm::NS).with_attr("previd", &*id).with_attr("h", sm.inbound.to_string());
        let pending: Vec<Bytes> = sm.pending().map(|u| u.stanza.clone()).collect();
        tracing::debug!(uid, retransmitted = pending.len(), "XEP-0198 stream resumed");
        self.write(tx, &resumed).await?;
        for stanza in pending {
            self.bounded(tx.send(stanza)).await?;
        }
        self.flush(tx).await?;
        Ok(true)
    }

    /// Asks the client for an ack when something is unacked and no request
    /// is out: after every burst written, so the queue drains.
    async fn request_ack<W: XmppTx>(&mut self, tx: &mut W) -> Result<(), End> {
        let Some(sm) = self.sm.as_deref_mut().filter(|s| s.should_request()) else { return Ok(()) };
        sm.requested = true;
        self.write(tx, &sm::request()).await?;
        self.flush(tx).await
    }

    /// The connection dropped without a stream close: the session stays
    /// (hub, presence, inbox; its deliveries queue in its bounded outbox)
    /// for its resumption time, holding no connection. It ends as a normal
    /// disconnect when the time passes, when it is closed (kick, a bind of
    /// the same resource, shutdown, outbox overflow) or at shutdown.
    fn park(mut self: Box<Self>) {
        let engine = self.engine.clone();
        let Some(handle) = self.handle().cloned() else { return };
        let uid = self.uid().to_owned();
        let Some(sm) = self.sm.as_deref() else { return };
        if sm.resume_id.is_none() {
            return;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(u64::from(sm.resume_secs));
        tracing::debug!(uid, secs = sm.resume_secs, "XEP-0198 session detached, waiting for resumption");
        if sm.takeover.is_none() {
            self.reregister();
        }
        let tasks = engine.tasks.clone();
        tasks.spawn(async move {
            loop {
                // Looked at before every wait: a request may have come in
                // before this task started.
                if let Some(to) = self.takeover_requested() {
                    match to.send(self) {
                        Ok(()) => return,
                        Err(back) => {
                            // The resuming stream went away: wait for another.
                            self = back;
                            self.reregister();
                        }
                    }
                }
                tokio::select! {
                    _ = handle.notified() => if handle.is_closing() { break },
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = engine.shutdown.cancelled() => break,
                }
            }
            tracing::debug!(uid, "XEP-0198 session not resumed in time: it ends");
            Box::pin(self.cleanup()).await;
        });
    }

    /// XEP-0198: the session ends with stanzas its client never acknowledged
    /// (or never got: queued while it was away). Chat and normal messages
    /// with a body go to offline storage (XEP-0160) rather than away.
    async fn store_unacked(&mut self, unacked: std::collections::VecDeque<Unacked>) {
        let Some(handle) = self.handle().cloned() else { return };
        if !self.engine.config.xmpp.offline.enabled {
            // `[xmpp.offline] enabled = false`: nothing is kept, as for a
            // message to a user who is offline.
            return;
        }
        let mut queued = Vec::new();
        let mut batch = Vec::new();
        while handle.drain(&mut batch, WRITE_BATCH) > 0 {
            for item in batch.drain(..) {
                if let Outbound::Deliver(d) = item {
                    if let Some(e) = self.render_delivery(&d) {
                        let offline_from = sm::offline_from(&e);
                        queued.push(Unacked { stanza: e.to_bytes(), sent_ms: now_ms(), offline_from });
                    }
                }
            }
        }
        let uid = self.uid().to_owned();
        let mut tickets = Vec::new();
        for u in unacked.into_iter().chain(queued) {
            let Some(from) = &u.offline_from else { continue };
            match self.engine.offline.push(&uid, u.sent_ms, from, u.stanza) {
                Ok(t) => tickets.push(t),
                Err(e) => tracing::warn!(uid, error = %e, "unacknowledged message not stored offline"),
            }
        }
        if !tickets.is_empty() {
            tracing::debug!(uid, stored = tickets.len(), "XEP-0198 unacknowledged messages stored offline");
        }
        for t in tickets {
            if let Err(e) = t.wait().await {
                tracing::warn!(uid, error = %e, "unacknowledged message not made durable offline");
            }
        }
    }
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn presence_element(from: &Jid, to: &Jid, availability: Availability, status: &str, priority: i8) -> Element {
    let mut e =
        Element::new("presence", ns::CLIENT).with_attr("from", from.to_string()).with_attr("to", to.to_string());
    match availability {
        Availability::Offline => {
            e.set_attr("type", "unavailable");
            return e;
        }
        Availability::Online => {}
        a => e.push_child(Element::new("show", ns::CLIENT).with_text(a.as_str())),
    }
    if !status.is_empty() {
        e.push_child(Element::new("status", ns::CLIENT).with_text(status));
    }
    if priority != 0 {
        e.push_child(Element::new("priority", ns::CLIENT).with_text(priority.to_string()));
    }
    e
}

/// `<iq type='result'/>` answering `iq`: from whom it was addressed to
/// (the server when it named no one), to its (stamped) sender.
fn iq_result(iq: &Element) -> Element {
    let mut r = Element::new("iq", ns::CLIENT).with_attr("type", "result");
    if let Some(id) = iq.attr("id") {
        r.set_attr("id", id);
    }
    if let Some(to) = iq.attr("to") {
        r.set_attr("from", to);
    }
    if let Some(from) = iq.attr("from") {
        r.set_attr("to", from);
    }
    r
}

/// The RFC 6120 §8.3 error reply to a stanza: same name and id, to the
/// sender, the original payload dropped, an `<error/>` with the condition.
fn stanza_error(stanza: &Element, kind: &str, condition: &str) -> Element {
    let mut r = Element::new(stanza.name.clone(), ns::CLIENT).with_attr("type", "error");
    if let Some(id) = stanza.attr("id") {
        r.set_attr("id", id);
    }
    if let Some(from) = stanza.attr("from") {
        r.set_attr("to", from);
    }
    if let Some(to) = stanza.attr("to") {
        r.set_attr("from", to);
    }
    r.with_child(
        Element::new("error", ns::CLIENT).with_attr("type", kind).with_child(Element::new(condition, ns::STANZAS)),
    )
}
