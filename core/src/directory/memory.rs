//! The default directory: projects from the config, changed through the API.

use std::collections::BTreeMap;

use parking_lot::RwLock;

use super::{BoxFuture, Directory, DirectoryError, Project};
use crate::config::Config;

#[derive(Debug, Default)]
pub struct MemoryDirectory {
    projects: RwLock<BTreeMap<String, Project>>,
}

impl MemoryDirectory {
    pub fn from_config(config: &Config) -> MemoryDirectory {
        let projects = config
            .projects
            .iter()
            .map(|p| {
                let name = p.name.clone().unwrap_or_else(|| p.id.clone());
                (p.id.clone(), Project { id: p.id.clone(), name, members: p.members.clone() })
            })
            .collect();
        MemoryDirectory { projects: RwLock::new(projects) }
    }
}

impl Directory for MemoryDirectory {
    fn projects_of<'a>(&'a self, uid: &'a str) -> BoxFuture<'a, Result<Vec<Project>, DirectoryError>> {
        // BTreeMap iteration is already sorted by id.
        let v = self.projects.read().values().filter(|p| p.members.iter().any(|m| m == uid)).cloned().collect();
        Box::pin(async move { Ok(v) })
    }

    fn projects<'a>(&'a self, limit: usize) -> BoxFuture<'a, Result<Vec<Project>, DirectoryError>> {
        let v = self.projects.read().values().take(limit).cloned().collect();
        Box::pin(async move { Ok(v) })
    }

    fn project<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Project>, DirectoryError>> {
        let v = self.projects.read().get(id).cloned();
        Box::pin(async move { Ok(v) })
    }

    fn set_members<'a>(&'a self, id: &'a str, members: &'a [String]) -> BoxFuture<'a, Result<(), DirectoryError>> {
        let mut projects = self.projects.write();
        let p = projects.entry(id.to_owned()).or_insert_with(|| Project {
            id: id.to_owned(),
            name: id.to_owned(),
            members: Vec::new(),
        });
        p.members = members.to_vec();
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_directory_conforms() {
        super::super::conformance(&super::MemoryDirectory::default()).await;
    }
}
