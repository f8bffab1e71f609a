//! Sans-IO SASL for the XMPP edge: PLAIN (RFC 4616), SCRAM-SHA-1 (RFC 5802)
//! and SCRAM-SHA-256 (RFC 7677), server side only.
//!
//! Nothing here touches a socket, a clock or an async runtime: the edge
//! base64-decodes the contents of `<auth>` / `<response>`, hands the raw
//! bytes in, and base64-encodes whatever comes back into `<challenge>` /
//! `<success>`. That keeps the protocol logic testable against the RFC test
//! vectors byte for byte, and lets the credential lookup (which *is* async)
//! happen between [`ScramServer::client_first`] and [`ScramServer::server_first`]
//! in the caller.
//!
//! Design points:
//!
//! * **No channel binding.** `-PLUS` mechanisms are not offered, so a client
//!   asking for binding (`p=` gs2 flag) is rejected; `y` (client could bind
//!   but believes the server cannot) is accepted, which is correct exactly
//!   because we never advertise `-PLUS`.
//! * **No user enumeration.** For an unknown user the caller continues the
//!   exchange with [`ScramServer::fake_credentials`]; the fake salt is stable
//!   per username for the life of the process, so probing twice looks the same
//!   as probing a real account, and the exchange fails only at the proof, like
//!   a wrong password. Fake credentials use [`FAKE_SALT_LEN`] and
//!   [`DEFAULT_ITERATIONS`]; real ones should be made with
//!   [`ScramCredentials::generate`] (or the same parameters) so the two cannot
//!   be told apart from the server-first-message.
//! * **Constant-time proof check** via `subtle`.
//! * **SASLprep** (RFC 4013) is applied to passwords when deriving keys, via
//!   the `stringprep` crate. ASCII passwords without control characters are
//!   unchanged. If SASLprep rejects a password (prohibited or unassigned code
//!   points) the raw UTF-8 is used instead, as many clients skip SASLprep
//!   entirely and would send exactly those bytes; refusing such a password
//!   would only lock its owner out. Usernames are returned as sent (after
//!   SASLname unescaping); JID/nodeprep normalisation is the caller's job.
//! * **Never panics on input.** Every step returns a `Result`; any error ends
//!   the exchange, and later calls report [`SaslError::OutOfOrder`].

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use rand::{Rng, RngCore};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// PBKDF2 iteration count for stored SCRAM credentials and for the fake ones
/// handed out for unknown users (they must match to be indistinguishable).
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Salt length of [`ScramCredentials::generate`] and of fake credentials.
pub const FAKE_SALT_LEN: usize = 16;

/// Random bytes in a server nonce; 24 bytes encode to 32 base64 characters
/// without padding, all of them valid nonce characters.
const SERVER_NONCE_BYTES: usize = 24;

/// A SASL mechanism the XMPP edge can offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    Plain,
    ScramSha1,
    ScramSha256,
}

impl Mechanism {
    /// All mechanisms, strongest first (the order to advertise them in).
    pub const ALL: [Mechanism; 3] = [Mechanism::ScramSha256, Mechanism::ScramSha1, Mechanism::Plain];

    /// The IANA mechanism name as it appears in `<mechanism>` and `<auth mechanism=...>`.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
        }
    }

    /// Exact (case-sensitive, as SASL names are) lookup. The `-PLUS` variants
    /// return `None`: channel binding is not implemented.
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    fn hash(self) -> Option<ScramHash> {
        match self {
            Mechanism::Plain => None,
            Mechanism::ScramSha1 => Some(ScramHash::Sha1),
            Mechanism::ScramSha256 => Some(ScramHash::Sha256),
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The hash function behind a SCRAM mechanism. Dispatching on a small enum
/// instead of making everything generic keeps the public types non-generic,
/// which is what the edge wants to store per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScramHash {
    Sha1,
    Sha256,
}

impl ScramHash {
    fn output_len(self) -> usize {
        match self {
            ScramHash::Sha1 => 20,
            ScramHash::Sha256 => 32,
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => Sha1::digest(data).to_vec(),
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => hmac_with::<Hmac<Sha1>>(key, data),
            ScramHash::Sha256 => hmac_with::<Hmac<Sha256>>(key, data),
        }
    }

    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.output_len()];
        match self {
            ScramHash::Sha1 => pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut out),
            ScramHash::Sha256 => pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out),
        }
        out
    }
}

fn hmac_with<M: Mac + KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this never fails; returning an
    // empty MAC instead of unwrapping keeps the module panic-free and fails
    // closed (an empty value never matches a real key or signature).
    let Ok(mut mac) = <M as KeyInit>::new_from_slice(key) else {
        return Vec::new();
    };
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// RFC 4013 SASLprep for a password, falling back to the raw string when the
/// profile rejects it (see the module docs for why).
fn normalize_password(password: &str) -> Cow<'_, str> {
    stringprep::saslprep(password).unwrap_or(Cow::Borrowed(password))
}

/// What the server stores to verify SCRAM without knowing the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramCredentials {
    pub mechanism: Mechanism,
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl ScramCredentials {
    /// Derives from a plain password:
    /// `SaltedPassword = PBKDF2-HMAC(SASLprep(password), salt, iterations)`,
    /// `StoredKey = H(HMAC(SaltedPassword, "Client Key"))`,
    /// `ServerKey = HMAC(SaltedPassword, "Server Key")`.
    ///
    /// Returns `None` for [`Mechanism::Plain`] (it has no SCRAM keys) and for
    /// `iterations == 0` (RFC 5802 requires a positive count) rather than
    /// panicking, since mechanism and count may come from configuration.
    pub fn derive(mechanism: Mechanism, password: &str, salt: &[u8], iterations: u32) -> Option<ScramCredentials> {
        let hash = mechanism.hash()?;
        if iterations == 0 {
            return None;
        }
        let salted = hash.salted_password(normalize_password(password).as_bytes(), salt, iterations);
        let client_key = hash.hmac(&salted, b"Client Key");
        Some(ScramCredentials {
            mechanism,
            salt: salt.to_vec(),
            iterations,
            stored_key: hash.hash(&client_key),
            server_key: hash.hmac(&salted, b"Server Key"),
        })
    }

    /// [`derive`](Self::derive) with a fresh random salt of [`FAKE_SALT_LEN`]
    /// bytes and [`DEFAULT_ITERATIONS`], i.e. the same shape as
    /// [`ScramServer::fake_credentials`]. `None` only for [`Mechanism::Plain`].
    pub fn generate(mechanism: Mechanism, password: &str) -> Option<ScramCredentials> {
        let mut salt = [0u8; FAKE_SALT_LEN];
        rand::thread_rng().fill_bytes(&mut salt);
        ScramCredentials::derive(mechanism, password, &salt, DEFAULT_ITERATIONS)
    }

    /// Checks a cleartext password (e.g. from PLAIN over TLS) against these
    /// credentials, comparing the stored key in constant time. Costs one
    /// PBKDF2 run. `false` for invalid credentials.
    pub fn verify_password(&self, password: &str) -> bool {
        match ScramCredentials::derive(self.mechanism, password, &self.salt, self.iterations) {
            Some(derived) => bool::from(derived.stored_key.ct_eq(&self.stored_key)),
            None => false,
        }
    }

    /// Whether these credentials can drive an exchange of `mechanism`.
    fn usable_for(&self, hash: ScramHash, mechanism: Mechanism) -> bool {
        self.mechanism == mechanism
            && self.iterations > 0
            && self.stored_key.len() == hash.output_len()
            && self.server_key.len() == hash.output_len()
    }
}

/// Decoded PLAIN initial response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainCredentials {
    /// Identity to act as, if the client asked for one. For XMPP this is a
    /// JID; whether the authenticated user may assume it is the caller's call.
    pub authzid: Option<String>,
    /// The authentication identity (XMPP: the localpart), as sent.
    pub authcid: String,
    /// The password, as sent (no SASLprep applied).
    pub password: String,
}

/// RFC 4616: `[authzid] NUL authcid NUL passwd`, UTF-8, no NUL inside fields,
/// authcid and passwd non-empty. An empty authzid means "none".
pub fn parse_plain(payload: &[u8]) -> Result<PlainCredentials, SaslError> {
    let mut fields = payload.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(SaslError::Malformed("PLAIN needs exactly two NUL separators".into()));
    };
    if authcid.is_empty() {
        return Err(SaslError::Malformed("PLAIN authcid is empty".into()));
    }
    if password.is_empty() {
        return Err(SaslError::Malformed("PLAIN password is empty".into()));
    }
    let utf8 = |field: &[u8], what: &str| {
        String::from_utf8(field.to_vec()).map_err(|_| SaslError::Malformed(format!("PLAIN {what} is not UTF-8")))
    };
    Ok(PlainCredentials {
        authzid: if authzid.is_empty() { None } else { Some(utf8(authzid, "authzid")?) },
        authcid: utf8(authcid, "authcid")?,
        password: utf8(password, "password")?,
    })
}

/// Where a [`ScramServer`] is in its exchange.
enum State {
    /// Waiting for the client-first-message.
    Initial,
    /// Client-first parsed; waiting for the caller's credential lookup.
    ClientFirst { gs2_header: String, client_first_bare: String, client_nonce: String, username: String },
    /// Server-first sent; waiting for the client-final-message.
    ServerFirst {
        gs2_header: String,
        /// `client-first-message-bare "," server-first-message`: the
        /// AuthMessage minus the client-final part we do not have yet.
        auth_message_prefix: String,
        nonce: String,
        stored_key: Vec<u8>,
        server_key: Vec<u8>,
    },
    /// Finished, successfully or not. Every further call is out of order.
    Done,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Initial => "initial",
            State::ClientFirst { .. } => "client-first",
            State::ServerFirst { .. } => "server-first",
            State::Done => "done",
        }
    }
}

/// Server side of one SCRAM exchange:
/// `client_first` → (caller looks the user up) → `server_first` → `client_final`.
///
/// Any error ends the exchange; calling a step in the wrong state returns
/// [`SaslError::OutOfOrder`].
pub struct ScramServer {
    mechanism: Mechanism,
    server_nonce: String,
    state: State,
}

impl fmt::Debug for ScramServer {
    // Hand-written so that keys in the state never end up in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramServer").field("mechanism", &self.mechanism).field("state", &self.state.name()).finish()
    }
}

impl ScramServer {
    /// A server for `mechanism` with a fresh random nonce (24 bytes from
    /// `rand::thread_rng`, base64). With [`Mechanism::Plain`] the first step
    /// fails with `Malformed`: PLAIN goes through [`parse_plain`] instead.
    pub fn new(mechanism: Mechanism) -> ScramServer {
        let mut bytes = [0u8; SERVER_NONCE_BYTES];
        rand::thread_rng().fill_bytes(&mut bytes);
        ScramServer::with_nonce(mechanism, &B64.encode(bytes))
    }

    /// A server with a fixed nonce, for test vectors. The nonce must be
    /// printable ASCII without `,` (and should be unpredictable outside tests);
    /// it is not checked.
    pub fn with_nonce(mechanism: Mechanism, server_nonce: &str) -> ScramServer {
        ScramServer { mechanism, server_nonce: server_nonce.to_owned(), state: State::Initial }
    }

    /// The mechanism this exchange runs.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Parses the client-first-message and returns the username
    /// (SASLname-decoded: `=2C` → `,`, `=3D` → `=`). Accepts gs2 headers
    /// `n,,` / `y,,`, optionally with `a=<authzid>` equal to the username.
    pub fn client_first(&mut self, message: &[u8]) -> Result<String, SaslError> {
        if !matches!(std::mem::replace(&mut self.state, State::Done), State::Initial) {
            return Err(SaslError::OutOfOrder);
        }
        if self.mechanism.hash().is_none() {
            return Err(SaslError::Malformed(format!("{} is not a SCRAM mechanism", self.mechanism)));
        }
        let message = std::str::from_utf8(message)
            .map_err(|_| SaslError::Malformed("client-first-message is not UTF-8".into()))?;
        let first = parse_client_first(message)?;
        self.state = State::ClientFirst {
            gs2_header: first.gs2_header.to_owned(),
            client_first_bare: first.bare.to_owned(),
            client_nonce: first.client_nonce.to_owned(),
            username: first.username.clone(),
        };
        Ok(first.username)
    }

    /// Builds the server-first-message (`r=<cnonce><snonce>,s=<salt>,i=<n>`)
    /// from the credentials the caller looked up. For an unknown user pass
    /// [`ScramServer::fake_credentials`]; the exchange then fails only at the
    /// proof. Credentials unusable for this mechanism (other mechanism, wrong
    /// key lengths, zero iterations) are replaced by fake ones for the same
    /// reason, rather than failing early and differently.
    ///
    /// Fails only with [`SaslError::OutOfOrder`]: without a prior successful
    /// `client_first` there is no client nonce to answer with.
    pub fn server_first(&mut self, credentials: &ScramCredentials) -> Result<Vec<u8>, SaslError> {
        let State::ClientFirst { gs2_header, client_first_bare, client_nonce, username } =
            std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(SaslError::OutOfOrder);
        };
        // client_first only reaches this state for SCRAM mechanisms.
        let Some(hash) = self.mechanism.hash() else {
            return Err(SaslError::OutOfOrder);
        };
        let fake;
        let credentials = if credentials.usable_for(hash, self.mechanism) {
            credentials
        } else {
            fake = ScramServer::fake_credentials(self.mechanism, &username);
            &fake
        };
        let nonce = format!("{client_nonce}{}", self.server_nonce);
        let server_first = format!("r={nonce},s={},i={}", B64.encode(&credentials.salt), credentials.iterations);
        self.state = State::ServerFirst {
            gs2_header,
            auth_message_prefix: format!("{client_first_bare},{server_first}"),
            nonce,
            stored_key: credentials.stored_key.clone(),
            server_key: credentials.server_key.clone(),
        };
        Ok(server_first.into_bytes())
    }

    /// Verifies the client-final-message (channel binding equal to the gs2
    /// header, i.e. `biws` for `n,,`, nonce, proof) and returns the
    /// server-final-message `v=<ServerSignature>` on success.
    pub fn client_final(&mut self, message: &[u8]) -> Result<Vec<u8>, SaslError> {
        let State::ServerFirst { gs2_header, auth_message_prefix, nonce, stored_key, server_key } =
            std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(SaslError::OutOfOrder);
        };
        let Some(hash) = self.mechanism.hash() else {
            return Err(SaslError::OutOfOrder);
        };
        let message = std::str::from_utf8(message)
            .map_err(|_| SaslError::Malformed("client-final-message is not UTF-8".into()))?;
        let last = parse_client_final(message)?;

        let binding =
            B64.decode(last.channel_binding).map_err(|e| SaslError::Encoding(format!("channel binding: {e}")))?;
        if binding != gs2_header.as_bytes() {
            // Differs from what the client announced in client-first: a
            // downgrade or a confused client; either way no success.
            return Err(SaslError::NotAuthorized);
        }
        if last.nonce != nonce {
            return Err(SaslError::NotAuthorized);
        }
        let proof = B64.decode(last.proof).map_err(|e| SaslError::Encoding(format!("proof: {e}")))?;

        let auth_message = format!("{auth_message_prefix},{}", last.without_proof);
        let client_signature = hash.hmac(&stored_key, auth_message.as_bytes());
        // ClientKey = ClientProof XOR ClientSignature; a proof of the wrong
        // length yields a short key whose hash still gets compared, so the
        // work done does not depend on where the proof went wrong.
        let client_key: Vec<u8> = proof.iter().zip(&client_signature).map(|(p, s)| p ^ s).collect();
        let length_ok = subtle::Choice::from(u8::from(proof.len() == hash.output_len()));
        let key_ok = hash.hash(&client_key).ct_eq(&stored_key);
        if !bool::from(length_ok & key_ok) {
            return Err(SaslError::NotAuthorized);
        }
        let server_signature = hash.hmac(&server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }

    /// Credentials for a user that does not exist: deterministic per
    /// (mechanism, username) within this process, derived from a key drawn
    /// once at random, shaped like [`ScramCredentials::generate`]'s output.
    /// No password matches them: the stored key is not the hash of anything
    /// known, so any proof fails with `NotAuthorized`. For
    /// [`Mechanism::Plain`] the result carries `Plain` and SHA-256-sized keys;
    /// it is of no use and [`ScramServer::server_first`] will not accept it.
    pub fn fake_credentials(mechanism: Mechanism, username: &str) -> ScramCredentials {
        static KEY: OnceLock<[u8; 32]> = OnceLock::new();
        let key = KEY.get_or_init(|| rand::thread_rng().gen());
        let len = mechanism.hash().map_or(32, ScramHash::output_len);
        let derive = |label: &str, len: usize| {
            // Length-prefixing the username keeps distinct (label, mechanism,
            // username) triples from colliding as byte strings.
            let input = format!("herald-scram-fake\0{label}\0{}\0{}\0{username}", mechanism.name(), username.len());
            let mut out = ScramHash::Sha256.hmac(key, input.as_bytes());
            out.truncate(len);
            out
        };
        ScramCredentials {
            mechanism,
            salt: derive("salt", FAKE_SALT_LEN),
            iterations: DEFAULT_ITERATIONS,
            stored_key: derive("stored-key", len),
            server_key: derive("server-key", len),
        }
    }
}

/// The pieces of a client-first-message, borrowed from it.
struct ClientFirst<'a> {
    /// `gs2-cbind-flag "," [authzid] ","`, echoed back later in `c=`.
    gs2_header: &'a str,
    bare: &'a str,
    username: String,
    client_nonce: &'a str,
}

fn parse_client_first(message: &str) -> Result<ClientFirst<'_>, SaslError> {
    // gs2-header = gs2-cbind-flag "," [ authzid ] ","
    let mut parts = message.splitn(3, ',');
    let (Some(flag), Some(authzid_field), Some(bare)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(SaslError::Malformed("missing gs2 header".into()));
    };
    match flag {
        "n" | "y" => {}
        f if f.starts_with("p=") => {
            return Err(SaslError::Malformed("channel binding is not supported".into()));
        }
        _ => return Err(SaslError::Malformed("invalid gs2 channel-binding flag".into())),
    }
    let authzid = match authzid_field {
        "" => None,
        a => match a.strip_prefix("a=") {
            Some(name) => Some(decode_saslname(name)?),
            None => return Err(SaslError::Malformed("invalid gs2 authzid".into())),
        },
    };
    // Both separating commas included: this is what `c=` must echo.
    let gs2_header = &message[..flag.len() + authzid_field.len() + 2];

    // client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
    let mut attrs = bare.split(',');
    let username = match attrs.next() {
        Some(a) if a.starts_with("m=") => {
            return Err(SaslError::Malformed("mandatory extensions are not supported".into()));
        }
        Some(a) => match a.strip_prefix("n=") {
            Some(name) => decode_saslname(name)?,
            None => return Err(SaslError::Malformed("missing username".into())),
        },
        None => return Err(SaslError::Malformed("missing username".into())),
    };
    let client_nonce = match attrs.next().and_then(|a| a.strip_prefix("r=")) {
        Some(n) if valid_nonce(n) => n,
        Some(_) => return Err(SaslError::Malformed("invalid client nonce".into())),
        None => return Err(SaslError::Malformed("missing client nonce".into())),
    };
    check_extensions(attrs)?;
    if authzid.is_some_and(|a| a != username) {
        return Err(SaslError::InvalidAuthzid);
    }
    Ok(ClientFirst { gs2_header, bare, username, client_nonce })
}

/// The pieces of a client-final-message, borrowed from it.
struct ClientFinal<'a> {
    without_proof: &'a str,
    channel_binding: &'a str,
    nonce: &'a str,
    proof: &'a str,
}

fn parse_client_final(message: &str) -> Result<ClientFinal<'_>, SaslError> {
    // client-final-message = channel-binding "," nonce ["," extensions] "," proof
    // Attribute values cannot contain ',', so the last ",p=" starts the proof.
    let Some(at) = message.rfind(",p=") else {
        return Err(SaslError::Malformed("missing proof".into()));
    };
    let (without_proof, proof) = (&message[..at], &message[at + 3..]);
    if proof.contains(',') {
        return Err(SaslError::Malformed("proof must be the last attribute".into()));
    }
    let mut attrs = without_proof.split(',');
    let Some(channel_binding) = attrs.next().and_then(|a| a.strip_prefix("c=")) else {
        return Err(SaslError::Malformed("missing channel binding".into()));
    };
    let Some(nonce) = attrs.next().and_then(|a| a.strip_prefix("r=")) else {
        return Err(SaslError::Malformed("missing nonce".into()));
    };
    check_extensions(attrs)?;
    Ok(ClientFinal { without_proof, channel_binding, nonce, proof })
}

/// Optional extensions (`attr-val = ALPHA "=" value`) are ignored, but must
/// be well-formed; the reserved mandatory `m=` one is refused.
fn check_extensions<'a>(attrs: impl Iterator<Item = &'a str>) -> Result<(), SaslError> {
    for attr in attrs {
        let b = attr.as_bytes();
        if b.len() < 2 || !b[0].is_ascii_alphabetic() || b[1] != b'=' {
            return Err(SaslError::Malformed("malformed attribute".into()));
        }
        if b[0] == b'm' {
            return Err(SaslError::Malformed("mandatory extensions are not supported".into()));
        }
    }
    Ok(())
}

/// `printable = %x21-2B / %x2D-7E` (no ','), at least one character.
fn valid_nonce(nonce: &str) -> bool {
    !nonce.is_empty() && nonce.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// `saslname = 1*(value-safe-char / "=2C" / "=3D")`; any other `=` is an error.
fn decode_saslname(name: &str) -> Result<String, SaslError> {
    if name.is_empty() {
        return Err(SaslError::Malformed("empty SASL name".into()));
    }
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        let escape = &rest[at..];
        if escape.starts_with("=2C") {
            out.push(',');
        } else if escape.starts_with("=3D") {
            out.push('=');
        } else {
            return Err(SaslError::Malformed("invalid escape in SASL name".into()));
        }
        rest = &escape[3..];
    }
    out.push_str(rest);
    if out.contains('\0') {
        return Err(SaslError::Malformed("NUL in SASL name".into()));
    }
    Ok(out)
}

/// Why a SASL step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("not authorized")]
    NotAuthorized,
    #[error("incorrect encoding: {0}")]
    Encoding(String),
    #[error("invalid authzid")]
    InvalidAuthzid,
    #[error("mechanism step out of order")]
    OutOfOrder,
}

impl SaslError {
    /// RFC 6120 §6.5 failure condition element name. There is no condition
    /// for a step out of order; the client broke the mechanism's syntax, so
    /// it is `malformed-request`.
    pub fn condition(&self) -> &'static str {
        match self {
            SaslError::Malformed(_) | SaslError::OutOfOrder => "malformed-request",
            SaslError::NotAuthorized => "not-authorized",
            SaslError::Encoding(_) => "incorrect-encoding",
            SaslError::InvalidAuthzid => "invalid-authzid",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RFC5802_SALT: &str = "QSXCR+Q6sek8bf92";
    const RFC7677_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";

    fn rfc5802_credentials() -> ScramCredentials {
        let salt = B64.decode(RFC5802_SALT).unwrap();
        ScramCredentials::derive(Mechanism::ScramSha1, "pencil", &salt, 4096).unwrap()
    }

    fn rfc7677_credentials() -> ScramCredentials {
        let salt = B64.decode(RFC7677_SALT).unwrap();
        ScramCredentials::derive(Mechanism::ScramSha256, "pencil", &salt, 4096).unwrap()
    }

    /// Client side of the proof, for building client-final-messages.
    fn client_proof(mechanism: Mechanism, password: &str, salt: &[u8], iterations: u32, auth_message: &str) -> String {
        let hash = mechanism.hash().unwrap();
        let salted = hash.salted_password(password.as_bytes(), salt, iterations);
        let client_key = hash.hmac(&salted, b"Client Key");
        let signature = hash.hmac(&hash.hash(&client_key), auth_message.as_bytes());
        B64.encode(client_key.iter().zip(&signature).map(|(k, s)| k ^ s).collect::<Vec<u8>>())
    }

    /// A server for the RFC 5802 example, advanced to just after server-first.
    fn sha1_after_server_first() -> ScramServer {
        let mut server = ScramServer::with_nonce(Mechanism::ScramSha1, "3rfcNHYJY1ZVvWVs7j");
        server.client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL").unwrap();
        server.server_first(&rfc5802_credentials()).unwrap();
        server
    }

    const RFC5802_NONCE: &str = "fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j";
    const RFC5802_PROOF: &str = "v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=";

    #[test]
    fn mechanism_names_round_trip() {
        for m in Mechanism::ALL {
            assert_eq!(Mechanism::from_name(m.name()), Some(m));
        }
        assert_eq!(Mechanism::ScramSha256.name(), "SCRAM-SHA-256");
        assert_eq!(Mechanism::from_name("SCRAM-SHA-1-PLUS"), None);
        assert_eq!(Mechanism::from_name("SCRAM-SHA-256-PLUS"), None);
        assert_eq!(Mechanism::from_name("plain"), None);
        assert_eq!(Mechanism::from_name(""), None);
    }

    #[test]
    fn rfc5802_scram_sha1_example() {
        let mut server = ScramServer::with_nonce(Mechanism::ScramSha1, "3rfcNHYJY1ZVvWVs7j");
        assert_eq!(server.client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL").unwrap(), "user");
        let first = server.server_first(&rfc5802_credentials()).unwrap();
        assert_eq!(first, b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096");
        let last = server
            .client_final(b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=")
            .unwrap();
        assert_eq!(last, b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=");
    }

    #[test]
    fn rfc7677_scram_sha256_example() {
        let mut server = ScramServer::with_nonce(Mechanism::ScramSha256, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
        assert_eq!(server.client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap(), "user");
        let first = server.server_first(&rfc7677_credentials()).unwrap();
        assert_eq!(first, b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
        let last = server
            .client_final(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                  p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            )
            .unwrap();
        assert_eq!(last, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    #[test]
    fn wrong_proof_is_not_authorized() {
        let mut server = sha1_after_server_first();
        let salt = B64.decode(RFC5802_SALT).unwrap();
        let auth = format!(
            "n=user,r=fyko+d2lbbFgONRv9qkxdawL,r={RFC5802_NONCE},s={RFC5802_SALT},i=4096,c=biws,r={RFC5802_NONCE}"
        );
        let proof = client_proof(Mechanism::ScramSha1, "pencil2", &salt, 4096, &auth);
        let err = server.client_final(format!("c=biws,r={RFC5802_NONCE},p={proof}").as_bytes()).unwrap_err();
        assert_eq!(err, SaslError::NotAuthorized);
        assert_eq!(err.condition(), "not-authorized");
    }

    #[test]
    fn client_proof_helper_matches_rfc() {
        // Guards the helper the other tests rely on.
        let salt = B64.decode(RFC5802_SALT).unwrap();
        let auth = format!(
            "n=user,r=fyko+d2lbbFgONRv9qkxdawL,r={RFC5802_NONCE},s={RFC5802_SALT},i=4096,c=biws,r={RFC5802_NONCE}"
        );
        assert_eq!(client_proof(Mechanism::ScramSha1, "pencil", &salt, 4096, &auth), RFC5802_PROOF);
    }

    #[test]
    fn proof_of_wrong_length_or_flipped_bit_fails() {
        for proof in ["", "AAAA", "v0X8v3Bz2T0CJGbJQyF0X+HI4Ts+", "v0X8v3Bz2T0CJGbJQyF0X+HI4TsA"] {
            let mut server = sha1_after_server_first();
            let msg = format!("c=biws,r={RFC5802_NONCE},p={proof}");
            let err = server.client_final(msg.as_bytes()).unwrap_err();
            assert!(matches!(err, SaslError::NotAuthorized | SaslError::Encoding(_)), "{proof}: {err:?}");
        }
        let mut server = sha1_after_server_first();
        let err = server.client_final(format!("c=biws,r={RFC5802_NONCE},p=AAAA").as_bytes()).unwrap_err();
        assert_eq!(err, SaslError::NotAuthorized);
    }

    #[test]
    fn tampered_nonce_is_not_authorized() {
        let mut server = sha1_after_server_first();
        let err = server
            .client_final(b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7X,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=")
            .unwrap_err();
        assert_eq!(err.condition(), "not-authorized");
        // Only the client part echoed back, without the server's nonce.
        let mut server = sha1_after_server_first();
        let err = server.client_final(b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=").unwrap_err();
        assert_eq!(err, SaslError::NotAuthorized);
    }

    #[test]
    fn missing_attributes_are_malformed() {
        for msg in [
            "",
            "n,,",
            "n,,r=abc",
            "n,,n=user",
            "n,,n=user,",
            "n,,n=user,r=",
            "n,,n=,r=abc",
            "n,,n=user,r=abc,",
            "n,,n=user,r=abc,1=x",
            "n,,m=ext,n=user,r=abc",
            "n,,n=user,r=abc,m=ext",
            "x,,n=user,r=abc",
            "n,b=user,n=user,r=abc",
            "n=user,r=abc",
            "n,,n=us=2Xer,r=abc",
            "n,,n=user=,r=abc",
            "n,,n=user,r=ab\u{7f}c",
        ] {
            let mut server = ScramServer::with_nonce(Mechanism::ScramSha1, "srv");
            let err = server.client_first(msg.as_bytes()).unwrap_err();
            assert_eq!(err.condition(), "malformed-request", "{msg:?}: {err:?}");
        }
        for msg in [
            "",
            "p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            "c=biws,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j",
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=,x=1",
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
        ] {
            let mut server = sha1_after_server_first();
            let err = server.client_final(msg.as_bytes()).unwrap_err();
            assert_eq!(err.condition(), "malformed-request", "{msg:?}: {err:?}");
        }
    }

    #[test]
    fn unknown_extensions_are_ignored_but_part_of_auth_message() {
        let mut server = ScramServer::with_nonce(Mechanism::ScramSha1, "3rfcNHYJY1ZVvWVs7j");
        server.client_first(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL,x=ext").unwrap();
        server.server_first(&rfc5802_credentials()).unwrap();
        let salt = B64.decode(RFC5802_SALT).unwrap();
        let without_proof = format!("c=biws,r={RFC5802_NONCE},y=other");
        let auth = format!(
            "n=user,r=fyko+d2lbbFgONRv9qkxdawL,x=ext,r={RFC5802_NONCE},s={RFC5802_SALT},i=4096,{without_proof}"
        );
        let proof = client_proof(Mechanism::ScramSha1, "pencil", &salt, 4096, &auth);
        server.client_final(format!("{without_proof},p={proof}").as_bytes()).unwrap();
    }

    #[test]
    fn bad_base64_is_incorrect_encoding() {
        let mut server = sha1_after_server_first();
        let err = server.client_final(format!("c=bi*s,r={RFC5802_NONCE},p={RFC5802_PROOF}").as_bytes()).unwrap_err();
        assert_eq!(err.condition(), "incorrect-encoding");
        let mut server = sha1_after_server_first();
        let err = server
            .client_final(format!("c=biws,r={RFC5802_NONCE},p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts").as_bytes())
            .unwrap_err();
        assert!(matches!(err, SaslError::Encoding(_)), "{err:?}");
    }

    #[test]
    fn channel_binding_request_is_refused() {
        let mut server = ScramServer::with_nonce(Mechanism::ScramSha256, "srv");
        let err = server.client_first(b"p=tls-unique,,n=user,r=abc").unwrap_err();
        assert_eq!(err.condition(), "malformed-request");
        let mut server = ScramServer::with_nonce(Mechanism::ScramSha256, "srv");
        let err = server.client_first(b"p=tls-exporter,a=user,n=user,r=abc").unwrap_err();
        assert!(matches!(err, SaslError::Malformed(_)));
    }

    #[test]
    fn channel_binding_must_match_gs2_header() {
        // "y,," is accepted (we never advertise -PLUS) and must be echoed as eSws.
        let mut server = ScramServer::with_nonce(Mechanism::ScramSha1, "3rfcNHYJY1ZVvWVs7j");
        server.client_first(b"y,,n=user,r=fyko+d2lbbFgONRv9qkxdawL").unwrap();
        server.server_first(&rfc5802_credentials()).unwrap();
        let salt = B64.decode(RFC5802_SALT).unwrap();
        let auth = format!(
            "n=user,r=fyko+d2lbbFgONRv9qkxdawL,r={RFC5802_NONCE},s={RFC5802_SALT},i=4096,c=eSws,r={RFC5802_NONCE}"
        );
        let proof = client_proof(Mechanism::ScramSha1, "pencil", &salt, 4096, &auth);
        let ok = server.client_final(format!("c=eSws,r={RFC5802_NONCE},p={proof}").as_bytes()).unwrap();
        assert!(ok.starts_with(b"v="));

        // Same client, but it claims "n,," at the end: a downgrade.
        let mut server = ScramServer::with_nonce(Mechanism::ScramSha1, "3rfcNHYJY1ZVvWVs7j");
        server.client_first(b"y,,n=user,r=fyko+d2lbbFgONRv9qkxdawL").unwrap();
        server.server_first(&rfc5802_credentials()).unwrap();
        let err = server.client_final(format!("c=biws,r={RFC5802_NONCE},p={proof}").as_bytes()).unwrap_err();
        assert_eq!(err, SaslError::NotAuthorized);
    }

    #[test]
    fn authzid_equal_to_username_is_accepted() {
        let mut server = ScramServer::with_nonce(Mechanism::ScramSha256, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
        assert_eq!(server.client_first(b"n,a=user,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap(), "user");
        server.server_first(&rfc7677_credentials()).unwrap();
        let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let cbind = B64.encode("n,a=user,");
        let without_proof = format!("c={cbind},r={nonce}");
        let auth = format!("n=user,r=rOprNGfwEbeRWgbNEkqO,r={nonce},s={RFC7677_SALT},i=4096,{without_proof}");
        let salt = B64.decode(RFC7677_SALT).unwrap();
        let proof = client_proof(Mechanism::ScramSha256, "pencil", &salt, 4096, &auth);
        server.client_final(format!("{without_proof},p={proof}").as_bytes()).unwrap();
    }

    #[test]
    fn authzid_other_than_username_is_invalid() {
        let mut server = ScramServer::with_nonce(Mechanism::ScramSha1, "srv");
        let err = server.client_first(b"n,a=admin,n=user,r=abc").unwrap_err();
        assert_eq!(err, SaslError::InvalidAuthzid);
        assert_eq!(err.condition(), "invalid-authzid");
    }

    #[test]
    fn username_escapes_are_decoded() {
        let mut server = ScramServer::with_nonce(Mechanism::ScramSha1, "srv");
        assert_eq!(server.client_first(b"n,a=a=2Cb=3Dc,n=a=2Cb=3Dc,r=abc").unwrap(), "a,b=c");
        let mut server = ScramServer::with_nonce(Mechanism::ScramSha1, "srv");
        assert_eq!(server.client_first("n,,n=jürgen,r=abc".as_bytes()).unwrap(), "jürgen");
        let mut server = ScramServer::with_nonce(Mechanism::ScramSha1, "srv");
        assert!(server.client_first(b"n,,n=\xff,r=abc").is_err());
    }

    #[test]
    fn fake_credentials_reject_every_proof() {
        let fake = ScramServer::fake_credentials(Mechanism::ScramSha256, "nobody");
        assert_eq!(fake, ScramServer::fake_credentials(Mechanism::ScramSha256, "nobody"));
        assert_ne!(fake.salt, ScramServer::fake_credentials(Mechanism::ScramSha256, "nobody2").salt);
        assert_ne!(fake.salt, ScramServer::fake_credentials(Mechanism::ScramSha1, "nobody").salt);
        assert_eq!(fake.salt.len(), FAKE_SALT_LEN);
        assert_eq!(fake.iterations, DEFAULT_ITERATIONS);
        assert_eq!(fake.stored_key.len(), 32);
        assert_eq!(ScramServer::fake_credentials(Mechanism::ScramSha1, "x").stored_key.len(), 20);

        for password in ["", "pencil", "nobody"] {
            let mut server = ScramServer::with_nonce(Mechanism::ScramSha256, "srv");
            server.client_first(b"n,,n=nobody,r=cli").unwrap();
            let first = String::from_utf8(server.server_first(&fake).unwrap()).unwrap();
            let without_proof = "c=biws,r=clisrv";
            let auth = format!("n=nobody,r=cli,{first},{without_proof}");
            let proof = client_proof(Mechanism::ScramSha256, password, &fake.salt, fake.iterations, &auth);
            let err = server.client_final(format!("{without_proof},p={proof}").as_bytes()).unwrap_err();
            assert_eq!(err, SaslError::NotAuthorized);
        }
        // And the all-zero proof (ClientKey = ClientSignature).
        let mut server = ScramServer::with_nonce(Mechanism::ScramSha256, "srv");
        server.client_first(b"n,,n=nobody,r=cli").unwrap();
        server.server_first(&fake).unwrap();
        let zero = B64.encode([0u8; 32]);
        let err = server.client_final(format!("c=biws,r=clisrv,p={zero}").as_bytes()).unwrap_err();
        assert_eq!(err, SaslError::NotAuthorized);
    }

    #[test]
    fn unknown_user_looks_like_known_user() {
        let real = ScramCredentials::generate(Mechanism::ScramSha256, "secret").unwrap();
        let fake = ScramServer::fake_credentials(Mechanism::ScramSha256, "ghost");
        let shape = |c: &ScramCredentials| (c.mechanism, c.salt.len(), c.iterations, c.stored_key.len());
        assert_eq!(shape(&real), shape(&fake));
        assert!(real.verify_password("secret"));
        assert!(!real.verify_password("Secret"));
    }

    #[test]
    fn mismatched_credentials_fail_at_the_proof() {
        // SHA-1 credentials handed to a SHA-256 exchange: replaced by fakes.
        let sha1 = rfc5802_credentials();
        let mut server = ScramServer::with_nonce(Mechanism::ScramSha256, "srv");
        server.client_first(b"n,,n=user,r=cli").unwrap();
        let first = String::from_utf8(server.server_first(&sha1).unwrap()).unwrap();
        let fake = ScramServer::fake_credentials(Mechanism::ScramSha256, "user");
        assert_eq!(first, format!("r=clisrv,s={},i=4096", B64.encode(&fake.salt)));
        let auth = format!("n=user,r=cli,{first},c=biws,r=clisrv");
        let proof = client_proof(Mechanism::ScramSha256, "pencil", &sha1.salt, 4096, &auth);
        let err = server.client_final(format!("c=biws,r=clisrv,p={proof}").as_bytes()).unwrap_err();
        assert_eq!(err, SaslError::NotAuthorized);
    }

    #[test]
    fn derive_rejects_plain_and_zero_iterations() {
        assert_eq!(ScramCredentials::derive(Mechanism::Plain, "pencil", b"salt", 4096), None);
        assert_eq!(ScramCredentials::derive(Mechanism::ScramSha1, "pencil", b"salt", 0), None);
        assert_eq!(ScramCredentials::generate(Mechanism::Plain, "pencil"), None);
        let fake = ScramServer::fake_credentials(Mechanism::Plain, "x");
        assert!(!fake.verify_password("anything"));
    }

    #[test]
    fn saslprep_is_applied_to_passwords() {
        // RFC 4013 maps U+00A0 NO-BREAK SPACE to SPACE and U+00AD SOFT HYPHEN to nothing.
        let a = ScramCredentials::derive(Mechanism::ScramSha1, "a\u{a0}b\u{ad}c", b"salt", 2).unwrap();
        let b = ScramCredentials::derive(Mechanism::ScramSha1, "a bc", b"salt", 2).unwrap();
        assert_eq!(a, b);
        // Prohibited (a control character): used as is rather than refused.
        let c = ScramCredentials::derive(Mechanism::ScramSha1, "a\u{7}b", b"salt", 2).unwrap();
        assert_ne!(c.stored_key, b.stored_key);
        assert_eq!(normalize_password("pencil"), "pencil");
    }

    #[test]
    fn random_nonces_are_fresh_and_valid() {
        let mut a = ScramServer::new(Mechanism::ScramSha256);
        let b = ScramServer::new(Mechanism::ScramSha256);
        assert_ne!(a.server_nonce, b.server_nonce);
        assert_eq!(a.server_nonce.len(), 32);
        assert!(valid_nonce(&a.server_nonce));
        a.client_first(b"n,,n=u,r=c").unwrap();
        let first = a.server_first(&ScramServer::fake_credentials(Mechanism::ScramSha256, "u")).unwrap();
        assert!(first.starts_with(format!("r=c{},s=", a.server_nonce).as_bytes()));
        // Debug shows where the exchange is, never the keys.
        assert_eq!(format!("{a:?}"), "ScramServer { mechanism: ScramSha256, state: \"server-first\" }");
    }

    #[test]
    fn steps_out_of_order() {
        let creds = rfc5802_credentials();
        let mut server = ScramServer::with_nonce(Mechanism::ScramSha1, "srv");
        assert_eq!(server.server_first(&creds).unwrap_err(), SaslError::OutOfOrder);
        // A step out of order ends the exchange.
        assert_eq!(server.client_first(b"n,,n=user,r=abc").unwrap_err(), SaslError::OutOfOrder);

        let mut server = ScramServer::with_nonce(Mechanism::ScramSha1, "srv");
        assert_eq!(server.client_final(b"c=biws,r=abcsrv,p=AAAA").unwrap_err(), SaslError::OutOfOrder);

        let mut server = ScramServer::with_nonce(Mechanism::ScramSha1, "srv");
        server.client_first(b"n,,n=user,r=abc").unwrap();
        assert_eq!(server.client_first(b"n,,n=user,r=abc").unwrap_err(), SaslError::OutOfOrder);

        let mut server = ScramServer::with_nonce(Mechanism::ScramSha1, "srv");
        server.client_first(b"n,,n=user,r=abc").unwrap();
        assert_eq!(server.client_final(b"c=biws,r=abcsrv,p=AAAA").unwrap_err(), SaslError::OutOfOrder);

        // After success, nothing more.
        let mut server = sha1_after_server_first();
        server.client_final(format!("c=biws,r={RFC5802_NONCE},p={RFC5802_PROOF}").as_bytes()).unwrap();
        let again = format!("c=biws,r={RFC5802_NONCE},p={RFC5802_PROOF}");
        assert_eq!(server.client_final(again.as_bytes()).unwrap_err(), SaslError::OutOfOrder);
        assert_eq!(server.server_first(&creds).unwrap_err(), SaslError::OutOfOrder);

        // After a failure, no retry within the same exchange.
        let mut server = sha1_after_server_first();
        server.client_final(format!("c=biws,r={RFC5802_NONCE},p=AAAA").as_bytes()).unwrap_err();
        let err = server.client_final(again.as_bytes()).unwrap_err();
        assert_eq!(err, SaslError::OutOfOrder);
        assert_eq!(err.condition(), "malformed-request");
    }

    #[test]
    fn plain_mechanism_is_not_scram() {
        let mut server = ScramServer::new(Mechanism::Plain);
        let err = server.client_first(b"n,,n=user,r=abc").unwrap_err();
        assert!(matches!(err, SaslError::Malformed(_)));
        assert_eq!(server.mechanism(), Mechanism::Plain);
    }

    #[test]
    fn plain_without_authzid() {
        let creds = parse_plain(b"\0tim\0tanstaaftanstaaf").unwrap();
        assert_eq!(
            creds,
            PlainCredentials { authzid: None, authcid: "tim".into(), password: "tanstaaftanstaaf".into() }
        );
    }

    #[test]
    fn plain_with_authzid() {
        let creds = parse_plain("Ursel\0Kurt\0xipj3plmq".as_bytes()).unwrap();
        assert_eq!(creds.authzid.as_deref(), Some("Ursel"));
        assert_eq!(creds.authcid, "Kurt");
        assert_eq!(creds.password, "xipj3plmq");
        let creds = parse_plain("juliet@example.com\0juliet\0p ä ss".as_bytes()).unwrap();
        assert_eq!(creds.password, "p ä ss");
    }

    #[test]
    fn plain_rejects_bad_payloads() {
        for payload in [
            &b""[..],
            b"tim",
            b"\0tim",
            b"\0\0pass",
            b"\0tim\0",
            b"a\0tim\0pass\0",
            b"a\0tim\0pa\0ss",
            b"\0\xfftim\0pass",
            b"\0tim\0pa\xc3ss",
            b"\xff\0tim\0pass",
        ] {
            let err = parse_plain(payload).unwrap_err();
            assert_eq!(err.condition(), "malformed-request", "{payload:?}");
        }
    }

    #[test]
    fn error_conditions() {
        assert_eq!(SaslError::Malformed("x".into()).condition(), "malformed-request");
        assert_eq!(SaslError::NotAuthorized.condition(), "not-authorized");
        assert_eq!(SaslError::Encoding("x".into()).condition(), "incorrect-encoding");
        assert_eq!(SaslError::InvalidAuthzid.condition(), "invalid-authzid");
        assert_eq!(SaslError::OutOfOrder.condition(), "malformed-request");
        assert_eq!(SaslError::Malformed("no".into()).to_string(), "malformed request: no");
    }

    /// Bytes biased toward SCRAM syntax so the parsers get past the first check.
    fn scramish() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..80),
            "[nyprcmaxsi=,A-Za-z0-9+/\\x00-\\x02]{0,60}".prop_map(String::into_bytes),
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(first in scramish(), last in scramish(), plain in scramish()) {
            let _ = parse_plain(&plain);
            let mut server = ScramServer::with_nonce(Mechanism::ScramSha1, "srv");
            if let Ok(user) = server.client_first(&first) {
                let creds = ScramServer::fake_credentials(Mechanism::ScramSha1, &user);
                prop_assert!(server.server_first(&creds).is_ok());
            }
            let result = server.client_final(&last);
            prop_assert!(result.is_err());
            let _ = result.unwrap_err().condition();
        }

        #[test]
        fn arbitrary_final_after_valid_first_never_panics(
            last in scramish(),
            tail in "[A-Za-z0-9+/=,p]{0,50}",
        ) {
            let fake = ScramServer::fake_credentials(Mechanism::ScramSha256, "user");
            let prefixed = format!("c=biws,r=clisrv{tail}").into_bytes();
            for msg in [last, prefixed] {
                let mut server = ScramServer::with_nonce(Mechanism::ScramSha256, "srv");
                server.client_first(b"n,,n=user,r=cli").unwrap();
                server.server_first(&fake).unwrap();
                prop_assert!(server.client_final(&msg).is_err());
            }
        }
    }
}
