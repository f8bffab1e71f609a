//! JWT bearer tokens (HS256, RS256) as the password: the STOMP passcode or
//! the SASL PLAIN password. The token's uid claim must equal the login.

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::{AuthError, Authenticator, BoxFuture, ClientInfo, Identity, Source};
use crate::config::JwtConfig;

/// Verifies tokens with the keys of `[auth.jwt]`.
pub struct JwtAuth {
    hs256: Option<DecodingKey>,
    rs256: Option<DecodingKey>,
    issuer: Option<String>,
    audience: Option<String>,
    uid_claim: String,
    leeway_secs: u64,
    tags_claim: Option<String>,
}

impl std::fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("JwtAuth")
            .field("hs256", &self.hs256.is_some())
            .field("rs256", &self.rs256.is_some())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("uid_claim", &self.uid_claim)
            .finish_non_exhaustive()
    }
}

impl JwtAuth {
    /// Errors name the bad key (`auth.jwt.rs256_public_key: ...`).
    pub fn from_config(c: &JwtConfig) -> Result<JwtAuth, (&'static str, String)> {
        let rs256 = match &c.rs256_public_key {
            Some(path) => Some(load_rsa_public_key(path).map_err(|e| ("auth.jwt.rs256_public_key", e))?),
            None => None,
        };
        Ok(JwtAuth {
            hs256: c.hs256_secret.as_ref().map(|s| DecodingKey::from_secret(s.as_bytes())),
            rs256,
            issuer: c.issuer.clone(),
            audience: c.audience.clone(),
            uid_claim: c.uid_claim.clone(),
            leeway_secs: c.leeway_secs,
            tags_claim: c.tags_claim.clone(),
        })
    }

    /// The key for `password`'s algorithm, when it has JWT shape (three
    /// base64url parts) and its header names an algorithm this source has a
    /// key for (HS256 with `hs256_secret`, RS256 with `rs256_public_key`).
    /// Anything else is not a token for us and goes to the next source.
    fn key_for(&self, password: &str) -> Option<(Algorithm, &DecodingKey)> {
        if !looks_like_jwt(password) {
            return None;
        }
        match jsonwebtoken::decode_header(password).ok()?.alg {
            Algorithm::HS256 => Some((Algorithm::HS256, self.hs256.as_ref()?)),
            Algorithm::RS256 => Some((Algorithm::RS256, self.rs256.as_ref()?)),
            _ => None,
        }
    }

    /// Whether `password` is a token this source decides on.
    pub fn recognizes(&self, password: &str) -> bool {
        self.key_for(password).is_some()
    }

    /// Checks signature, `exp` (required), `nbf`, `iss` and `aud` (when
    /// configured, then also required), and that the uid claim is `login`.
    pub fn verify(&self, login: &str, token: &str) -> Result<Identity, AuthError> {
        let Some((alg, key)) = self.key_for(token) else { return Err(AuthError::Refused) };
        let mut v = Validation::new(alg);
        v.leeway = self.leeway_secs;
        v.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        match &self.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        v.set_required_spec_claims(&required);
        let claims = match jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, key, &v) {
            Ok(data) => data.claims,
            Err(e) => {
                tracing::debug!(login, error = %e, "JWT refused");
                return Err(AuthError::Refused);
            }
        };
        // jsonwebtoken checks `exp`/`nbf` only when they parse as u64 and
        // silently skips an `nbf` that does not (a float like 1e37, a
        // string): such a token would be valid before its time. A time claim
        // that is present must be a whole number of seconds (fuzz finding).
        for claim in ["exp", "nbf", "iat"] {
            if let Some(v) = claims.get(claim) {
                if v.as_u64().is_none() {
                    tracing::debug!(login, claim, "JWT refused: time claim is not a whole number of seconds");
                    return Err(AuthError::Refused);
                }
            }
        }
        let uid = match claims.get(&self.uid_claim) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                tracing::debug!(login, claim = %self.uid_claim, "JWT refused: no uid claim");
                return Err(AuthError::Refused);
            }
        };
        if uid != login {
            tracing::debug!(login, token_uid = %uid, "JWT refused: uid claim is not the login");
            return Err(AuthError::Refused);
        }
        let tags = match self.tags_claim.as_ref().and_then(|c| claims.get(c)) {
            Some(Value::Array(a)) => a.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect(),
            Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        Ok(Identity { uid, tags, source: Source::Jwt })
    }
}

impl Authenticator for JwtAuth {
    fn authenticate<'a>(
        &'a self,
        login: &'a str,
        password: &'a str,
        _client: &'a ClientInfo,
    ) -> BoxFuture<'a, Result<Identity, AuthError>> {
        Box::pin(async move { self.verify(login, password) })
    }
}

/// Three non-empty base64url parts separated by dots.
fn looks_like_jwt(s: &str) -> bool {
    let mut parts = 0;
    for part in s.split('.') {
        parts += 1;
        if parts > 3 || part.is_empty() || !part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return false;
        }
    }
    parts == 3
}

/// Reads an RSA public key PEM (`PUBLIC KEY`, i.e. SPKI, or `RSA PUBLIC
/// KEY`, i.e. PKCS#1) and checks it is usable for RS256 (2048 to 8192
/// bits). Errors name the file. The file is read and checked by
/// [`crate::pem`], which config validation shares.
pub fn load_rsa_public_key(path: &Path) -> Result<DecodingKey, String> {
    crate::pem::rsa_public_key(path).map(|pkcs1| DecodingKey::from_rsa_der(&pkcs1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const PRIVATE: &[u8] = include_bytes!("../../tests/data/jwt-rs256-private.pem");
    const OTHER_PRIVATE: &[u8] = include_bytes!("../../tests/data/jwt-rs256-other-private.pem");
    const PUBLIC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/jwt-rs256-public.pem");
    const PUBLIC_PKCS1: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/jwt-rs256-public-pkcs1.pem");

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn hs(claims: &Value, secret: &str) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes()))
            .unwrap()
    }

    fn rs(claims: &Value, pem: &[u8]) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &EncodingKey::from_rsa_pem(pem).unwrap()).unwrap()
    }

    fn auth(extra: impl FnOnce(&mut JwtConfig)) -> JwtAuth {
        let mut c = JwtConfig {
            hs256_secret: Some("s3cret".into()),
            rs256_public_key: Some(PUBLIC.into()),
            ..JwtConfig::default()
        };
        extra(&mut c);
        JwtAuth::from_config(&c).unwrap()
    }

    #[test]
    fn hs256_and_rs256_tokens_log_in() {
        let a = auth(|c| c.tags_claim = Some("roles".into()));
        let claims = json!({ "sub": "alice", "exp": now() + 60, "roles": ["administrator", 7, "monitoring"] });
        let id = a.verify("alice", &hs(&claims, "s3cret")).unwrap();
        assert_eq!(
            id,
            Identity {
                uid: "alice".into(),
                tags: vec!["administrator".into(), "monitoring".into()],
                source: Source::Jwt
            }
        );
        let id = a.verify("alice", &rs(&claims, PRIVATE)).unwrap();
        assert_eq!(id.uid, "alice");
        // A PKCS#1 public key works the same.
        let a = auth(|c| c.rs256_public_key = Some(PUBLIC_PKCS1.into()));
        assert_eq!(a.verify("alice", &rs(&claims, PRIVATE)).unwrap().tags, Vec::<String>::new());
        // Space-separated tags and another uid claim.
        let a = auth(|c| {
            c.uid_claim = "preferred_username".into();
            c.tags_claim = Some("scope".into());
        });
        let t =
            hs(&json!({ "preferred_username": "bob", "exp": now() + 60, "scope": "management policymaker" }), "s3cret");
        assert_eq!(a.verify("bob", &t).unwrap().tags, ["management", "policymaker"]);
        assert_eq!(a.verify("alice", &t), Err(AuthError::Refused));
    }

    #[test]
    fn bad_tokens_are_refused() {
        let a = auth(|_| {});
        let ok = json!({ "sub": "alice", "exp": now() + 60 });
        assert_eq!(a.verify("mallory", &hs(&ok, "s3cret")), Err(AuthError::Refused), "uid mismatch");
        assert_eq!(a.verify("alice", &hs(&ok, "other")), Err(AuthError::Refused), "wrong HS256 secret");
        assert_eq!(a.verify("alice", &rs(&ok, OTHER_PRIVATE)), Err(AuthError::Refused), "wrong RSA key");
        let expired = json!({ "sub": "alice", "exp": now() - 120 });
        assert_eq!(a.verify("alice", &hs(&expired, "s3cret")), Err(AuthError::Refused), "expired");
        let within_leeway = json!({ "sub": "alice", "exp": now() - 5 });
        assert!(a.verify("alice", &hs(&within_leeway, "s3cret")).is_ok(), "leeway");
        let no_exp = json!({ "sub": "alice" });
        assert_eq!(a.verify("alice", &hs(&no_exp, "s3cret")), Err(AuthError::Refused), "exp is required");
        for bad_time in [json!(1.7777777777777779e37), json!("0"), json!(-5), json!(null)] {
            let t = json!({ "sub": "alice", "exp": now() + 600, "nbf": bad_time });
            assert_eq!(a.verify("alice", &hs(&t, "s3cret")), Err(AuthError::Refused), "nbf {bad_time} is not a time");
        }
        let float_exp = json!({ "sub": "alice", "exp": (now() + 600) as f64 + 0.5 });
        assert_eq!(a.verify("alice", &hs(&float_exp, "s3cret")), Err(AuthError::Refused), "exp must be whole seconds");
        let future = json!({ "sub": "alice", "exp": now() + 600, "nbf": now() + 300 });
        assert_eq!(a.verify("alice", &hs(&future, "s3cret")), Err(AuthError::Refused), "not yet valid");
        let no_sub = json!({ "exp": now() + 60 });
        assert_eq!(a.verify("alice", &hs(&no_sub, "s3cret")), Err(AuthError::Refused), "no uid claim");
        // Tampered payload, original signature.
        let t = hs(&ok, "s3cret");
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            json!({ "sub": "root", "exp": now() + 60 }).to_string(),
        );
        parts[1] = &forged;
        assert_eq!(a.verify("root", &parts.join(".")), Err(AuthError::Refused));
        // Algorithm confusion: HS256 "signed" with the RSA public key as the secret.
        let public = std::fs::read_to_string(PUBLIC).unwrap();
        assert_eq!(a.verify("alice", &hs(&ok, &public)), Err(AuthError::Refused));
    }

    #[test]
    fn issuer_and_audience_are_checked_when_set() {
        let a = auth(|c| {
            c.issuer = Some("https://id.example".into());
            c.audience = Some("herald".into());
        });
        let t = |claims: Value| hs(&claims, "s3cret");
        let exp = now() + 60;
        assert!(a
            .verify("u", &t(json!({ "sub": "u", "exp": exp, "iss": "https://id.example", "aud": "herald" })))
            .is_ok());
        assert!(a
            .verify("u", &t(json!({ "sub": "u", "exp": exp, "iss": "https://id.example", "aud": ["other", "herald"] })))
            .is_ok());
        assert_eq!(
            a.verify("u", &t(json!({ "sub": "u", "exp": exp, "iss": "https://evil", "aud": "herald" }))),
            Err(AuthError::Refused)
        );
        assert_eq!(
            a.verify("u", &t(json!({ "sub": "u", "exp": exp, "iss": "https://id.example", "aud": "other" }))),
            Err(AuthError::Refused)
        );
        assert_eq!(
            a.verify("u", &t(json!({ "sub": "u", "exp": exp, "aud": "herald" }))),
            Err(AuthError::Refused),
            "iss required"
        );
        assert_eq!(
            a.verify("u", &t(json!({ "sub": "u", "exp": exp, "iss": "https://id.example" }))),
            Err(AuthError::Refused),
            "aud required"
        );
        // Without a configured audience, a token's `aud` is not held against it.
        let a = auth(|_| {});
        assert!(a.verify("u", &t(json!({ "sub": "u", "exp": exp, "aud": "anything" }))).is_ok());
    }

    #[test]
    fn only_jwt_shaped_passwords_with_a_known_algorithm_are_recognized() {
        let a = auth(|c| c.rs256_public_key = None);
        let claims = json!({ "sub": "alice", "exp": now() + 60 });
        assert!(a.recognizes(&hs(&claims, "whatever")));
        assert!(!a.recognizes("guest"));
        assert!(!a.recognizes("a.b.c"), "header is not JSON");
        assert!(!a.recognizes("a.b"));
        assert!(!a.recognizes(&format!("{}.x", hs(&claims, "k"))));
        assert!(!a.recognizes(&rs(&claims, PRIVATE)), "RS256 without an RSA key is not ours");
        let none = format!("{}.{}.sig", b64(r#"{"alg":"none"}"#), b64(r#"{"sub":"alice"}"#));
        assert!(!a.recognizes(&none));
        let es = format!("{}.{}.sig", b64(r#"{"alg":"ES256","typ":"JWT"}"#), b64(r#"{"sub":"alice"}"#));
        assert!(!a.recognizes(&es));
    }

    fn b64(s: &str) -> String {
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, s)
    }

    fn load_err(path: &Path) -> String {
        load_rsa_public_key(path).err().expect("must fail")
    }

    #[test]
    fn public_key_files_are_checked() {
        let dir = std::env::temp_dir().join(format!("herald-jwt-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        assert!(load_rsa_public_key(Path::new(PUBLIC)).is_ok());
        let e = load_err(&dir.join("missing.pem"));
        assert!(e.contains("cannot read") && e.contains("missing.pem"), "{e}");
        let private = write("private.pem", std::str::from_utf8(PRIVATE).unwrap());
        let e = load_err(&private);
        assert!(e.contains("PRIVATE KEY") && e.contains("private.pem"), "{e}");
        let e = load_err(&write("garbage.pem", "hello"));
        assert!(e.contains("no PEM block"), "{e}");
        let e = load_err(&write("short.pem", "-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----\n"));
        assert!(e.contains("RSA"), "{e}");
        // A 1024-bit key (PKCS#1 body: SEQUENCE { INTEGER 2^1023+1, INTEGER 65537 }).
        let mut n = vec![0x00, 0x80];
        n.extend(std::iter::repeat_n(0u8, 126));
        n.push(1);
        let mut body = vec![0x02, 0x81, n.len() as u8];
        body.extend(&n);
        body.extend([0x02, 0x03, 0x01, 0x00, 0x01]);
        let mut der = vec![0x30, 0x81, body.len() as u8];
        der.extend(&body);
        let pem = format!(
            "-----BEGIN RSA PUBLIC KEY-----\n{}\n-----END RSA PUBLIC KEY-----\n",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &der)
        );
        let e = load_err(&write("small.pem", &pem));
        assert!(e.contains("1024 bits"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
