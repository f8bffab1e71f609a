//! End to end: an engine whose `[auth.http]` points at a stand-in
//! rabbitmq-auth-backend-http service (axum, 127.0.0.1:0), and `[auth.jwt]`,
//! driven over a raw STOMP TCP socket.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::Uri;
use herald_core::{Config, Engine};

mod common;
use common::{header, Raw};

type Log = Arc<Mutex<Vec<(String, HashMap<String, String>)>>>;

/// alice/pw and bob/pw may log in; vhost `/` only; nothing named `private`;
/// topic keys must start with `<username>.`.
async fn auth_service() -> (SocketAddr, Log) {
    let log: Log = Arc::default();
    let state = log.clone();
    let app = axum::Router::new().fallback(move |uri: Uri| {
        let log = state.clone();
        async move {
            let p: HashMap<String, String> =
                url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).into_owned().collect();
            let get = |k: &str| p.get(k).cloned().unwrap_or_default();
            let allow = match uri.path() {
                "/auth/user" => matches!((get("username").as_str(), get("password").as_str()), ("alice" | "bob", "pw")),
                "/auth/vhost" => get("vhost") == "/",
                "/auth/resource" => get("name") != "private",
                "/auth/topic" => get("routing_key").starts_with(&format!("{}.", get("username"))),
                _ => false,
            };
            log.lock().unwrap().push((uri.path().to_owned(), p));
            if allow {
                "allow"
            } else {
                "deny"
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, log)
}

async fn start() -> (Engine, SocketAddr, Log) {
    let (svc, log) = auth_service().await;
    let text = format!(
        r#"
[stomp]
listen = "127.0.0.1:0"
[http]
listen = "off"
[[vhosts]]
name = "/"
exchanges = [{{ name = "private", type = "fanout" }}]
[auth.http]
user_path = "http://{svc}/auth/user"
vhost_path = "http://{svc}/auth/vhost"
resource_path = "http://{svc}/auth/resource"
topic_path = "http://{svc}/auth/topic"
[auth.jwt]
hs256_secret = "jwt-test-secret"
"#
    );
    let engine = Engine::new(Config::from_toml_str(&text).expect("test config")).expect("engine");
    let listeners = engine.start().await.expect("start");
    let addr = listeners.iter().find(|l| l.name == "stomp-tcp").expect("stomp listener").addr;
    (engine, addr, log)
}

fn asked(log: &Log, path: &str) -> Vec<HashMap<String, String>> {
    log.lock().unwrap().iter().filter(|(p, _)| p == path).map(|(_, q)| q.clone()).collect()
}

#[tokio::test]
async fn http_backend_and_jwt_over_stomp() {
    let (engine, addr, log) = start().await;

    // Allowed by the service.
    let (mut alice, f) = Raw::login(addr, "alice", "pw").await;
    assert!(f.starts_with("CONNECTED\n"), "{f}");
    let user = &asked(&log, "/auth/user")[0];
    assert_eq!((user["username"].as_str(), user["password"].as_str()), ("alice", "pw"));
    assert_eq!(asked(&log, "/auth/vhost")[0]["vhost"], "/");
    // The client's address reaches the service (issue 19: `ip` was empty).
    assert_eq!(asked(&log, "/auth/vhost")[0]["ip"], "127.0.0.1");
    assert_eq!(user["ip"], "127.0.0.1");

    // Denied by the service.
    let (_, f) = Raw::login(addr, "mallory", "pw").await;
    assert!(f.starts_with("ERROR\n"), "{f}");
    assert_eq!(header(&f, "message"), Some("Bad CONNECT"));

    // Topic permission with the real routing key: own key passes, another's is refused.
    alice.send("SEND\ndestination:/topic/alice.news\nreceipt:r1\n\nhi\0").await;
    let f = alice.frame().await;
    assert!(f.starts_with("RECEIPT\n"), "{f}");
    alice.send("SEND\ndestination:/topic/bob.news\n\nhi\0").await;
    let f = alice.frame().await;
    assert!(f.starts_with("ERROR\n"), "{f}");
    assert_eq!(header(&f, "message"), Some("access_refused"));
    let keys: Vec<String> = asked(&log, "/auth/topic")
        .iter()
        .map(|q| format!("{} {} {}", q["name"], q["permission"], q["routing_key"]))
        .collect();
    assert_eq!(keys, ["amq.topic write alice.news", "amq.topic write bob.news"]);

    // An exchange the resource path denies.
    let (mut bob, f) = Raw::login(addr, "bob", "pw").await;
    assert!(f.starts_with("CONNECTED\n"), "{f}");
    bob.send("SEND\ndestination:/exchange/private/x\n\nhi\0").await;
    let f = bob.frame().await;
    assert!(f.starts_with("ERROR\n"), "{f}");
    assert_eq!(header(&f, "message"), Some("access_refused"));
    let last = asked(&log, "/auth/resource").pop().unwrap();
    assert_eq!(
        (last["resource"].as_str(), last["name"].as_str(), last["permission"].as_str()),
        ("exchange", "private", "write")
    );

    // A JWT as the passcode: the service is not asked who carol is.
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 60;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({ "sub": "carol", "exp": exp }),
        &jsonwebtoken::EncodingKey::from_secret(b"jwt-test-secret"),
    )
    .unwrap();
    let (_carol, f) = Raw::login(addr, "carol", &token).await;
    assert!(f.starts_with("CONNECTED\n"), "{f}");
    assert!(asked(&log, "/auth/user").iter().all(|q| q["username"] != "carol"));
    // The same token for another login is refused.
    let (_, f) = Raw::login(addr, "alice", &token).await;
    assert_eq!(header(&f, "message"), Some("Bad CONNECT"), "{f}");

    engine.stop(Duration::from_secs(1)).await;
}
