//! Password hashes as applications store them, verified by RustCrypto-kept
//! crates: one verifier for `[[users]] password_hash` and for the users of
//! `[auth.mongodb]`.
//!
//! | stored form | scheme | crate |
//! |---|---|---|
//! | `$2a$`, `$2b$`, `$2y$`, `$2x$` + cost + 53 chars | bcrypt (npm `bcrypt`/`bcryptjs`, PHP, Ruby) | `bcrypt` |
//! | `$argon2id$v=19$m=…,t=…,p=…$salt$hash` (also `argon2i`, `argon2d`) | Argon2 PHC | `argon2` |
//! | `$scrypt$ln=…,r=…,p=…$salt$hash` | scrypt PHC | `scrypt` |
//! | `$pbkdf2-sha256$i=…,l=…$salt$hash` (also `pbkdf2-sha512`) | PBKDF2 PHC | `pbkdf2` |
//!
//! Anything else (unsalted digests, `$1$`/`$6$` crypt, Django's or
//! passlib's own PBKDF2 layouts, plain text) is an [`HashError::Unknown`]
//! format: never accepted. bcrypt uses only the first 72 bytes of a
//! password, as every bcrypt implementation does.
//!
//! Sans-IO and blocking: callers run [`verify`] on the bounded
//! [`crate::auth::pool::HashPool`], never on the async executor. A leaf:
//! config validation uses [`check`] too.

use argon2::password_hash::{PasswordHash, PasswordVerifier};

/// A password-hashing scheme this verifier knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Bcrypt,
    Argon2,
    Scrypt,
    Pbkdf2,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Bcrypt => "bcrypt",
            Scheme::Argon2 => "argon2",
            Scheme::Scrypt => "scrypt",
            Scheme::Pbkdf2 => "pbkdf2",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// Not a format this verifier knows; `prefix` is the scheme marker
    /// only (`$1$`, `$sha1$`, or `no '$' prefix`), never the hash.
    #[error("unknown password hash format ({prefix})")]
    Unknown { prefix: String },
    /// A known scheme whose string does not parse.
    #[error("malformed {} hash: {reason}", scheme.as_str())]
    Malformed { scheme: Scheme, reason: String },
}

/// The scheme marker of `hash`, safe to log: at most the text up to its
/// second `$`, and at most 24 characters.
fn prefix(hash: &str) -> String {
    let Some(rest) = hash.strip_prefix('$') else { return "no '$' prefix".into() };
    let marker = rest.split('$').next().unwrap_or("");
    let marker: String = marker.chars().take(24).collect();
    format!("${marker}$")
}

/// Which scheme `hash` claims, by its prefix.
pub fn scheme(hash: &str) -> Result<Scheme, HashError> {
    let id = hash.strip_prefix('$').and_then(|r| r.split_once('$')).map(|(id, _)| id);
    match id {
        Some("2a" | "2b" | "2y" | "2x") => Ok(Scheme::Bcrypt),
        Some("argon2id" | "argon2i" | "argon2d") => Ok(Scheme::Argon2),
        Some("scrypt") => Ok(Scheme::Scrypt),
        Some("pbkdf2-sha256" | "pbkdf2-sha512") => Ok(Scheme::Pbkdf2),
        _ => Err(HashError::Unknown { prefix: prefix(hash) }),
    }
}

/// Checks that `hash` is a well-formed hash of a known scheme, without
/// hashing anything (config validation).
pub fn check(hash: &str) -> Result<Scheme, HashError> {
    let scheme = scheme(hash)?;
    let malformed = |reason: String| HashError::Malformed { scheme, reason };
    match scheme {
        Scheme::Bcrypt => {
            // `$2b$10$` + 22 salt + 31 hash characters.
            let cost = hash.get(4..6).and_then(|c| c.parse::<u32>().ok());
            if hash.len() != 60 || hash.as_bytes().get(6) != Some(&b'$') || !cost.is_some_and(|c| (4..=31).contains(&c))
            {
                return Err(malformed("expected $2b$<cost 04-31>$ and 53 characters".into()));
            }
        }
        _ => {
            let parsed = PasswordHash::new(hash).map_err(|e| malformed(e.to_string()))?;
            if parsed.hash.is_none() || parsed.salt.is_none() {
                return Err(malformed("no salt or hash".into()));
            }
        }
    }
    Ok(scheme)
}

/// Whether `password` matches `hash`. `Ok(false)`: a wrong password; `Err`:
/// the hash is not one this verifier can judge (never a match). Costs what
/// the hash's parameters say (bcrypt cost 10: ~50–100 ms of one core).
pub fn verify(hash: &str, password: &[u8]) -> Result<bool, HashError> {
    let scheme = check(hash)?;
    let malformed = |reason: String| HashError::Malformed { scheme, reason };
    if scheme == Scheme::Bcrypt {
        return bcrypt::verify(password, hash).map_err(|e| malformed(e.to_string()));
    }
    let parsed = PasswordHash::new(hash).map_err(|e| malformed(e.to_string()))?;
    let result = match scheme {
        Scheme::Argon2 => argon2::Argon2::default().verify_password(password, &parsed),
        Scheme::Scrypt => scrypt::Scrypt.verify_password(password, &parsed),
        Scheme::Pbkdf2 => pbkdf2_phc::Pbkdf2.verify_password(password, &parsed),
        Scheme::Bcrypt => unreachable!("handled above"),
    };
    match result {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        // Parameters out of range and the like: the hash cannot be judged.
        Err(e) => Err(malformed(e.to_string())),
    }
}

/// A bcrypt hash (cost 10, the npm `bcrypt` default) of a random password
/// nobody knows: verified instead when a user does not exist, so a missing
/// user costs the same time as a wrong password.
pub const DECOY_BCRYPT: &str = "$2b$10$fFieBhtVxOoEYP8ORlOEZeXOcWcI2XeFnp4kBGpLH8Of3NWxB1Qe6";

#[cfg(test)]
mod tests {
    use super::*;

    // Made by other implementations: OpenBSD's bcrypt test vector ("U*U"),
    // the `bcrypt` crate's own vector, Python's hashlib (scrypt, PBKDF2, PHC
    // strings assembled by hand) and argon2-cffi (the reference C code).
    const PW: &[u8] = b"correct horse";
    const VECTORS: &[(&str, &[u8], Scheme)] = &[
        ("$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW", b"U*U", Scheme::Bcrypt),
        ("$2b$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW", b"U*U", Scheme::Bcrypt),
        ("$2y$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW", b"U*U", Scheme::Bcrypt),
        ("$2a$04$UuTkLRZZ6QofpDOlMz32MuuxEHA43WOemOYHPz6.SjsVsyO1tDU96", b"password", Scheme::Bcrypt),
        ("$argon2id$v=19$m=256,t=1,p=1$1LteNc4ltt/K6p6dkHfAww$ZrD6otjwuunnVrXNGkVB0JtQpOrAO94SHQIOMEBeJ78", PW, Scheme::Argon2),
        ("$argon2i$v=19$m=256,t=1,p=1$UDnQ71YfkVloAUfIKidWrQ$IasMnCC014mf9Y/lvd7M5bBpw3dri59sjPvbeonfvP4", PW, Scheme::Argon2),
        ("$scrypt$ln=4,r=8,p=1$aGVyYWxkLXNhbHQtMDAwMQ$Nzn9IZt2e2EGJoREk1UY318sFDlFGirhrNTqrGzezPA", PW, Scheme::Scrypt),
        ("$pbkdf2-sha256$i=1000,l=32$aGVyYWxkLXNhbHQtMDAwMQ$dfuR5NC013dFXuSpMoIq1VG+R7CGkXJClF5urg8W5iE", PW, Scheme::Pbkdf2),
        ("$pbkdf2-sha512$i=1000,l=64$aGVyYWxkLXNhbHQtMDAwMQ$Z+uqsUbatSYawwwOZhTySJ4acZ64/8xXoFjzhUMCZNb/DrgRMoa2HanMExen91zMDvLbXXmP1p3YOoMD3KOVMw", PW, Scheme::Pbkdf2),
    ];

    #[test]
    fn known_vectors_verify_and_wrong_passwords_do_not() {
        for (hash, pw, scheme) in VECTORS {
            assert_eq!(check(hash), Ok(*scheme), "{hash}");
            assert_eq!(verify(hash, pw), Ok(true), "{hash}");
            assert_eq!(verify(hash, b"wrong"), Ok(false), "{hash}");
            let mut longer = pw.to_vec();
            longer.push(b'x');
            assert_eq!(verify(hash, &longer), Ok(false), "{hash}");
        }
    }

    #[test]
    fn the_decoy_is_a_cost_10_bcrypt_hash() {
        assert_eq!(check(DECOY_BCRYPT), Ok(Scheme::Bcrypt));
        assert_eq!(&DECOY_BCRYPT[..7], "$2b$10$");
        assert_eq!(verify(DECOY_BCRYPT, b""), Ok(false));
    }

    #[test]
    fn unknown_and_malformed_hashes_are_never_a_match() {
        for (hash, shown) in [
            ("secret", "no '$' prefix"),
            ("5f4dcc3b5aa765d61d8327deb882cf99", "no '$' prefix"),
            ("$1$saltsalt$qjXMvbEw8oaL.CzflDugX/", "$1$"),
            ("$6$rounds=5000$salt$hash", "$6$"),
            ("pbkdf2_sha256$260000$salt$hash", "no '$' prefix"),
            ("$pbkdf2-sha1$i=1000$c2FsdA$aGFzaA", "$pbkdf2-sha1$"),
        ] {
            assert_eq!(verify(hash, b"secret"), Err(HashError::Unknown { prefix: shown.into() }), "{hash}");
        }
        for hash in [
            "$2b$10$short",
            "$2b$99$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",
            "$argon2id$v=19$m=256,t=1,p=1",
            "$scrypt$ln=4,r=8,p=1$$",
            "$pbkdf2-sha256$i=notanumber$c2FsdA$aGFzaA",
        ] {
            assert!(matches!(verify(hash, b"x"), Err(HashError::Malformed { .. })), "{hash}: {:?}", verify(hash, b"x"));
        }
        let long = format!("${}$x", "a".repeat(100));
        let Err(HashError::Unknown { prefix }) = scheme(&long) else { panic!() };
        assert!(prefix.len() <= 26, "{prefix}");
    }
}
