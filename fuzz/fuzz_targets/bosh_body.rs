//! BOSH requests (core/src/xmpp/bosh/): `<body/>` documents posted to the
//! endpoint's direct handler, as the front server calls it, with an echoing
//! XMPP application behind it. Runs on a paused clock, so waits and holds
//! cost nothing.
//!
//! Input: 1 configuration byte, then up to 8 request bodies separated by
//! NUL. `SID` in a body is replaced by the sid of the last session the
//! server created; a body starting with `!` is sent without waiting for its
//! answer (concurrent requests). Invariants:
//! - every request is answered, within `wait` plus the session's timeouts
//!   (no request hangs), with 200, 400 or 413 only;
//! - a 200 answer is a well-formed `<body/>` in the httpbind namespace, a
//!   413 comes only for a body over `max_body_bytes`;
//! - every stanza handed to the application obeys the stanza limits
//!   (depth counted from the stanza, attributes) and is no longer in the
//!   httpbind namespace.
#![no_main]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use herald_core::xmpp::bosh::{mount, BoshConfig, NS_HTTPBIND};
use herald_core::xmpp::link::{XmppIn, XmppRx, XmppTx};
use herald_core::xmpp::xml::{parse_element, Element, Limits};
use herald_fuzz::header;
use http::{HeaderMap, StatusCode};
use libfuzzer_sys::fuzz_target;

const FEATURES: &[u8] = b"<stream:features xmlns:stream='http://etherx.jabber.org/streams'/>";

fn depth(e: &Element) -> usize {
    1 + e.elements().map(depth).max().unwrap_or(0)
}

fn max_attrs(e: &Element) -> usize {
    e.attrs.len().max(e.elements().map(max_attrs).max().unwrap_or(0))
}

/// Echoes every stanza back, as a chatty XMPP session would.
async fn app<R: XmppRx, T: XmppTx>(mut rx: R, mut tx: T, seen: Arc<Mutex<Vec<Element>>>) {
    loop {
        match rx.recv().await {
            Ok(Some(XmppIn::Open { .. })) => {
                let _ = tx.open("fuzz-stream", "localhost").await;
                let _ = tx.send(Bytes::from_static(FEATURES)).await;
                let _ = tx.flush().await;
            }
            Ok(Some(XmppIn::Stanza(e))) => {
                let echo = e.to_bytes();
                seen.lock().unwrap().push(e);
                let _ = tx.send(echo).await;
                let _ = tx.flush().await;
            }
            Ok(Some(XmppIn::Close)) | Ok(None) | Err(_) => {
                tx.close(None).await;
                return;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let ([shape], rest) = header::<1>(data);
    let xml_limits = Limits {
        max_depth: 1 + usize::from(shape % 4),
        max_stanza_bytes: 512,
        max_attrs: 1 + usize::from((shape >> 2) % 8),
    };
    let config = BoshConfig {
        max_wait: Duration::from_secs(5),
        max_inactivity: Duration::from_secs(10),
        max_hold: 1 + u32::from(shape >> 7),
        max_requests: 2,
        polling: Duration::from_secs(u64::from((shape >> 5) & 1)),
        window: 2,
        max_body_bytes: 1024,
        max_pending_stanzas: 4,
        xml_limits,
        allowed_origins: None,
        // CORS credentials and the shaper do not change how a body is parsed.
        ..BoshConfig::default()
    };
    let max_body = config.max_body_bytes;
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().expect("runtime");
    rt.block_on(async move {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app_seen = seen.clone();
        let on_session = Arc::new(move |rx, tx, _peer| {
            tokio::spawn(app(rx, tx, app_seen.clone()));
        });
        let (_router, direct) = mount(config, on_session, &["/http-bind"]);
        let headers = HeaderMap::new();
        let addr = "127.0.0.1:5280".parse().expect("address");
        let mut sid = String::from("none");
        let mut running = Vec::new();
        let check = |status: StatusCode, body: &Bytes, sent: usize, sid: &mut String| match status {
            StatusCode::OK => {
                let generous = Limits { max_depth: 64, max_stanza_bytes: 1 << 20, max_attrs: 64 };
                let b = parse_element(body, &generous)
                    .unwrap_or_else(|e| panic!("answer not well-formed ({e}): {}", String::from_utf8_lossy(body)));
                assert!(b.is("body", NS_HTTPBIND), "answer is not a BOSH body");
                if let Some(s) = b.attr("sid") {
                    *sid = s.to_owned();
                }
            }
            StatusCode::BAD_REQUEST => {}
            StatusCode::PAYLOAD_TOO_LARGE => assert!(sent > max_body, "413 for {sent} bytes"),
            other => panic!("status {other}"),
        };
        for raw in rest.split(|&b| b == 0).take(8) {
            let (concurrent, raw) = match raw.strip_prefix(b"!") {
                Some(r) => (true, r),
                None => (false, raw),
            };
            let text = String::from_utf8_lossy(raw).replace("SID", &sid);
            let body = Bytes::from(text.into_bytes());
            let sent = body.len();
            let answer = tokio::time::timeout(Duration::from_secs(120), (direct.handler)(&headers, body, addr));
            if concurrent {
                running.push((tokio::spawn(answer), sent));
                tokio::task::yield_now().await;
                continue;
            }
            let resp = answer.await.expect("request never answered");
            check(resp.status(), resp.body(), sent, &mut sid);
        }
        for (handle, sent) in running {
            let resp = handle.await.expect("request task").expect("request never answered");
            check(resp.status(), resp.body(), sent, &mut sid);
        }
        for e in seen.lock().unwrap().iter() {
            assert!(depth(e) <= xml_limits.max_depth, "stanza of depth {} reached the app", depth(e));
            assert!(max_attrs(e) <= xml_limits.max_attrs, "element with {} attributes reached the app", max_attrs(e));
            assert_ne!(e.ns, NS_HTTPBIND, "stanza left in the httpbind namespace");
        }
    });
});
