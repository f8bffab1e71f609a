//! The directory: which projects exist and who belongs to them. A user's
//! contacts (XMPP roster) are the members of the user's projects; the roster
//! group of a contact is the project's name.

pub mod memory;
#[cfg(feature = "mongodb")]
pub mod mongo;

use std::fmt::Debug;

pub use memory::MemoryDirectory;

pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub id: String,
    /// Display name; the id when the source has none.
    pub name: String,
    pub members: Vec<String>,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DirectoryError {
    #[error("directory unavailable: {0}")]
    Unavailable(String),
    #[error("directory is read-only: {0}")]
    ReadOnly(String),
}

/// Guarantees every implementation gives (checked by [`conformance`]):
/// - `projects_of(uid)` returns every project whose members include `uid`,
///   each once, sorted by id; an unknown user has none.
/// - `projects(limit)` lists projects sorted by id, at most `limit`.
/// - `project(id)` returns the project with members in stored order, or `None`.
/// - `set_members` replaces the member list (creating the project, named by
///   its id, if needed); a following read sees it. Sources that cannot write
///   return `ReadOnly`.
/// - Failures are `Unavailable`; callers treat the roster as empty for that
///   request and log, never guess.
pub trait Directory: Send + Sync + Debug + 'static {
    fn projects_of<'a>(&'a self, uid: &'a str) -> BoxFuture<'a, Result<Vec<Project>, DirectoryError>>;
    fn projects<'a>(&'a self, limit: usize) -> BoxFuture<'a, Result<Vec<Project>, DirectoryError>>;
    fn project<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Project>, DirectoryError>>;
    fn set_members<'a>(&'a self, id: &'a str, members: &'a [String]) -> BoxFuture<'a, Result<(), DirectoryError>>;
}

/// The conformance suite every [`Directory`] must pass, given a source that
/// starts empty of the projects used here.
pub async fn conformance(dir: &dyn Directory) {
    assert!(dir.projects_of("alice").await.unwrap().is_empty(), "unknown user has no projects");
    assert_eq!(dir.project("p1").await.unwrap(), None);
    let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    dir.set_members("p2", &v(&["carol", "dave", "eve"])).await.unwrap();
    dir.set_members("p1", &v(&["alice", "bob", "carol"])).await.unwrap();
    let p1 = dir.project("p1").await.unwrap().expect("p1 created");
    assert_eq!(p1.members, ["alice", "bob", "carol"]);
    assert_eq!(p1.name, "p1", "a project without a name is named by its id");
    let carol: Vec<String> = dir.projects_of("carol").await.unwrap().into_iter().map(|p| p.id).collect();
    assert_eq!(carol, ["p1", "p2"], "sorted by id, each once");
    assert_eq!(dir.projects_of("alice").await.unwrap().len(), 1);
    let all: Vec<String> = dir.projects(1000).await.unwrap().into_iter().map(|p| p.id).collect();
    assert!(all.contains(&"p1".to_string()) && all.contains(&"p2".to_string()), "every project: {all:?}");
    assert!(all.windows(2).all(|w| w[0] < w[1]), "sorted by id, each once: {all:?}");
    assert_eq!(dir.projects(1).await.unwrap().len(), 1, "at most the limit");
    dir.set_members("p1", &v(&["bob"])).await.unwrap();
    assert!(dir.projects_of("alice").await.unwrap().is_empty(), "replaced, not merged");
    assert_eq!(dir.project("p1").await.unwrap().unwrap().members, ["bob"]);
}
