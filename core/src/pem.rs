//! Key files named by the config, read without a crypto library: an RSA
//! public key PEM for RS256 tokens (`auth.jwt.rs256_public_key`). Config
//! validation checks the file with this at start, and `auth::jwt` turns
//! the same bytes into its verifying key, so config needs nothing from
//! `auth`. A leaf: imports nothing from the crate.

use std::path::Path;

/// Reads an RSA public key PEM (`PUBLIC KEY`, i.e. SPKI, or `RSA PUBLIC
/// KEY`, i.e. PKCS#1) and checks it is usable for RS256 (2048 to 8192
/// bits); returns the PKCS#1 `RSAPublicKey` DER. Errors name the file.
pub fn rsa_public_key(path: &Path) -> Result<Vec<u8>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    rsa_pkcs1_der(&text).map_err(|e| format!("{} is not an RSA public key PEM: {e}", path.display()))
}

/// The PKCS#1 `RSAPublicKey` DER inside a PEM file, after checking its size.
fn rsa_pkcs1_der(text: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let mut label = None;
    let mut b64 = String::new();
    for line in text.lines().map(str::trim) {
        if let Some(l) = line.strip_prefix("-----BEGIN ").and_then(|l| l.strip_suffix("-----")) {
            if label.is_none() {
                label = Some(l.to_owned());
            }
            continue;
        }
        if line.starts_with("-----END ") {
            if label.is_some() {
                break;
            }
            continue;
        }
        if label.is_some() {
            b64.push_str(line);
        }
    }
    let label = label.ok_or("no PEM block (-----BEGIN PUBLIC KEY-----)")?;
    let der =
        base64::engine::general_purpose::STANDARD.decode(b64.as_bytes()).map_err(|e| format!("bad base64: {e}"))?;
    let pkcs1 = match label.as_str() {
        "RSA PUBLIC KEY" => der,
        "PUBLIC KEY" => spki_rsa_key(&der).ok_or("not an RSA SubjectPublicKeyInfo")?.to_vec(),
        other => return Err(format!("found a {other:?} block; expected \"PUBLIC KEY\" or \"RSA PUBLIC KEY\"")),
    };
    let bits = rsa_modulus_bits(&pkcs1).ok_or("malformed RSAPublicKey")?;
    if !(2048..=8192).contains(&bits) {
        return Err(format!("RSA key of {bits} bits; RS256 needs 2048 to 8192"));
    }
    Ok(pkcs1)
}

/// One DER element: (tag, contents, rest).
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&len0, rest) = rest.split_first()?;
    let (len, rest) = if len0 < 0x80 {
        (len0 as usize, rest)
    } else {
        let n = (len0 & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        (rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | *b as usize), &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// `SEQUENCE { SEQUENCE { OID rsaEncryption, NULL }, BIT STRING { RSAPublicKey } }`.
fn spki_rsa_key(spki: &[u8]) -> Option<&[u8]> {
    const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    let (0x30, body, _) = der(spki)? else { return None };
    let (0x30, alg, rest) = der(body)? else { return None };
    let (0x06, oid, _) = der(alg)? else { return None };
    if oid != RSA_ENCRYPTION {
        return None;
    }
    let (0x03, bits, _) = der(rest)? else { return None };
    match bits.split_first()? {
        (0, key) => Some(key),
        _ => None,
    }
}

/// `SEQUENCE { INTEGER n, INTEGER e }` → bits of n.
fn rsa_modulus_bits(pkcs1: &[u8]) -> Option<usize> {
    let (0x30, body, _) = der(pkcs1)? else { return None };
    let (0x02, n, rest) = der(body)? else { return None };
    let (0x02, e, _) = der(rest)? else { return None };
    if e.is_empty() || e.last()? & 1 == 0 {
        return None;
    }
    let n = &n[n.iter().position(|b| *b != 0)?..];
    Some(n.len() * 8 - n[0].leading_zeros() as usize)
}
