//! A stand-in rabbitmq-auth-backend-http service for the auth tests: an
//! axum server on 127.0.0.1:0 that records every request.
//!
//! Under `/auth/` (and `/post/`, the same answers):
//! - `user`: `alice`/`pw` → `allow administrator management`, `bob`/`pw` and
//!   `carol`/`pw` → `allow`, `weird` → `maybe`, anything else → `deny`;
//! - `vhost`: allow `/` only;
//! - `resource`: deny anything named `private`;
//! - `topic`: allow routing keys starting with `<username>.`.
//!
//! `/slow/*` answers `allow` after 2 s; `/fail/*` answers 500.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub method: String,
    pub query: Option<String>,
    pub content_type: Option<String>,
    pub params: HashMap<String, String>,
}

pub struct AuthService {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AuthService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AuthService {
    pub async fn start() -> AuthService {
        let log: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let state = log.clone();
        let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: String| {
            let log = state.clone();
            async move { answer(&log, method, uri, headers, body).await }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        AuthService { addr, log, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests to `path`, oldest first.
    pub fn requests(&self, path: &str) -> Vec<Recorded> {
        self.log.lock().iter().filter(|r| r.path == path).cloned().collect()
    }

    pub fn total(&self) -> usize {
        self.log.lock().len()
    }
}

async fn answer(log: &Mutex<Vec<Recorded>>, method: Method, uri: Uri, headers: HeaderMap, body: String) -> Response {
    let form = if method == Method::POST { body.as_str() } else { uri.query().unwrap_or("") };
    let params: HashMap<String, String> = url::form_urlencoded::parse(form.as_bytes()).into_owned().collect();
    let path = uri.path().to_owned();
    log.lock().push(Recorded {
        path: path.clone(),
        method: method.to_string(),
        query: uri.query().map(str::to_owned),
        content_type: headers.get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned),
        params: params.clone(),
    });
    let p = |k: &str| params.get(k).map(String::as_str).unwrap_or("");
    let (prefix, what) = path.trim_start_matches('/').split_once('/').unwrap_or(("", ""));
    match prefix {
        "slow" => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            return "allow".into_response();
        }
        "fail" => return (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        _ => {}
    }
    let allow = match what {
        "user" => match (p("username"), p("password")) {
            ("alice", "pw") => return "allow administrator management".into_response(),
            ("bob" | "carol", "pw") => true,
            ("weird", _) => return "maybe".into_response(),
            _ => false,
        },
        "vhost" => p("vhost") == "/",
        "resource" => p("name") != "private",
        "topic" => p("resource") == "topic" && p("routing_key").starts_with(&format!("{}.", p("username"))),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    if allow { "allow" } else { "deny" }.into_response()
}
