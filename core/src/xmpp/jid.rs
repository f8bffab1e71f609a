//! JIDs (RFC 7622), simplified: local and domain parts are case-folded to
//! lower case (what nodeprep/nameprep do for the ASCII ids Herald's users
//! have); the resource is kept as given.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Jid {
    pub local: Option<String>,
    pub domain: String,
    pub resource: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed JID {0:?}")]
pub struct JidError(pub String);

const MAX_PART: usize = 1023;

impl Jid {
    pub fn parse(s: &str) -> Result<Jid, JidError> {
        let bad = || JidError(s.to_owned());
        let (bare, resource) = match s.split_once('/') {
            Some((b, r)) => (b, Some(r)),
            None => (s, None),
        };
        let (local, domain) = match bare.split_once('@') {
            Some((l, d)) => (Some(l), d),
            None => (None, bare),
        };
        let ok =
            |p: &str| !p.is_empty() && p.len() <= MAX_PART && !p.chars().any(|c| c.is_control() || c.is_whitespace());
        if !ok(domain) || domain.contains('@') {
            return Err(bad());
        }
        if let Some(l) = local {
            if !ok(l) || l.contains(['"', '&', '\'', ':', '<', '>', '@']) {
                return Err(bad());
            }
        }
        if let Some(r) = resource {
            if r.is_empty() || r.len() > MAX_PART || r.chars().any(char::is_control) {
                return Err(bad());
            }
        }
        Ok(Jid {
            local: local.map(str::to_lowercase),
            domain: domain.trim_end_matches('.').to_lowercase(),
            resource: resource.map(str::to_owned),
        })
    }

    pub fn bare(&self) -> Jid {
        Jid { resource: None, ..self.clone() }
    }

    pub fn full(local: &str, domain: &str, resource: &str) -> Jid {
        Jid { local: Some(local.to_owned()), domain: domain.to_owned(), resource: Some(resource.to_owned()) }
    }

    pub fn with_resource(&self, resource: &str) -> Jid {
        Jid { resource: Some(resource.to_owned()), ..self.clone() }
    }
}

impl fmt::Display for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(l) = &self.local {
            write!(f, "{l}@")?;
        }
        f.write_str(&self.domain)?;
        if let Some(r) = &self.resource {
            write!(f, "/{r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        let j = Jid::parse("Alice@LocalHost/Phone 1").unwrap();
        assert_eq!(j.local.as_deref(), Some("alice"));
        assert_eq!(j.domain, "localhost");
        assert_eq!(j.resource.as_deref(), Some("Phone 1"));
        assert_eq!(j.to_string(), "alice@localhost/Phone 1");
        assert_eq!(j.bare().to_string(), "alice@localhost");
        assert_eq!(Jid::parse("p1@projects.localhost").unwrap().domain, "projects.localhost");
        assert_eq!(Jid::parse("localhost").unwrap().local, None);
        assert_eq!(Jid::parse("a@b/c/d").unwrap().resource.as_deref(), Some("c/d"));
        for bad in ["", "@localhost", "a@", "a@b/", "a b@c", "a@b@c", "a\u{0}@b"] {
            assert!(Jid::parse(bad).is_err(), "{bad:?}");
        }
    }
}
