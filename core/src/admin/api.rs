//! The JSON routes of the admin API (docs/admin-api.md). Handlers read the
//! engine and translate; every listing is paged because a node may hold tens
//! of thousands of sessions and per-session queues.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::sampler::{unix_ms, Rates, Sample, TotalsOut};
use super::Admin;
use crate::engine::PublishError;
use crate::error::{CloseCode, CloseReason};
use crate::router::RouteError;
use crate::session::SessionHandle;

/// Errors of the admin API, as JSON `{error, message}` with a status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("a valid bearer token is required (Authorization: Bearer <token>)")]
    Unauthorized,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Limit(String),
    #[error("method not allowed on this route; see /api/openapi.json")]
    MethodNotAllowed,
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    fn kind(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Limit(_) => (StatusCode::TOO_MANY_REQUESTS, "limit"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind) = self.kind();
        let body = Json(serde_json::json!({ "error": kind, "message": self.to_string() }));
        let mut r = (status, body).into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"herald\""),
            );
        }
        r
    }
}

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::NoVhost(_) | RouteError::NoExchange(..) | RouteError::NoQueue(..) => {
                ApiError::NotFound(e.to_string())
            }
            RouteError::Store(_) | RouteError::MemoryAlarm { .. } => ApiError::Unavailable(e.to_string()),
            RouteError::QueueFull { .. } | RouteError::QueueLimit(_) => ApiError::Limit(e.to_string()),
            _ => ApiError::BadRequest(e.to_string()),
        }
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// The query string, or the API's JSON 400 (axum's own rejection is plain text).
fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t).map_err(|e| ApiError::BadRequest(e.body_text()))
}

/// The path parameters, or the API's JSON 400 (e.g. a session id that is not a number).
fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    p.map(|Path(t)| t).map_err(|e| ApiError::BadRequest(e.body_text()))
}

#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub total: usize,
    pub page: usize,
    pub per_page: usize,
    pub items: Vec<T>,
}

/// `per_page` when the request has none (at most `admin.max_page_size`).
pub const DEFAULT_PER_PAGE: usize = 50;

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct Paging {
    #[serde(deserialize_with = "query_number")]
    pub page: Option<usize>,
    #[serde(deserialize_with = "query_number")]
    pub per_page: Option<usize>,
}

/// A number of the query string. Paging is `serde(flatten)`ed into the
/// listings' queries, and flatten hands every value over as a string, which
/// a plain `usize` refuses: parse it here.
fn query_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        N(usize),
        S(String),
    }
    match Option::<Number>::deserialize(d)? {
        None => Ok(None),
        Some(Number::N(n)) => Ok(Some(n)),
        Some(Number::S(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("expected a non-negative integer, not '{s}'"))),
    }
}

impl Paging {
    /// Page `page` (from 1) of `items`; `per_page` is capped by `max` (an
    /// explicit larger one is a 400; the default of 50 is lowered to `max`).
    pub fn apply<T>(&self, items: Vec<T>, max: usize) -> Result<Page<T>, ApiError> {
        let page = self.page.unwrap_or(1);
        let per_page = self.per_page.unwrap_or(DEFAULT_PER_PAGE.min(max));
        if page == 0 || per_page == 0 {
            return Err(ApiError::BadRequest("page and per_page start at 1".into()));
        }
        if per_page > max {
            return Err(ApiError::BadRequest(format!("per_page {per_page} is over admin.max_page_size ({max})")));
        }
        let total = items.len();
        let items = items.into_iter().skip((page - 1).saturating_mul(per_page)).take(per_page).collect();
        Ok(Page { total, page, per_page, items })
    }
}

pub async fn overview(State(a): State<Admin>) -> ApiResult<serde_json::Value> {
    Ok(Json(serde_json::to_value(&a.sampler.current().overview).expect("overview serializes")))
}

#[derive(Serialize)]
pub struct History {
    interval_ms: u64,
    samples: Vec<Sample>,
}

pub async fn history(State(a): State<Admin>) -> ApiResult<History> {
    a.sampler.current();
    Ok(Json(History { interval_ms: a.sampler.interval.as_millis() as u64, samples: a.sampler.history() }))
}

/// One node in `GET /api/cluster`.
#[derive(Debug, Serialize)]
pub struct ClusterNode {
    name: String,
    address: Option<String>,
    alive: bool,
    /// This node (the one answering).
    this: bool,
    version: String,
    started_ms: u64,
    /// ms since its last heartbeat, by this node's clock.
    heartbeat_age_ms: u64,
    sessions: u64,
    users: u64,
    publish_rate: f64,
    deliver_rate: f64,
    rss_bytes: Option<u64>,
}

impl ClusterNode {
    #[cfg(feature = "redis")]
    fn of(info: crate::cluster::registry::NodeInfo, alive: bool, this: &str, now: u64) -> ClusterNode {
        ClusterNode {
            this: info.name == this,
            heartbeat_age_ms: now.saturating_sub(info.beat_ms),
            name: info.name,
            address: info.address,
            alive,
            version: info.version,
            started_ms: info.started_ms,
            sessions: info.sessions,
            users: info.users,
            publish_rate: info.publish_rate,
            deliver_rate: info.deliver_rate,
            rss_bytes: info.rss_bytes,
        }
    }
}

/// This node's queues, as `/api/queues` lists them.
#[derive(Debug, Serialize)]
pub struct ClusterQueues {
    queues: usize,
    messages_ready: usize,
    messages_unacked: usize,
}

#[derive(Debug, Serialize)]
pub struct ClusterInfo {
    node: String,
    cluster: bool,
    /// The Bus' connection to Redis (false on a single node).
    redis: bool,
    /// Why the registry could not be read (Redis down or slow); `nodes` then
    /// holds this node only.
    error: Option<String>,
    nodes: Vec<ClusterNode>,
    nodes_alive: usize,
    /// Sum of the alive nodes' users: a user with sessions on several nodes
    /// counts once per node.
    users_online: u64,
    sessions: u64,
    queues: ClusterQueues,
}

/// `GET /api/cluster`: the node registry (with heartbeat age), or this node
/// alone when it is not in a cluster or Redis does not answer.
pub async fn cluster(State(a): State<Admin>) -> ApiResult<ClusterInfo> {
    let tick = a.sampler.current();
    let o = &tick.overview;
    let now = unix_ms(std::time::SystemTime::now());
    let this = a.engine.node().to_owned();
    let local = || ClusterNode {
        this: true,
        heartbeat_age_ms: 0,
        name: this.clone(),
        address: a.engine.config.cluster.as_ref().and_then(|c| c.address.clone()),
        alive: true,
        version: o.version.to_owned(),
        started_ms: now.saturating_sub(o.uptime_secs * 1000),
        sessions: o.sessions as u64,
        users: o.users_online as u64,
        publish_rate: o.rates.publish,
        deliver_rate: o.rates.deliver,
        rss_bytes: crate::engine::process_rss_bytes(),
    };
    let in_cluster = a.engine.config.cluster.is_some();
    let redis = a.engine.bus().is_some_and(|b| b.is_connected());
    #[cfg(not(feature = "redis"))]
    let (nodes, error): (Vec<ClusterNode>, Option<String>) = (vec![local()], None);
    #[cfg(feature = "redis")]
    let (nodes, error) = if !in_cluster {
        (vec![local()], None)
    } else {
        // One bound for the whole read (it is a few commands), so a stalled
        // Redis costs the console one command timeout, not one per node.
        let limit = a.engine.cluster_redis().map_or(std::time::Duration::from_secs(2), |(_, t)| *t);
        let read = tokio::time::timeout(limit, crate::cluster::registry::nodes(&a.engine)).await;
        match read.unwrap_or_else(|_| Err(crate::bus::BusError::Unavailable("timed out".into()))) {
            Ok(list) => {
                let mut nodes: Vec<ClusterNode> =
                    list.into_iter().map(|v| ClusterNode::of(v.info, v.alive, &this, now)).collect();
                if !nodes.iter().any(|n| n.this) {
                    nodes.push(local());
                    nodes.sort_by(|x, y| x.name.cmp(&y.name));
                }
                (nodes, None)
            }
            Err(e) => (vec![local()], Some(format!("the node registry could not be read: {e}"))),
        }
    };
    let alive = nodes.iter().filter(|n| n.alive);
    Ok(Json(ClusterInfo {
        nodes_alive: alive.clone().count(),
        // Other nodes' figures come from Redis: never trusted not to overflow.
        users_online: alive.clone().fold(0u64, |t, n| t.saturating_add(n.users)),
        sessions: alive.fold(0u64, |t, n| t.saturating_add(n.sessions)),
        node: this.clone(),
        cluster: in_cluster,
        redis,
        error,
        nodes,
        queues: ClusterQueues {
            queues: o.queues,
            messages_ready: o.messages_ready,
            messages_unacked: o.messages_unacked,
        },
    }))
}

#[derive(Debug, Serialize)]
pub struct SessionInfo {
    id: u64,
    uid: String,
    vhost: String,
    protocol: &'static str,
    transport: &'static str,
    peer: Option<String>,
    connected_at: u64,
    resource: Option<String>,
}

impl SessionInfo {
    fn of(s: &SessionHandle) -> SessionInfo {
        SessionInfo {
            id: s.id,
            uid: s.uid.to_string(),
            vhost: s.vhost.to_string(),
            protocol: s.protocol.as_str(),
            transport: s.transport.as_str(),
            peer: s.peer.map(|p| p.to_string()),
            connected_at: unix_ms(s.connected_at),
            resource: s.resource.get().cloned(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PresenceOut {
    state: &'static str,
    status: String,
}

#[derive(Debug, Serialize)]
pub struct OnlineUser {
    uid: String,
    presence: PresenceOut,
    sessions: Vec<SessionInfo>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct UserQuery {
    project: Option<String>,
    q: Option<String>,
    #[serde(flatten)]
    paging: Paging,
}

fn online_user(a: &Admin, uid: &str, sessions: &[Arc<SessionHandle>]) -> OnlineUser {
    let (availability, status) = a.engine.presence.aggregate(uid);
    let mut sessions: Vec<SessionInfo> = sessions.iter().map(|s| SessionInfo::of(s)).collect();
    sessions.sort_by_key(|s| s.id);
    OnlineUser { uid: uid.to_owned(), presence: PresenceOut { state: availability.as_str(), status }, sessions }
}

pub async fn users(State(a): State<Admin>, q: Result<Query<UserQuery>, QueryRejection>) -> ApiResult<Page<OnlineUser>> {
    let q = query(q)?;
    let members: Option<HashSet<String>> = match q.project.as_deref().filter(|p| !p.is_empty()) {
        Some(p) => {
            let project = a.engine.directory().project(p).await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
            Some(project.ok_or_else(|| ApiError::NotFound(format!("no project '{p}'")))?.members.into_iter().collect())
        }
        None => None,
    };
    let mut by_user: BTreeMap<Arc<str>, Vec<Arc<SessionHandle>>> = BTreeMap::new();
    for s in a.engine.hub.sessions() {
        by_user.entry(s.uid.clone()).or_default().push(s);
    }
    let needle = q.q.as_deref().unwrap_or("");
    let matching: Vec<(Arc<str>, Vec<Arc<SessionHandle>>)> = by_user
        .into_iter()
        .filter(|(uid, _)| uid.contains(needle) && members.as_ref().is_none_or(|m| m.contains(&**uid)))
        .collect();
    // Page first, then build the (costlier) entries for that page only.
    let page = q.paging.apply(matching, a.engine.config.admin.max_page_size)?;
    let items = page.items.iter().map(|(uid, ss)| online_user(&a, uid, ss)).collect();
    Ok(Json(Page { total: page.total, page: page.page, per_page: page.per_page, items }))
}

pub async fn user(State(a): State<Admin>, uid: Result<Path<String>, PathRejection>) -> ApiResult<OnlineUser> {
    let uid = path(uid)?;
    let sessions = a.engine.hub.user_sessions(&uid);
    if sessions.is_empty() {
        return Err(ApiError::NotFound(format!("user '{uid}' has no session")));
    }
    Ok(Json(online_user(&a, &uid, &sessions)))
}

#[derive(Serialize)]
pub struct Kicked {
    kicked: usize,
}

pub async fn kick_user(State(a): State<Admin>, uid: Result<Path<String>, PathRejection>) -> ApiResult<Kicked> {
    let uid = path(uid)?;
    // Every node's sessions of the user; the count is this node's.
    let n = a.engine.kick_because(&uid, "kicked by an administrator");
    if n == 0 {
        return Err(ApiError::NotFound(format!("user '{uid}' has no session")));
    }
    tracing::info!(uid, sessions = n, "admin kicked a user");
    Ok(Json(Kicked { kicked: n }))
}

pub async fn kick_session(State(a): State<Admin>, id: Result<Path<u64>, PathRejection>) -> ApiResult<Kicked> {
    let id = path(id)?;
    let s = a.engine.hub.get(id).ok_or_else(|| ApiError::NotFound(format!("no session {id}")))?;
    s.close(CloseReason::new(CloseCode::Kicked, "kicked by an administrator"));
    tracing::info!(session = id, uid = %s.uid, "admin kicked a session");
    Ok(Json(Kicked { kicked: 1 }))
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct SessionQuery {
    protocol: Option<String>,
    #[serde(flatten)]
    paging: Paging,
}

pub async fn sessions(
    State(a): State<Admin>,
    q: Result<Query<SessionQuery>, QueryRejection>,
) -> ApiResult<Page<SessionInfo>> {
    let q = query(q)?;
    let mut all: Vec<Arc<SessionHandle>> = a
        .engine
        .hub
        .sessions()
        .into_iter()
        .filter(|s| q.protocol.as_deref().is_none_or(|p| p.is_empty() || s.protocol.as_str() == p))
        .collect();
    all.sort_unstable_by_key(|s| s.id);
    let page = q.paging.apply(all, a.engine.config.admin.max_page_size)?;
    let items = page.items.iter().map(|s| SessionInfo::of(s)).collect();
    Ok(Json(Page { total: page.total, page: page.page, per_page: page.per_page, items }))
}

#[derive(Serialize)]
pub struct ProjectInfo {
    id: String,
    name: String,
    members: Vec<String>,
    online: usize,
}

/// Most projects listed; the console filters by one project at a time.
const MAX_PROJECTS: usize = 1000;

pub async fn projects(State(a): State<Admin>) -> ApiResult<Vec<ProjectInfo>> {
    let list = a.engine.directory().projects(MAX_PROJECTS).await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let hub = &a.engine.hub;
    Ok(Json(
        list.into_iter()
            .map(|p| ProjectInfo {
                online: p.members.iter().filter(|m| !hub.user_sessions(m).is_empty()).count(),
                id: p.id,
                name: p.name,
                members: p.members,
            })
            .collect(),
    ))
}

#[derive(Debug, Serialize)]
pub struct QueueHistory {
    publish: Vec<f32>,
    deliver: Vec<f32>,
}

#[derive(Debug, Serialize)]
pub struct QueueRates {
    publish: f64,
    deliver: f64,
    ack: f64,
}

#[derive(Debug, Serialize)]
pub struct QueueInfo {
    vhost: String,
    name: String,
    durable: bool,
    exclusive: bool,
    auto_delete: bool,
    depth: usize,
    unacked: usize,
    consumers: usize,
    totals: TotalsOut,
    rates: QueueRates,
    history: QueueHistory,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct QueueQuery {
    vhost: Option<String>,
    q: Option<String>,
    sort: Option<String>,
    order: Option<String>,
    #[serde(flatten)]
    paging: Paging,
}

/// The numbers a queue listing sorts on, read once per queue.
struct QueueRow {
    queue: Arc<crate::router::Queue>,
    depth: usize,
    unacked: usize,
    consumers: usize,
    rates: Rates,
}

pub async fn queues(
    State(a): State<Admin>,
    q: Result<Query<QueueQuery>, QueryRejection>,
) -> ApiResult<Page<QueueInfo>> {
    let q = query(q)?;
    let needle = q.q.as_deref().unwrap_or("");
    let mut rows: Vec<QueueRow> = Vec::new();
    a.sampler.with_queues(|rate_of| {
        for v in a.engine.router.vhosts() {
            if q.vhost.as_deref().is_some_and(|want| !want.is_empty() && want != &*v.name) {
                continue;
            }
            for queue in v.queues().into_iter().filter(|x| x.name.contains(needle)) {
                rows.push(QueueRow {
                    depth: queue.depth(),
                    unacked: queue.unacked_count(),
                    consumers: queue.consumer_count(),
                    rates: rate_of(&queue.vhost, &queue.name).unwrap_or_default(),
                    queue,
                });
            }
        }
    });
    sort_queues(&mut rows, q.sort.as_deref().unwrap_or("name"), q.order.as_deref().unwrap_or("asc"))?;
    let page = q.paging.apply(rows, a.engine.config.admin.max_page_size)?;
    let items = page
        .items
        .into_iter()
        .map(|r| {
            let (publish, deliver) = a.sampler.with_queue(&r.queue.vhost, &r.queue.name, |t| {
                t.map(|t| (t.publish.iter().copied().collect(), t.deliver.iter().copied().collect()))
                    .unwrap_or_default()
            });
            QueueInfo {
                vhost: r.queue.vhost.to_string(),
                name: r.queue.name.to_string(),
                durable: r.queue.options.durable,
                exclusive: r.queue.options.exclusive.is_some(),
                auto_delete: r.queue.options.auto_delete,
                depth: r.depth,
                unacked: r.unacked,
                consumers: r.consumers,
                totals: TotalsOut::of(&r.queue.counters.snapshot(), false),
                rates: QueueRates { publish: r.rates.publish, deliver: r.rates.deliver, ack: r.rates.ack },
                history: QueueHistory { publish, deliver },
            }
        })
        .collect();
    Ok(Json(Page { total: page.total, page: page.page, per_page: page.per_page, items }))
}

fn sort_queues(rows: &mut [QueueRow], sort: &str, order: &str) -> Result<(), ApiError> {
    let by_name =
        |a: &QueueRow, b: &QueueRow| (&*a.queue.vhost, &*a.queue.name).cmp(&(&*b.queue.vhost, &*b.queue.name));
    let num =
        |f: fn(&QueueRow) -> f64| move |a: &QueueRow, b: &QueueRow| f(a).total_cmp(&f(b)).then_with(|| by_name(a, b));
    match sort {
        "name" => rows.sort_by(by_name),
        "depth" => rows.sort_by(num(|r| r.depth as f64)),
        "consumers" => rows.sort_by(num(|r| r.consumers as f64)),
        "unacked" => rows.sort_by(num(|r| r.unacked as f64)),
        "publish_rate" => rows.sort_by(num(|r| r.rates.publish)),
        "deliver_rate" => rows.sort_by(num(|r| r.rates.deliver)),
        other => {
            return Err(ApiError::BadRequest(format!(
                "cannot sort by '{other}' (name, depth, consumers, unacked, publish_rate, deliver_rate)"
            )))
        }
    }
    match order {
        "asc" => {}
        "desc" => rows.reverse(),
        other => return Err(ApiError::BadRequest(format!("order must be asc or desc, not '{other}'"))),
    }
    Ok(())
}

#[derive(Serialize)]
pub struct Purged {
    purged: usize,
}

pub async fn purge(State(a): State<Admin>, p: Result<Path<(String, String)>, PathRejection>) -> ApiResult<Purged> {
    let (vhost, name) = path(p)?;
    let v = a.engine.router.vhost(&vhost)?;
    let q = v.queue(&name).ok_or_else(|| RouteError::NoQueue(name.clone(), vhost.clone()))?;
    let n = q.purge();
    tracing::info!(vhost, queue = name, purged = n, "admin purged a queue");
    Ok(Json(Purged { purged: n }))
}

/// Deletes a queue with its bindings and messages (durable ones from the
/// store too); its consumers' sessions stop receiving from it. 204, or 404.
pub async fn delete_queue(
    State(a): State<Admin>,
    p: Result<Path<(String, String)>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let (vhost, name) = path(p)?;
    let v = a.engine.router.vhost(&vhost)?;
    let q = v.delete_queue(&name).ok_or_else(|| RouteError::NoQueue(name.clone(), vhost.clone()))?;
    tracing::info!(vhost, queue = name, durable = q.options.durable, "admin deleted a queue");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
pub struct ExchangeRates {
    publish: f64,
}

#[derive(Serialize)]
pub struct ExchangeInfo {
    vhost: String,
    name: String,
    #[serde(rename = "type")]
    kind: &'static str,
    bindings: usize,
    published: u64,
    rates: ExchangeRates,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct ExchangeQuery {
    vhost: Option<String>,
}

pub async fn exchanges(
    State(a): State<Admin>,
    q: Result<Query<ExchangeQuery>, QueryRejection>,
) -> ApiResult<Vec<ExchangeInfo>> {
    let q = query(q)?;
    let mut out = Vec::new();
    for v in a.engine.router.vhosts() {
        if q.vhost.as_deref().is_some_and(|want| !want.is_empty() && want != &*v.name) {
            continue;
        }
        for x in v.exchanges() {
            out.push(ExchangeInfo {
                vhost: v.name.to_string(),
                name: x.name.to_string(),
                kind: x.kind.as_str(),
                bindings: x.binding_count(),
                published: x.published.load(std::sync::atomic::Ordering::Relaxed),
                rates: ExchangeRates { publish: a.sampler.exchange_rate(&v.name, &x.name) },
            });
        }
    }
    out.sort_by(|a, b| (&a.vhost, &a.name).cmp(&(&b.vhost, &b.name)));
    Ok(Json(out))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    destination: String,
    body: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

#[derive(Serialize)]
pub struct Routed {
    routed: usize,
}

pub async fn publish(
    State(a): State<Admin>,
    body: Result<Json<PublishRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Routed> {
    let Json(req) = body.map_err(|e| {
        ApiError::BadRequest(format!("expected JSON {{destination, body, headers?}}: {}", e.body_text()))
    })?;
    let headers = req.headers.into_iter().collect();
    let n = a.engine.publish_to(&req.destination, headers, Bytes::from(req.body)).map_err(|e| match e {
        PublishError::Destination(d) => ApiError::BadRequest(d.to_string()),
        PublishError::Route(r) => r.into(),
    })?;
    Ok(Json(Routed { routed: n }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_caps_and_counts() {
        let p = Paging { page: Some(2), per_page: Some(3) };
        let page = p.apply((1..=8).collect::<Vec<_>>(), 10).unwrap();
        assert_eq!((page.total, page.items), (8, vec![4, 5, 6]));
        let past = Paging { page: Some(9), per_page: Some(3) }.apply(vec![1, 2], 10).unwrap();
        assert!(past.items.is_empty() && past.total == 2);
        assert!(matches!(
            Paging { page: Some(1), per_page: Some(11) }.apply(vec![1], 10),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(Paging { page: Some(0), per_page: None }.apply(vec![1], 10), Err(ApiError::BadRequest(_))));
        let default = Paging::default().apply((1..=30).collect::<Vec<_>>(), 20).unwrap();
        assert_eq!(
            (default.per_page, default.items.len()),
            (20, 20),
            "the default page size stays within max_page_size"
        );
    }

    #[test]
    fn paging_parses_from_the_query_string() {
        let uri = |q: &str| format!("http://h/api/users?{q}").parse::<axum::http::Uri>().unwrap();
        let Query(q) = Query::<UserQuery>::try_from_uri(&uri("q=al&page=2&per_page=10")).unwrap();
        assert_eq!((q.q.as_deref(), q.paging.page, q.paging.per_page), (Some("al"), Some(2), Some(10)));
        let Query(q) = Query::<QueueQuery>::try_from_uri(&uri("sort=depth&per_page=3")).unwrap();
        assert_eq!((q.sort.as_deref(), q.paging.page, q.paging.per_page), (Some("depth"), None, Some(3)));
        let Query(q) = Query::<SessionQuery>::try_from_uri(&uri("")).unwrap();
        assert_eq!((q.paging.page, q.paging.per_page), (None, None));
        assert!(Query::<SessionQuery>::try_from_uri(&uri("page=abc")).is_err());
        assert!(Query::<SessionQuery>::try_from_uri(&uri("per_page=-1")).is_err());
    }

    #[test]
    fn queues_sort_by_number_then_name() {
        let q = |name: &str, depth| QueueRow {
            queue: Arc::new(crate::router::Queue::new(
                "/",
                name,
                crate::router::QueueOptions { durable: false, exclusive: None, auto_delete: false },
                10,
                None,
            )),
            depth,
            unacked: 0,
            consumers: 0,
            rates: Rates::default(),
        };
        let mut rows = vec![q("b", 1), q("a", 5), q("c", 1)];
        sort_queues(&mut rows, "depth", "desc").unwrap();
        let names: Vec<&str> = rows.iter().map(|r| &*r.queue.name).collect();
        assert_eq!(names, ["a", "c", "b"]);
        assert!(sort_queues(&mut rows, "size", "asc").is_err());
        assert!(sort_queues(&mut rows, "depth", "up").is_err());
    }
}
