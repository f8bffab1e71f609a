//! JWT bearer tokens (core/src/auth/jwt.rs), HS256 and RS256 with issuer,
//! audience and the uid claim configured.
//!
//! Input: 1 mode byte, the login, NUL, then either a whole token (mode 0)
//! or a header NUL payload that the target signs (1: with the HS256 secret;
//! 2: with the RSA public key's bytes as an HMAC secret, the classic
//! algorithm confusion; 3: with the signature taken from the input).
//! Invariants, whenever a token is accepted:
//! - its header says HS256 or RS256, and an HS256 signature is the HMAC of
//!   its first two parts under the configured secret (computed here);
//! - nothing signed with the public key as an HMAC secret is accepted;
//! - the payload is a JSON object with `exp` not past (leeway included),
//!   `nbf` (if any) not in the future, the configured `iss` and `aud`, and a
//!   uid claim equal to the login, which is the identity returned.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use herald_core::auth::jwt::JwtAuth;
use herald_core::config::JwtConfig;
use herald_fuzz::header;
use hmac::{Hmac, KeyInit, Mac};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sha2::Sha256;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

const SECRET: &str = "fuzz-secret-0123456789";
const ISSUER: &str = "herald";
const AUDIENCE: &str = "herald-clients";
const LEEWAY: u64 = 30;
const PUBLIC_KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../core/tests/data/jwt-rs256-public.pem");

fn auth() -> &'static JwtAuth {
    static AUTH: OnceLock<JwtAuth> = OnceLock::new();
    AUTH.get_or_init(|| {
        let c = JwtConfig {
            hs256_secret: Some(SECRET.to_owned()),
            rs256_public_key: Some(PUBLIC_KEY.into()),
            issuer: Some(ISSUER.to_owned()),
            audience: Some(AUDIENCE.to_owned()),
            uid_claim: "sub".to_owned(),
            leeway_secs: LEEWAY,
            tags_claim: Some("tags".to_owned()),
        };
        JwtAuth::from_config(&c).expect("JWT config")
    })
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("hmac key");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn check_accepted(login: &str, token: &str, uid: &str, confused: bool) {
    assert!(!confused, "accepted a token signed with the public key as HMAC secret");
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    // Lossy: the JWT library does not check UTF-8 in header fields it ignores.
    let header: Value = serde_json::from_str(&String::from_utf8_lossy(&B64.decode(parts[0]).expect("header base64")))
        .expect("header JSON");
    let sig = B64.decode(parts[2]).expect("signature base64");
    match header["alg"].as_str() {
        Some("HS256") => {
            let signed = &token[..parts[0].len() + 1 + parts[1].len()];
            assert_eq!(sig, hmac(SECRET.as_bytes(), signed.as_bytes()), "HS256 token accepted with a wrong signature");
        }
        Some("RS256") => {}
        other => panic!("accepted alg {other:?}"),
    }
    let claims: serde_json::Map<String, Value> =
        serde_json::from_slice(&B64.decode(parts[1]).expect("payload base64")).expect("payload not a JSON object");
    let t = now();
    let leeway = LEEWAY as i64 + 2;
    let exp = claims.get("exp").and_then(Value::as_f64).expect("accepted without a numeric exp");
    assert!(exp >= (t - leeway) as f64, "accepted expired token (exp {exp}, now {t})");
    if let Some(nbf) = claims.get("nbf") {
        let nbf = nbf.as_f64().expect("accepted a non-numeric nbf");
        assert!(nbf <= (t + leeway) as f64, "accepted a token not yet valid (nbf {nbf}, now {t})");
    }
    assert_eq!(claims.get("iss").and_then(Value::as_str), Some(ISSUER), "accepted another issuer");
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == AUDIENCE,
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(AUDIENCE)),
        _ => false,
    };
    assert!(aud_ok, "accepted another audience: {:?}", claims.get("aud"));
    let sub = match claims.get("sub") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        other => panic!("accepted sub {other:?}"),
    };
    assert_eq!(sub, login, "token for another user accepted");
    assert_eq!(uid, login);
}

fuzz_target!(|data: &[u8]| {
    let ([mode], rest) = header::<1>(data);
    let mut parts = rest.splitn(2, |&b| b == 0);
    let (login, rest) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let Ok(login) = std::str::from_utf8(login) else { return };
    let mode = mode % 4;
    let token = if mode == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let mut p = rest.splitn(3, |&b| b == 0);
        let (h, payload, sig) =
            (p.next().unwrap_or_default(), p.next().unwrap_or_default(), p.next().unwrap_or_default());
        let signed = format!("{}.{}", B64.encode(h), B64.encode(payload));
        let sig = match mode {
            1 => hmac(SECRET.as_bytes(), signed.as_bytes()),
            2 => {
                static PEM: OnceLock<Vec<u8>> = OnceLock::new();
                hmac(PEM.get_or_init(|| std::fs::read(PUBLIC_KEY).expect("public key")), signed.as_bytes())
            }
            _ => sig.to_vec(),
        };
        format!("{signed}.{}", B64.encode(sig))
    };
    let recognized = auth().recognizes(&token);
    let verified = auth().verify(login, &token);
    if std::env::var_os("HERALD_FUZZ_VERBOSE").is_some() {
        eprintln!("{login:?} {token}: {:?}", verified.as_ref().map(|id| &id.uid));
    }
    match verified {
        Ok(id) => {
            assert!(recognized, "verified a token it does not recognize");
            check_accepted(login, &token, &id.uid, mode == 2);
        }
        Err(_) => {}
    }
});
