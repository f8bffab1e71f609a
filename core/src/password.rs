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
//! **Cost ceilings** ([`MAX_BCRYPT_COST`] and the others below): a stored
//! hash names its own cost, and a MongoDB document is data an application
//! user may influence, so [`check`] refuses parameters above these before
//! anything is hashed ([`HashError::TooCostly`]). They sit well above what
//! libraries produce by default (npm `bcrypt` 10, `argon2` 64 MiB/t=3/p=4,
//! OWASP's argon2id 19–46 MiB, passlib scrypt 64 MiB, Django PBKDF2 1.2 M)
//! and bound one verification to about a second of one core and 256 MiB.
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
    /// Well formed, but its cost parameters exceed the ceilings: refused
    /// without hashing. `reason` names the parameter, never the hash.
    #[error("{} hash too costly to verify: {reason}", scheme.as_str())]
    TooCostly { scheme: Scheme, reason: String },
}

/// bcrypt: 2^14 rounds, ~1 s of one core (cost 10–12 is usual).
pub const MAX_BCRYPT_COST: u32 = 14;
/// Argon2 memory, in KiB (256 MiB; RFC 9106's second option is 64 MiB).
pub const MAX_ARGON2_M_KIB: u64 = 256 * 1024;
/// Argon2 passes.
pub const MAX_ARGON2_T: u64 = 10;
/// Argon2 lanes.
pub const MAX_ARGON2_P: u64 = 16;
/// scrypt: 128·r·N·p bytes (memory times the sequential lanes), 256 MiB:
/// ln=17, r=8, p=1 (128 MiB) passes.
pub const MAX_SCRYPT_BYTES: u128 = 256 * 1024 * 1024;
/// PBKDF2 iterations (OWASP 2023: 600,000 for SHA-256; Django 6: 1,200,000).
pub const MAX_PBKDF2_ITERATIONS: u64 = 2_000_000;

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
            let cost = cost.unwrap_or(0);
            if cost > MAX_BCRYPT_COST {
                return Err(too_costly(scheme, format!("cost {cost} > {MAX_BCRYPT_COST}")));
            }
        }
        _ => {
            let parsed = PasswordHash::new(hash).map_err(|e| malformed(e.to_string()))?;
            if parsed.hash.is_none() || parsed.salt.is_none() {
                return Err(malformed("no salt or hash".into()));
            }
            within_ceilings(scheme, &parsed)?;
        }
    }
    Ok(scheme)
}

fn too_costly(scheme: Scheme, reason: String) -> HashError {
    HashError::TooCostly { scheme, reason }
}

/// The cost parameters of a PHC string against the ceilings. A missing
/// parameter takes the crate's default, which is under the ceiling.
fn within_ceilings(scheme: Scheme, parsed: &PasswordHash<'_>) -> Result<(), HashError> {
    let param = |name: &str| -> Result<Option<u64>, HashError> {
        match parsed.params.get_str(name) {
            None => Ok(None),
            Some(v) => v
                .parse::<u64>()
                .map(Some)
                .map_err(|_| HashError::Malformed { scheme, reason: format!("parameter {name} is not a number") }),
        }
    };
    let over = |name: &str, value: u64, max: u64| Err(too_costly(scheme, format!("{name}={value} > {max}")));
    match scheme {
        Scheme::Argon2 => {
            for (name, max) in [("m", MAX_ARGON2_M_KIB), ("t", MAX_ARGON2_T), ("p", MAX_ARGON2_P)] {
                if let Some(v) = param(name)?.filter(|v| *v > max) {
                    return over(name, v, max);
                }
            }
        }
        Scheme::Scrypt => {
            // The scrypt crate's defaults (ln=17, r=8, p=1) when absent.
            let (ln, r, p) = (param("ln")?.unwrap_or(17), param("r")?.unwrap_or(8), param("p")?.unwrap_or(1));
            // Checked: r and p are u32 in the crate, ln < 64; the product of
            // hostile values overflows even u128.
            let bytes = (ln < 64)
                .then(|| 1u128 << ln)
                .and_then(|n| n.checked_mul(128 * u128::from(r)))
                .and_then(|b| b.checked_mul(u128::from(p)))
                .filter(|b| *b <= MAX_SCRYPT_BYTES);
            if bytes.is_none() {
                return Err(too_costly(
                    scheme,
                    format!("128*r*N*p with ln={ln}, r={r}, p={p} exceeds {MAX_SCRYPT_BYTES} bytes"),
                ));
            }
        }
        Scheme::Pbkdf2 => {
            if let Some(i) = param("i")?.filter(|i| *i > MAX_PBKDF2_ITERATIONS) {
                return over("i", i, MAX_PBKDF2_ITERATIONS);
            }
        }
        Scheme::Bcrypt => {}
    }
    Ok(())
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

    /// F3: a stored hash names its own cost; over the ceilings it is
    /// refused before any hashing (each of these would take seconds to
    /// hours, or gigabytes, if verified).
    #[test]
    fn over_ceiling_hashes_are_refused_without_hashing() {
        let t = std::time::Instant::now();
        for (hash, param) in [
            ("$2b$15$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW", "cost 15"),
            ("$2b$31$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW", "cost 31"),
            ("$argon2id$v=19$m=4294967295,t=1,p=1$1LteNc4ltt/K6p6dkHfAww$ZrD6otjwuunnVrXNGkVB0JtQpOrAO94SHQIOMEBeJ78", "m=4294967295"),
            ("$argon2id$v=19$m=256,t=4294967295,p=1$1LteNc4ltt/K6p6dkHfAww$ZrD6otjwuunnVrXNGkVB0JtQpOrAO94SHQIOMEBeJ78", "t=4294967295"),
            ("$argon2id$v=19$m=1024,t=1,p=255$1LteNc4ltt/K6p6dkHfAww$ZrD6otjwuunnVrXNGkVB0JtQpOrAO94SHQIOMEBeJ78", "p=255"),
            ("$scrypt$ln=30,r=8,p=1$aGVyYWxkLXNhbHQtMDAwMQ$Nzn9IZt2e2EGJoREk1UY318sFDlFGirhrNTqrGzezPA", "ln=30"),
            ("$scrypt$ln=14,r=8,p=64$aGVyYWxkLXNhbHQtMDAwMQ$Nzn9IZt2e2EGJoREk1UY318sFDlFGirhrNTqrGzezPA", "p=64"),
            ("$scrypt$ln=63,r=4294967295,p=4294967295$aGVyYWxkLXNhbHQtMDAwMQ$Nzn9IZt2e2EGJoREk1UY318sFDlFGirhrNTqrGzezPA", "ln=63"),
            ("$pbkdf2-sha256$i=4294967295,l=32$aGVyYWxkLXNhbHQtMDAwMQ$dfuR5NC013dFXuSpMoIq1VG+R7CGkXJClF5urg8W5iE", "i=4294967295"),
        ] {
            let err = verify(hash, PW).unwrap_err();
            assert!(matches!(&err, HashError::TooCostly { .. }), "{hash}: {err:?}");
            assert!(err.to_string().contains(param), "{err}");
            assert!(!err.to_string().contains('$'), "the hash is never in the message: {err}");
            assert_eq!(check(hash), Err(err));
        }
        assert!(t.elapsed() < std::time::Duration::from_secs(1), "hashed something: {:?}", t.elapsed());
        // At the ceilings and usual settings: accepted as well formed.
        for hash in [
            "$2b$14$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",
            "$argon2id$v=19$m=262144,t=10,p=16$1LteNc4ltt/K6p6dkHfAww$ZrD6otjwuunnVrXNGkVB0JtQpOrAO94SHQIOMEBeJ78",
            "$scrypt$ln=17,r=8,p=2$aGVyYWxkLXNhbHQtMDAwMQ$Nzn9IZt2e2EGJoREk1UY318sFDlFGirhrNTqrGzezPA",
            "$pbkdf2-sha256$i=2000000,l=32$aGVyYWxkLXNhbHQtMDAwMQ$dfuR5NC013dFXuSpMoIq1VG+R7CGkXJClF5urg8W5iE",
        ] {
            assert!(check(hash).is_ok(), "{hash}: {:?}", check(hash));
        }
    }
}
