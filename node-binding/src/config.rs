//! The config object given to `new Engine(config)`: the TOML file's schema as
//! a JS object (`{ stomp: { listen: '127.0.0.1:0' }, users: [...] }`, keys in
//! snake_case as in the file). Deserialized by serde into
//! `herald_core::Config`, so unknown keys and wrong types are rejected by the
//! same rules as the file; the error names the key by its path.
//!
//! One difference, for embedding: a listener the object does not mention is
//! off (the binary's defaults bind 0.0.0.0 on fixed ports, which an embedding
//! application rarely wants and tests cannot share). Every other default is
//! core's.

use herald_core::Config;
use serde_json::{Map, Value};

use crate::error::{Code, HeraldError};

/// Listener keys that default to `"off"` when embedded: (section, key).
const EMBEDDED_OFF: [(&str, &str); 2] = [("stomp", "listen"), ("http", "listen")];

/// Builds a validated config from the JSON copy of the JS object (`None`,
/// `null` or `undefined` mean all defaults).
pub fn from_json(value: Option<Value>) -> Result<Config, HeraldError> {
    let mut value = match value {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(v @ Value::Object(_)) => v,
        Some(other) => {
            return Err(HeraldError::new(
                Code::Config,
                format!("invalid config: expected an object, got {}", kind(&other)),
            ));
        }
    };
    apply_embedded_defaults(&mut value);
    let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            HeraldError::new(Code::Config, format!("invalid config: {inner}"))
        } else {
            HeraldError::new(Code::Config, format!("invalid config: `{path}`: {inner}"))
        }
    })?;
    config.validate()?;
    Ok(config)
}

fn apply_embedded_defaults(value: &mut Value) {
    let Value::Object(root) = value else { return };
    for (section, key) in EMBEDDED_OFF {
        let entry = root.entry(section).or_insert_with(|| Value::Object(Map::new()));
        // Anything but an object is left for serde to reject with its path.
        if let Value::Object(s) = entry {
            s.entry(key).or_insert_with(|| Value::String("off".into()));
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn empty_means_defaults_with_listeners_off() {
        let c = from_json(None).unwrap();
        assert!(c.stomp.listen.is_none() && c.http.listen.is_none() && c.xmpp.listen.is_none());
        assert_eq!(c.stomp.default_vhost, "/");
    }

    #[test]
    fn given_listener_is_kept() {
        let c = from_json(Some(json!({ "stomp": { "listen": "127.0.0.1:0" } }))).unwrap();
        assert_eq!(c.stomp.listen.unwrap().port(), 0);
        assert!(c.http.listen.is_none());
    }

    #[test]
    fn unknown_key_is_named_with_its_path() {
        let e = from_json(Some(json!({ "stomp": { "listn": "127.0.0.1:0" } }))).unwrap_err();
        assert_eq!(e.code, Code::Config);
        assert!(e.message.contains("listn") && e.message.contains("stomp"), "{}", e.message);
        let e = from_json(Some(json!({ "bogus": 1 }))).unwrap_err();
        assert!(e.message.contains("bogus"), "{}", e.message);
    }

    #[test]
    fn wrong_type_and_invalid_value_are_named() {
        let e = from_json(Some(json!({ "limits": { "max_frame_bytes": "big" } }))).unwrap_err();
        assert!(e.message.contains("limits.max_frame_bytes"), "{}", e.message);
        let e = from_json(Some(json!({ "limits": { "max_frame_bytes": 3 } }))).unwrap_err();
        assert!(e.message.contains("limits.max_frame_bytes"), "{}", e.message);
        let e = from_json(Some(json!([1]))).unwrap_err();
        assert!(e.message.contains("an array"), "{}", e.message);
    }

    #[test]
    fn cluster_is_the_same_section_as_in_the_file() {
        let c = from_json(Some(json!({ "node": { "name": "n3" }, "cluster": {
            "redis": "redis://127.0.0.1:6379/", "prefix": "app:", "heartbeat_ms": 200, "ttl_ms": 1000,
        } })))
        .unwrap();
        let cluster = c.cluster.unwrap();
        assert_eq!((cluster.redis.as_deref(), cluster.prefix.as_str()), (Some("redis://127.0.0.1:6379/"), "app:"));
        assert_eq!((cluster.heartbeat_ms, cluster.publish_buffer), (200, 10_000), "omitted keys take the defaults");
        let e = from_json(Some(json!({ "cluster": { "redis": "redis://h/", "seeds": ["redis://h2/"] } }))).unwrap_err();
        assert!(e.message.contains("cluster"), "{}", e.message);
    }

    #[test]
    fn auth_mongodb_is_the_same_section_as_in_the_file() {
        let c = from_json(Some(json!({ "auth": { "mongodb": {
            "uri": "mongodb://127.0.0.1:27017", "database": "app",
            "disabled_field": "status", "disabled_value": "banned", "cache_ttl_ms": 0,
        } } })))
        .unwrap();
        let m = c.auth.mongodb.unwrap();
        assert_eq!(
            (m.collection.as_str(), m.uid_field.as_str(), m.password_field.as_str()),
            ("users", "username", "password")
        );
        assert_eq!(m.disabled_value, herald_core::config::MatchValue::Str("banned".into()));
        let e = from_json(Some(json!({ "auth": { "mongodb": { "database": "app" } } }))).unwrap_err();
        assert!(e.message.contains("auth.mongodb.uri"), "{}", e.message);
    }
}
