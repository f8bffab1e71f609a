//! Node-API glue: the few value shapes the binding needs that napi-rs does
//! not convert the way Herald wants.
//!
//! - [`Eventually`]: what a JS callback returned, a plain value or a promise
//!   (or any thenable) to await, so callbacks may be sync or async.
//! - [`Json`]: a JS value copied through `JSON.stringify` (undefined properties
//!   dropped, integers stay integers), then parsed by serde.
//! - [`InjectReply`]: the two fields of an `express-auth.js` reply we read.
//! - [`Raw`]: a `napi_value` already made on the JS thread, passed as an argument.
//! - [`Settled`]: the return value of an event listener; a rejected promise is
//!   logged instead of becoming an unhandled rejection.

use napi::bindgen_prelude::{
    CallbackContext, FromNapiValue, Function, JsObjectValue, Object, Promise, PromiseRaw, ToNapiValue, Unknown,
};
use napi::{check_status, sys, Env, JsValue, ValueType};

/// A value a JS callback returned, or a promise of it.
pub enum Eventually<T: FromNapiValue + 'static> {
    Ready(T),
    Pending(Promise<T>),
}

impl<T: FromNapiValue + Send + 'static> Eventually<T> {
    /// The value, once the promise (if any) settled. A rejection is an `Err`.
    pub async fn settle(self) -> napi::Result<T> {
        match self {
            Eventually::Ready(v) => Ok(v),
            Eventually::Pending(p) => p.await,
        }
    }
}

impl<T: FromNapiValue + 'static> FromNapiValue for Eventually<T> {
    unsafe fn from_napi_value(env: sys::napi_env, value: sys::napi_value) -> napi::Result<Self> {
        match unsafe { as_promise(env, value)? } {
            Some(p) => Ok(Eventually::Pending(unsafe { Promise::from_napi_value(env, p)? })),
            None => Ok(Eventually::Ready(unsafe { T::from_napi_value(env, value)? })),
        }
    }
}

/// `value` itself when it is a native promise, `Promise.resolve(value)` when
/// it is another thenable, else `None`.
unsafe fn as_promise(env: sys::napi_env, value: sys::napi_value) -> napi::Result<Option<sys::napi_value>> {
    let mut is_promise = false;
    check_status!(unsafe { sys::napi_is_promise(env, value, &mut is_promise) }, "napi_is_promise failed")?;
    if is_promise {
        return Ok(Some(value));
    }
    let any = unsafe { Unknown::from_raw_unchecked(env, value) };
    if !matches!(any.get_type()?, ValueType::Object | ValueType::Function) {
        return Ok(None);
    }
    let object = unsafe { Object::from_napi_value(env, value)? };
    let then: Unknown = match object.get_named_property_unchecked("then") {
        Ok(then) => then,
        // A `then` getter that throws: not a thenable; leave no exception pending.
        Err(_) => {
            take_exception(env);
            return Ok(None);
        }
    };
    if then.get_type()? != ValueType::Function {
        return Ok(None);
    }
    let env = Env::from_raw(env);
    let promise_ctor: Object = env.get_global()?.get_named_property_unchecked("Promise")?;
    let resolve: Function<Raw, Unknown> = promise_ctor.get_named_property_unchecked("resolve")?;
    Ok(Some(resolve.apply(promise_ctor, Raw(value))?.raw()))
}

/// A JS value as serde JSON: `JSON.stringify` then parse. `undefined` (or a
/// function) at the top level is `null`; undefined properties are dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct Json(pub serde_json::Value);

impl FromNapiValue for Json {
    unsafe fn from_napi_value(env: sys::napi_env, value: sys::napi_value) -> napi::Result<Self> {
        Ok(Json(match unsafe { stringify(env, value)? } {
            Some(text) => serde_json::from_str(&text)
                .map_err(|e| napi::Error::new(napi::Status::InvalidArg, format!("not JSON: {e}")))?,
            None => serde_json::Value::Null,
        }))
    }
}

/// `JSON.stringify(value)`; `None` where it gives `undefined`. A throw
/// (BigInt, a cycle) is an `Err` carrying the JS message.
///
/// # Safety
/// `env` and `value` must be live handles of the current callback scope, on
/// the JS thread.
pub unsafe fn stringify(env: sys::napi_env, value: sys::napi_value) -> napi::Result<Option<String>> {
    let env = Env::from_raw(env);
    let json: Object = env.get_global()?.get_named_property_unchecked("JSON")?;
    let stringify: Function<Raw, Unknown> = json.get_named_property_unchecked("stringify")?;
    let out = match stringify.apply(json, Raw(value)) {
        Ok(out) => out,
        // A throw stays pending after `apply`; take it, or it would reach JS
        // in place of the error the caller builds from this one.
        Err(e) => return Err(take_exception(env.raw()).unwrap_or(e)),
    };
    match out.get_type()? {
        ValueType::String => Ok(Some(unsafe { String::from_napi_value(env.raw(), out.raw())? })),
        _ => Ok(None),
    }
}

/// Clears a pending JS exception, as an error carrying its message.
fn take_exception(env: sys::napi_env) -> Option<napi::Error> {
    let mut pending = false;
    unsafe { sys::napi_is_exception_pending(env, &mut pending) };
    if !pending {
        return None;
    }
    let mut exception = std::ptr::null_mut();
    unsafe { sys::napi_get_and_clear_last_exception(env, &mut exception) };
    Some(napi::Error::new(napi::Status::PendingException, unsafe { describe(env, exception) }))
}

/// The parts of an `express-auth.js` reply (`{ statusCode, payload }`) Herald reads.
#[derive(Debug, Clone)]
pub struct InjectReply {
    pub status: u32,
    pub body: String,
}

impl FromNapiValue for InjectReply {
    unsafe fn from_napi_value(env: sys::napi_env, value: sys::napi_value) -> napi::Result<Self> {
        let object = unsafe { Object::from_napi_value(env, value)? };
        let status: Option<u32> = object.get("statusCode")?;
        let body: Option<String> = object.get("payload")?;
        Ok(InjectReply { status: status.unwrap_or(0), body: body.unwrap_or_default() })
    }
}

/// A `napi_value` made on the JS thread in the same callback scope, passed on
/// as a call argument unchanged.
#[derive(Clone, Copy)]
pub struct Raw(pub sys::napi_value);

impl ToNapiValue for Raw {
    unsafe fn to_napi_value(_env: sys::napi_env, value: Self) -> napi::Result<sys::napi_value> {
        Ok(value.0)
    }
}

/// What an event listener returned. Nothing is awaited; a returned promise
/// gets a `catch` that logs, so an async listener that rejects cannot end
/// the process through an unhandled rejection.
pub struct Settled;

impl FromNapiValue for Settled {
    unsafe fn from_napi_value(env: sys::napi_env, value: sys::napi_value) -> napi::Result<Self> {
        if let Some(p) = unsafe { as_promise(env, value)? } {
            let promise: PromiseRaw<Unknown> = PromiseRaw::new(env, p);
            promise.catch(|ctx: CallbackContext<Unknown>| {
                let message = unsafe { describe(ctx.env.raw(), ctx.value.raw()) };
                tracing::warn!(error = %message, "an engine.on() listener rejected; ignored");
                Ok(())
            })?;
        }
        Ok(Settled)
    }
}

/// A thrown or rejected JS value as text for the log: an `Error`'s message,
/// else the value as JSON, else its type.
///
/// # Safety
/// As [`stringify`].
pub unsafe fn describe(env: sys::napi_env, value: sys::napi_value) -> String {
    let any = unsafe { Unknown::from_raw_unchecked(env, value) };
    if let Ok(ValueType::Object) = any.get_type() {
        if let Ok(object) = unsafe { Object::from_napi_value(env, value) } {
            if let Ok(Some(message)) = object.get::<String>("message") {
                return message;
            }
        }
    }
    match unsafe { stringify(env, value) } {
        Ok(Some(text)) => text,
        _ => format!("{:?}", any.get_type().unwrap_or(ValueType::Unknown)),
    }
}
