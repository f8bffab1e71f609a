//! `engine.useExpressAuth(app, paths?, authTimeoutMs?)`: an application that
//! already serves rabbitmq-auth-backend-http routes (`/auth/user`, …) answers
//! Herald's auth questions in-process. Requests are made with
//! light-my-request's `inject(app, { method, url })`: the app's own route
//! handlers run, no socket is opened and the app need not listen.
//!
//! The requests are the plugin's: the same paths, query parameters and
//! `allow [tags…]` / `deny` bodies (HTTP status 200 or 201; anything else
//! denies). Parameters, in the plugin's order:
//!
//! | path | parameters |
//! |------|------------|
//! | user | `username`, `password` |
//! | vhost | `username`, `vhost`, `ip`, `tags` |
//! | resource | `username`, `vhost`, `resource` (`exchange`/`queue`), `name`, `permission`, `tags` |
//! | topic | `username`, `vhost`, `resource` (`topic`), `name` (the exchange), `permission`, `tags`, `routing_key` |
//!
//! `tags` (space-separated) is what the user check answered after `allow`, as
//! RabbitMQ sends it. `ip` is empty: core's `Authorizer::vhost` is not given
//! the client address.
//!
//! light-my-request is registered once by the package entry point
//! (`main.js`), so this module has no JS of its own.

use std::cell::RefCell;
use std::time::Duration;

use herald_core::auth::{AuthError, Authenticator, Authorizer, BoxFuture, Identity, Permission, ResourceKind};
use napi::bindgen_prelude::{FnArgs, FromNapiValue, Function, FunctionRef, Object, ToNapiValue, Unknown};
use napi::UnknownRef;
use napi::threadsafe_function::ThreadsafeFunction;
use napi::{Env, JsValue, Status, ValueType};
use napi_derive::napi;

use super::callbacks::identity;
use super::{ask, parse_body, UserVerdict};
use crate::error::{Code, HeraldError};
use crate::js::{Eventually, InjectReply, Raw};

type Inject = FunctionRef<FnArgs<(Raw, Raw)>, Eventually<InjectReply>>;

thread_local! {
    /// light-my-request's `inject`, set by `main.js` on this thread's Node environment.
    static INJECTOR: RefCell<Option<Inject>> = const { RefCell::new(None) };
}

/// Called once by the package entry point with light-my-request's `inject`.
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

pub struct ExpressAuth {
    dispatch: Dispatch,
    user: String,
    vhost: String,
    resource: String,
    topic: String,
    post: bool,
    timeout: Duration,
}

impl ExpressAuth {
    /// Binds `app` to the registered `inject`. Runs on the JS thread.
    pub fn new(env: &Env, app: Unknown, paths: Option<ExpressAuthPaths>, timeout: Duration) -> Result<Self, HeraldError> {
        if app.get_type().map_err(arg)? != ValueType::Function {
            return Err(HeraldError::new(Code::Argument, "useExpressAuth: `app` must be an Express app (a request handler function)"));
        }
        let paths = paths.unwrap_or(ExpressAuthPaths { user: None, vhost: None, resource: None, topic: None, method: None });
        let post = match paths.method.as_deref().map(str::to_ascii_uppercase).as_deref() {
            None | Some("GET") => false,
            Some("POST") => true,
            Some(other) => {
                return Err(HeraldError::new(Code::Argument, format!("useExpressAuth: method {other:?} is not 'GET' or 'POST'")))
            }
        };
        let inject = INJECTOR
            .with(|i| i.borrow().as_ref().map(|r| r.borrow_back(env)).transpose())
            .map_err(arg)?
            .ok_or_else(|| {
                HeraldError::new(
                    Code::State,
                    "useExpressAuth: light-my-request is not registered; load the package through its entry point (require('herald'))",
                )
            })?;
        // The app stays referenced for the life of this authenticator's
        // threadsafe function (released when the engine drops it).
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
                if let Some(form) = ctx.value.form {
                    let mut headers = Object::new(&ctx.env)?;
                    headers.set("content-type", "application/x-www-form-urlencoded")?;
                    options.set("headers", Raw(headers.raw()))?;
                    options.set("payload", form)?;
                }
                Ok(FnArgs::from((Raw(app), Raw(options.raw()))))
            })
            .map_err(arg)?;
        Ok(ExpressAuth {
            dispatch,
            user: paths.user.unwrap_or_else(|| "/auth/user".into()),
            vhost: paths.vhost.unwrap_or_else(|| "/auth/vhost".into()),
            resource: paths.resource.unwrap_or_else(|| "/auth/resource".into()),
            topic: paths.topic.unwrap_or_else(|| "/auth/topic".into()),
            post,
            timeout,
        })
    }

    /// Asks one route; `Ok` is what its body said.
    async fn ask(&self, path: &str, params: &[(&str, &str)]) -> Result<UserVerdict, AuthError> {
        let query = encode(params);
        let request = if self.post {
            Request { method: "POST", url: path.to_owned(), form: Some(query) }
        } else {
            let sep = if path.contains('?') { '&' } else { '?' };
            Request { method: "GET", url: format!("{path}{sep}{query}"), form: None }
        };
        let what = format!("useExpressAuth {} {path}", request.method);
        let reply = ask(&what, self.timeout, self.dispatch.call_async_catch(request)).await?;
        if reply.status != 200 && reply.status != 201 {
            tracing::warn!(status = reply.status, "{what} answered HTTP {}; denying", reply.status);
            return Err(AuthError::Unavailable(format!("{what} answered HTTP {}", reply.status)));
        }
        parse_body(&reply.body).ok_or_else(|| {
            let body: String = reply.body.chars().take(80).collect();
            tracing::warn!("{what} answered {body:?}, expected 'allow' or 'deny'; denying");
            AuthError::Unavailable(format!("{what} answered {body:?}"))
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

fn allowed(verdict: UserVerdict) -> bool {
    matches!(verdict, UserVerdict::Allow(_))
}

impl Authenticator for ExpressAuth {
    fn authenticate<'a>(&'a self, login: &'a str, password: &'a str) -> BoxFuture<'a, Result<Identity, AuthError>> {
        Box::pin(async move {
            let verdict = self.ask(&self.user, &[("username", login), ("password", password)]).await?;
            identity(login, Ok(verdict), "useExpressAuth")
        })
    }
}

impl Authorizer for ExpressAuth {
    fn vhost<'a>(&'a self, who: &'a Identity, vhost: &'a str) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(async move {
            let tags = who.tags.join(" ");
            let params = [("username", who.uid.as_str()), ("vhost", vhost), ("ip", ""), ("tags", tags.as_str())];
            Ok(allowed(self.ask(&self.vhost, &params).await?))
        })
    }

    fn resource<'a>(
        &'a self,
        who: &'a Identity,
        vhost: &'a str,
        kind: ResourceKind,
        name: &'a str,
        permission: Permission,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(async move {
            let tags = who.tags.join(" ");
            let params = [
                ("username", who.uid.as_str()),
                ("vhost", vhost),
                ("resource", kind.as_str()),
                ("name", name),
                ("permission", permission.as_str()),
                ("tags", tags.as_str()),
            ];
            Ok(allowed(self.ask(&self.resource, &params).await?))
        })
    }

    fn topic<'a>(
        &'a self,
        who: &'a Identity,
        vhost: &'a str,
        exchange: &'a str,
        routing_key: &'a str,
        permission: Permission,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(async move {
            let tags = who.tags.join(" ");
            let params = [
                ("username", who.uid.as_str()),
                ("vhost", vhost),
                ("resource", "topic"),
                ("name", exchange),
                ("permission", permission.as_str()),
                ("tags", tags.as_str()),
                ("routing_key", routing_key),
            ];
            Ok(allowed(self.ask(&self.topic, &params).await?))
        })
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
