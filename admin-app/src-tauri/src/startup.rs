//! The profile to connect to at launch, from the command line or the environment.
//!
//! ```text
//! herald-admin [--url URL] [--token TOKEN] [--profile NAME]
//! HERALD_ADMIN_URL=URL HERALD_ADMIN_TOKEN=TOKEN [HERALD_ADMIN_PROFILE=NAME] herald-admin
//! ```
//!
//! Each value comes from its flag if given, else from its variable. A URL without a token
//! (or the reverse) is an error, as is a URL that a saved profile would not accept: the app
//! says so and exits rather than opening a console that cannot connect. The startup
//! profile is not written to `profiles.json`. Prefer the environment for the token: command
//! lines are visible to other local users.

use crate::profiles::{Profile, ProfileError};

/// Name used when neither `--profile` nor `HERALD_ADMIN_PROFILE` is given.
pub const DEFAULT_NAME: &str = "startup";

/// Why the launch arguments could not be turned into a profile.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{0} needs a value")]
    MissingValue(String),
    #[error("unknown argument {0:?}")]
    UnknownArgument(String),
    #[error("a URL was given without a token (--token or HERALD_ADMIN_TOKEN)")]
    UrlWithoutToken,
    #[error("a token was given without a URL (--url or HERALD_ADMIN_URL)")]
    TokenWithoutUrl,
    #[error(transparent)]
    Invalid(#[from] ProfileError),
}

/// Usage text printed with a [`StartupError`].
pub const USAGE: &str = "usage: herald-admin [--url URL --token TOKEN [--profile NAME]]\n       \
     or set HERALD_ADMIN_URL, HERALD_ADMIN_TOKEN and optionally HERALD_ADMIN_PROFILE";

/// Reads the startup profile from `args` (without the program name) and `env` (a lookup
/// such as `|k| std::env::var(k).ok()`). `Ok(None)` when neither names a node.
pub fn startup_profile(
    args: impl IntoIterator<Item = String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Profile>, StartupError> {
    let (mut url, mut token, mut name) = (None, None, None);
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value.to_owned())),
            _ => (arg.clone(), None),
        };
        let slot = match flag.as_str() {
            "--url" => &mut url,
            "--token" => &mut token,
            "--profile" => &mut name,
            _ => return Err(StartupError::UnknownArgument(arg)),
        };
        let value = match inline {
            Some(v) => v,
            None => args.next().ok_or_else(|| StartupError::MissingValue(flag.clone()))?,
        };
        *slot = Some(value);
    }
    let non_empty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    let url = non_empty(url.or_else(|| env("HERALD_ADMIN_URL")));
    let token = non_empty(token.or_else(|| env("HERALD_ADMIN_TOKEN")));
    let name = non_empty(name.or_else(|| env("HERALD_ADMIN_PROFILE"))).unwrap_or_else(|| DEFAULT_NAME.to_owned());
    match (url, token) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(StartupError::UrlWithoutToken),
        (None, Some(_)) => Err(StartupError::TokenWithoutUrl),
        (Some(url), Some(token)) => Ok(Some(Profile { name, url, token }.validated()?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Option<Profile>, StartupError> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        startup_profile(args.iter().map(|s| s.to_string()), |k| env.get(k).cloned())
    }

    #[test]
    fn nothing_given_is_none() {
        assert!(run(&[], &[]).unwrap().is_none());
    }

    #[test]
    fn from_the_environment() {
        let p = run(&[], &[("HERALD_ADMIN_URL", "http://127.0.0.1:15672/"), ("HERALD_ADMIN_TOKEN", "tok")])
            .unwrap()
            .unwrap();
        assert_eq!(p, Profile { name: DEFAULT_NAME.into(), url: "http://127.0.0.1:15672".into(), token: "tok".into() });
        let p =
            run(&[], &[("HERALD_ADMIN_URL", "http://h"), ("HERALD_ADMIN_TOKEN", "t"), ("HERALD_ADMIN_PROFILE", "ci")])
                .unwrap()
                .unwrap();
        assert_eq!(p.name, "ci");
    }

    #[test]
    fn flags_win_over_the_environment() {
        let p = run(
            &["--url", "https://a.example", "--token=x", "--profile", "a"],
            &[("HERALD_ADMIN_URL", "http://b"), ("HERALD_ADMIN_TOKEN", "y")],
        )
        .unwrap()
        .unwrap();
        assert_eq!((p.name.as_str(), p.url.as_str(), p.token.as_str()), ("a", "https://a.example", "x"));
    }

    #[test]
    fn half_a_profile_is_an_error() {
        assert!(matches!(run(&["--url", "http://h"], &[]), Err(StartupError::UrlWithoutToken)));
        assert!(matches!(run(&[], &[("HERALD_ADMIN_TOKEN", "t")]), Err(StartupError::TokenWithoutUrl)));
        assert!(matches!(run(&["--token"], &[]), Err(StartupError::MissingValue(f)) if f == "--token"));
        assert!(matches!(run(&["--verbose"], &[]), Err(StartupError::UnknownArgument(a)) if a == "--verbose"));
    }

    #[test]
    fn a_bad_url_is_an_error_with_its_reason() {
        let err = run(&["--url", "localhost:15672", "--token", "t"], &[]).unwrap_err();
        assert!(matches!(err, StartupError::Invalid(ProfileError::InvalidUrl { .. })), "{err}");
    }
}
