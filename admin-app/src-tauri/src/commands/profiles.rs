//! Connection-profile commands. The UI calls them through `invoke` from
//! `@tauri-apps/api/core`:
//!
//! ```js
//! await invoke('profiles_list')                 // Profile[]
//! await invoke('profile_save', { profile })     // Profile[] after the save
//! await invoke('profile_delete', { name })      // Profile[] after the delete
//! await invoke('startup_profile')               // Profile | null (from --url/--token or env)
//! ```
//!
//! A failed command rejects the promise with a string that says why (the error's `Display`).

use tauri::State;

use crate::profiles::{Profile, ProfileError, ProfileStore};
use crate::StartupProfile;

/// What a command rejects with: the error's message, as a plain string.
#[derive(Debug)]
pub struct CommandError(String);

impl From<ProfileError> for CommandError {
    fn from(e: ProfileError) -> Self {
        CommandError(e.to_string())
    }
}

impl serde::Serialize for CommandError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// All saved profiles, in the order they were first saved.
#[tauri::command]
pub fn profiles_list(store: State<'_, ProfileStore>) -> Result<Vec<Profile>, CommandError> {
    Ok(store.list()?)
}

/// Adds a profile or replaces the one with the same name; returns the new list.
#[tauri::command]
pub fn profile_save(store: State<'_, ProfileStore>, profile: Profile) -> Result<Vec<Profile>, CommandError> {
    Ok(store.save(profile)?)
}

/// Removes the profile called `name`; returns the new list.
#[tauri::command]
pub fn profile_delete(store: State<'_, ProfileStore>, name: String) -> Result<Vec<Profile>, CommandError> {
    Ok(store.delete(&name)?)
}

/// The profile given at launch (`--url`/`--token` or `HERALD_ADMIN_URL`/`HERALD_ADMIN_TOKEN`),
/// which the UI connects to straight away; `null` when none was given.
#[tauri::command]
pub fn startup_profile(startup: State<'_, StartupProfile>) -> Option<Profile> {
    startup.0.clone()
}
