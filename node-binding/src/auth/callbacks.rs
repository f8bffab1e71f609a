//! `engine.useAuth({ user, vhost, resource, topic }, authTimeoutMs?)`: the
//! four questions of rabbitmq-auth-backend-http, answered by JS functions.

use std::sync::Arc;
use std::time::Duration;

use herald_core::auth::{
    AuthError, Authenticator, Authorizer, BoxFuture, ClientInfo, Identity, Permission, ResourceKind,
};
use napi::bindgen_prelude::FnArgs;
use napi::threadsafe_function::ThreadsafeFunction;
use napi::Status;
use napi_derive::napi;

use super::{ask, permission_verdict, user_verdict, UserVerdict};
use crate::js::{Eventually, Json};

/// `(a, b, ip) => answer`, weak (does not keep Node alive), called as
/// `(value) => …`. `ip` is the client's address (`''` when unknown).
type Call3 = ThreadsafeFunction<
    FnArgs<(String, String, String)>,
    Eventually<Json>,
    FnArgs<(String, String, String)>,
    Status,
    false,
    true,
>;
/// `(a, b, c, d, e) => answer`.
type Call5 = ThreadsafeFunction<
    FnArgs<(String, String, String, String, String)>,
    Eventually<Json>,
    FnArgs<(String, String, String, String, String)>,
    Status,
    false,
    true,
>;

/// JavaScript answers to the questions RabbitMQ's HTTP auth backend asks.
/// Each function may be sync or async (return a promise). One that throws,
/// rejects, answers anything else, or takes longer than `authTimeoutMs`
/// denies, and the failure is logged.
#[napi(object, object_to_js = false)]
pub struct AuthCallbacks {
    /// May `username` log in with `password` (STOMP CONNECT, XMPP SASL PLAIN)?
    /// Answer `true` / `'allow'`, `false` / `'deny'`, `'allow tag1 tag2'`, or
    /// `{ allow, tags }`; tags are RabbitMQ user tags such as `administrator`.
    /// Omitted: logins keep being checked as before (the config's `[auth]`
    /// JWT / HTTP backend and `users`). `ip` is the client's address (`''`
    /// when unknown); failed logins are also limited by `[login]`.
    #[napi(
        ts_type = "(username: string, password: string, ip: string) => boolean | string | UserAnswer | Promise<boolean | string | UserAnswer>"
    )]
    pub user: Option<Call3>,
    /// May `username`, connecting from `ip`, open virtual host `vhost`? Omitted: allowed.
    #[napi(ts_type = "(username: string, vhost: string, ip: string) => boolean | string | Promise<boolean | string>")]
    pub vhost: Option<Call3>,
    /// May `username` use `resource` (`'exchange'` or `'queue'`) `name` in
    /// `vhost` for `permission` (`'configure'`, `'write'` to publish, `'read'`
    /// to consume)? Omitted: allowed.
    #[napi(
        ts_type = "(username: string, vhost: string, resource: 'exchange' | 'queue', name: string, permission: 'configure' | 'write' | 'read') => boolean | string | Promise<boolean | string>"
    )]
    pub resource: Option<Call5>,
    /// May `username` publish to (`'write'`) or bind from (`'read'`) topic
    /// exchange `exchange` with `routingKey`? Omitted: allowed.
    #[napi(
        ts_type = "(username: string, vhost: string, exchange: string, routingKey: string, permission: 'write' | 'read') => boolean | string | Promise<boolean | string>"
    )]
    pub topic: Option<Call5>,
}

/// The object form of a `user` answer.
#[napi(object)]
pub struct UserAnswer {
    pub allow: bool,
    /// RabbitMQ-style user tags, e.g. `['administrator']`.
    pub tags: Option<Vec<String>>,
}

/// [`AuthCallbacks`] as the engine's authenticator and authorizer.
pub struct CallbackAuth {
    user: Option<Call3>,
    vhost: Option<Call3>,
    resource: Option<Call5>,
    topic: Option<Call5>,
    timeout: Duration,
    /// Checks logins when there is no `user` callback.
    fallback: Arc<dyn Authenticator>,
}

impl CallbackAuth {
    pub fn new(callbacks: AuthCallbacks, timeout: Duration, fallback: Arc<dyn Authenticator>) -> Self {
        let AuthCallbacks { user, vhost, resource, topic } = callbacks;
        CallbackAuth { user, vhost, resource, topic, timeout, fallback }
    }
}

/// Turns a login answer into an identity, logging answers that mean nothing.
pub(crate) fn identity(login: &str, verdict: Result<UserVerdict, String>, what: &str) -> Result<Identity, AuthError> {
    match verdict {
        Ok(UserVerdict::Allow(tags)) => Ok(Identity::new(login, tags)),
        Ok(UserVerdict::Deny) => Err(AuthError::Refused),
        Err(e) => {
            tracing::warn!(user = login, "{what} {e}; denying");
            Err(AuthError::Unavailable(format!("{what} {e}")))
        }
    }
}

fn allowed(verdict: Result<bool, String>, what: &str) -> Result<bool, AuthError> {
    verdict.map_err(|e| {
        tracing::warn!("{what} {e}; denying");
        AuthError::Unavailable(format!("{what} {e}"))
    })
}

impl Authenticator for CallbackAuth {
    fn authenticate<'a>(
        &'a self,
        login: &'a str,
        password: &'a str,
        client: &'a ClientInfo,
    ) -> BoxFuture<'a, Result<Identity, AuthError>> {
        Box::pin(async move {
            let Some(f) = &self.user else {
                return self.fallback.authenticate(login, password, client).await;
            };
            const WHAT: &str = "useAuth `user` callback";
            let args = FnArgs::from((login.to_owned(), password.to_owned(), client.ip_string()));
            let Json(answer) = ask(WHAT, self.timeout, f.call_async_catch(args)).await?;
            identity(login, user_verdict(&answer), WHAT)
        })
    }

    fn offers_scram(&self) -> bool {
        // A JS callback only ever sees plain passwords: PLAIN only.
        self.user.is_none() && self.fallback.offers_scram()
    }

    fn scram_credentials<'a>(
        &'a self,
        login: &'a str,
        mechanism: herald_core::auth::sasl::Mechanism,
    ) -> BoxFuture<'a, Result<Option<(herald_core::auth::sasl::ScramCredentials, Identity)>, AuthError>> {
        match &self.user {
            Some(_) => Box::pin(async { Ok(None) }),
            None => self.fallback.scram_credentials(login, mechanism),
        }
    }
}

impl Authorizer for CallbackAuth {
    fn vhost<'a>(
        &'a self,
        who: &'a Identity,
        vhost: &'a str,
        client: &'a ClientInfo,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(async move {
            let Some(f) = &self.vhost else { return Ok(true) };
            const WHAT: &str = "useAuth `vhost` callback";
            let args = FnArgs::from((who.uid.clone(), vhost.to_owned(), client.ip_string()));
            let Json(answer) = ask(WHAT, self.timeout, f.call_async_catch(args)).await?;
            allowed(permission_verdict(&answer), WHAT)
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
            let Some(f) = &self.resource else { return Ok(true) };
            const WHAT: &str = "useAuth `resource` callback";
            let args = (
                who.uid.clone(),
                vhost.to_owned(),
                kind.as_str().to_owned(),
                name.to_owned(),
                permission.as_str().to_owned(),
            );
            let Json(answer) = ask(WHAT, self.timeout, f.call_async_catch(FnArgs::from(args))).await?;
            allowed(permission_verdict(&answer), WHAT)
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
            let Some(f) = &self.topic else { return Ok(true) };
            const WHAT: &str = "useAuth `topic` callback";
            let args = (
                who.uid.clone(),
                vhost.to_owned(),
                exchange.to_owned(),
                routing_key.to_owned(),
                permission.as_str().to_owned(),
            );
            let Json(answer) = ask(WHAT, self.timeout, f.call_async_catch(FnArgs::from(args))).await?;
            allowed(permission_verdict(&answer), WHAT)
        })
    }

    /// A `topic` callback decides routing keys: core's `[access]` rules
    /// are not applied on top of its answer (they are without one).
    fn decides_topics(&self) -> bool {
        self.topic.is_some()
    }

    fn decides_resources(&self) -> bool {
        self.resource.is_some()
    }
}
