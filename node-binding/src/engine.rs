//! The `Engine` class: one Herald node inside this Node process.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald_core::auth::Authenticator;
use herald_core::engine::AuthSources;
use herald_core::presence::Availability;
use napi::bindgen_prelude::{Buffer, Either, Function, FunctionCallContext, PromiseRaw, ToNapiValue, Unknown};
use napi::threadsafe_function::ThreadsafeFunction;
use napi::{Env, JsValue, Status};
use napi_derive::napi;

use crate::auth::callbacks::{AuthCallbacks, CallbackAuth};
use crate::auth::express::ExpressAuthPaths;
use crate::error::{Code, HeraldError, Result};
use crate::events::{JsEvent, Kind, Listeners, LISTENER_QUEUE};
use crate::js::Settled;

/// How long `stop()` waits for sessions to finish after closing them.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A bound listener, as started.
#[napi(object)]
pub struct Listener {
    /// `'stomp-tcp'`, `'stomp-tls'`, `'http'` (STOMP over WebSocket and
    /// SockJS), `'xmpp-c2s'`, `'xmpp-http'` (BOSH and XMPP over WebSocket).
    pub name: String,
    /// The bound address, e.g. `'127.0.0.1:41234'` (a port 0 in the config is resolved).
    pub addr: String,
    /// The bound port.
    pub port: u32,
}

/// A snapshot of the engine.
#[napi(object)]
pub struct Stats {
    /// The node name (`node.name` in the config).
    pub node: String,
    pub uptime_secs: u32,
    /// Open sessions, all protocols.
    pub sessions: u32,
    /// Users with at least one session.
    pub users_online: u32,
    /// Sessions by `'protocol/transport'`, e.g. `{ 'stomp/tcp': 2 }`.
    pub sessions_by_transport: HashMap<String, u32>,
    pub queues: u32,
    /// Messages waiting in queues.
    pub messages_ready: u32,
    /// Messages delivered and not yet acknowledged.
    pub messages_unacked: u32,
}

/// Options of `engine.history()`.
#[napi(object)]
pub struct HistoryOptions {
    /// Where to start, as `x-stream-offset` takes it: an offset (inclusive),
    /// `'first'`, `'last'` or `'next'`. Absent: everything retained, and no
    /// `recovered` in the result.
    #[napi(ts_type = "number | 'first' | 'last' | 'next'")]
    pub since: Option<Either<f64, String>>,
    /// The epoch the caller last saw: another one makes `recovered` false.
    pub epoch: Option<String>,
    /// At most this many messages (never more than `history.size`).
    pub limit: Option<u32>,
}

/// One retained message.
#[napi(object)]
pub struct HistoryMessage {
    /// Its offset in the key's history (`x-stream-offset`).
    pub offset: f64,
    /// The application headers it was published with.
    pub headers: HashMap<String, String>,
    /// The body, as UTF-8 text (invalid bytes replaced).
    pub body: String,
}

/// A key's history: what `engine.history()` returns.
#[napi(object)]
pub struct HistoryResult {
    /// The history's epoch (`x-stream-epoch`): it changes when history was lost.
    pub epoch: String,
    /// The last offset assigned in this epoch; 0 = none yet.
    pub top: f64,
    /// Oldest first.
    pub messages: Vec<HistoryMessage>,
    /// With `since`: `true` when nothing was missed from there (as a
    /// SUBSCRIBE's `x-recovered`); absent without `since`.
    pub recovered: Option<bool>,
}

/// A user's aggregated presence, as the presence store holds it.
#[napi(object)]
pub struct UserPresence {
    #[napi(ts_type = "'online' | 'away' | 'dnd' | 'xa' | 'chat' | 'offline'")]
    pub state: String,
    /// Free-text status, may be empty.
    pub status: String,
    /// The node holding the user's sessions.
    pub node: String,
    /// When it last changed, milliseconds since the Unix epoch.
    pub updated: f64,
}

/// A Herald engine embedded in this process: STOMP (TCP, WebSocket,
/// SockJS) and XMPP listeners, routing, presence and auth, driven from
/// JavaScript. Engine work runs on native threads; nothing here blocks the
/// event loop.
///
/// ```js
/// const { Engine } = require('@herald-push/herald')
/// const engine = new Engine({ stomp: { listen: '127.0.0.1:61613' }, http: { listen: '127.0.0.1:15674' } })
/// engine.useAuth({ user: async (username, password) => checkPassword(username, password) })
/// await engine.start()
/// engine.publish('/exchange/feed/alice', JSON.stringify({ hello: 'alice' }))
/// ```
#[napi]
pub struct Engine {
    inner: herald_core::Engine,
    listeners: Arc<Listeners>,
}

#[napi]
impl Engine {
    /// Creates an engine from a config object with the TOML file's schema
    /// and key names (`{ stomp: { listen: '127.0.0.1:0' }, users: [...],
    /// projects: [...] }`). Omitted keys take the file's defaults, except
    /// that listeners are off unless given an address (`stomp.listen`,
    /// `http.listen`, `xmpp.listen`, `xmpp.http_listen`); port 0 picks a
    /// free port. Nothing is bound until `start()`.
    ///
    /// With `cluster` (`{ node: { name: 'n3' }, cluster: { redis:
    /// 'redis://127.0.0.1:6379' } }`, docs/cluster.md) `start()` joins the
    /// cluster over Redis as the `herald` binary does (rejects when Redis
    /// cannot be reached): publishes and `sendToUser` reach subscribers on
    /// every node.
    ///
    /// Throws `ERR_HERALD_CONFIG` naming the key for an unknown key, a wrong
    /// type or an invalid value.
    #[napi(constructor, ts_args_type = "config?: Record<string, unknown> | null")]
    pub fn new(env: Env, config: Option<Unknown>) -> Result<Self> {
        crate::init_logging();
        let json = match config {
            None => None,
            Some(value) => Some(
                unsafe { crate::js::stringify(env.raw(), value.raw()) }
                    .map_err(|e| HeraldError::new(Code::Config, format!("invalid config: {}", e.reason)))?
                    .map(|text| serde_json::from_str(&text))
                    .transpose()
                    .map_err(|e| HeraldError::new(Code::Config, format!("invalid config: {e}")))?
                    .unwrap_or(serde_json::Value::Null),
            ),
        };
        let config = crate::config::from_json(json)?;
        let inner = herald_core::Engine::new(config).map_err(HeraldError::from)?;
        Ok(Engine { inner, listeners: Arc::default() })
    }

    /// Binds every configured listener and starts accepting clients.
    /// Resolves with the bound addresses. While started, the engine keeps
    /// the Node process alive (as a listening `net.Server` does) until
    /// `stop()`. Rejects with `ERR_HERALD_LISTEN` when an address is taken,
    /// `ERR_HERALD_STATE` when already started.
    #[napi(ts_return_type = "Promise<Array<Listener>>")]
    pub fn start<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, Vec<Listener>>> {
        // A strong threadsafe function of a no-op keeps the event loop alive
        // until the engine's shutdown token fires.
        let noop = env.create_function_from_closure::<(), (), _>("heraldKeepAlive", |_: FunctionCallContext| Ok(()))?;
        let keep_alive: ThreadsafeFunction<(), (), (), Status, false> =
            noop.build_threadsafe_function::<()>().callee_handled::<false>().build()?;
        let engine = self.inner.clone();
        promise(
            env,
            async move {
                match engine.start().await {
                    Ok(bound) => {
                        let shutdown = engine.shutdown.clone();
                        napi::bindgen_prelude::spawn(async move {
                            shutdown.cancelled().await;
                            drop(keep_alive);
                        });
                        Ok(bound)
                    }
                    Err(e) => Err(HeraldError::from(e)),
                }
            },
            |bound| {
                bound
                    .into_iter()
                    .map(|l| Listener {
                        name: l.name.to_owned(),
                        addr: l.addr.to_string(),
                        port: u32::from(l.addr.port()),
                    })
                    .collect()
            },
        )
    }

    /// Stops accepting, closes every session (clients get a "server
    /// shutting down" error) and waits up to 5 s for them to finish.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn stop<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        let engine = self.inner.clone();
        promise(
            env,
            async move {
                engine.stop(STOP_GRACE).await;
                Ok(())
            },
            |()| (),
        )
    }

    /// Publishes `body` to a STOMP destination on the default vhost, as the
    /// application (no permission check): `/exchange/<name>/<key>`,
    /// `/topic/<key>`, `/queue/<name>` (declared if missing) or
    /// `/amq/queue/<name>`. Returns how many queues took the message.
    /// Throws `ERR_HERALD_DESTINATION` for anything else, `ERR_HERALD_ROUTE`
    /// for a missing exchange or queue.
    #[napi]
    pub fn publish(
        &self,
        destination: String,
        body: Either<String, Buffer>,
        headers: Option<HashMap<String, String>>,
    ) -> Result<u32> {
        let n = self.inner.publish_to(&destination, pairs(headers), bytes(body)).map_err(HeraldError::from)?;
        Ok(count(n))
    }

    /// Reads the retained history of `/exchange/feed/<uid>` or
    /// `/exchange/project/<pid>` (the last `history.size` messages, none
    /// older than `history.ttl_ms`), as the application: no permission check,
    /// nothing subscribed. With `since` (and `epoch`), `recovered` says
    /// whether nothing was missed from there, as a STOMP SUBSCRIBE with
    /// `x-stream-offset` would (docs/history.md). Throws
    /// `ERR_HERALD_DESTINATION` for another destination, `ERR_HERALD_ARGUMENT`
    /// for a bad `since`.
    #[napi]
    pub fn history(&self, destination: String, options: Option<HistoryOptions>) -> Result<HistoryResult> {
        use herald_core::store::history::Since;
        let options = options.unwrap_or(HistoryOptions { since: None, epoch: None, limit: None });
        let since = match options.since {
            None => None,
            Some(Either::A(n)) if n >= 0.0 && n.fract() == 0.0 && n <= 9_007_199_254_740_991.0 => {
                Some(Since::Offset(n as u64))
            }
            Some(Either::A(n)) => {
                let e = HeraldError::new(Code::Argument, format!("since must be a whole number from 0, got {n}"));
                return Err(e.into());
            }
            Some(Either::B(s)) => Some(Since::parse(&s).map_err(|e| HeraldError::new(Code::Argument, e))?),
        };
        let query =
            herald_core::engine::HistoryQuery { since, epoch: options.epoch, limit: options.limit.map(|l| l as usize) };
        let read = self.inner.history(&destination, query).map_err(HeraldError::from)?;
        let messages = read
            .messages
            .iter()
            .map(|m| {
                let mut headers = HashMap::with_capacity(m.headers.len());
                for (k, v) in &m.headers {
                    headers.entry(k.clone()).or_insert_with(|| v.clone());
                }
                HistoryMessage {
                    offset: m.stream.as_ref().map_or(0.0, |p| p.offset as f64),
                    headers,
                    body: String::from_utf8_lossy(&m.body).into_owned(),
                }
            })
            .collect();
        Ok(HistoryResult { epoch: read.epoch, top: read.top as f64, messages, recovered: read.recovered })
    }

    /// Pushes `body` to every session of user `uid` (the `feed` exchange,
    /// routing key `uid`: what `/exchange/feed/<uid>` subscribers get).
    /// Returns how many queues took it.
    #[napi]
    pub fn send_to_user(
        &self,
        uid: String,
        body: Either<String, Buffer>,
        headers: Option<HashMap<String, String>>,
    ) -> Result<u32> {
        let n = self.inner.send_to_user(&uid, pairs(headers), bytes(body)).map_err(HeraldError::from)?;
        Ok(count(n))
    }

    /// Sets the presence of user `uid`'s STOMP sessions (XMPP resources set
    /// their own) and tells everyone who should know. `busy` is `dnd`.
    /// Resolves with how many sessions it applied to (0: the user has no
    /// such session, and nothing changes: presence follows connections).
    #[napi(ts_return_type = "Promise<number>")]
    pub fn set_presence<'env>(
        &self,
        env: &'env Env,
        uid: String,
        #[napi(ts_arg_type = "'online' | 'away' | 'dnd' | 'busy' | 'xa' | 'chat'")] state: String,
        status: Option<String>,
    ) -> napi::Result<PromiseRaw<'env, u32>> {
        let availability = match state.as_str() {
            "online" | "away" | "dnd" | "busy" | "xa" | "chat" => Availability::parse(&state),
            _ => None,
        };
        let Some(availability) = availability else {
            let e = HeraldError::new(
                Code::Argument,
                format!("unknown presence state {state:?}: expected 'online', 'away', 'dnd', 'busy', 'xa' or 'chat'"),
            );
            return Err(e.into_js(env));
        };
        let engine = self.inner.clone();
        let status = status.unwrap_or_default();
        promise(env, async move { Ok(engine.set_user_presence(&uid, availability, &status).await) }, count)
    }

    /// Users online in project `projectId`, sorted, from the presence store.
    #[napi(ts_return_type = "Promise<Array<string>>")]
    pub fn online_users<'env>(
        &self,
        env: &'env Env,
        project_id: String,
    ) -> napi::Result<PromiseRaw<'env, Vec<String>>> {
        let engine = self.inner.clone();
        promise(env, async move { Ok(engine.online_users(&project_id).await?) }, |v| v)
    }

    /// User `uid`'s aggregated presence, or `null` when the store has none
    /// (the user is offline).
    #[napi(ts_return_type = "Promise<UserPresence | null>")]
    pub fn presence<'env>(&self, env: &'env Env, uid: String) -> napi::Result<PromiseRaw<'env, Option<UserPresence>>> {
        let engine = self.inner.clone();
        promise(env, async move { Ok(engine.user_presence(&uid).await?) }, |p| {
            p.map(|p| UserPresence {
                state: p.availability.as_str().to_owned(),
                status: p.status,
                node: p.node,
                updated: p.updated_ms as f64,
            })
        })
    }

    /// Replaces the members of project `projectId` (created if new). Online
    /// sets follow, and XMPP members get a roster push.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn set_project_members<'env>(
        &self,
        env: &'env Env,
        project_id: String,
        uids: Vec<String>,
    ) -> napi::Result<PromiseRaw<'env, ()>> {
        let engine = self.inner.clone();
        promise(env, async move { Ok(engine.set_project_members(&project_id, uids).await?) }, |()| ())
    }

    /// Closes every session of user `uid` (clients see close code 3002,
    /// "kicked"). Returns how many.
    #[napi]
    pub fn kick(&self, uid: String) -> u32 {
        count(self.inner.kick(&uid))
    }

    /// A snapshot: sessions, users, queues, messages.
    #[napi]
    pub fn stats(&self) -> Stats {
        let s = self.inner.stats();
        Stats {
            node: s.node,
            uptime_secs: u32::try_from(s.uptime_secs).unwrap_or(u32::MAX),
            sessions: count(s.sessions),
            users_online: count(s.users_online),
            sessions_by_transport: s.sessions_by_transport.into_iter().map(|(k, v)| (k, count(v))).collect(),
            queues: count(s.queues),
            messages_ready: count(s.messages_ready),
            messages_unacked: count(s.messages_unacked),
        }
    }

    /// Calls `callback` for every engine event of one kind from now on:
    /// `'session'` (a session opened or closed), `'presence'` (a user's
    /// aggregated presence changed) or `'message'` (a message was routed);
    /// the callback gets that event's type (`EngineEvents[event]`).
    /// Returns a function that removes the listener. Callbacks run on the
    /// event loop, never block the engine, and do not keep the process
    /// alive; one that throws (or rejects) is logged and ignored. Throws
    /// `ERR_HERALD_ARGUMENT` for another event name.
    #[napi(
        ts_generic_types = "K extends keyof EngineEvents",
        ts_args_type = "event: K, callback: (event: EngineEvents[K]) => unknown",
        ts_return_type = "() => void"
    )]
    pub fn on<'env>(
        &self,
        env: &'env Env,
        event: String,
        callback: ThreadsafeFunction<JsEvent, Settled, JsEvent, Status, false, true, LISTENER_QUEUE>,
    ) -> napi::Result<Function<'env, (), ()>> {
        self.listen(env, &event, false, callback)
    }

    /// As `on`, for the next event of that kind only: the listener is
    /// removed before it is called. The returned function removes it
    /// before then.
    #[napi(
        ts_generic_types = "K extends keyof EngineEvents",
        ts_args_type = "event: K, callback: (event: EngineEvents[K]) => unknown",
        ts_return_type = "() => void"
    )]
    pub fn once<'env>(
        &self,
        env: &'env Env,
        event: String,
        callback: ThreadsafeFunction<JsEvent, Settled, JsEvent, Status, false, true, LISTENER_QUEUE>,
    ) -> napi::Result<Function<'env, (), ()>> {
        self.listen(env, &event, true, callback)
    }

    /// `stop()`, so `await using engine = new Engine(...)` stops the
    /// engine when the scope ends.
    #[napi(well_known_symbol = "asyncDispose", ts_return_type = "Promise<void>")]
    pub fn async_dispose<'env>(&self, env: &'env Env) -> napi::Result<PromiseRaw<'env, ()>> {
        self.stop(env)
    }

    /// Lets JavaScript answer Herald's auth questions (those of RabbitMQ's
    /// HTTP auth backend), replacing the current authorization. Each
    /// callback may be sync or async. A callback that throws, rejects,
    /// answers something else or takes longer than `authTimeoutMs`
    /// (default 5000) denies, and is logged; the process is unaffected.
    /// An omitted `user` keeps the current login check (the config's
    /// `[auth]` chain: JWT, HTTP backend, `users`);
    /// omitted `vhost`, `resource` and `topic` allow. A `topic` callback
    /// decides routing keys alone; without one, the `[access]` rules
    /// (own feed, projects for members, own queues) apply to users
    /// without the `administrator` tag (docs/security.md).
    #[napi(ts_args_type = "callbacks: AuthCallbacks, authTimeoutMs?: number | null")]
    pub fn use_auth(&self, callbacks: Option<AuthCallbacks>, auth_timeout_ms: Option<u32>) -> Result<()> {
        let callbacks = callbacks.ok_or_else(|| {
            HeraldError::new(
                Code::Argument,
                "useAuth: expected an object of callbacks ({ user, vhost, resource, topic })",
            )
        })?;
        let current = self.inner.auth().authenticator;
        let auth = Arc::new(CallbackAuth::new(callbacks, crate::auth::timeout_from(auth_timeout_ms), current));
        self.inner.set_auth(AuthSources { authenticator: auth.clone(), authorizer: auth });
        Ok(())
    }

    /// Answers Herald's auth questions with an Express app's own
    /// rabbitmq-auth-backend-http routes, called in-process (real HTTP/1.1
    /// over an in-memory stream: no socket, the app need not listen; any
    /// `(req, res)` listener works: Express 4 and 5, `http.createServer` callbacks). `paths`
    /// default to `/auth/user`, `/auth/vhost`, `/auth/resource`,
    /// `/auth/topic` with `GET`; requests carry the plugin's query
    /// parameters and answers are read as it reads them (`allow [tags…]`,
    /// `deny`; any status but 200/201 denies). A request that fails (the
    /// handler throws or rejects), answers more than 64 KiB or takes longer
    /// than `authTimeoutMs` (default 5000) denies, and is logged.
    #[napi(
        ts_args_type = "app: (req: any, res: any, next?: any) => unknown, paths?: ExpressAuthPaths | null, authTimeoutMs?: number | null"
    )]
    pub fn use_express_auth(
        &self,
        env: Env,
        app: Unknown,
        paths: Option<ExpressAuthPaths>,
        auth_timeout_ms: Option<u32>,
    ) -> Result<()> {
        let auth =
            Arc::new(crate::auth::express::backend(&env, app, paths, crate::auth::timeout_from(auth_timeout_ms))?);
        let authenticator: Arc<dyn Authenticator> = auth.clone();
        self.inner.set_auth(AuthSources { authenticator, authorizer: auth });
        Ok(())
    }
}

impl Engine {
    fn listen<'env>(
        &self,
        env: &'env Env,
        event: &str,
        once: bool,
        callback: ThreadsafeFunction<JsEvent, Settled, JsEvent, Status, false, true, LISTENER_QUEUE>,
    ) -> napi::Result<Function<'env, (), ()>> {
        let kind = Kind::parse(event).map_err(|e| e.into_js(env))?;
        let id = self.listeners.add(&self.inner, kind, once, callback);
        let listeners = Arc::clone(&self.listeners);
        env.create_function_from_closure("removeListener", move |_: FunctionCallContext| {
            listeners.remove(id);
            Ok(())
        })
    }
}

/// Runs `fut` on the runtime and settles a promise with `conv` of its value,
/// or rejects with the `ERR_HERALD_*` error.
fn promise<'env, T, V, F, C>(env: &'env Env, fut: F, conv: C) -> napi::Result<PromiseRaw<'env, V>>
where
    T: Send + 'static,
    V: ToNapiValue,
    F: Future<Output = std::result::Result<T, HeraldError>> + Send + 'static,
    C: FnOnce(T) -> V + 'static,
{
    env.spawn_future_with_callback(async move { Ok(fut.await) }, move |env, result| match result {
        Ok(value) => Ok(conv(value)),
        Err(e) => Err(e.into_js(env)),
    })
}

fn pairs(headers: Option<HashMap<String, String>>) -> Vec<(String, String)> {
    headers.map(|h| h.into_iter().collect()).unwrap_or_default()
}

fn bytes(body: Either<String, Buffer>) -> Bytes {
    match body {
        Either::A(s) => Bytes::from(s),
        Either::B(b) => Bytes::copy_from_slice(&b),
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
