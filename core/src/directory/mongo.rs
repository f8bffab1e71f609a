//! The MongoDB directory: projects and their members read from (and written
//! to) the team's own collection.
//!
//! # Documents
//!
//! One document per project, by default in the collection `projects`:
//!
//! ```text
//! { _id: "p1", name: "Project One", members: ["alice", "bob", "carol"] }
//! ```
//!
//! The collection and the three field names are configurable
//! ([`MongoMapping`]), e.g. `{ teamId: "t1", title: "Team", users: [...] }`
//! in a collection `teams`. The id may be a string or an ObjectId (then the
//! project id is its 24-digit lowercase hex form; a project id of exactly
//! that form finds the document under either type). Members are strings (an ObjectId
//! member is read as its hex form; other types are skipped). A missing or
//! non-string name reads as the id; a missing member list as empty.
//!
//! # Operations
//!
//! - `projects_of(uid)`: `find({<members>: uid})`, sorted by id (as
//!   strings, client side, so string and ObjectId ids sort together).
//! - `project(id)`: `findOne({<id>: id})`.
//! - `set_members(id, members)`: `updateOne({<id>: id}, {$set: {<members>:
//!   members}, $setOnInsert: {<name>: id}}, {upsert: true})`. An id of
//!   ObjectId form first updates an existing ObjectId-keyed document, if any;
//!   otherwise the id is stored as a string.
//!
//! # Failures
//!
//! Server selection and connecting give up after 2 s
//! ([`SERVER_SELECTION_TIMEOUT`], or less when the call timeout is shorter),
//! and every call is bounded by a timeout ([`DEFAULT_TIMEOUT`] unless given
//! to [`MongoDirectory::connect_with_timeout`]); every failure is
//! [`DirectoryError::Unavailable`].

use std::fmt;
use std::future::{Future, IntoFuture};
use std::time::Duration;

use mongodb::bson::{doc, oid::ObjectId, Bson, Document};
use mongodb::options::ClientOptions;
use mongodb::{Client, Collection};

use super::{BoxFuture, Directory, DirectoryError, Project};

/// Bound on every call (and on connecting) unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Server selection and connection timeout, unless the URI sets a shorter one.
pub const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the projects are in the database. Every field has a default, so a
/// config section may name only what differs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MongoMapping {
    /// Collection of project documents (`projects`).
    pub collection: String,
    /// Field holding the project id (`_id`): a string or an ObjectId.
    pub id_field: String,
    /// Field holding the display name (`name`).
    pub name_field: String,
    /// Field holding the array of member uids (`members`).
    pub members_field: String,
}

impl Default for MongoMapping {
    fn default() -> Self {
        MongoMapping {
            collection: "projects".into(),
            id_field: "_id".into(),
            name_field: "name".into(),
            members_field: "members".into(),
        }
    }
}

/// A [`Directory`] in a MongoDB collection; cheap to clone (the driver's
/// pool is shared).
#[derive(Clone)]
pub struct MongoDirectory {
    coll: Collection<Document>,
    mapping: MongoMapping,
    timeout: Duration,
}

impl fmt::Debug for MongoDirectory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoDirectory")
            .field("namespace", &self.coll.namespace().to_string())
            .field("mapping", &self.mapping)
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn unavailable(e: mongodb::error::Error) -> DirectoryError {
    DirectoryError::Unavailable(format!("mongodb: {e}"))
}

impl MongoDirectory {
    /// Connects to `uri` (`mongodb://…` or `mongodb+srv://…`) and uses
    /// `database`, with [`DEFAULT_TIMEOUT`]. Checks the server answers (a
    /// `ping`), so a wrong address fails here, with `Unavailable`.
    pub async fn connect(uri: &str, database: &str, mapping: MongoMapping) -> Result<MongoDirectory, DirectoryError> {
        Self::connect_with_timeout(uri, database, mapping, DEFAULT_TIMEOUT).await
    }

    /// [`connect`](Self::connect) with `timeout` bounding the connection and
    /// every later call.
    pub async fn connect_with_timeout(
        uri: &str,
        database: &str,
        mapping: MongoMapping,
        timeout: Duration,
    ) -> Result<MongoDirectory, DirectoryError> {
        for (what, v) in [
            ("database", database),
            ("collection", &mapping.collection),
            ("id_field", &mapping.id_field),
            ("name_field", &mapping.name_field),
            ("members_field", &mapping.members_field),
        ] {
            if v.is_empty() {
                return Err(DirectoryError::Unavailable(format!("mongodb: {what} is empty")));
            }
        }
        let mut opts = bounded(timeout, ClientOptions::parse(uri)).await?;
        bound_options(&mut opts, timeout);
        let client = Client::with_options(opts).map_err(unavailable)?;
        let db = client.database(database);
        bounded(timeout, db.run_command(doc! { "ping": 1 })).await?;
        let coll = db.collection::<Document>(&mapping.collection);
        Ok(MongoDirectory { coll, mapping, timeout })
    }

    pub fn mapping(&self) -> &MongoMapping {
        &self.mapping
    }

    /// The filter value matching a project id: the string, or either type
    /// when it is an ObjectId's hex form.
    fn id_match(&self, id: &str) -> Bson {
        match as_object_id(id) {
            Some(oid) => Bson::Document(doc! { "$in": [id, oid] }),
            None => Bson::String(id.to_owned()),
        }
    }

    fn projection(&self) -> Document {
        let m = &self.mapping;
        let mut p = doc! { m.id_field.as_str(): 1, m.name_field.as_str(): 1, m.members_field.as_str(): 1 };
        if m.id_field != "_id" {
            p.insert("_id", 0);
        }
        p
    }

    /// Reads one document as a project; `None` when it has no usable id.
    fn to_project(&self, d: &Document) -> Option<Project> {
        let m = &self.mapping;
        let id = match d.get(&m.id_field)? {
            Bson::String(s) => s.clone(),
            Bson::ObjectId(o) => o.to_hex(),
            Bson::Int32(i) => i.to_string(),
            Bson::Int64(i) => i.to_string(),
            _ => return None,
        };
        let name = match d.get(&m.name_field) {
            Some(Bson::String(s)) if !s.is_empty() => s.clone(),
            _ => id.clone(),
        };
        let members = match d.get(&m.members_field) {
            Some(Bson::Array(a)) => a
                .iter()
                .filter_map(|b| match b {
                    Bson::String(s) => Some(s.clone()),
                    Bson::ObjectId(o) => Some(o.to_hex()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        Some(Project { id, name, members })
    }

    /// Projects matching `filter` (all when empty), at most `limit`, sorted by id.
    async fn find_projects(
        &self,
        filter: mongodb::bson::Document,
        limit: Option<usize>,
    ) -> Result<Vec<Project>, DirectoryError> {
        let mut find = self.coll.find(filter).projection(self.projection());
        if let Some(limit) = limit {
            find = find.sort(doc! { self.mapping.id_field.as_str(): 1 }).limit(limit as i64);
        }
        let mut cursor = find.await.map_err(unavailable)?;
        let mut out = Vec::new();
        while cursor.advance().await.map_err(unavailable)? {
            let d = cursor.deserialize_current().map_err(unavailable)?;
            match self.to_project(&d) {
                Some(p) => out.push(p),
                None => {
                    tracing::warn!(collection = %self.coll.name(), field = %self.mapping.id_field, "project document without a usable id skipped")
                }
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out.dedup_by(|a, b| a.id == b.id);
        Ok(out)
    }

    async fn write_members(&self, id: &str, members: &[String]) -> Result<(), DirectoryError> {
        let m = &self.mapping;
        let set = doc! { "$set": { m.members_field.as_str(): members } };
        if let Some(oid) = as_object_id(id) {
            let r = self.coll.update_one(doc! { m.id_field.as_str(): oid }, set.clone()).await.map_err(unavailable)?;
            if r.matched_count > 0 {
                return Ok(());
            }
        }
        let mut update = set;
        if m.name_field != m.id_field && m.name_field != m.members_field {
            update.insert("$setOnInsert", doc! { m.name_field.as_str(): id });
        }
        self.coll.update_one(doc! { m.id_field.as_str(): id }, update).upsert(true).await.map_err(unavailable)?;
        Ok(())
    }
}

/// The ObjectId whose hex form is exactly `id` (24 lowercase hex digits).
fn as_object_id(id: &str) -> Option<ObjectId> {
    ObjectId::parse_str(id).ok().filter(|o| o.to_hex() == id)
}

/// Herald's settings on parsed client options (shared with the MongoDB
/// users of `[auth.mongodb]`): server selection and connecting give up
/// after [`SERVER_SELECTION_TIMEOUT`] or `timeout`, whichever is shorter
/// (or what the URI says, when shorter); the app name is `herald`.
pub(crate) fn bound_options(opts: &mut ClientOptions, timeout: Duration) {
    let limit = SERVER_SELECTION_TIMEOUT.min(timeout);
    opts.server_selection_timeout = Some(opts.server_selection_timeout.map_or(limit, |t| t.min(limit)));
    opts.connect_timeout = Some(opts.connect_timeout.map_or(limit, |t| t.min(limit)));
    if opts.app_name.is_none() {
        opts.app_name = Some("herald".into());
    }
}

async fn bounded<T>(
    timeout: Duration,
    f: impl IntoFuture<Output = mongodb::error::Result<T>>,
) -> Result<T, DirectoryError> {
    match tokio::time::timeout(timeout, f).await {
        Ok(r) => r.map_err(unavailable),
        Err(_) => Err(DirectoryError::Unavailable(format!("mongodb: no reply within {timeout:?}"))),
    }
}

async fn bounded_dir<T>(
    timeout: Duration,
    f: impl Future<Output = Result<T, DirectoryError>>,
) -> Result<T, DirectoryError> {
    tokio::time::timeout(timeout, f)
        .await
        .unwrap_or_else(|_| Err(DirectoryError::Unavailable(format!("mongodb: no reply within {timeout:?}"))))
}

impl Directory for MongoDirectory {
    fn projects_of<'a>(&'a self, uid: &'a str) -> BoxFuture<'a, Result<Vec<Project>, DirectoryError>> {
        let filter = doc! { self.mapping.members_field.as_str(): uid };
        Box::pin(bounded_dir(self.timeout, self.find_projects(filter, None)))
    }

    fn projects<'a>(&'a self, limit: usize) -> BoxFuture<'a, Result<Vec<Project>, DirectoryError>> {
        Box::pin(bounded_dir(self.timeout, self.find_projects(doc! {}, Some(limit))))
    }

    fn project<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Project>, DirectoryError>> {
        Box::pin(bounded_dir(self.timeout, async move {
            let filter = doc! { self.mapping.id_field.as_str(): self.id_match(id) };
            let d = self.coll.find_one(filter).projection(self.projection()).await.map_err(unavailable)?;
            Ok(d.and_then(|d| self.to_project(&d)))
        }))
    }

    fn set_members<'a>(&'a self, id: &'a str, members: &'a [String]) -> BoxFuture<'a, Result<(), DirectoryError>> {
        Box::pin(bounded_dir(self.timeout, self.write_members(id, members)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_id_form_is_exact() {
        assert!(as_object_id("65a1b2c3d4e5f60718293a4b").is_some());
        assert!(as_object_id("65A1B2C3D4E5F60718293A4B").is_none());
        assert!(as_object_id("p1").is_none());
    }

    #[test]
    fn mapping_defaults_and_partial_config() {
        let m: MongoMapping = serde_json::from_str(r#"{"collection":"teams","members_field":"users"}"#).unwrap();
        assert_eq!(m.collection, "teams");
        assert_eq!(m.id_field, "_id");
        assert_eq!(m.name_field, "name");
        assert_eq!(m.members_field, "users");
        assert!(serde_json::from_str::<MongoMapping>(r#"{"colection":"x"}"#).is_err(), "unknown fields rejected");
    }
}
