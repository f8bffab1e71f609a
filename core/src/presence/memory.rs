//! The default presence store: maps in memory.

use std::collections::{HashMap, HashSet};

use parking_lot::Mutex;

use super::{BoxFuture, PresenceError, PresenceStore, UserPresence};

#[derive(Debug, Default)]
pub struct MemoryPresence {
    users: Mutex<HashMap<String, UserPresence>>,
    online: Mutex<HashMap<String, HashSet<String>>>,
}

impl PresenceStore for MemoryPresence {
    fn set_user<'a>(&'a self, uid: &'a str, presence: &'a UserPresence) -> BoxFuture<'a, Result<(), PresenceError>> {
        self.users.lock().insert(uid.to_owned(), presence.clone());
        Box::pin(async { Ok(()) })
    }

    fn get_user<'a>(&'a self, uid: &'a str) -> BoxFuture<'a, Result<Option<UserPresence>, PresenceError>> {
        let v = self.users.lock().get(uid).cloned();
        Box::pin(async move { Ok(v) })
    }

    fn clear_user<'a>(&'a self, uid: &'a str) -> BoxFuture<'a, Result<(), PresenceError>> {
        self.users.lock().remove(uid);
        Box::pin(async { Ok(()) })
    }

    fn add_online<'a>(&'a self, project: &'a str, uid: &'a str) -> BoxFuture<'a, Result<(), PresenceError>> {
        self.online.lock().entry(project.to_owned()).or_default().insert(uid.to_owned());
        Box::pin(async { Ok(()) })
    }

    fn remove_online<'a>(&'a self, project: &'a str, uid: &'a str) -> BoxFuture<'a, Result<(), PresenceError>> {
        let mut online = self.online.lock();
        if let Some(set) = online.get_mut(project) {
            set.remove(uid);
            if set.is_empty() {
                online.remove(project);
            }
        }
        Box::pin(async { Ok(()) })
    }

    fn online<'a>(&'a self, project: &'a str) -> BoxFuture<'a, Result<Vec<String>, PresenceError>> {
        let v = self.online.lock().get(project).map(|s| s.iter().cloned().collect()).unwrap_or_default();
        Box::pin(async move { Ok(v) })
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_presence_conforms() {
        super::super::conformance(&super::MemoryPresence::default()).await;
    }
}
