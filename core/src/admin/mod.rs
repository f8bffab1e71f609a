//! The admin edge: a JSON API over the engine (overview, online users,
//! sessions, queues, exchanges, kick, purge, publish), a live stream of
//! changes (Server-Sent Events), Prometheus `/metrics`, the OpenAPI document
//! and the console UI at `/admin/`. Its own listener, bearer tokens from the
//! config. docs/admin-api.md is the reference.

pub mod api;
pub mod metrics;
pub mod sampler;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use futures_util::Stream;
use tokio::sync::{broadcast, Semaphore};

use crate::engine::{Engine, EngineError, EngineEvent, Listener};
use crate::transport::conn::{Admission, Gate};
use api::ApiError;
use sampler::{Sampler, Tick};

/// State shared by the admin handlers.
#[derive(Clone)]
pub struct Admin {
    pub engine: Engine,
    pub sampler: Arc<Sampler>,
    streams: Arc<Semaphore>,
}

impl Admin {
    pub fn new(engine: Engine) -> Admin {
        Admin {
            sampler: Sampler::new(engine.clone()),
            streams: Arc::new(Semaphore::new(engine.config.admin.max_streams)),
            engine,
        }
    }

    /// Whether the request carries one of the configured tokens. Compared in
    /// constant time so response timing does not leak a token's prefix.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        use subtle::ConstantTimeEq;
        let Some((scheme, given)) =
            headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.split_once(' '))
        else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return false;
        }
        let given = given.trim().as_bytes();
        self.engine.config.admin.tokens.iter().fold(false, |ok, t| ok | bool::from(t.as_bytes().ct_eq(given)))
    }
}

/// Starts the admin listener and the sampler when `admin.listen` is set.
pub async fn listen(engine: &Engine, admission: &Admission, bound: &mut Vec<Listener>) -> Result<(), EngineError> {
    let Some(addr) = engine.config.admin.listen else { return Ok(()) };
    if engine.config.admin.tokens.is_empty() {
        tracing::warn!("admin API enabled with no admin.tokens: every request will be refused");
    }
    let (l, local) = crate::transport::tcp::bind(addr, "admin").await?;
    bound.push(Listener { name: "admin", addr: local });
    let admin = Admin::new(engine.clone());
    admission.tasks.spawn(admin.sampler.clone().run());
    let app = router(admin);
    // Its own cap, `connections.admin_max_connections`, apart from
    // `limits.max_connections` so a node full of clients can still be
    // administered.
    let admission = admission.with_gate(Arc::new(Gate::admin(&engine.config)));
    admission.tasks.spawn(serve(engine.clone(), admission.clone(), l, app));
    Ok(())
}

/// The admin accept loop: hyper per connection, with the same deadlines as
/// the client listeners (a request head within
/// `connections.header_timeout_ms`, nothing idle past
/// `connections.idle_timeout_ms`; live streams write every 15 s); beyond
/// the admin gate's cap a client gets a 503.
async fn serve(engine: Engine, admission: Admission, listener: tokio::net::TcpListener, app: Router) {
    use crate::transport::{conn, http1, tcp};
    let c = &engine.config.connections;
    let limits = http1::Http1Limits {
        header_timeout: Duration::from_millis(c.header_timeout_ms),
        body_timeout: Duration::from_millis(c.body_timeout_ms),
        idle_timeout: Duration::from_millis(c.idle_timeout_ms),
        ..Default::default()
    };
    let (gate, shutdown) = (admission.gate.clone(), admission.shutdown.clone());
    tcp::accept_http(admission, listener, "admin", move |stream, addr| {
        let io = conn::Idle::new(stream, limits.idle_timeout);
        let (app, limits, shutdown, gate) = (app.clone(), limits.clone(), shutdown.clone(), gate.clone());
        async move { http1::serve_with_hyper(io, addr, app, Some(gate), &limits, shutdown).await }
    })
    .await
}

/// A request body must arrive within `connections.body_timeout_ms` (408
/// after): hyper bounds the head, not the body. Admin bodies are small
/// (`DefaultBodyLimit`), so they are read here, whole, before the handler.
async fn body_deadline(State(a): State<Admin>, req: Request, next: Next) -> Response {
    let deadline = Duration::from_millis(a.engine.config.connections.body_timeout_ms);
    let limit = a.engine.config.limits.max_frame_bytes + 64 * 1024;
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(deadline, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await,
        Ok(Err(_)) => (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response(),
        Err(_) => (StatusCode::REQUEST_TIMEOUT, "request body not complete in time (connections.body_timeout_ms)")
            .into_response(),
    }
}

pub fn router(admin: Admin) -> Router {
    let cfg = &admin.engine.config;
    let mut protected = Router::new()
        .route("/api/overview", get(api::overview))
        .route("/api/history", get(api::history))
        .route("/api/users", get(api::users))
        .route("/api/users/{uid}", get(api::user))
        .route("/api/users/{uid}/kick", post(api::kick_user))
        .route("/api/sessions", get(api::sessions))
        .route("/api/sessions/{id}/kick", post(api::kick_session))
        .route("/api/projects", get(api::projects))
        .route("/api/queues", get(api::queues))
        .route("/api/queues/{vhost}/{name}", delete(api::delete_queue))
        .route("/api/queues/{vhost}/{name}/purge", post(api::purge))
        .route("/api/exchanges", get(api::exchanges))
        .route("/api/publish", post(api::publish))
        .route("/api/stream", get(stream));
    let mut public = Router::new()
        .route("/api/openapi.json", get(openapi))
        .route("/admin", get(|| async { Redirect::permanent("/admin/") }))
        .route("/admin/", get(ui))
        .route("/admin/{*path}", get(ui))
        .route("/", get(|| async { Redirect::temporary("/admin/") }));
    if cfg.admin.metrics_public {
        public = public.route("/metrics", get(metrics));
    } else {
        protected = protected.route("/metrics", get(metrics));
    }
    let protected = protected.route_layer(middleware::from_fn_with_state(admin.clone(), require_token));
    public
        .merge(protected)
        .fallback(|| async { ApiError::NotFound("no such route; see /api/openapi.json".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(cfg.limits.max_frame_bytes + 64 * 1024))
        .layer(middleware::from_fn_with_state(admin.clone(), body_deadline))
        .layer(middleware::from_fn_with_state(admin.clone(), cors))
        .with_state(admin)
}

async fn require_token(State(a): State<Admin>, req: Request, next: Next) -> Response {
    if a.authorized(req.headers()) {
        next.run(req).await
    } else {
        ApiError::Unauthorized.into_response()
    }
}

/// CORS for the console running elsewhere (Tauri, a dev server). Preflights
/// are answered here, before the token check, as browsers send them without
/// credentials.
async fn cors(State(a): State<Admin>, req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let allowed = origin.as_ref().and_then(|o| {
        let origins = &a.engine.config.admin.cors_origins;
        if origins.iter().any(|x| x == "*") {
            Some(HeaderValue::from_static("*"))
        } else {
            o.to_str().ok().filter(|o| origins.iter().any(|x| x == o)).map(|_| o.clone())
        }
    });
    let preflight = req.method() == Method::OPTIONS;
    let mut resp = if preflight {
        if allowed.is_none() {
            return (StatusCode::FORBIDDEN, "origin not allowed (admin.cors_origins)").into_response();
        }
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(req).await
    };
    if let Some(allowed) = allowed {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        if preflight {
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, DELETE, OPTIONS"));
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("authorization, content-type"));
            h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        }
    }
    resp
}

const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn metrics(State(a): State<Admin>) -> Response {
    let tick = a.sampler.current();
    let mut shared = Vec::new();
    for v in a.engine.router.vhosts() {
        for q in v.queues().into_iter().filter(|q| q.options.exclusive.is_none()) {
            shared.push((v.name.clone(), q.name.clone(), q.depth(), q.consumer_count()));
        }
    }
    let gauges: Vec<metrics::QueueGauge> = shared
        .iter()
        .map(|(v, n, ready, consumers)| metrics::QueueGauge { vhost: v, name: n, ready: *ready, consumers: *consumers })
        .collect();
    let mut text = metrics::render(&tick.overview, &gauges);
    metrics::render_memory(&mut text, &a.engine.check_memory());
    if let Some(disk) = &a.engine.disk {
        metrics::render_disk(&mut text, &disk.counters);
    }
    if let Some(bus) = a.engine.bus() {
        metrics::render_bus(&mut text, &bus.stats(), bus.is_connected());
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

fn tick_event(t: &Tick) -> Event {
    Event::default().event("overview").data(serde_json::to_string(t).expect("tick serializes"))
}

fn change_event(e: &EngineEvent) -> Option<Event> {
    let name = match e {
        EngineEvent::Session { .. } => "session",
        EngineEvent::Presence { .. } => "presence",
        EngineEvent::Message { .. } => return None,
    };
    Some(Event::default().event(name).data(serde_json::to_string(e).expect("event serializes")))
}

struct StreamState {
    first: Option<Arc<Tick>>,
    ticks: tokio::sync::watch::Receiver<Option<Arc<Tick>>>,
    changes: broadcast::Receiver<EngineEvent>,
    shutdown: tokio_util::sync::CancellationToken,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

/// `GET /api/stream`: an `overview` event per sampler tick, and `session` /
/// `presence` events as they happen. Ends when the engine stops.
async fn stream(State(a): State<Admin>) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let permit = a.streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::Limit(format!(
            "at most {} live streams are open (admin.max_streams)",
            a.engine.config.admin.max_streams
        ))
    })?;
    let st = StreamState {
        ticks: a.sampler.subscribe(),
        changes: a.engine.changes(),
        first: Some(a.sampler.current()),
        shutdown: a.engine.shutdown.clone(),
        _permit: permit,
    };
    let events = futures_util::stream::unfold(st, |mut st| async move {
        if let Some(t) = st.first.take() {
            return Some((Ok(tick_event(&t)), st));
        }
        loop {
            tokio::select! {
                _ = st.shutdown.cancelled() => return None,
                r = st.ticks.changed() => {
                    r.ok()?;
                    let t = st.ticks.borrow_and_update().clone();
                    if let Some(t) = t {
                        return Some((Ok(tick_event(&t)), st));
                    }
                }
                r = st.changes.recv() => match r {
                    Ok(e) => if let Some(ev) = change_event(&e) {
                        return Some((Ok(ev), st));
                    },
                    Err(broadcast::error::RecvError::Lagged(n)) => return Some((Ok(Event::default().comment(format!("lag {n}"))), st)),
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// The built console from `admin.ui_dir`. Paths are confined to that
/// directory: no `..`, no absolute parts.
async fn ui(State(a): State<Admin>, uri: Uri) -> Response {
    let Some(dir) = a.engine.config.admin.ui_dir.clone() else {
        return (
            StatusCode::NOT_FOUND,
            "the console is not configured: set admin.ui_dir to the built admin-app (npm run build -w herald-admin)",
        )
            .into_response();
    };
    let rel = uri.path().strip_prefix("/admin/").unwrap_or("");
    let rel = if rel.is_empty() { "index.html" } else { rel };
    let Some(path) = confined(&dir, rel) else {
        return (StatusCode::BAD_REQUEST, "bad path").into_response();
    };
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            let cache = if rel == "index.html" { "no-cache" } else { "public, max-age=3600" };
            ([(header::CONTENT_TYPE, content_type(rel)), (header::CACHE_CONTROL, cache)], bytes).into_response()
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && rel == "index.html" => (
            StatusCode::NOT_FOUND,
            format!("the console is not built in {}: run npm run build -w herald-admin", dir.display()),
        )
            .into_response(),
        Err(_) => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

fn confined(dir: &std::path::Path, rel: &str) -> Option<std::path::PathBuf> {
    use std::path::Component;
    let p = std::path::Path::new(rel);
    if rel.contains('\\') || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(dir.join(p))
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ui_paths_stay_inside_the_directory() {
        let d = std::path::Path::new("/srv/ui");
        assert_eq!(confined(d, "assets/app.js").unwrap(), std::path::Path::new("/srv/ui/assets/app.js"));
        for bad in ["../etc/passwd", "assets/../../x", "/etc/passwd", "a\\..\\b", "./x"] {
            assert!(confined(d, bad).is_none(), "{bad} refused");
        }
    }

    #[test]
    fn tokens_are_checked_exactly() {
        let config: crate::Config = toml::from_str("[admin]\ntokens = [\"sekret-token-1\"]\n").unwrap();
        let admin = Admin::new(Engine::new(config).unwrap());
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            m
        };
        assert!(admin.authorized(&h("Bearer sekret-token-1")));
        assert!(admin.authorized(&h("bearer sekret-token-1")), "the scheme is case-insensitive (RFC 7235)");
        for bad in ["Bearer sekret-token-", "Bearer sekret-token-12", "sekret-token-1", "Basic sekret-token-1"] {
            assert!(!admin.authorized(&h(bad)), "{bad} refused");
        }
        assert!(!admin.authorized(&HeaderMap::new()));
    }
}
