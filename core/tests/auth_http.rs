//! End to end: an engine whose `[auth.http]` points at a stand-in
//! rabbitmq-auth-backend-http service (axum, 127.0.0.1:0), and `[auth.jwt]`,
//! driven over a raw STOMP TCP socket.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::Uri;
use herald_core::{Config, Engine};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

type Log = Arc<Mutex<Vec<(String, HashMap<String, String>)>>>;

/// alice/pw and bob/pw may log in; vhost `/` only; nothing named `private`;
/// topic keys must start with `<username>.`.
async fn auth_service() -> (SocketAddr, Log) {
    let log: Log = Arc::default();
    let state = log.clone();
    let app = axum::Router::new().fallback(move |uri: Uri| {
        let log = state.clone();
        async move {
            let p: HashMap<String, String> = url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).into_owned().collect();
            let get = |k: &str| p.get(k).cloned().unwrap_or_default();
            let allow = match uri.path() {
                "/auth/user" => matches!((get("username").as_str(), get("password").as_str()), ("alice" | "bob", "pw")),
                "/auth/vhost" => get("vhost") == "/",
                "/auth/resource" => get("name") != "private",
                "/auth/topic" => get("routing_key").starts_with(&format!("{}.", get("username"))),
                _ => false,
            };
            log.lock().unwrap().push((uri.path().to_owned(), p));
            if allow { "allow" } else { "deny" }
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

struct Raw {
    s: TcpStream,
    pending: Vec<u8>,
}

impl Raw {
    async fn connect(addr: SocketAddr, login: &str, passcode: &str) -> (Raw, String) {
        let mut c = Raw { s: TcpStream::connect(addr).await.unwrap(), pending: Vec::new() };
        c.send(&format!("CONNECT\naccept-version:1.2\nhost:/\nlogin:{login}\npasscode:{passcode}\n\n\0")).await;
        let f = c.frame().await;
        (c, f)
    }

    async fn send(&mut self, s: &str) {
        self.s.write_all(s.as_bytes()).await.unwrap();
    }

    async fn frame(&mut self) -> String {
        loop {
            while self.pending.first().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                self.pending.remove(0);
            }
            if let Some(i) = self.pending.iter().position(|b| *b == 0) {
                let f: Vec<u8> = self.pending.drain(..=i).collect();
                return String::from_utf8_lossy(&f[..f.len() - 1]).into_owned();
            }
            let mut buf = [0u8; 65536];
            let n = timeout(Duration::from_secs(5), self.s.read(&mut buf)).await.expect("frame within 5 s").unwrap_or(0);
            if n == 0 {
                return String::new();
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
    }
}

fn header<'a>(frame: &'a str, name: &str) -> Option<&'a str> {
    frame.lines().skip(1).take_while(|l| !l.is_empty()).find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
}

fn asked(log: &Log, path: &str) -> Vec<HashMap<String, String>> {
    log.lock().unwrap().iter().filter(|(p, _)| p == path).map(|(_, q)| q.clone()).collect()
}

#[tokio::test]
async fn http_backend_and_jwt_over_stomp() {
    let (engine, addr, log) = start().await;

    // Allowed by the service.
    let (mut alice, f) = Raw::connect(addr, "alice", "pw").await;
    assert!(f.starts_with("CONNECTED\n"), "{f}");
    let user = &asked(&log, "/auth/user")[0];
    assert_eq!((user["username"].as_str(), user["password"].as_str()), ("alice", "pw"));
    assert_eq!(asked(&log, "/auth/vhost")[0]["vhost"], "/");

    // Denied by the service.
    let (_, f) = Raw::connect(addr, "mallory", "pw").await;
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
    let keys: Vec<String> = asked(&log, "/auth/topic").iter().map(|q| format!("{} {} {}", q["name"], q["permission"], q["routing_key"])).collect();
    assert_eq!(keys, ["amq.topic write alice.news", "amq.topic write bob.news"]);

    // An exchange the resource path denies.
    let (mut bob, f) = Raw::connect(addr, "bob", "pw").await;
    assert!(f.starts_with("CONNECTED\n"), "{f}");
    bob.send("SEND\ndestination:/exchange/private/x\n\nhi\0").await;
    let f = bob.frame().await;
    assert!(f.starts_with("ERROR\n"), "{f}");
    assert_eq!(header(&f, "message"), Some("access_refused"));
    let last = asked(&log, "/auth/resource").pop().unwrap();
    assert_eq!((last["resource"].as_str(), last["name"].as_str(), last["permission"].as_str()), ("exchange", "private", "write"));

    // A JWT as the passcode: the service is not asked who carol is.
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 60;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({ "sub": "carol", "exp": exp }),
        &jsonwebtoken::EncodingKey::from_secret(b"jwt-test-secret"),
    )
    .unwrap();
    let (_carol, f) = Raw::connect(addr, "carol", &token).await;
    assert!(f.starts_with("CONNECTED\n"), "{f}");
    assert!(asked(&log, "/auth/user").iter().all(|q| q["username"] != "carol"));
    // The same token for another login is refused.
    let (_, f) = Raw::connect(addr, "alice", &token).await;
    assert_eq!(header(&f, "message"), Some("Bad CONNECT"), "{f}");

    engine.stop(Duration::from_secs(1)).await;
}
