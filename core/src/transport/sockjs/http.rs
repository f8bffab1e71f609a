//! SockJS HTTP plumbing and the static endpoints: response helpers,
//! caching and CORS headers, the greeting, `/info`, the `OPTIONS` answers
//! and the iframe page.
//!
//! May import: axum/http types, the shared CORS helpers
//! ([`crate::transport::http_session::Cors`]) and the endpoint's [`Shared`] state.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{Sh, Shared};
use crate::transport::http_session::Cors;

/// One year: caching of OPTIONS answers and the iframe page.
const ONE_YEAR_SECS: u64 = 31_536_000;
pub(super) const NO_CACHE: &str = "no-store, no-cache, must-revalidate, max-age=0";
const CACHE_YEAR: &str = "public, max-age=31536000";
pub(super) const JS: &str = "application/javascript; charset=UTF-8";
pub(super) const TEXT: &str = "text/plain; charset=UTF-8";
pub(super) const HTML: &str = "text/html; charset=UTF-8";

#[derive(Deserialize)]
pub(super) struct Ids {
    server: String,
    pub session: String,
}

impl Ids {
    /// Neither part may be empty or contain a dot.
    pub(super) fn valid(&self) -> bool {
        let ok = |s: &str| !s.is_empty() && !s.contains('.');
        ok(&self.server) && ok(&self.session)
    }
}

pub(super) fn not_found() -> Response {
    StatusCode::NOT_FOUND.into_response()
}

pub(super) fn response(status: StatusCode, content_type: Option<&'static str>, body: Body) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    if let Some(ct) = content_type {
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    resp
}

pub(super) fn set(resp: &mut Response, name: HeaderName, value: &'static str) {
    resp.headers_mut().insert(name, HeaderValue::from_static(value));
}

pub(super) fn no_cache(resp: &mut Response) {
    set(resp, header::CACHE_CONTROL, NO_CACHE);
}

pub(super) fn cache_for_a_year(resp: &mut Response) {
    set(resp, header::CACHE_CONTROL, CACHE_YEAR);
    let expires = http_date(SystemTime::now() + Duration::from_secs(ONE_YEAR_SECS));
    if let Ok(v) = HeaderValue::from_str(&expires) {
        resp.headers_mut().insert(header::EXPIRES, v);
    }
}

/// CORS as configured (`connections.cors_origins`, `cors_credentials`):
/// any origin without credentials by default. SockJS servers traditionally
/// echo the origin with credentials, which lets any page make credentialed
/// requests; sockjs-client's XHR transports ask for credentials, so pages on
/// another origin need `cors_credentials` and their origin listed.
pub(super) fn cors(config: &Cors, req: &HeaderMap, resp: &mut Response) {
    config.apply(req, resp.headers_mut());
    if let Some(v) = req.get(header::ACCESS_CONTROL_REQUEST_HEADERS).filter(|v| !v.is_empty()) {
        resp.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
    }
}

/// A request from a page whose origin is not allowed.
pub(super) fn forbidden_origin() -> Response {
    response(StatusCode::FORBIDDEN, Some(TEXT), Body::from("origin not allowed (connections.cors_origins)\n"))
}

pub(super) fn error500(msg: &'static str) -> Response {
    response(StatusCode::INTERNAL_SERVER_ERROR, Some(TEXT), Body::from(msg))
}

/// RFC 7231 IMF-fixdate.
pub(super) fn http_date(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since the epoch (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub(super) async fn greeting() -> Response {
    response(StatusCode::OK, Some(TEXT), Body::from("Welcome to SockJS!\n"))
}

pub(super) async fn info(State(shared): Sh, headers: HeaderMap) -> Response {
    let body = format!(
        "{{\"websocket\":{},\"origins\":[\"*:*\"],\"cookie_needed\":false,\"entropy\":{}}}",
        shared.config.websocket,
        rand::random::<u32>()
    );
    let mut resp = response(StatusCode::OK, Some("application/json; charset=UTF-8"), Body::from(body));
    no_cache(&mut resp);
    cors(&shared.config.cors, &headers, &mut resp);
    resp
}

fn options(shared: &Shared, headers: &HeaderMap, methods: &'static str) -> Response {
    let mut resp = response(StatusCode::NO_CONTENT, None, Body::empty());
    cache_for_a_year(&mut resp);
    set(&mut resp, header::ACCESS_CONTROL_MAX_AGE, "31536000");
    set(&mut resp, header::ACCESS_CONTROL_ALLOW_METHODS, methods);
    cors(&shared.config.cors, headers, &mut resp);
    resp
}

pub(super) async fn options_get(State(shared): Sh, headers: HeaderMap) -> Response {
    options(&shared, &headers, "OPTIONS, GET")
}

pub(super) async fn options_post(State(shared): Sh, headers: HeaderMap) -> Response {
    options(&shared, &headers, "OPTIONS, POST")
}

pub(super) fn iframe_page(sockjs_url: &str) -> String {
    format!(
        r#"<!DOCTYPE html>
<html>
<head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
  <script>
    document.domain = document.domain;
    _sockjs_onload = function(){{SockJS.bootstrap_iframe();}};
  </script>
  <script src="{sockjs_url}"></script>
</head>
<body>
  <h2>Don't panic!</h2>
  <p>This is a SockJS hidden iframe. It's used for cross domain magic.</p>
</body>
</html>"#
    )
}

/// `/iframe.html` and versioned variants like `/iframe-1.6.1.html`.
pub(super) async fn iframe_html(State(shared): Sh, Path(file): Path<String>, headers: HeaderMap) -> Response {
    let valid = file
        .strip_prefix("iframe")
        .and_then(|rest| rest.strip_suffix(".html"))
        .is_some_and(|mid| mid.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b)));
    if !valid {
        return not_found();
    }
    let etag = shared.iframe_etag.as_str();
    let mut resp = if headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == etag.as_bytes()) {
        response(StatusCode::NOT_MODIFIED, None, Body::empty())
    } else {
        response(StatusCode::OK, Some(HTML), Body::from(shared.iframe.clone()))
    };
    cache_for_a_year(&mut resp);
    if let Ok(v) = HeaderValue::from_str(etag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(UNIX_EPOCH + Duration::from_secs(951_782_400)), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(http_date(UNIX_EPOCH + Duration::from_secs(1_700_000_000)), "Tue, 14 Nov 2023 22:13:20 GMT");
    }
}
