//! Connection profiles: which Herald nodes the console knows and the admin token for each.
//!
//! A [`ProfileStore`] is one JSON file (`profiles.json` in the app's config directory)
//! holding a list of [`Profile`]s. Every change is read-modify-write of the whole file,
//! written atomically (a temporary file in the same directory, then `rename`), so a crash
//! leaves either the old list or the new one, never half a file. The store serializes its
//! own read-modify-write cycles with a mutex; two processes writing at once are not
//! coordinated (last rename wins), which is fine for a desktop app's settings.
//!
//! Tokens are stored in clear text, like `~/.netrc`; on Unix the file is created with mode
//! 0600 so other users cannot read it.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Longest accepted profile name, in characters.
pub const MAX_NAME_CHARS: usize = 100;

/// One Herald node the console can connect to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// Unique, non-empty label shown in the UI (trimmed).
    pub name: String,
    /// Base URL of the node's admin listener, `http://` or `https://`, without a trailing
    /// slash: the UI appends `/api/...` to it.
    pub url: String,
    /// Bearer token sent as `Authorization: Bearer <token>` (one of `admin.tokens`).
    pub token: String,
}

impl Profile {
    /// Checks and normalizes a profile: trims the name and URL, drops a trailing `/` from
    /// the URL, and rejects an empty or over-long name and a URL that is not
    /// `http(s)://host[:port][/path]`.
    pub fn validated(self) -> Result<Profile, ProfileError> {
        let name = self.name.trim().to_owned();
        if name.is_empty() {
            return Err(ProfileError::InvalidName { name, reason: "the name is empty" });
        }
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(ProfileError::InvalidName { name, reason: "the name is longer than 100 characters" });
        }
        if name.chars().any(char::is_control) {
            return Err(ProfileError::InvalidName { name, reason: "the name contains a control character" });
        }
        let url = normalize_url(&self.url)?;
        Ok(Profile { name, url, token: self.token.trim().to_owned() })
    }
}

fn normalize_url(raw: &str) -> Result<String, ProfileError> {
    let raw = raw.trim();
    let invalid = |reason: String| ProfileError::InvalidUrl { url: raw.to_owned(), reason };
    if raw.is_empty() {
        return Err(invalid("the URL is empty".into()));
    }
    if !raw.contains("://") {
        return Err(invalid("it must start with http:// or https://".into()));
    }
    let parsed = url::Url::parse(raw).map_err(|e| invalid(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(format!("the scheme is {:?}; expected http or https", parsed.scheme())));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("there is no host".into()));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid("a base URL has no query or fragment".into()));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid("put credentials in the token, not in the URL".into()));
    }
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

/// Why a profile operation failed. The `Display` text is what the UI shows.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("invalid profile name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("no profile named {0:?}")]
    NotFound(String),
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ProfileError {
    fn io(path: &Path, source: io::Error) -> Self {
        ProfileError::Io { path: path.to_owned(), source }
    }
}

/// The on-disk list of profiles. Cheap to share behind Tauri's managed state.
#[derive(Debug)]
pub struct ProfileStore {
    path: PathBuf,
    /// Held across each read-modify-write so concurrent commands do not lose updates.
    lock: Mutex<()>,
}

impl ProfileStore {
    /// A store backed by `path` (created on the first save, with its parent directories).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ProfileStore { path: path.into(), lock: Mutex::new(()) }
    }

    /// The file this store reads and writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All profiles, in the order they were first saved. A missing file is an empty list.
    pub fn list(&self) -> Result<Vec<Profile>, ProfileError> {
        let _guard = self.guard();
        self.read()
    }

    /// Adds `profile`, or replaces the one with the same name (names are unique, so
    /// saving under an existing name is how a profile is edited). Returns the new list.
    pub fn save(&self, profile: Profile) -> Result<Vec<Profile>, ProfileError> {
        let profile = profile.validated()?;
        let _guard = self.guard();
        let mut profiles = self.read()?;
        match profiles.iter_mut().find(|p| p.name == profile.name) {
            Some(existing) => *existing = profile,
            None => profiles.push(profile),
        }
        self.write(&profiles)?;
        Ok(profiles)
    }

    /// Removes the profile called `name` (`NotFound` when there is none). Returns the new list.
    pub fn delete(&self, name: &str) -> Result<Vec<Profile>, ProfileError> {
        let name = name.trim();
        let _guard = self.guard();
        let mut profiles = self.read()?;
        let before = profiles.len();
        profiles.retain(|p| p.name != name);
        if profiles.len() == before {
            return Err(ProfileError::NotFound(name.to_owned()));
        }
        self.write(&profiles)?;
        Ok(profiles)
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        // The mutex guards no data, so a panic while it was held leaves nothing torn.
        self.lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn read(&self) -> Result<Vec<Profile>, ProfileError> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ProfileError::io(&self.path, e)),
        };
        let corrupt = |reason: String| ProfileError::Corrupt { path: self.path.clone(), reason };
        let profiles: Vec<Profile> =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("not a profile list: {e}")))?;
        // A hand-edited file is held to the same rules as a saved profile.
        let mut checked: Vec<Profile> = Vec::with_capacity(profiles.len());
        for profile in profiles {
            let profile = profile.validated().map_err(|e| corrupt(e.to_string()))?;
            if checked.iter().any(|p| p.name == profile.name) {
                return Err(corrupt(format!("the name {:?} appears twice", profile.name)));
            }
            checked.push(profile);
        }
        Ok(checked)
    }

    /// Writes the whole list to a temporary file next to the target, flushes it to disk,
    /// then renames it over the target (atomic on POSIX file systems).
    fn write(&self, profiles: &[Profile]) -> Result<(), ProfileError> {
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        fs::create_dir_all(dir).map_err(|e| ProfileError::io(dir, e))?;
        let file_name =
            self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "profiles.json".into());
        let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
        let mut json = serde_json::to_vec_pretty(profiles).expect("profiles serialize to JSON");
        json.push(b'\n');
        let result = (|| {
            let mut file = create_private(&tmp)?;
            file.write_all(&json)?;
            file.sync_all()?;
            fs::rename(&tmp, &self.path)
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(ProfileError::io(&self.path, e));
        }
        Ok(())
    }
}

#[cfg(unix)]
fn create_private(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)
}

#[cfg(not(unix))]
fn create_private(path: &Path) -> io::Result<fs::File> {
    fs::File::create(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(name: &str, url: &str, token: &str) -> Profile {
        Profile { name: name.into(), url: url.into(), token: token.into() }
    }

    fn store() -> (tempfile::TempDir, ProfileStore) {
        let dir = tempfile::tempdir().unwrap();
        // A directory that does not exist yet, as on the first run of the app.
        let store = ProfileStore::new(dir.path().join("config").join("profiles.json"));
        (dir, store)
    }

    #[test]
    fn missing_file_is_an_empty_list() {
        let (_dir, store) = store();
        assert_eq!(store.list().unwrap(), vec![]);
    }

    #[test]
    fn save_list_delete_round_trip() {
        let (_dir, store) = store();
        let a = profile("local", "http://127.0.0.1:15672", "t1");
        let b = profile("prod", "https://herald.example.com/", "t2");
        assert_eq!(store.save(a.clone()).unwrap(), vec![a.clone()]);
        let listed = store.save(b).unwrap();
        let b_norm = profile("prod", "https://herald.example.com", "t2");
        assert_eq!(listed, vec![a.clone(), b_norm.clone()]);
        // A second store on the same file sees the same list (it really is on disk).
        let again = ProfileStore::new(store.path());
        assert_eq!(again.list().unwrap(), vec![a.clone(), b_norm]);
        assert_eq!(store.delete("prod").unwrap(), vec![a]);
        assert_eq!(store.delete("local").unwrap(), vec![]);
        assert_eq!(store.list().unwrap(), vec![]);
    }

    #[test]
    fn saving_an_existing_name_replaces_it_in_place() {
        let (_dir, store) = store();
        store.save(profile("a", "http://a:1", "x")).unwrap();
        store.save(profile("b", "http://b:1", "y")).unwrap();
        let list = store.save(profile(" a ", "http://a:2", "z")).unwrap();
        assert_eq!(list, vec![profile("a", "http://a:2", "z"), profile("b", "http://b:1", "y")]);
    }

    #[test]
    fn invalid_names_are_rejected() {
        let (_dir, store) = store();
        for name in ["", "   ", "tab\there", &"x".repeat(MAX_NAME_CHARS + 1)] {
            let err = store.save(profile(name, "http://h", "t")).unwrap_err();
            assert!(matches!(err, ProfileError::InvalidName { .. }), "{name:?}: {err}");
        }
        assert!(!store.path().exists(), "a rejected save writes nothing");
    }

    #[test]
    fn invalid_urls_are_rejected_with_a_reason() {
        let (_dir, store) = store();
        for (url, why) in [
            ("", "empty"),
            ("127.0.0.1:15672", "http:// or https://"),
            ("localhost", "http:// or https://"),
            ("ftp://h/", "scheme"),
            ("ws://h:1", "scheme"),
            ("http://", "host"),
            ("http://h/?x=1", "query"),
            ("http://u:p@h/", "credentials"),
        ] {
            let err = store.save(profile("n", url, "t")).unwrap_err();
            assert!(matches!(err, ProfileError::InvalidUrl { .. }), "{url:?}: {err}");
            assert!(err.to_string().contains(why), "{url:?}: {err}");
        }
    }

    #[test]
    fn urls_are_trimmed_and_lose_the_trailing_slash() {
        let p = profile("n", "  http://127.0.0.1:15672/  ", " tok ").validated().unwrap();
        assert_eq!(p.url, "http://127.0.0.1:15672");
        assert_eq!(p.token, "tok");
        let p = profile("n", "https://h.example/herald/", "t").validated().unwrap();
        assert_eq!(p.url, "https://h.example/herald");
    }

    #[test]
    fn deleting_an_unknown_name_is_not_found() {
        let (_dir, store) = store();
        store.save(profile("a", "http://a", "t")).unwrap();
        let err = store.delete("b").unwrap_err();
        assert!(matches!(err, ProfileError::NotFound(ref n) if n == "b"), "{err}");
        assert_eq!(store.list().unwrap().len(), 1);
    }

    #[test]
    fn a_corrupt_file_is_reported_and_left_alone() {
        let (_dir, store) = store();
        fs::create_dir_all(store.path().parent().unwrap()).unwrap();
        fs::write(store.path(), b"{not json").unwrap();
        let err = store.list().unwrap_err();
        assert!(matches!(err, ProfileError::Corrupt { .. }), "{err}");
        assert!(store.save(profile("a", "http://a", "t")).is_err());
        assert_eq!(fs::read(store.path()).unwrap(), b"{not json");

        let dup = r#"[{"name":"a","url":"http://a","token":""},{"name":"a","url":"http://b","token":""}]"#;
        fs::write(store.path(), dup).unwrap();
        let err = store.list().unwrap_err();
        assert!(err.to_string().contains("appears twice"), "{err}");
    }

    #[test]
    fn writes_are_atomic_and_leave_no_temporary_files() {
        let (_dir, store) = store();
        for i in 0..5 {
            store.save(profile(&format!("p{i}"), "http://h", "t")).unwrap();
        }
        let dir = store.path().parent().unwrap();
        let names: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(names, vec!["profiles.json".to_string()]);
        let on_disk: Vec<Profile> = serde_json::from_slice(&fs::read(store.path()).unwrap()).unwrap();
        assert_eq!(on_disk.len(), 5);
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, store) = store();
        store.save(profile("a", "http://a", "secret")).unwrap();
        let mode = fs::metadata(store.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn concurrent_saves_lose_nothing() {
        let (_dir, store) = store();
        std::thread::scope(|s| {
            for i in 0..8 {
                let store = &store;
                s.spawn(move || store.save(profile(&format!("p{i}"), "http://h", "t")).unwrap());
            }
        });
        assert_eq!(store.list().unwrap().len(), 8);
    }
}
