//! Typed configuration: one TOML file for the `herald` binary, the same schema
//! as a JS object for the Node addon. Defaults live here and only here;
//! [`Config::validate`] runs at start and names the bad key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// TOML syntax errors, unknown keys and wrong types; serde's message names the key.
    #[error("invalid config: {0}")]
    Parse(String),
    #[error("invalid config: `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), reason: reason.into() }
}

/// Why a section is refused by a herald-core built without `feature`.
pub(crate) fn compiled_out(feature: &str) -> String {
    format!("this herald was built without the `{feature}` Cargo feature of herald-core (on by default)")
}

/// Refuses the backends and auth sources left out of this build, naming the
/// Cargo feature that brings each in.
fn require_features(config: &Config) -> Result<(), ConfigError> {
    if matches!(config.presence, PresenceConfig::Redis { .. }) && !cfg!(feature = "redis") {
        return Err(invalid("presence.backend", format!("\"redis\": {}", compiled_out("redis"))));
    }
    if matches!(config.directory, DirectoryConfig::Mongodb { .. }) && !cfg!(feature = "mongodb") {
        return Err(invalid("directory.backend", format!("\"mongodb\": {}", compiled_out("mongodb"))));
    }
    if config.cluster.is_some() && !cfg!(feature = "redis") {
        return Err(invalid("cluster", compiled_out("redis")));
    }
    if config.auth.http.is_some() && !cfg!(feature = "http-auth") {
        return Err(invalid("auth.http", compiled_out("http-auth")));
    }
    if config.auth.jwt.is_some() && !cfg!(feature = "jwt") {
        return Err(invalid("auth.jwt", compiled_out("jwt")));
    }
    if config.auth.mongodb.is_some() && !cfg!(feature = "mongodb") {
        return Err(invalid("auth.mongodb", compiled_out("mongodb")));
    }
    Ok(())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub node: NodeConfig,
    pub stomp: StompConfig,
    pub http: HttpConfig,
    pub xmpp: XmppConfig,
    pub presence: PresenceConfig,
    pub directory: DirectoryConfig,
    pub limits: LimitsConfig,
    pub auth: AuthConfig,
    pub exchanges: ExchangeNames,
    pub vhosts: Vec<VhostConfig>,
    pub users: Vec<UserConfig>,
    pub projects: Vec<ProjectConfig>,
    pub admin: AdminConfig,
    /// Topic-matching bounds (`[routing]`, docs/security.md).
    pub routing: RoutingConfig,
    /// Login throttling and the password-hashing pool (`[login]`).
    pub login: LoginConfig,
    /// Least-privilege rules on the addressing model (`[access]`).
    pub access: AccessConfig,
    /// Connection deadlines, caps, trusted proxies and CORS (`[connections]`).
    pub connections: ConnectionsConfig,
    /// Per-connection inbound rate limits (`[shaper]`, ejabberd's shapers).
    pub shaper: ShaperConfig,
    /// Stream history of the `feed` and `project` exchanges (`[history]`).
    pub history: HistoryConfig,
    /// Nodes joined over Redis (`[cluster]`, docs/cluster.md); absent: one node.
    pub cluster: Option<ClusterConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node: NodeConfig::default(),
            stomp: StompConfig::default(),
            http: HttpConfig::default(),
            xmpp: XmppConfig::default(),
            presence: PresenceConfig::default(),
            directory: DirectoryConfig::default(),
            limits: LimitsConfig::default(),
            auth: AuthConfig::default(),
            exchanges: ExchangeNames::default(),
            vhosts: vec![VhostConfig { name: "/".into(), exchanges: Vec::new() }],
            users: Vec::new(),
            projects: Vec::new(),
            admin: AdminConfig::default(),
            routing: RoutingConfig::default(),
            login: LoginConfig::default(),
            access: AccessConfig::default(),
            connections: ConnectionsConfig::default(),
            shaper: ShaperConfig::default(),
            history: HistoryConfig::default(),
            cluster: None,
        }
    }
}

// ---- [cluster] -------------------------------------------------------------

/// `[cluster]`: this node joins the others over Redis (docs/cluster.md).
/// The node's cluster identity is `node.name`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// A standalone Redis, `redis://host:port[/db]`; or `seeds`.
    pub redis: Option<String>,
    /// Seed nodes of a Redis Cluster 7+ (`redis://host:port` each).
    pub seeds: Vec<String>,
    /// `host:port` where other nodes reach this one for forwarded BOSH and
    /// SockJS requests.
    pub address: Option<String>,
    /// How often the node beats, milliseconds.
    pub heartbeat_ms: u64,
    /// How long a beat lasts, milliseconds; a node silent this long is dead.
    pub ttl_ms: u64,
    /// Prefix of every channel and key.
    pub prefix: String,
    /// Envelopes waiting to be written to Redis; beyond it a publish is refused.
    pub publish_buffer: usize,
    /// Envelopes from other nodes waiting to be routed; beyond it they are dropped and counted.
    pub receive_buffer: usize,
    /// BOSH/SockJS requests this node forwards to other nodes at once; beyond it 503.
    pub forward_max_concurrent: usize,
    /// Deadline to connect to the owner and get its answer's head (a BOSH long poll adds its wait).
    pub forward_timeout_ms: u64,
    /// Largest whole answer (BOSH) relayed from another node.
    pub forward_max_answer_bytes: usize,
    /// Resources (sessions with presence) of one user on all nodes together
    /// in the shared presence; a new one beyond it is not shared.
    pub max_resources: usize,
    /// Bytes of a presence status text shared with the other nodes (longer is cut).
    pub max_status_bytes: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis: None,
            seeds: Vec::new(),
            address: None,
            heartbeat_ms: 1_000,
            ttl_ms: 5_000,
            prefix: "herald:".into(),
            publish_buffer: 10_000,
            receive_buffer: 10_000,
            forward_max_concurrent: 10_000,
            forward_timeout_ms: 5_000,
            forward_max_answer_bytes: 16 * 1024 * 1024,
            max_resources: 64,
            max_status_bytes: 1024,
        }
    }
}

impl ClusterConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.redis.is_some() != self.seeds.is_empty() {
            return Err(invalid(
                "cluster.redis",
                "set either cluster.redis (standalone) or cluster.seeds (Redis Cluster)",
            ));
        }
        if self.heartbeat_ms < 100 {
            return Err(invalid("cluster.heartbeat_ms", "at least 100"));
        }
        if self.ttl_ms <= self.heartbeat_ms {
            return Err(invalid("cluster.ttl_ms", "must be longer than cluster.heartbeat_ms"));
        }
        for (key, n) in
            [("cluster.publish_buffer", self.publish_buffer), ("cluster.receive_buffer", self.receive_buffer)]
        {
            if !(1..=1_000_000).contains(&n) {
                return Err(invalid(key, "between 1 and 1000000 envelopes"));
            }
        }
        if !(1..=1_000_000).contains(&self.forward_max_concurrent) {
            return Err(invalid("cluster.forward_max_concurrent", "between 1 and 1000000 requests"));
        }
        if self.forward_timeout_ms == 0 {
            return Err(invalid("cluster.forward_timeout_ms", "greater than 0"));
        }
        if self.forward_max_answer_bytes < 65_536 {
            return Err(invalid("cluster.forward_max_answer_bytes", "at least 65536"));
        }
        if !(1..=10_000).contains(&self.max_resources) {
            return Err(invalid("cluster.max_resources", "between 1 and 10000"));
        }
        if !(16..=65_536).contains(&self.max_status_bytes) {
            return Err(invalid("cluster.max_status_bytes", "between 16 and 65536"));
        }
        Ok(())
    }
}

// ---- [history] -------------------------------------------------------------

/// `[history]`: what the `feed` and `project` exchanges keep per routing key
/// for subscribers that resubscribe from an offset (store/history.rs,
/// docs/history.md). `size = 0` or `ttl_ms = 0` turns history off (no
/// offsets on messages).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Messages kept per routing key (Centrifugo's `history_size`); also the
    /// most a SUBSCRIBE replays.
    pub size: usize,
    /// How long a message is kept, milliseconds (`history_ttl`).
    pub ttl_ms: u64,
    /// All keys together, bytes: beyond it whole keys are dropped, least
    /// recently published first (their epoch changes), so publishers that
    /// make many keys cannot grow it without bound.
    pub max_bytes: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        // Centrifugo's examples: 100 messages, 5 minutes.
        HistoryConfig { size: 100, ttl_ms: 300_000, max_bytes: 64 << 20 }
    }
}

impl HistoryConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.size > 100_000 {
            return Err(invalid("history.size", "at most 100000 (a SUBSCRIBE replays up to this many)"));
        }
        Ok(())
    }
}

// ---- [routing] -------------------------------------------------------------

/// `[routing]`: bounds that keep topic matching cheap whatever a client binds
/// or publishes (docs/security.md).
///
/// Matching is linear in key words × trie nodes whatever the bounds; they cap
/// the two factors a client controls. A key or pattern beyond a bound is
/// refused with an error naming the key (`RouteError::Limit`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Longest routing key (or binding pattern) on an exchange, bytes; 255 is
    /// AMQP's short-string bound, which RabbitMQ enforces.
    pub max_key_bytes: usize,
    /// Most `.`-separated words in a routing key published to a topic exchange.
    pub max_key_words: usize,
    /// Most words (of any kind) in a topic binding pattern.
    pub max_pattern_words: usize,
    /// Most `#` wildcards in a topic binding pattern.
    pub max_pattern_hashes: usize,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig { max_key_bytes: 255, max_key_words: 64, max_pattern_words: 32, max_pattern_hashes: 8 }
    }
}

impl RoutingConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, v) in [
            ("routing.max_key_bytes", self.max_key_bytes),
            ("routing.max_key_words", self.max_key_words),
            ("routing.max_pattern_words", self.max_pattern_words),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        // The words of keys and patterns are recursed over when bindings change.
        for (key, v) in
            [("routing.max_key_words", self.max_key_words), ("routing.max_pattern_words", self.max_pattern_words)]
        {
            if v > 1024 {
                return Err(invalid(key, "must be at most 1024"));
            }
        }
        Ok(())
    }
}

// ---- [login] ---------------------------------------------------------------

/// `[login]`: failed-login limits and the bounded password-hashing pool.
///
/// One gate for every protocol (`Engine::login`): failures are counted per
/// user and per client address (IPv6 per /64); past the allowance, further
/// attempts are refused without checking the password for a back-off that
/// doubles with each further failure, up to `max_backoff_secs`. The user
/// back-off does not apply from an address that logged in as that user
/// within the window, so a stranger failing on purpose cannot lock a user
/// out of where they already work (docs/security.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginConfig {
    /// Failed logins for one user (from all addresses) within the window
    /// before that user is backed off; 0 = no per-user limit.
    pub max_failures_per_user: u32,
    /// Failed logins from one address (any user) within the window before
    /// that address is backed off; 0 = no per-address limit.
    pub max_failures_per_ip: u32,
    /// Failures older than this are forgotten, seconds.
    pub failure_window_secs: u64,
    /// First back-off, ms; each further failure while over the limit doubles it.
    pub backoff_initial_ms: u64,
    /// Longest back-off, seconds.
    pub max_backoff_secs: u64,
    /// Most users and addresses tracked at once (a bound on the gate's memory).
    pub max_tracked: usize,
    /// Threads that verify password hashes (argon2) and derive SCRAM keys;
    /// 0 = the number of cores.
    pub hash_threads: usize,
    /// Verifications that may wait for a hashing thread; beyond it, a login
    /// fails at once with "server busy".
    pub hash_queue: usize,
    /// Longest a verification may wait for a hashing thread, ms.
    pub hash_timeout_ms: u64,
}

impl Default for LoginConfig {
    fn default() -> Self {
        LoginConfig {
            max_failures_per_user: 10,
            max_failures_per_ip: 50,
            failure_window_secs: 300,
            backoff_initial_ms: 1000,
            max_backoff_secs: 120,
            max_tracked: 100_000,
            hash_threads: 0,
            hash_queue: 32,
            hash_timeout_ms: 5000,
        }
    }
}

impl LoginConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, v) in [
            ("login.failure_window_secs", self.failure_window_secs),
            ("login.backoff_initial_ms", self.backoff_initial_ms),
            ("login.max_backoff_secs", self.max_backoff_secs),
            ("login.hash_timeout_ms", self.hash_timeout_ms),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if self.max_tracked == 0 {
            return Err(invalid("login.max_tracked", "must be at least 1"));
        }
        if self.hash_threads > 256 {
            return Err(invalid("login.hash_threads", "must be at most 256"));
        }
        Ok(())
    }
}

// ---- [access] --------------------------------------------------------------

/// `[access]`: least privilege on the addressing model for non-administrators
/// (`auth::policy`, docs/security.md "Access").
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// Who may write to another user's feed (STOMP SEND to
    /// `/exchange/feed/<uid>`, XMPP chat to `uid@domain`): `"contacts"`
    /// (share a project; the default), `"all"` authenticated users, or
    /// `"none"`. Everyone may write to their own feed.
    pub chat_policy: ChatPolicy,
}

/// Who may write to another user's feed (one policy for STOMP and XMPP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ChatPolicy {
    /// Any authenticated user.
    All,
    /// Members of a project the recipient is also a member of.
    #[default]
    Contacts,
    /// Nobody (only the application, and administrators).
    None,
}

impl AccessConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}

/// RabbitMQ topic permissions (`rabbitmqctl set_topic_permissions`): per
/// vhost, per exchange, regular expressions over the routing key, matched
/// whole (as the resource patterns); `{username}` and `{vhost}` expand to
/// the user's id and the vhost, regex-escaped. The empty string matches
/// nothing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicPermissionConfig {
    pub write: String,
    pub read: String,
}

/// vhost → exchange → patterns.
pub type TopicPermissions = BTreeMap<String, BTreeMap<String, TopicPermissionConfig>>;

// ---- [connections] ---------------------------------------------------------

/// `[connections]`: deadlines and caps on every listener, trusted proxies, CORS
/// (docs/security.md, "Connections").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionsConfig {
    /// An HTTP request head must have arrived this long after its first byte
    /// (or after the connection opened), ms; 408 (front server) or a close
    /// (hyper, admin) after. Every HTTP listener, the admin listener included.
    pub header_timeout_ms: u64,
    /// An HTTP request body must have arrived this long after its head, ms.
    pub body_timeout_ms: u64,
    /// An HTTP connection without a request in flight (or, once handed to
    /// hyper, without a byte read or written) is closed after this, ms.
    pub idle_timeout_ms: u64,
    /// Connections (and HTTP-polled BOSH and SockJS sessions) from one client
    /// address; 0: no cap. Behind a trusted proxy, the forwarded address.
    pub max_per_ip: usize,
    /// Connections and sessions that have not logged in yet, on this node;
    /// 0: no cap.
    pub max_unauthenticated: usize,
    /// The same, from one client address; 0: no cap.
    pub max_unauthenticated_per_ip: usize,
    /// Open connections on the admin listener (its own cap, apart from
    /// `limits.max_connections`, so a full node can still be administered).
    pub admin_max_connections: usize,
    /// Peers (CIDR, e.g. `10.0.0.0/8`, or single addresses) whose
    /// `X-Forwarded-For` / `Forwarded` headers and PROXY protocol headers are
    /// believed. Nobody else's are.
    pub trusted_proxies: Vec<String>,
    /// The one header trusted proxies set: `"x-forwarded-for"` (nginx's
    /// `$proxy_add_x_forwarded_for`, HAProxy's `option forwardfor`) or
    /// `"forwarded"` (RFC 7239). Only this one is read: a proxy passes other
    /// headers from the client through, so believing a second one would let a
    /// client name its own address.
    pub forwarded_header: ForwardedHeader,
    /// TCP listeners (`stomp-tcp`, `stomp-tls`, `xmpp-c2s`) that expect a
    /// PROXY protocol v1 or v2 header from trusted proxies (`trusted_proxies`).
    pub proxy_protocol: Vec<String>,
    /// Origins allowed to use BOSH, SockJS and the WebSocket endpoints from a
    /// page (CORS, and the `Origin` check of WebSocket upgrades); `"*"`: any.
    /// Requests without `Origin` (non-browser clients) are always allowed.
    /// `xmpp.bosh_allowed_origins`, when set, still decides for BOSH.
    pub cors_origins: Vec<String>,
    /// Answer `Access-Control-Allow-Credentials: true` (cookies and HTTP auth
    /// on cross-origin requests; sockjs-client's XHR transports ask for it).
    /// Off by default: Herald authenticates in-band, never by cookie.
    pub cors_credentials: bool,
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        ConnectionsConfig {
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            idle_timeout_ms: 120_000,
            max_per_ip: 1_000,
            max_unauthenticated: 10_000,
            max_unauthenticated_per_ip: 100,
            admin_max_connections: 64,
            trusted_proxies: Vec::new(),
            forwarded_header: ForwardedHeader::XForwardedFor,
            proxy_protocol: Vec::new(),
            cors_origins: vec!["*".into()],
            cors_credentials: false,
        }
    }
}

/// Which header carries the client address from a trusted proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ForwardedHeader {
    #[serde(rename = "x-forwarded-for")]
    XForwardedFor,
    #[serde(rename = "forwarded")]
    Forwarded,
}

/// The TCP listeners that may take a PROXY protocol header.
pub const PROXY_PROTOCOL_LISTENERS: [&str; 3] = ["stomp-tcp", "stomp-tls", "xmpp-c2s"];

impl ConnectionsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("connections.header_timeout_ms", self.header_timeout_ms),
            ("connections.body_timeout_ms", self.body_timeout_ms),
            ("connections.idle_timeout_ms", self.idle_timeout_ms),
            ("connections.admin_max_connections", self.admin_max_connections as u64),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        for (i, p) in self.trusted_proxies.iter().enumerate() {
            if let Err(e) = crate::net::Cidr::parse(p) {
                return Err(invalid(format!("connections.trusted_proxies[{i}]"), e));
            }
        }
        for (i, l) in self.proxy_protocol.iter().enumerate() {
            if !PROXY_PROTOCOL_LISTENERS.contains(&l.as_str()) {
                return Err(invalid(
                    format!("connections.proxy_protocol[{i}]"),
                    format!("{l:?} is not one of {PROXY_PROTOCOL_LISTENERS:?}"),
                ));
            }
        }
        if !self.proxy_protocol.is_empty() && self.trusted_proxies.is_empty() {
            return Err(invalid(
                "connections.proxy_protocol",
                "needs connections.trusted_proxies (only they may send a PROXY header)",
            ));
        }
        for (i, o) in self.cors_origins.iter().enumerate() {
            if o != "*" && !(o.starts_with("http://") || o.starts_with("https://")) {
                return Err(invalid(
                    format!("connections.cors_origins[{i}]"),
                    format!("{o:?} is not \"*\" or an origin like https://app.example"),
                ));
            }
        }
        Ok(())
    }
}

// ---- [shaper] --------------------------------------------------------------

/// `[shaper]`: per-connection inbound rate limits, as ejabberd's shapers: a
/// client over its rate is not read from until its tokens refill (nothing is
/// dropped). Off by default (0); docs/security.md suggests values.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ShaperConfig {
    /// Bytes per second a connection may send (STOMP over TCP, WebSocket and
    /// SockJS; XMPP over TCP and WebSocket; BOSH request bodies); 0 = off.
    pub bytes_per_sec: f64,
    /// Bytes a connection may send at once on top of the rate (the bucket's
    /// size); 0 = one second's worth.
    pub bytes_burst: u64,
    /// STOMP frames and XMPP stanzas (after resource binding) per second per
    /// session; 0 = off.
    pub frames_per_sec: f64,
    /// Frames or stanzas a session may send at once on top of the rate; 0 =
    /// one second's worth (at least 1).
    pub frames_burst: u64,
}

impl ShaperConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, rate) in
            [("shaper.bytes_per_sec", self.bytes_per_sec), ("shaper.frames_per_sec", self.frames_per_sec)]
        {
            if !rate.is_finite() || rate < 0.0 {
                return Err(invalid(key, "must be a finite number >= 0 (0 = off)"));
            }
        }
        Ok(())
    }

    /// `(rate, burst)` of the byte bucket, when on.
    pub fn bytes(&self) -> Option<(f64, f64)> {
        (self.bytes_per_sec > 0.0).then(|| (self.bytes_per_sec, burst(self.bytes_burst, self.bytes_per_sec)))
    }

    /// `(rate, burst)` of the frame (stanza) bucket, when on.
    pub fn frames(&self) -> Option<(f64, f64)> {
        (self.frames_per_sec > 0.0).then(|| (self.frames_per_sec, burst(self.frames_burst, self.frames_per_sec)))
    }
}

/// A configured burst, or one second's worth; never less than one unit.
fn burst(configured: u64, rate: f64) -> f64 {
    (if configured == 0 { rate } else { configured as f64 }).max(1.0)
}

// ---- end of per-area sections ------------------------------------------------

/// The admin API, `/metrics` and the console UI at `/admin/` (docs/admin-api.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Admin HTTP listener; `"off"` (the default) disables it.
    #[serde(deserialize_with = "listen_addr")]
    pub listen: Option<SocketAddr>,
    /// Bearer tokens that may use the API. None configured: every request is refused.
    pub tokens: Vec<String>,
    /// Built console (`admin-app/dist`), served at `/admin/`; relative to the
    /// working directory. Unset: `/admin/` answers 404 with how to build it.
    pub ui_dir: Option<PathBuf>,
    /// Origins allowed by CORS (the Tauri console and dev servers call the
    /// API cross-origin); `"*"` allows any. Tokens are never cookies, so an
    /// allowed origin still needs a token.
    pub cors_origins: Vec<String>,
    /// Serve `/metrics` without a token (for scrapers inside a trusted network).
    pub metrics_public: bool,
    /// Largest `per_page` of the paged listings.
    pub max_page_size: usize,
    /// Sampling period of rates and of the live stream, ms.
    pub stream_interval_ms: u64,
    /// Overview samples kept for the charts (`/api/history`).
    pub history_samples: usize,
    /// Rate samples kept per queue (the sparklines).
    pub queue_history: usize,
    /// Most live streams (`/api/stream`) open at once.
    pub max_streams: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: None,
            tokens: Vec::new(),
            ui_dir: None,
            cors_origins: vec!["*".into()],
            metrics_public: false,
            max_page_size: 500,
            stream_interval_ms: 1000,
            history_samples: 300,
            queue_history: 30,
            max_streams: 32,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Node name, shown in stats and (later) used as the cluster identity.
    pub name: String,
    /// Where durable state lives (durable queues, offline messages, feed
    /// history); created at start if missing. Absent: all of it in memory.
    /// One process per directory (the store locks it).
    pub data_dir: Option<PathBuf>,
    /// `false`: receipts for persistent messages wait for the journal to
    /// reach the OS, not the disk (survives `kill -9`, not a power cut).
    pub fsync: bool,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig { name: "herald@localhost".into(), data_dir: None, fsync: true }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StompConfig {
    /// STOMP over TCP; `"off"` disables the listener.
    #[serde(deserialize_with = "listen_addr")]
    pub listen: Option<SocketAddr>,
    /// STOMP over TLS, only when `tls` is set.
    pub tls: Option<TlsConfig>,
    /// Vhost used when CONNECT has no `host` header or names an unknown one.
    pub default_vhost: String,
    /// Smallest heart-beat interval the server agrees to, in ms (guards against
    /// a client asking for a heart-beat every millisecond).
    pub min_heartbeat_ms: u64,
}

impl Default for StompConfig {
    fn default() -> Self {
        StompConfig {
            listen: Some("0.0.0.0:61613".parse().expect("static addr")),
            tls: None,
            default_vhost: "/".into(),
            min_heartbeat_ms: 1000,
        }
    }
}

/// A listen address, or `"off"`.
fn listen_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    if s == "off" {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("{s:?} is not \"off\" or an address like 127.0.0.1:61613: {e}")))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub listen: SocketAddr,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// HTTP listener for STOMP over WebSocket and SockJS; `"off"` disables it.
    #[serde(deserialize_with = "listen_addr")]
    pub listen: Option<SocketAddr>,
    /// STOMP over WebSocket path.
    pub ws_path: String,
    /// SockJS endpoint prefix.
    pub sockjs_path: String,
    /// SockJS heart-beat ('h' frame) interval, ms.
    pub sockjs_heartbeat_ms: u64,
    /// SockJS session kept this long without a receiving request, ms.
    pub sockjs_disconnect_delay_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: Some("0.0.0.0:15674".parse().expect("static addr")),
            ws_path: "/ws".into(),
            sockjs_path: "/stomp".into(),
            sockjs_heartbeat_ms: 25_000,
            sockjs_disconnect_delay_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartTls {
    /// Clients must upgrade before anything else (the default).
    Required,
    /// Plain-text c2s (loopback tests, or TLS terminated in front of Herald).
    Off,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XmppConfig {
    /// The XMPP domain: JIDs are `uid@domain`; projects are `<id>@projects.<domain>`.
    pub domain: String,
    /// c2s over TCP; `"off"` disables it.
    #[serde(deserialize_with = "listen_addr")]
    pub listen: Option<SocketAddr>,
    pub starttls: StartTls,
    /// PEM certificate and key for STARTTLS; a self-signed certificate for
    /// `domain` is generated at start when unset.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// HTTP listener for BOSH (`/http-bind`, `/bosh`) and XMPP over WebSocket
    /// (`/xmpp-websocket`, `/ws`); `"off"` disables it.
    #[serde(deserialize_with = "listen_addr")]
    pub http_listen: Option<SocketAddr>,
    /// Largest stanza, bytes (stream error `policy-violation` beyond).
    pub max_stanza_bytes: usize,
    /// Deepest element nesting in a stanza.
    pub max_depth: usize,
    /// BOSH: longest `wait` granted, seconds.
    pub bosh_max_wait_secs: u64,
    /// BOSH: session dropped after this long without a request, seconds.
    pub bosh_inactivity_secs: u64,
    /// BOSH: origins allowed to call from a page (CORS); empty means any.
    pub bosh_allowed_origins: Vec<String>,
    /// Moved to `access.chat_policy` (one policy for STOMP and XMPP); set
    /// here, the config is refused with a message saying so.
    pub chat_policy: Option<ChatPolicy>,
    /// XEP-0198 Stream Management on c2s and WebSocket (not BOSH, which
    /// has its own acknowledgements).
    pub stream_management: bool,
    /// How long a session whose connection dropped is kept for resumption,
    /// seconds; also the most a client's `<enable max/>` gets. 0: no resumption.
    pub resume_timeout_secs: u64,
    /// Unacknowledged stanzas kept per stream (stream error
    /// `resource-constraint` beyond).
    pub sm_max_unacked: usize,
    /// Bytes of unacknowledged stanzas kept per stream (same error beyond).
    pub sm_max_unacked_bytes: usize,
    /// Resumable sessions (live or waiting for a resume) one user may hold;
    /// beyond it `<enabled/>` comes without `resume`. Detached sessions
    /// hold no connection, so the connection caps do not bound them.
    pub sm_max_resumable_per_user: usize,
    /// `[xmpp.offline]`: XEP-0160 offline messages.
    pub offline: OfflineConfig,
}

/// `[xmpp.offline]`: chat and normal messages to a user with no available
/// XMPP resource are kept (in `node.data_dir` when set, else in memory)
/// until the user's next initial presence, as ejabberd's mod_offline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OfflineConfig {
    pub enabled: bool,
    /// Messages kept per user; over it the sender gets `resource-constraint`
    /// (ejabberd's `max_user_offline_messages` default is 100).
    pub max_messages_per_user: usize,
    /// Bytes kept per user (stanzas as stored, plus the sender's JID).
    pub max_bytes_per_user: usize,
    /// Bytes kept for all users together.
    pub max_total_bytes: usize,
}

impl Default for OfflineConfig {
    fn default() -> Self {
        OfflineConfig {
            enabled: true,
            max_messages_per_user: 100,
            max_bytes_per_user: 1 << 20,
            max_total_bytes: 256 << 20,
        }
    }
}

impl Default for XmppConfig {
    fn default() -> Self {
        XmppConfig {
            domain: "localhost".into(),
            listen: None,
            starttls: StartTls::Required,
            cert: None,
            key: None,
            http_listen: None,
            max_stanza_bytes: 262_144,
            max_depth: 32,
            bosh_max_wait_secs: 60,
            bosh_inactivity_secs: 60,
            bosh_allowed_origins: Vec::new(),
            chat_policy: None,
            stream_management: true,
            // Prosody's mod_smacks default hibernation time.
            resume_timeout_secs: 300,
            // ejabberd's mod_stream_mgmt max_ack_queue.
            sm_max_unacked: 5000,
            sm_max_unacked_bytes: 4 << 20,
            sm_max_resumable_per_user: 10,
            offline: OfflineConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, tag = "backend", rename_all = "lowercase")]
pub enum PresenceConfig {
    /// In this process only (the default).
    #[default]
    Memory,
    /// Redis: `url` like `redis://127.0.0.1:6379/0`; keys start with `prefix`.
    Redis {
        url: String,
        #[serde(default = "default_redis_prefix")]
        prefix: String,
    },
}

fn default_redis_prefix() -> String {
    "herald:".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, tag = "backend", rename_all = "lowercase")]
pub enum DirectoryConfig {
    /// `[[projects]]` from this file, changed through the API (the default).
    #[default]
    Memory,
    /// MongoDB: `uri`, `database`, and where projects and their members are.
    Mongodb {
        uri: String,
        database: String,
        #[serde(default = "default_collection")]
        collection: String,
        #[serde(default = "default_id_field")]
        id_field: String,
        #[serde(default = "default_name_field")]
        name_field: String,
        #[serde(default = "default_members_field")]
        members_field: String,
    },
}

fn default_collection() -> String {
    "projects".into()
}
fn default_id_field() -> String {
    "_id".into()
}
fn default_name_field() -> String {
    "name".into()
}
fn default_members_field() -> String {
    "members".into()
}

/// Every bound the engine enforces. All are per session unless named otherwise.
/// Memory a client can fill is bounded in bytes, not only in counts
/// (docs/security.md, "Memory").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest frame (headers and body) a client may send, bytes.
    pub max_frame_bytes: usize,
    /// Most headers in one frame.
    pub max_headers: usize,
    /// Longest header line, bytes.
    pub max_header_bytes: usize,
    /// Most subscriptions one session may hold (temp queues included).
    pub max_subscriptions: usize,
    /// Frames queued for one session before it is closed as a slow consumer.
    pub outbound_queue: usize,
    /// Message bytes (body + headers) queued for one session before it is
    /// closed as a slow consumer (Centrifugo's `client_queue_max_size`). A
    /// message shared by many sessions counts in each: each one pins it.
    pub outbound_bytes: usize,
    /// Time allowed between opening a connection and a successful CONNECT, ms.
    pub connect_timeout_ms: u64,
    /// Longest a write to one client may take before it is closed as a slow consumer, ms.
    pub write_timeout_ms: u64,
    /// Most open client connections on this node (all listeners together).
    pub max_connections: usize,
    /// Most messages held by one queue; publishing beyond it drops the oldest
    /// (RabbitMQ `x-max-length` with `drop-head`), so one idle queue cannot eat the node.
    pub max_queue_messages: usize,
    /// Most message bytes held by one queue (ready, and again unacked), as
    /// RabbitMQ's `x-max-length-bytes`. A SUBSCRIBE may ask for less, never more.
    pub max_queue_bytes: usize,
    /// Most queues on this node, all kinds together.
    pub max_queues: usize,
    /// Most queues one user may have declared that outlive a session
    /// (durable queues, shared `/queue/` queues, durable subscriptions).
    pub max_queues_per_user: usize,
    /// Most open transactions per session, and frames buffered in one.
    pub max_transactions: usize,
    pub max_transaction_frames: usize,
    /// Bytes (bodies + headers) one session may buffer in its open
    /// transactions together.
    pub max_transaction_bytes: usize,
    /// Receipts one STOMP session may have waiting for the disk (persistent
    /// SENDs to durable queues, answered in order as the group commit
    /// syncs), and the bytes of their receipt ids. At either limit the
    /// session stops reading its client until the oldest are answered.
    pub max_pending_receipts: usize,
    pub max_pending_receipt_bytes: usize,
    /// Node memory alarm: publishing is refused while the message bytes the
    /// node holds (queues, outboxes, transactions) are above it, as
    /// RabbitMQ's `vm_memory_high_watermark`. Bytes, `"NN%"` of system
    /// memory, or `"off"`.
    pub memory_high_watermark: Watermark,
    /// How often the memory alarm is re-evaluated, ms.
    pub memory_check_interval_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_frame_bytes: 1 << 20,
            max_headers: 100,
            max_header_bytes: 8192,
            max_subscriptions: 1024,
            outbound_queue: 10_000,
            outbound_bytes: 16 << 20,
            connect_timeout_ms: 10_000,
            write_timeout_ms: 30_000,
            max_connections: 100_000,
            max_queue_messages: 100_000,
            max_queue_bytes: 64 << 20,
            max_queues: 500_000,
            max_queues_per_user: 1_000,
            max_transactions: 16,
            max_transaction_frames: 10_000,
            max_transaction_bytes: 16 << 20,
            max_pending_receipts: 4096,
            max_pending_receipt_bytes: 1 << 20,
            memory_high_watermark: Watermark::Fraction(0.3),
            memory_check_interval_ms: 500,
        }
    }
}

/// `limits.memory_high_watermark`: bytes, a share of system memory, or off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Watermark {
    Off,
    Bytes(u64),
    /// Share of the machine's memory (`MemTotal`), 0 < f <= 1.
    Fraction(f64),
}

impl Watermark {
    /// The limit in bytes, `None` when off. A share of memory needs the
    /// machine's total; when it cannot be read, 1 GiB is used.
    pub fn bytes(&self) -> Option<u64> {
        match *self {
            Watermark::Off => None,
            Watermark::Bytes(b) => Some(b),
            Watermark::Fraction(f) => Some((system_memory_bytes().unwrap_or(1 << 30) as f64 * f) as u64),
        }
    }
}

/// `MemTotal` from /proc/meminfo (Linux), bytes.
pub fn system_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

impl<'de> Deserialize<'de> for Watermark {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            /// JS numbers (the Node addon's config object) may arrive as floats.
            Float(f64),
            Text(String),
        }
        let bad = |s: &str| {
            serde::de::Error::custom(format!("memory_high_watermark: expected bytes, \"NN%\" or \"off\", got {s:?}"))
        };
        match Raw::deserialize(d)? {
            Raw::Bytes(b) => Ok(Watermark::Bytes(b)),
            Raw::Float(f) if f >= 0.0 && f.fract() == 0.0 && f < u64::MAX as f64 => Ok(Watermark::Bytes(f as u64)),
            Raw::Float(f) => Err(bad(&f.to_string())),
            Raw::Text(t) if t == "off" => Ok(Watermark::Off),
            Raw::Text(t) => {
                let pct: f64 = t.strip_suffix('%').and_then(|p| p.trim().parse().ok()).ok_or_else(|| bad(&t))?;
                if !(pct > 0.0 && pct <= 100.0) {
                    return Err(bad(&t));
                }
                Ok(Watermark::Fraction(pct / 100.0))
            }
        }
    }
}

impl LimitsConfig {
    /// The byte budgets (the older count limits are checked in [`Config::validate`]).
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, value, min) in [
            ("limits.outbound_bytes", self.outbound_bytes, 1024),
            ("limits.max_queue_bytes", self.max_queue_bytes, 1024),
            ("limits.max_queues", self.max_queues, 1),
            ("limits.max_queues_per_user", self.max_queues_per_user, 1),
            ("limits.max_transaction_bytes", self.max_transaction_bytes, 1024),
            ("limits.max_pending_receipts", self.max_pending_receipts, 1),
            ("limits.max_pending_receipt_bytes", self.max_pending_receipt_bytes, 1024),
        ] {
            if value < min {
                return Err(invalid(key, format!("must be at least {min}, got {value}")));
            }
        }
        // Kept in a u32 in every session handle (idle memory is benchmarked).
        if self.outbound_bytes > u32::MAX as usize {
            return Err(invalid("limits.outbound_bytes", format!("must be at most {}", u32::MAX)));
        }
        if self.outbound_queue > u32::MAX as usize {
            return Err(invalid("limits.outbound_queue", format!("must be at most {}", u32::MAX)));
        }
        if self.memory_check_interval_ms < 10 {
            return Err(invalid("limits.memory_check_interval_ms", "must be at least 10"));
        }
        if self.memory_high_watermark == Watermark::Bytes(0) {
            return Err(invalid("limits.memory_high_watermark", "must be greater than 0 (or \"off\")"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Permissions (per vhost) for users that list none of their own, and
    /// for JWT-authenticated users that are not `[[users]]` (when there is no
    /// HTTP backend). Empty means such users may not open any vhost, as in RabbitMQ.
    pub default_permissions: BTreeMap<String, PermissionConfig>,
    /// The rabbitmq-auth-backend-http protocol: ask a web service.
    pub http: Option<HttpAuthConfig>,
    /// JWT bearer tokens as the password (STOMP passcode, SASL PLAIN).
    pub jwt: Option<JwtConfig>,
    /// Users and their password hashes in the application's own MongoDB
    /// collection.
    pub mongodb: Option<MongoAuthConfig>,
    /// Topic permissions (vhost → exchange → `write`/`read` patterns) for
    /// users that list no `topic_permissions` of their own, and for JWT
    /// users. Empty: routing keys are allowed (RabbitMQ's semantics); the
    /// `[access]` rules still apply.
    pub default_topic_permissions: TopicPermissions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HttpAuthMethod {
    /// Parameters in the query string (RabbitMQ's default).
    #[default]
    Get,
    /// Parameters as an `application/x-www-form-urlencoded` body.
    Post,
}

/// `[auth.http]`: the URLs of rabbitmq-auth-backend-http. An unset
/// `vhost_path`, `resource_path` or `topic_path` answers "allow".
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpAuthConfig {
    /// Required: asked with `username` and `password`.
    pub user_path: String,
    pub vhost_path: Option<String>,
    pub resource_path: Option<String>,
    pub topic_path: Option<String>,
    pub method: HttpAuthMethod,
    /// Each request, connect to last body byte, ms.
    pub timeout_ms: u64,
    /// How long answers (allow and deny) are reused, ms; 0 disables the cache.
    pub cache_ttl_ms: u64,
    /// Most cached answers; the oldest go first.
    pub cache_max_entries: usize,
}

impl Default for HttpAuthConfig {
    fn default() -> Self {
        HttpAuthConfig {
            user_path: String::new(),
            vhost_path: None,
            resource_path: None,
            topic_path: None,
            method: HttpAuthMethod::Get,
            timeout_ms: 2000,
            cache_ttl_ms: 30_000,
            cache_max_entries: 100_000,
        }
    }
}

/// `[auth.mongodb]`: users in the application's own MongoDB collection,
/// by default documents like `{ username: "alice", password: "$2b$10$…" }`
/// in `users` (auth/mongo_users.rs, docs/config.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MongoAuthConfig {
    /// Required: `mongodb://…` or `mongodb+srv://…`.
    pub uri: String,
    /// Required.
    pub database: String,
    pub collection: String,
    /// Field whose value is the login (STOMP `login`, XMPP local part).
    pub uid_field: String,
    /// Field holding the password hash (bcrypt, argon2, scrypt or PBKDF2).
    pub password_field: String,
    /// Field that marks a user disabled when it equals `disabled_value`;
    /// unset: no user is disabled.
    pub disabled_field: Option<String>,
    /// The value of `disabled_field` that means disabled (a boolean, an
    /// integer or a string; default `true`).
    pub disabled_value: MatchValue,
    /// Field holding the user's tags (an array of strings, or one
    /// space-separated string); unset: no tags.
    pub tags_field: Option<String>,
    /// Bounds each lookup, and connecting, ms.
    pub timeout_ms: u64,
    /// How long a login's outcome (accepted or refused) is reused, ms; 0
    /// disables the cache. A changed password or flag counts after it.
    pub cache_ttl_ms: u64,
    /// Most cached outcomes; the oldest go first.
    pub cache_max_entries: usize,
}

impl Default for MongoAuthConfig {
    fn default() -> Self {
        MongoAuthConfig {
            uri: String::new(),
            database: String::new(),
            collection: "users".into(),
            uid_field: "username".into(),
            password_field: "password".into(),
            disabled_field: None,
            disabled_value: MatchValue::Bool(true),
            tags_field: None,
            timeout_ms: 2000,
            cache_ttl_ms: 30_000,
            cache_max_entries: 100_000,
        }
    }
}

/// A scalar a document field is compared with.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum MatchValue {
    Bool(bool),
    Int(i64),
    Str(String),
}

/// `[auth.jwt]`: HS256 and/or RS256 tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// Shared secret for HS256 tokens.
    pub hs256_secret: Option<String>,
    /// PEM file with the RSA public key for RS256 tokens (`PUBLIC KEY` or `RSA PUBLIC KEY`).
    pub rs256_public_key: Option<PathBuf>,
    /// Required `iss` when set.
    pub issuer: Option<String>,
    /// Required `aud` (one of them, when the token has a list) when set.
    pub audience: Option<String>,
    /// Claim holding the user id; must equal the login.
    pub uid_claim: String,
    /// Clock skew allowed for `exp` and `nbf`, seconds.
    pub leeway_secs: u64,
    /// Claim holding the user's tags (array of strings, or one space-separated string).
    pub tags_claim: Option<String>,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            hs256_secret: None,
            rs256_public_key: None,
            issuer: None,
            audience: None,
            uid_claim: "sub".into(),
            leeway_secs: 30,
            tags_claim: None,
        }
    }
}

/// RabbitMQ-style permission patterns (regular expressions matched against
/// the whole resource name; the empty string matches nothing).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionConfig {
    pub configure: String,
    pub write: String,
    pub read: String,
}

/// Names of the exchanges that carry the addressing model (DESIGN.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExchangeNames {
    pub feed: String,
    pub project: String,
    pub presence: String,
}

impl Default for ExchangeNames {
    fn default() -> Self {
        ExchangeNames { feed: "feed".into(), project: "project".into(), presence: "presence".into() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VhostConfig {
    pub name: String,
    /// Extra exchanges beyond the built-in ones (`amq.*`, feed, project, presence).
    #[serde(default)]
    pub exchanges: Vec<ExchangeConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeConfig {
    pub name: String,
    /// `direct`, `fanout`, `topic` or `headers`.
    #[serde(rename = "type")]
    pub kind: ExchangeKind,
}

/// An exchange's type. Defined here, where the config names it, so config
/// needs nothing from the router; the router re-exports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
    Headers,
}

impl ExchangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// Plain password: development only (a warning is logged).
    #[serde(default)]
    pub password: Option<String>,
    /// Argon2 PHC hash (`$argon2id$...`), as printed by `herald hash-password`;
    /// bcrypt, scrypt and PBKDF2 hashes are taken too (password.rs).
    #[serde(default)]
    pub password_hash: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub permissions: Option<BTreeMap<String, PermissionConfig>>,
    /// Own topic permissions, replacing `auth.default_topic_permissions`.
    #[serde(default)]
    pub topic_permissions: Option<TopicPermissions>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub members: Vec<String>,
}

impl Config {
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Config::from_toml_str(&text)
    }

    /// Checks what serde cannot: cross-references, ranges and patterns.
    pub fn validate(&self) -> Result<(), ConfigError> {
        require_features(self)?;
        self.history.validate()?;
        if let Some(c) = &self.cluster {
            c.validate()?;
            // Node names travel in bus envelopes and the wildcard set
            // (NUL-separated) and must tell nodes apart.
            // `*` addresses every node on the control channel (bus::control).
            if self.node.name.is_empty()
                || self.node.name.contains('\0')
                || self.node.name == "*"
                || self.node.name.len() > 255
            {
                return Err(invalid(
                    "node.name",
                    "with [cluster]: 1 to 255 bytes, no NUL, not \"*\", unique in the cluster",
                ));
            }
        }
        if self.vhosts.is_empty() {
            return Err(invalid("vhosts", "at least one vhost is required"));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, v) in self.vhosts.iter().enumerate() {
            if v.name.is_empty() {
                return Err(invalid(format!("vhosts[{i}].name"), "must not be empty"));
            }
            if !seen.insert(&v.name) {
                return Err(invalid(format!("vhosts[{i}].name"), format!("duplicate vhost {:?}", v.name)));
            }
        }
        if !self.vhosts.iter().any(|v| v.name == self.stomp.default_vhost) {
            return Err(invalid("stomp.default_vhost", format!("{:?} is not in [[vhosts]]", self.stomp.default_vhost)));
        }
        for path in [("http.ws_path", &self.http.ws_path), ("http.sockjs_path", &self.http.sockjs_path)] {
            if !path.1.starts_with('/') || path.1.len() < 2 {
                return Err(invalid(path.0, "must start with '/' and name a path"));
            }
        }
        if self.http.ws_path == self.http.sockjs_path {
            return Err(invalid("http.sockjs_path", "must differ from http.ws_path"));
        }
        let x = &self.xmpp;
        if x.domain.is_empty() || x.domain.contains(['@', '/', ' ']) {
            return Err(invalid("xmpp.domain", "must be a domain name"));
        }
        if x.cert.is_some() != x.key.is_some() {
            return Err(invalid("xmpp.cert", "set both xmpp.cert and xmpp.key, or neither"));
        }
        if x.resume_timeout_secs > 86_400 {
            return Err(invalid("xmpp.resume_timeout_secs", "must be at most 86400 (a day)"));
        }
        if x.sm_max_unacked == 0 || x.sm_max_unacked_bytes < x.max_stanza_bytes {
            return Err(invalid(
                "xmpp.sm_max_unacked",
                "sm_max_unacked must be at least 1 and sm_max_unacked_bytes at least max_stanza_bytes",
            ));
        }
        if x.max_stanza_bytes < 1024 {
            return Err(invalid("xmpp.max_stanza_bytes", "must be at least 1024"));
        }
        if x.max_depth < 4 {
            return Err(invalid("xmpp.max_depth", "must be at least 4"));
        }
        if x.offline.max_messages_per_user == 0 || x.offline.max_bytes_per_user < 1024 {
            return Err(invalid(
                "xmpp.offline.max_messages_per_user",
                "at least 1 message and 1024 bytes per user (or enabled = false)",
            ));
        }
        if x.offline.max_total_bytes < x.offline.max_bytes_per_user {
            return Err(invalid("xmpp.offline.max_total_bytes", "must be at least max_bytes_per_user"));
        }
        if x.bosh_max_wait_secs == 0 || x.bosh_inactivity_secs == 0 {
            return Err(invalid("xmpp.bosh_inactivity_secs", "BOSH wait and inactivity must be greater than 0"));
        }
        let l = &self.limits;
        for (key, value, min) in [
            ("limits.max_frame_bytes", l.max_frame_bytes, 256),
            ("limits.max_headers", l.max_headers, 4),
            ("limits.max_header_bytes", l.max_header_bytes, 64),
            ("limits.max_subscriptions", l.max_subscriptions, 1),
            ("limits.outbound_queue", l.outbound_queue, 1),
            ("limits.max_connections", l.max_connections, 1),
            ("limits.max_queue_messages", l.max_queue_messages, 1),
            ("limits.max_transaction_frames", l.max_transaction_frames, 1),
        ] {
            if value < min {
                return Err(invalid(key, format!("must be at least {min}, got {value}")));
            }
        }
        let a = &self.admin;
        for (key, value, min) in [
            ("admin.max_page_size", a.max_page_size as u64, 1),
            ("admin.stream_interval_ms", a.stream_interval_ms, 100),
            ("admin.history_samples", a.history_samples as u64, 2),
            ("admin.queue_history", a.queue_history as u64, 2),
            ("admin.max_streams", a.max_streams as u64, 1),
        ] {
            if value < min {
                return Err(invalid(key, format!("must be at least {min}, got {value}")));
            }
        }
        if let Some(i) = a.tokens.iter().position(|t| t.len() < 8) {
            return Err(invalid(format!("admin.tokens[{i}]"), "must be at least 8 characters"));
        }
        if l.connect_timeout_ms == 0 {
            return Err(invalid("limits.connect_timeout_ms", "must be greater than 0"));
        }
        if l.write_timeout_ms == 0 {
            return Err(invalid("limits.write_timeout_ms", "must be greater than 0"));
        }
        for (name, value) in [
            ("exchanges.feed", &self.exchanges.feed),
            ("exchanges.project", &self.exchanges.project),
            ("exchanges.presence", &self.exchanges.presence),
        ] {
            if value.is_empty() || value.starts_with("amq.") {
                return Err(invalid(name, "must be non-empty and not start with \"amq.\""));
            }
        }
        let check_perms = |key: &str, perms: &BTreeMap<String, PermissionConfig>| -> Result<(), ConfigError> {
            for (vhost, p) in perms {
                if !self.vhosts.iter().any(|v| &v.name == vhost) {
                    return Err(invalid(format!("{key}.{vhost:?}"), "names a vhost that is not in [[vhosts]]"));
                }
                for (what, pattern) in [("configure", &p.configure), ("write", &p.write), ("read", &p.read)] {
                    if let Err(e) = regex::Regex::new(pattern) {
                        return Err(invalid(format!("{key}.{vhost:?}.{what}"), format!("bad regular expression: {e}")));
                    }
                }
            }
            Ok(())
        };
        self.routing.validate()?;
        self.login.validate()?;
        self.access.validate()?;
        self.connections.validate()?;
        self.shaper.validate()?;
        self.limits.validate()?;
        check_perms("auth.default_permissions", &self.auth.default_permissions)?;
        if self.xmpp.chat_policy.is_some() {
            return Err(invalid("xmpp.chat_policy", "moved to access.chat_policy (one policy for STOMP and XMPP)"));
        }
        let check_topic_perms = |key: &str, perms: &TopicPermissions| -> Result<(), ConfigError> {
            for (vhost, exchanges) in perms {
                if !self.vhosts.iter().any(|v| &v.name == vhost) {
                    return Err(invalid(format!("{key}.{vhost:?}"), "names a vhost that is not in [[vhosts]]"));
                }
                for (exchange, p) in exchanges {
                    for (what, pattern) in [("write", &p.write), ("read", &p.read)] {
                        // Checked with the placeholders expanded to a plain word.
                        let expanded = pattern.replace("{username}", "u").replace("{vhost}", "v");
                        if let Err(e) = regex::Regex::new(&expanded) {
                            return Err(invalid(
                                format!("{key}.{vhost:?}.{exchange:?}.{what}"),
                                format!("bad regular expression: {e}"),
                            ));
                        }
                    }
                }
            }
            Ok(())
        };
        check_topic_perms("auth.default_topic_permissions", &self.auth.default_topic_permissions)?;
        self.auth.validate()?;
        let mut names = std::collections::HashSet::new();
        for (i, u) in self.users.iter().enumerate() {
            let key = format!("users[{i}]");
            if u.name.is_empty() {
                return Err(invalid(format!("{key}.name"), "must not be empty"));
            }
            if !names.insert(&u.name) {
                return Err(invalid(format!("{key}.name"), format!("duplicate user {:?}", u.name)));
            }
            match (&u.password, &u.password_hash) {
                (None, None) => return Err(invalid(key, "needs `password` or `password_hash`")),
                (Some(_), Some(_)) => return Err(invalid(key, "set only one of `password` and `password_hash`")),
                (None, Some(h)) => {
                    if let Err(e) = crate::password::check(h) {
                        return Err(invalid(format!("{key}.password_hash"), e.to_string()));
                    }
                }
                (Some(_), None) => {}
            }
            if let Some(p) = &u.permissions {
                check_perms(&format!("{key}.permissions"), p)?;
            }
            if let Some(p) = &u.topic_permissions {
                check_topic_perms(&format!("{key}.topic_permissions"), p)?;
            }
        }
        let mut ids = std::collections::HashSet::new();
        for (i, p) in self.projects.iter().enumerate() {
            if p.id.is_empty() || p.id.contains(['.', '*', '#', '/']) {
                return Err(invalid(format!("projects[{i}].id"), "must be non-empty without '.', '*', '#' or '/'"));
            }
            if !ids.insert(&p.id) {
                return Err(invalid(format!("projects[{i}].id"), format!("duplicate project {:?}", p.id)));
            }
        }
        Ok(())
    }
}

impl AuthConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(h) = &self.http {
            if h.user_path.is_empty() {
                return Err(invalid("auth.http.user_path", "required when [auth.http] is set"));
            }
            let paths = [
                ("auth.http.user_path", Some(&h.user_path)),
                ("auth.http.vhost_path", h.vhost_path.as_ref()),
                ("auth.http.resource_path", h.resource_path.as_ref()),
                ("auth.http.topic_path", h.topic_path.as_ref()),
            ];
            for (key, value) in paths {
                let Some(value) = value else { continue };
                match url::Url::parse(value) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                    Ok(u) => {
                        return Err(invalid(
                            key,
                            format!("{value:?} is not an http:// or https:// URL (scheme {:?})", u.scheme()),
                        ))
                    }
                    Err(e) => return Err(invalid(key, format!("{value:?} is not a URL: {e}"))),
                }
            }
            if h.timeout_ms == 0 {
                return Err(invalid("auth.http.timeout_ms", "must be greater than 0"));
            }
            if h.cache_ttl_ms > 0 && h.cache_max_entries == 0 {
                return Err(invalid(
                    "auth.http.cache_max_entries",
                    "must be at least 1 (set cache_ttl_ms = 0 to disable the cache)",
                ));
            }
        }
        if let Some(m) = &self.mongodb {
            if !(m.uri.starts_with("mongodb://") || m.uri.starts_with("mongodb+srv://")) {
                return Err(invalid("auth.mongodb.uri", "required: a mongodb:// or mongodb+srv:// URI"));
            }
            for (key, value) in [
                ("auth.mongodb.database", Some(&m.database)),
                ("auth.mongodb.collection", Some(&m.collection)),
                ("auth.mongodb.uid_field", Some(&m.uid_field)),
                ("auth.mongodb.password_field", Some(&m.password_field)),
                ("auth.mongodb.disabled_field", m.disabled_field.as_ref()),
                ("auth.mongodb.tags_field", m.tags_field.as_ref()),
            ] {
                if value.is_some_and(|v| v.is_empty()) {
                    return Err(invalid(key, "must not be empty"));
                }
            }
            if m.timeout_ms == 0 {
                return Err(invalid("auth.mongodb.timeout_ms", "must be greater than 0"));
            }
            if m.cache_ttl_ms > 0 && m.cache_max_entries == 0 {
                return Err(invalid(
                    "auth.mongodb.cache_max_entries",
                    "must be at least 1 (set cache_ttl_ms = 0 to disable the cache)",
                ));
            }
        }
        if let Some(j) = &self.jwt {
            if j.hs256_secret.is_none() && j.rs256_public_key.is_none() {
                return Err(invalid("auth.jwt", "set hs256_secret, rs256_public_key or both"));
            }
            if j.hs256_secret.as_deref() == Some("") {
                return Err(invalid("auth.jwt.hs256_secret", "must not be empty"));
            }
            if let Some(path) = &j.rs256_public_key {
                crate::pem::rsa_public_key(path).map_err(|e| invalid("auth.jwt.rs256_public_key", e))?;
            }
            for (key, value) in [
                ("auth.jwt.issuer", &j.issuer),
                ("auth.jwt.audience", &j.audience),
                ("auth.jwt.tags_claim", &j.tags_claim),
            ] {
                if value.as_deref() == Some("") {
                    return Err(invalid(key, "must not be empty (leave it out instead)"));
                }
            }
            if j.uid_claim.is_empty() {
                return Err(invalid("auth.jwt.uid_claim", "must not be empty"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_config_is_valid() {
        let text = include_str!("../../config/dev.toml");
        let c = Config::from_toml_str(text).expect("dev.toml parses");
        assert_eq!(c.users.len(), 6);
        assert_eq!(c.projects[0].members, ["alice", "bob", "carol"]);
        assert_eq!(c.stomp.listen.unwrap().port(), 61613);
        // Least privilege as shipped (docs/security.md "Access"): no administrator, chats between contacts.
        assert!(c.users.iter().all(|u| !u.tags.iter().any(|t| t == "administrator")), "dev.toml has no administrator");
        assert_eq!(c.access.chat_policy, ChatPolicy::Contacts);
    }

    #[test]
    #[cfg(feature = "redis")]
    fn cluster_is_optional_and_checked() {
        assert!(Config::default().cluster.is_none());
        let c =
            Config::from_toml_str("[node]\nname = \"n1\"\n[cluster]\nredis = \"redis://127.0.0.1:6379\"\n").unwrap();
        let cl = c.cluster.unwrap();
        assert_eq!((cl.heartbeat_ms, cl.ttl_ms, cl.publish_buffer), (1_000, 5_000, 10_000));
        let c = Config::from_toml_str("[cluster]\nseeds = [\"redis://127.0.0.1:7000\"]\n").unwrap();
        assert_eq!(c.cluster.unwrap().seeds.len(), 1);
        for (text, key) in [
            ("[cluster]\n", "cluster.redis"),
            ("[cluster]\nredis = \"redis://a\"\nseeds = [\"redis://b\"]\n", "cluster.redis"),
            ("[cluster]\nredis = \"redis://a\"\nttl_ms = 1000\n", "cluster.ttl_ms"),
            ("[cluster]\nredis = \"redis://a\"\nheartbeat_ms = 10\n", "cluster.heartbeat_ms"),
            ("[cluster]\nredis = \"redis://a\"\npublish_buffer = 0\n", "cluster.publish_buffer"),
            ("[node]\nname = \"\"\n[cluster]\nredis = \"redis://a\"\n", "node.name"),
            ("[node]\nname = \"*\"\n[cluster]\nredis = \"redis://a\"\n", "node.name"),
        ] {
            let err = Config::from_toml_str(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text:?}: {err}");
        }
    }

    #[test]
    #[cfg(not(feature = "redis"))]
    fn cluster_needs_the_redis_feature() {
        let err = Config::from_toml_str("[cluster]\nredis = \"redis://a\"\n").unwrap_err().to_string();
        assert!(err.contains("cluster") && err.contains("redis"), "{err}");
    }

    #[test]
    fn chat_policy_lives_in_access() {
        assert_eq!(Config::default().access.chat_policy, ChatPolicy::Contacts);
        let c = Config::from_toml_str("[access]\nchat_policy = \"none\"\n").unwrap();
        assert_eq!(c.access.chat_policy, ChatPolicy::None);
        let err = Config::from_toml_str("[xmpp]\nchat_policy = \"all\"\n").unwrap_err().to_string();
        assert!(err.contains("xmpp.chat_policy") && err.contains("access.chat_policy"), "{err}");
    }

    #[test]
    fn offline_caps_are_read_and_checked() {
        let o = Config::default().xmpp.offline;
        assert!(o.enabled);
        assert_eq!((o.max_messages_per_user, o.max_bytes_per_user), (100, 1 << 20));
        let c = Config::from_toml_str("[xmpp.offline]\nmax_messages_per_user = 5\nenabled = false\n").unwrap();
        assert_eq!((c.xmpp.offline.max_messages_per_user, c.xmpp.offline.enabled), (5, false));
        for bad in ["max_messages_per_user = 0", "max_bytes_per_user = 10", "max_total_bytes = 2048"] {
            let err = Config::from_toml_str(&format!("[xmpp.offline]\n{bad}\n")).unwrap_err().to_string();
            assert!(err.contains("xmpp.offline"), "{bad}: {err}");
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml_str("[stomp]\nlistn = \"127.0.0.1:1\"\n").unwrap_err().to_string();
        assert!(err.contains("listn"), "{err}");
    }

    #[test]
    fn bad_value_is_named() {
        let err = Config::from_toml_str("[limits]\nmax_frame_bytes = 3\n").unwrap_err().to_string();
        assert!(err.contains("limits.max_frame_bytes"), "{err}");
        let err = Config::from_toml_str("[[users]]\nname = \"x\"\n").unwrap_err().to_string();
        assert!(err.contains("users[0]"), "{err}");
        let err =
            Config::from_toml_str("[auth.default_permissions.\"/\"]\nconfigure = \"(\"\nwrite = \"\"\nread = \"\"\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("configure"), "{err}");
        let err = Config::from_toml_str("[stomp]\ndefault_vhost = \"nope\"\n").unwrap_err().to_string();
        assert!(err.contains("stomp.default_vhost"), "{err}");
        let err = Config::from_toml_str("[http]\nlisten = \"localhost\"\n").unwrap_err().to_string();
        assert!(err.contains("listen"), "{err}");
        let c = Config::from_toml_str("[http]\nlisten = \"off\"\n").unwrap();
        assert!(c.http.listen.is_none());
    }

    #[test]
    fn memory_limits_parse_and_are_checked() {
        let c = Config::default();
        assert_eq!(c.limits.memory_high_watermark, Watermark::Fraction(0.3));
        assert!(c.limits.memory_high_watermark.bytes().is_some_and(|b| b > 0));
        let w = |v: &str| {
            Config::from_toml_str(&format!("[limits]\nmemory_high_watermark = {v}\n"))
                .map(|c| c.limits.memory_high_watermark)
        };
        assert_eq!(w("\"off\"").unwrap(), Watermark::Off);
        assert_eq!(Watermark::Off.bytes(), None);
        assert_eq!(w("1048576").unwrap(), Watermark::Bytes(1 << 20));
        assert_eq!(w("\"50%\"").unwrap(), Watermark::Fraction(0.5));
        for bad in ["\"lots\"", "\"0%\"", "\"150%\"", "0"] {
            let e = w(bad).unwrap_err().to_string();
            assert!(e.contains("memory_high_watermark"), "{bad}: {e}");
        }
        let e = Config::from_toml_str("[limits]\noutbound_bytes = 10\n").unwrap_err().to_string();
        assert!(e.contains("limits.outbound_bytes"), "{e}");
        let e = Config::from_toml_str("[limits]\nmax_transaction_bytes = 10\n").unwrap_err().to_string();
        assert!(e.contains("limits.max_transaction_bytes"), "{e}");
        let e = Config::from_toml_str("[limits]\noutbound_bytes = 5000000000\n").unwrap_err().to_string();
        assert!(e.contains("limits.outbound_bytes"), "{e}");
    }

    #[test]
    fn sources_left_out_of_the_build_are_refused_naming_their_feature() {
        let cases = [
            (
                "redis",
                cfg!(feature = "redis"),
                "presence.backend",
                "[presence]\nbackend = \"redis\"\nurl = \"redis://h/\"\n",
            ),
            (
                "mongodb",
                cfg!(feature = "mongodb"),
                "directory.backend",
                "[directory]\nbackend = \"mongodb\"\nuri = \"mongodb://h/\"\ndatabase = \"d\"\n",
            ),
            ("http-auth", cfg!(feature = "http-auth"), "auth.http", "[auth.http]\nuser_path = \"http://h/u\"\n"),
            ("jwt", cfg!(feature = "jwt"), "auth.jwt", "[auth.jwt]\nhs256_secret = \"k\"\n"),
            (
                "mongodb",
                cfg!(feature = "mongodb"),
                "auth.mongodb",
                "[auth.mongodb]\nuri = \"mongodb://h/\"\ndatabase = \"d\"\n",
            ),
        ];
        for (feature, built, key, text) in cases {
            match Config::from_toml_str(text) {
                Ok(_) => assert!(built, "{feature}: accepted without the feature"),
                Err(e) => {
                    let e = e.to_string();
                    assert!(!built && e.contains(key) && e.contains(&format!("`{feature}` Cargo feature")), "{e}");
                }
            }
        }
    }

    #[test]
    #[cfg(all(feature = "http-auth", feature = "jwt"))]
    fn auth_sources_are_validated() {
        let err = |text: &str| Config::from_toml_str(text).unwrap_err().to_string();
        let c = Config::from_toml_str("[auth.http]\nuser_path = \"http://127.0.0.1:3000/auth/user\"\n").unwrap();
        let h = c.auth.http.unwrap();
        assert_eq!(
            (h.method, h.timeout_ms, h.cache_ttl_ms, h.cache_max_entries),
            (HttpAuthMethod::Get, 2000, 30_000, 100_000)
        );
        assert!(h.vhost_path.is_none());
        let e = err("[auth.http]\nvhost_path = \"http://x/v\"\n");
        assert!(e.contains("auth.http.user_path"), "{e}");
        let e = err("[auth.http]\nuser_path = \"ftp://x/u\"\n");
        assert!(e.contains("auth.http.user_path") && e.contains("http"), "{e}");
        let e = err("[auth.http]\nuser_path = \"http://x/u\"\ntopic_path = \"not a url\"\n");
        assert!(e.contains("auth.http.topic_path"), "{e}");
        let e = err("[auth.http]\nuser_path = \"http://x/u\"\nmethod = \"put\"\n");
        assert!(e.contains("method"), "{e}");
        let e = err("[auth.http]\nuser_path = \"http://x/u\"\ntimeout_ms = 0\n");
        assert!(e.contains("auth.http.timeout_ms"), "{e}");
        let e = err("[auth.http]\nuser_path = \"http://x/u\"\nuser_pth = \"\"\n");
        assert!(e.contains("user_pth"), "{e}");
        let c = Config::from_toml_str(
            "[auth.http]\nuser_path = \"https://auth.example/u\"\nmethod = \"post\"\ncache_ttl_ms = 0\n",
        )
        .unwrap();
        assert_eq!(c.auth.http.unwrap().method, HttpAuthMethod::Post);

        let c = Config::from_toml_str("[auth.jwt]\nhs256_secret = \"k\"\n").unwrap();
        let j = c.auth.jwt.unwrap();
        assert_eq!((j.uid_claim.as_str(), j.leeway_secs), ("sub", 30));
        let e = err("[auth.jwt]\nissuer = \"me\"\n");
        assert!(e.contains("auth.jwt") && e.contains("hs256_secret"), "{e}");
        let e = err("[auth.jwt]\nhs256_secret = \"\"\n");
        assert!(e.contains("auth.jwt.hs256_secret"), "{e}");
        let e = err("[auth.jwt]\nrs256_public_key = \"/nonexistent/key.pem\"\n");
        assert!(e.contains("auth.jwt.rs256_public_key") && e.contains("/nonexistent/key.pem"), "{e}");
        let dir = std::env::temp_dir().join(format!("herald-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.pem");
        std::fs::write(&bad, "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").unwrap();
        let e = err(&format!("[auth.jwt]\nrs256_public_key = {:?}\n", bad.display().to_string()));
        assert!(e.contains("auth.jwt.rs256_public_key") && e.contains("bad.pem"), "{e}");
        let e = err("[auth.jwt]\nhs256_secret = \"k\"\naudience = \"\"\n");
        assert!(e.contains("auth.jwt.audience"), "{e}");
        let good = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/jwt-rs256-public.pem");
        Config::from_toml_str(&format!("[auth.jwt]\nrs256_public_key = {good:?}\n")).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
