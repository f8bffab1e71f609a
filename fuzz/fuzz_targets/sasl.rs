//! SASL (core/src/auth/sasl.rs): PLAIN and the SCRAM-SHA-1 / SCRAM-SHA-256
//! server steps.
//!
//! Input: 1 mode byte, then the client's messages separated by NUL (PLAIN:
//! the whole payload). Invariants:
//! - SCRAM never authenticates with a wrong proof: whenever the server
//!   accepts a client-final-message, its proof is the RFC 5802 proof for the
//!   user's password over the exact AuthMessage of this exchange, computed
//!   here independently, and the server signature it answers is right too;
//! - a user without credentials (fake ones) never authenticates;
//! - steps out of order fail;
//! - PLAIN yields exactly the NUL-separated fields, none containing NUL,
//!   authcid and password non-empty.
//!
//! With an odd mode byte the target replaces the proof of the final message
//! by the correct one, so the fuzzer also explores successful exchanges.
#![no_main]

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use herald_core::auth::sasl::{parse_plain, Mechanism, ScramCredentials, ScramServer};
use herald_fuzz::header;
use hmac::{Hmac, KeyInit, Mac};
use libfuzzer_sys::fuzz_target;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

const USER: &str = "user";
const PASSWORD: &str = "pencil";
const SALT: &[u8] = b"fuzz-salt-16byte";
/// Low, to keep the target fast; the count does not change the logic.
const ITERATIONS: u32 = 2;
const SERVER_NONCE: &str = "3rfcNHYJY1ZVvWVs7j";

struct Oracle {
    mechanism: Mechanism,
    salted: Vec<u8>,
    creds: ScramCredentials,
}

impl Oracle {
    fn new(mechanism: Mechanism) -> Oracle {
        let mut salted = vec![0u8; if mechanism == Mechanism::ScramSha1 { 20 } else { 32 }];
        match mechanism {
            Mechanism::ScramSha1 => pbkdf2::pbkdf2_hmac::<Sha1>(PASSWORD.as_bytes(), SALT, ITERATIONS, &mut salted),
            _ => pbkdf2::pbkdf2_hmac::<Sha256>(PASSWORD.as_bytes(), SALT, ITERATIONS, &mut salted),
        }
        let creds = ScramCredentials::derive(mechanism, PASSWORD, SALT, ITERATIONS).expect("credentials");
        Oracle { mechanism, salted, creds }
    }

    fn hmac(&self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self.mechanism {
            Mechanism::ScramSha1 => {
                let mut m = <Hmac<Sha1> as KeyInit>::new_from_slice(key).expect("hmac key");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            _ => {
                let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("hmac key");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    fn hash(&self, data: &[u8]) -> Vec<u8> {
        match self.mechanism {
            Mechanism::ScramSha1 => Sha1::digest(data).to_vec(),
            _ => Sha256::digest(data).to_vec(),
        }
    }

    /// (ClientProof, ServerSignature) for an AuthMessage (RFC 5802 §3).
    fn expected(&self, auth_message: &str) -> (Vec<u8>, Vec<u8>) {
        let client_key = self.hmac(&self.salted, b"Client Key");
        let stored_key = self.hash(&client_key);
        let signature = self.hmac(&stored_key, auth_message.as_bytes());
        let proof = client_key.iter().zip(&signature).map(|(k, s)| k ^ s).collect();
        let server_key = self.hmac(&self.salted, b"Server Key");
        (proof, self.hmac(&server_key, auth_message.as_bytes()))
    }
}

fn oracle(mechanism: Mechanism) -> &'static Oracle {
    static SHA1: OnceLock<Oracle> = OnceLock::new();
    static SHA256: OnceLock<Oracle> = OnceLock::new();
    match mechanism {
        Mechanism::ScramSha1 => SHA1.get_or_init(|| Oracle::new(mechanism)),
        _ => SHA256.get_or_init(|| Oracle::new(mechanism)),
    }
}

fn plain(payload: &[u8]) {
    let Ok(c) = parse_plain(payload) else { return };
    let fields: Vec<&[u8]> = payload.split(|&b| b == 0).collect();
    assert_eq!(fields.len(), 3);
    assert_eq!(c.authzid.as_deref().unwrap_or("").as_bytes(), fields[0]);
    assert_eq!(c.authcid.as_bytes(), fields[1]);
    assert_eq!(c.password.as_bytes(), fields[2]);
    assert!(!c.authcid.is_empty() && !c.password.is_empty());
}

fuzz_target!(|data: &[u8]| {
    let ([mode], rest) = header::<1>(data);
    let mechanism = match (mode >> 1) % 3 {
        0 => Mechanism::ScramSha1,
        1 => Mechanism::ScramSha256,
        _ => return plain(rest),
    };
    let fix_proof = mode & 1 == 1;
    let mut parts = rest.splitn(2, |&b| b == 0);
    let (first, last) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());

    let o = oracle(mechanism);
    let mut server = ScramServer::with_nonce(mechanism, SERVER_NONCE);
    assert!(server.client_final(last).is_err(), "final before first");
    let mut server = ScramServer::with_nonce(mechanism, SERVER_NONCE);
    let Ok(username) = server.client_first(first) else {
        assert!(server.server_first(&o.creds).is_err(), "server-first after a refused client-first");
        return;
    };
    let known = username == USER;
    let creds = if known { o.creds.clone() } else { ScramServer::fake_credentials(mechanism, &username) };
    let server_first =
        String::from_utf8(server.server_first(&creds).expect("server-first")).expect("server-first UTF-8");
    let first = std::str::from_utf8(first).expect("accepted non-UTF-8");
    // client-first-message-bare: after the gs2 header's two commas.
    let bare = first.splitn(3, ',').nth(2).expect("accepted without gs2 header");

    let mut last = last.to_vec();
    let without_proof = |m: &[u8]| -> Option<String> {
        let m = std::str::from_utf8(m).ok()?;
        m.rfind(",p=").map(|at| m[..at].to_owned())
    };
    if fix_proof {
        if let Some(wp) = without_proof(&last) {
            let (proof, _) = o.expected(&format!("{bare},{server_first},{wp}"));
            last = format!("{wp},p={}", B64.encode(proof)).into_bytes();
        }
    }
    let result = server.client_final(&last);
    assert!(server.client_final(&last).is_err(), "client-final twice");
    // The right proof in a plain exchange (`n,,`, no extensions) succeeds.
    let client_nonce = bare.split(',').nth(1).and_then(|a| a.strip_prefix("r=")).unwrap_or_default();
    let canonical = format!("c=biws,r={client_nonce}{SERVER_NONCE}");
    if fix_proof
        && known
        && first.starts_with("n,,")
        && bare.split(',').count() == 2
        && without_proof(&last).as_deref() == Some(canonical.as_str())
    {
        assert!(result.is_ok(), "the right proof was refused: {result:?}");
    }
    if std::env::var_os("HERALD_FUZZ_VERBOSE").is_some() {
        eprintln!("{username:?}: {result:?}");
    }
    if let Ok(server_final) = result {
        assert!(known, "authenticated {username:?}, who has no credentials");
        let text = std::str::from_utf8(&last).expect("accepted non-UTF-8");
        let wp = without_proof(&last).expect("accepted without proof");
        let sent = B64.decode(&text[wp.len() + 3..]).expect("accepted a proof that is not base64");
        let (proof, signature) = o.expected(&format!("{bare},{server_first},{wp}"));
        assert_eq!(sent, proof, "authenticated with a wrong proof");
        assert_eq!(server_final, format!("v={}", B64.encode(signature)).into_bytes());
    }
});
