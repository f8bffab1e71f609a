//! `engine.useExpressAuth(app, paths?, authTimeoutMs?)`: an application that
//! already serves rabbitmq-auth-backend-http routes (`/auth/user`, …) answers
//! Herald's auth questions in-process. Requests are made by the package's
//! `express-auth.js` (`inject(app, { method, url, headers, payload, timeoutMs })`):
//! real HTTP/1.1 through Node's `http` machinery over an in-memory stream, so
//! the app's own route handlers run, no socket is opened and the app need not listen.
//!
//! The protocol is core's [`HttpBackend`] (the plugin's parameters, `tags`
//! included, its `allow [tags…]` / `deny` bodies, the timeout, failing
//! closed); this module is only its transport, [`Injector`], and the
//! mapping of `useExpressAuth`'s arguments onto an `[auth.http]`. The cache is
//! off: every question reaches the app's handlers, so an answer the app
//! changes takes effect at once, as before. Only HTTP status 200 and 201
//! carry an answer (as in the plugin); anything else fails closed.
//!
//! The injector is registered once by the package entry point (`main.js`);
//! it bounds each request by `timeoutMs` itself too, so that a handler that
//! never answers leaves nothing open on the JS side after this side gave up.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use herald_core::auth::http::AuthTransport;
use herald_core::auth::{BoxFuture, HttpBackend};
use herald_core::config::{HttpAuthConfig, HttpAuthMethod};
use napi::bindgen_prelude::{FnArgs, FromNapiValue, Function, FunctionRef, Object, ToNapiValue, Unknown};
use napi::threadsafe_function::ThreadsafeFunction;
use napi::UnknownRef;
use napi::{Env, JsValue, Status, ValueType};
use napi_derive::napi;

use crate::error::{Code, HeraldError};
use crate::js::{Eventually, InjectReply, Raw};

type Inject = FunctionRef<FnArgs<(Raw, Raw)>, Eventually<InjectReply>>;

thread_local! {
    /// `express-auth.js`'s `inject`, set by `main.js` on this thread's Node environment.
    static INJECTOR: RefCell<Option<Inject>> = const { RefCell::new(None) };
}

/// Called once by the package entry point with `express-auth.js`'s `inject`.
#[napi(js_name = "__setInjector", skip_typescript)]
pub fn set_injector(inject: Function<FnArgs<(Raw, Raw)>, Eventually<InjectReply>>) -> napi::Result<()> {
    let r = inject.create_ref()?;
    INJECTOR.with(|i| *i.borrow_mut() = Some(r));
    Ok(())
}

/// Where an Express app serves the rabbitmq-auth-backend-http routes. Each
/// path may be omitted to keep its default.
#[napi(object)]
pub struct ExpressAuthPaths {
    /// Login check. Default `/auth/user`.
    pub user: Option<String>,
    /// Virtual host check. Default `/auth/vhost`.
    pub vhost: Option<String>,
    /// Exchange and queue check. Default `/auth/resource`.
    pub resource: Option<String>,
    /// Topic (routing key) check. Default `/auth/topic`.
    pub topic: Option<String>,
    /// `'GET'` (the default: parameters in the query string) or `'POST'`
    /// (an `application/x-www-form-urlencoded` body, as the plugin's `http_method = post`).
    #[napi(ts_type = "'GET' | 'POST'")]
    pub method: Option<String>,
}

/// One request to the app.
pub struct Request {
    method: &'static str,
    url: String,
    form: Option<String>,
}

type Dispatch = ThreadsafeFunction<Request, Eventually<InjectReply>, FnArgs<(Raw, Raw)>, Status, false, true>;

/// The transport of a `useExpressAuth` backend: each question is injected
/// into the app (on the JS thread) and its reply awaited.
pub struct Injector {
    dispatch: Dispatch,
}

/// `app`'s routes as the engine's authenticator and authorizer. Runs on the
/// JS thread (binds `app` to the registered `inject`).
pub fn backend(
    env: &Env,
    app: Unknown,
    paths: Option<ExpressAuthPaths>,
    timeout: Duration,
) -> Result<HttpBackend, HeraldError> {
    if app.get_type().map_err(arg)? != ValueType::Function {
        return Err(HeraldError::new(
            Code::Argument,
            "useExpressAuth: `app` must be an Express app (a request handler function)",
        ));
    }
    let paths =
        paths.unwrap_or(ExpressAuthPaths { user: None, vhost: None, resource: None, topic: None, method: None });
    let method = match paths.method.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("GET") => HttpAuthMethod::Get,
        Some("POST") => HttpAuthMethod::Post,
        Some(other) => {
            return Err(HeraldError::new(
                Code::Argument,
                format!("useExpressAuth: method {other:?} is not 'GET' or 'POST'"),
            ))
        }
    };
    let inject = INJECTOR
        .with(|i| i.borrow().as_ref().map(|r| r.borrow_back(env)).transpose())
        .map_err(arg)?
        .ok_or_else(|| {
            HeraldError::new(
                Code::State,
                "useExpressAuth: the in-process injector is not registered; load the package through its entry point (require('herald'))",
            )
        })?;
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    // The app stays referenced for the life of this backend's threadsafe
    // function (released when the engine drops it).
    // Owned by the callback below, which only runs (and is dropped) on the JS thread.
    let app: UnknownRef<false> = unsafe { UnknownRef::from_napi_value(env.raw(), app.raw()) }.map_err(arg)?;
    let dispatch: Dispatch = inject
        .build_threadsafe_function::<Request>()
        .callee_handled::<false>()
        .weak::<true>()
        .build_callback(move |ctx| {
            let app = unsafe { <&UnknownRef<false> as ToNapiValue>::to_napi_value(ctx.env.raw(), &app)? };
            let mut options = Object::new(&ctx.env)?;
            options.set("method", ctx.value.method)?;
            options.set("url", ctx.value.url)?;
            // f64: a JS number (u64 has no lossless N-API conversion; the value is at most u32::MAX).
            options.set("timeoutMs", timeout_ms as f64)?;
            if let Some(form) = ctx.value.form {
                let mut headers = Object::new(&ctx.env)?;
                headers.set("content-type", "application/x-www-form-urlencoded")?;
                options.set("headers", Raw(headers.raw()))?;
                options.set("payload", form)?;
            }
            Ok(FnArgs::from((Raw(app), Raw(options.raw()))))
        })
        .map_err(arg)?;
    let config = HttpAuthConfig {
        user_path: paths.user.unwrap_or_else(|| "/auth/user".into()),
        vhost_path: Some(paths.vhost.unwrap_or_else(|| "/auth/vhost".into())),
        resource_path: Some(paths.resource.unwrap_or_else(|| "/auth/resource".into())),
        topic_path: Some(paths.topic.unwrap_or_else(|| "/auth/topic".into())),
        method,
        timeout_ms,
        cache_ttl_ms: 0,
        ..HttpAuthConfig::default()
    };
    Ok(HttpBackend::with_transport(Arc::new(Injector { dispatch }), &config))
}

impl AuthTransport for Injector {
    fn request<'a>(
        &'a self,
        method: HttpAuthMethod,
        path: &'a str,
        params: &'a [(&'a str, &'a str)],
    ) -> BoxFuture<'a, Result<(u16, String), String>> {
        Box::pin(async move {
            let query = encode(params);
            let request = match method {
                HttpAuthMethod::Post => Request { method: "POST", url: path.to_owned(), form: Some(query) },
                HttpAuthMethod::Get => {
                    let sep = if path.contains('?') { '&' } else { '?' };
                    Request { method: "GET", url: format!("{path}{sep}{query}"), form: None }
                }
            };
            let what = format!("useExpressAuth {} {path}", request.method);
            let reply = async { self.dispatch.call_async_catch(request).await?.settle().await }
                .await
                .map_err(|e| format!("{what} failed: {}", e.reason))?;
            // The plugin's answers are 200 and 201 (core's HTTP rule would also take 202–299).
            if reply.status != 200 && reply.status != 201 {
                return Err(format!("{what} answered HTTP {}", reply.status));
            }
            Ok((reply.status as u16, reply.body))
        })
    }
}

fn arg(e: napi::Error) -> HeraldError {
    HeraldError::new(Code::Argument, format!("useExpressAuth: {}", e.reason))
}

/// `application/x-www-form-urlencoded`, as the plugin's `quote_plus`: unreserved
/// characters kept, space as `+`, everything else `%XX`.
pub fn encode(params: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        quote_plus(k, &mut out);
        out.push('=');
        quote_plus(v, &mut out);
    }
    out
}

fn quote_plus(s: &str, out: &mut String) {
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_form_encoded_like_the_plugin() {
        assert_eq!(encode(&[("username", "alice"), ("password", "s3cret")]), "username=alice&password=s3cret");
        assert_eq!(encode(&[("vhost", "/"), ("tags", "a b")]), "vhost=%2F&tags=a+b");
        assert_eq!(encode(&[("name", "é&=?")]), "name=%C3%A9%26%3D%3F");
        assert_eq!(encode(&[("ip", "")]), "ip=");
    }
}
