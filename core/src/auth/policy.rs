//! Least privilege on the addressing model (DESIGN.md "One addressing
//! model", "Trust and limits"): the one place edges ask whether a user may
//! read or write a routing key of the `feed`, `project` and `presence`
//! exchanges, or use a queue, whatever the protocol (STOMP SUBSCRIBE and
//! SEND, XMPP messages to a user or a project).
//!
//! Every answer combines the authorizer's (resource and topic permissions:
//! config users, JWT defaults, an HTTP backend, JS callbacks) with the
//! `[access]` rules below. The rules apply to every user without the
//! `administrator` tag, whatever the auth source, unless the authorizer
//! decides routing keys (or queue names) itself: then its answer stands.
//!
//! - `feed/<uid>`: read by `<uid>` only; written by `<uid>`, and by others
//!   as `access.chat_policy` allows (`contacts`: share a project; `all`;
//!   `none`).
//! - `project/<pid>`: read and written by members of `<pid>` only.
//! - `presence/<pid>.<…>`: read by members of `<pid>` only (the words after
//!   the project may be wildcards: `presence/p1.*`); written by the server
//!   only.
//! - No wildcard (`*`, `#`) in place of a user or a project.
//! - A queue named `<uid>.…` or `<uid>-…` belongs to `<uid>`: other users
//!   are refused whatever their resource permissions (`stomp-subscription-`
//!   is skipped first, so durable subscription queues belong to their user).
//!   `<uid>` is recognised when it is a `[[users]]` entry, a project member
//!   or online; other queues follow the resource permissions.

use std::fmt;

use super::{Identity, Permission, ResourceKind};
use crate::config::ChatPolicy;
use crate::engine::Engine;
use crate::router::{ExchangeKind, Vhost};

/// A refusal, with the reason the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied(pub String);

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn denied(reason: impl Into<String>) -> Result<(), Denied> {
    Err(Denied(reason.into()))
}

/// Most '.'/'-' separated prefixes of a queue name looked up as possible
/// owners: each may cost a directory query.
const MAX_OWNER_CANDIDATES: usize = 8;

/// Prefix of durable subscription queues (`stomp-subscription-<uid>-<id>`).
const SUBSCRIPTION_PREFIX: &str = "stomp-subscription-";

fn is_wildcard(word: &str) -> bool {
    word == "*" || word == "#"
}

fn has_wildcard(key: &str) -> bool {
    key.split('.').any(is_wildcard)
}

/// May `who` read (bind) or write (publish) `key` on `exchange` in `vhost`?
/// The authorizer's topic answer (topic exchanges only), then the
/// addressing-model rules.
pub async fn topic(
    engine: &Engine,
    who: &Identity,
    vhost: &Vhost,
    exchange: &str,
    key: &str,
    permission: Permission,
) -> Result<(), Denied> {
    let authorizer = engine.auth().authorizer;
    if vhost.exchange(exchange).is_some_and(|x| x.kind == ExchangeKind::Topic) {
        match authorizer.topic(who, &vhost.name, exchange, key, permission).await {
            Ok(true) => {}
            Ok(false) => return denied("topic permissions"),
            Err(e) => return denied(e.to_string()),
        }
    }
    if who.is_administrator() || authorizer.decides_topics() {
        return Ok(());
    }
    addressing(engine, who, exchange, key, permission).await
}

/// The `[access]` rules for one routing key (no authorizer asked).
pub async fn addressing(
    engine: &Engine,
    who: &Identity,
    exchange: &str,
    key: &str,
    permission: Permission,
) -> Result<(), Denied> {
    let names = &engine.config.exchanges;
    let uid = who.uid.as_str();
    if exchange == names.feed {
        if has_wildcard(key) {
            return denied(format!("no wildcard in place of a user on exchange '{exchange}'"));
        }
        if key == uid {
            return Ok(());
        }
        return match permission {
            Permission::Write => match engine.config.access.chat_policy {
                ChatPolicy::All => Ok(()),
                ChatPolicy::None => denied("writing to another user's feed is off (access.chat_policy = \"none\")"),
                ChatPolicy::Contacts => match shares_project(engine, uid, key).await {
                    Ok(true) => Ok(()),
                    Ok(false) => {
                        denied(format!("'{key}' is not a contact (access.chat_policy = \"contacts\": share a project)"))
                    }
                    Err(e) => denied(e),
                },
            },
            _ => denied(format!("feed '{key}' is read by '{key}' only")),
        };
    }
    if exchange == names.project {
        if has_wildcard(key) {
            return denied(format!("no wildcard in place of a project on exchange '{exchange}'"));
        }
        return member(engine, uid, key).await;
    }
    if exchange == names.presence {
        if permission != Permission::Read {
            return denied("presence events are published by the server only");
        }
        let project = key.split('.').next().unwrap_or("");
        if is_wildcard(project) {
            return denied(format!("no wildcard in place of a project on exchange '{exchange}'"));
        }
        return member(engine, uid, project).await;
    }
    Ok(())
}

async fn member(engine: &Engine, uid: &str, project: &str) -> Result<(), Denied> {
    match engine.directory().project(project).await {
        Ok(Some(p)) if p.members.iter().any(|m| m == uid) => Ok(()),
        Ok(_) => denied(format!("not a member of project '{project}'")),
        Err(e) => denied(e.to_string()),
    }
}

/// Whether `a` and `b` are members of a common project (XMPP contacts).
async fn shares_project(engine: &Engine, a: &str, b: &str) -> Result<bool, String> {
    let projects = engine.directory().projects_of(a).await.map_err(|e| e.to_string())?;
    Ok(projects.iter().any(|p| p.members.iter().any(|m| m == b)))
}

/// May `who` use queue `name` for `permission`? The authorizer's resource
/// answer, then the rule on users' own queues.
pub async fn queue(
    engine: &Engine,
    who: &Identity,
    vhost: &str,
    name: &str,
    permission: Permission,
) -> Result<(), Denied> {
    let authorizer = engine.auth().authorizer;
    match authorizer.resource(who, vhost, ResourceKind::Queue, name, permission).await {
        Ok(true) => {}
        Ok(false) => return denied("resource permissions"),
        Err(e) => return denied(e.to_string()),
    }
    queue_owner(engine, who, name).await
}

/// The rule on users' own queues alone (for paths that ask no resource
/// permission on the queue, such as a SEND to `/amq/queue/<name>`).
pub async fn queue_owner(engine: &Engine, who: &Identity, name: &str) -> Result<(), Denied> {
    if who.is_administrator() || engine.auth().authorizer.decides_resources() {
        return Ok(());
    }
    // `amq.` names are the server's own (temp and per-subscription queues;
    // clients cannot declare them): no user owns them by prefix, and every
    // SUBSCRIBE to an exchange would otherwise look up `amq` as a user.
    if name.starts_with("amq.") {
        return Ok(());
    }
    let base = name.strip_prefix(SUBSCRIPTION_PREFIX).unwrap_or(name);
    let uid = who.uid.as_str();
    let prefixes = || base.match_indices(['.', '-']).map(|(i, _)| &base[..i]).filter(|c| !c.is_empty());
    if base.strip_prefix(uid).is_some_and(|rest| rest.starts_with(['.', '-'])) {
        // The longest prefix naming a user owns the queue: `jean` does not
        // own `jean-pierre-inbox` (nor `stomp-subscription-jean-pierre-s1`)
        // when `jean-pierre` is a user.
        for owner in prefixes().filter(|c| c.len() > uid.len()).take(MAX_OWNER_CANDIDATES) {
            match is_user(engine, owner).await {
                Ok(false) => {}
                Ok(true) => return denied(format!("queue '{name}' belongs to user '{owner}'")),
                Err(e) => return denied(e),
            }
        }
        return Ok(());
    }
    let candidates = prefixes().take(MAX_OWNER_CANDIDATES);
    for owner in candidates {
        match is_user(engine, owner).await {
            Ok(false) => {}
            Ok(true) => return denied(format!("queue '{name}' belongs to user '{owner}'")),
            Err(e) => return denied(e),
        }
    }
    Ok(())
}

/// Whether `uid` names a user the engine knows: a `[[users]]` entry, a
/// project member, or someone online. (Users known only to a JWT or an
/// HTTP backend, in no project and offline, cannot be recognised.)
async fn is_user(engine: &Engine, uid: &str) -> Result<bool, String> {
    if engine.user_names.contains(uid) || !engine.hub.user_sessions(uid).is_empty() {
        return Ok(true);
    }
    let projects = engine.directory().projects_of(uid).await.map_err(|e| e.to_string())?;
    Ok(!projects.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const CONFIG: &str = r#"
[auth]
default_permissions = { "/" = { configure = ".*", write = ".*", read = ".*" } }

[[users]]
name = "guest"
password = "guest"
tags = ["administrator"]

[[users]]
name = "alice"
password = "pw"

[[users]]
name = "bob"
password = "pw"

[[users]]
name = "dave"
password = "pw"

[[projects]]
id = "p1"
members = ["alice", "bob"]

[[projects]]
id = "p2"
members = ["dave"]
"#;

    fn engine(extra: &str) -> Engine {
        Engine::new(Config::from_toml_str(&format!("{CONFIG}\n{extra}")).unwrap()).unwrap()
    }

    fn who(uid: &str) -> Identity {
        let tags = if uid == "guest" { vec!["administrator".into()] } else { vec![] };
        Identity::new(uid, tags)
    }

    async fn may(e: &Engine, uid: &str, exchange: &str, key: &str, p: Permission) -> bool {
        let vhost = e.router.vhost("/").unwrap().clone();
        topic(e, &who(uid), &vhost, exchange, key, p).await.is_ok()
    }

    use Permission::{Read as R, Write as W};

    #[tokio::test]
    async fn feeds_are_read_by_their_user_and_written_by_contacts() {
        let e = engine("");
        assert!(may(&e, "bob", "feed", "bob", R).await);
        assert!(!may(&e, "alice", "feed", "bob", R).await);
        assert!(!may(&e, "alice", "feed", "#", R).await, "no wildcard reads");
        assert!(!may(&e, "alice", "feed", "*", R).await);
        assert!(may(&e, "guest", "feed", "#", R).await, "administrators are not bound by [access]");
        assert!(may(&e, "alice", "feed", "alice", W).await, "own feed");
        assert!(may(&e, "alice", "feed", "bob", W).await, "contacts by default: p1");
        assert!(!may(&e, "alice", "feed", "dave", W).await, "no shared project");
        assert!(!may(&e, "alice", "feed", "nobody", W).await);
        let all = engine("[access]\nchat_policy = \"all\"\n");
        assert!(may(&all, "alice", "feed", "dave", W).await);
        assert!(!may(&all, "alice", "feed", "dave", R).await, "the chat policy is about writes");
        let none = engine("[access]\nchat_policy = \"none\"\n");
        assert!(!may(&none, "alice", "feed", "bob", W).await);
        assert!(may(&none, "alice", "feed", "alice", W).await, "own feed, always");
    }

    #[tokio::test]
    async fn projects_and_presence_are_for_members() {
        let e = engine("");
        assert!(may(&e, "alice", "project", "p1", R).await);
        assert!(may(&e, "alice", "project", "p1", W).await);
        assert!(!may(&e, "dave", "project", "p1", R).await);
        assert!(!may(&e, "dave", "project", "p1", W).await, "non-members cannot post");
        assert!(!may(&e, "dave", "project", "#", R).await);
        assert!(!may(&e, "dave", "project", "nope", R).await);
        assert!(may(&e, "alice", "presence", "p1.*", R).await);
        assert!(may(&e, "alice", "presence", "p1.bob", R).await);
        assert!(may(&e, "alice", "presence", "p1.#", R).await);
        assert!(!may(&e, "dave", "presence", "p1.*", R).await);
        assert!(!may(&e, "alice", "presence", "*.bob", R).await);
        assert!(!may(&e, "alice", "presence", "#", R).await);
        assert!(!may(&e, "alice", "presence", "p1.alice", W).await, "the server publishes presence");
        // Other exchanges follow the permissions only.
        assert!(may(&e, "dave", "amq.topic", "#", R).await);
    }

    #[tokio::test]
    async fn exchange_names_come_from_the_config() {
        let e = engine("[exchanges]\nfeed = \"inbox\"\nproject = \"rooms\"\npresence = \"status\"\n");
        assert!(!may(&e, "alice", "inbox", "bob", R).await);
        assert!(!may(&e, "dave", "rooms", "p1", R).await);
        assert!(!may(&e, "dave", "status", "p1.*", R).await);
    }

    #[tokio::test]
    async fn topic_permissions_and_the_rules_both_apply() {
        let e = engine(
            "[auth.default_topic_permissions.\"/\".feed]\nwrite = \"{username}\"\nread = \".*\"\n\
             [auth.default_topic_permissions.\"/\".\"amq.topic\"]\nwrite = \"\"\nread = \"{username}\\\\..*\"\n",
        );
        assert!(!may(&e, "alice", "feed", "bob", W).await, "the topic permissions refuse");
        assert!(!may(&e, "alice", "feed", "bob", R).await, "the topic permissions allow, the rules refuse");
        assert!(may(&e, "alice", "feed", "alice", R).await);
        assert!(may(&e, "alice", "amq.topic", "alice.x", R).await);
        assert!(!may(&e, "alice", "amq.topic", "bob.x", R).await);
        assert!(
            !may(&e, "guest", "amq.topic", "bob.x", R).await,
            "topic permissions bind administrators too, as in RabbitMQ"
        );
    }

    #[tokio::test]
    async fn users_own_their_queues() {
        let e = engine("");
        let q = |uid: &'static str, name: &'static str| {
            let e = e.clone();
            async move { queue(&e, &who(uid), "/", name, R).await.is_ok() }
        };
        assert!(q("bob", "bob-inbox").await);
        assert!(q("bob", "bob.tasks").await);
        assert!(!q("alice", "bob-inbox").await, "bob's, whatever alice's permissions");
        assert!(!q("alice", "bob.tasks").await);
        assert!(!q("alice", "stomp-subscription-bob-s1").await, "bob's durable subscription");
        assert!(q("alice", "jobs").await, "shared queues follow the permissions");
        assert!(q("alice", "work-queue").await, "'work' is no user");
        assert!(q("guest", "bob-inbox").await);
        assert!(!q("bob", "dave-x").await, "dave is known from [[users]] and the directory");
        assert!(
            queue_owner(&e, &who("alice"), "bob-inbox").await.is_err(),
            "the owner rule alone, as for a SEND to /amq/queue/"
        );
        // Server-named queues have no owner by prefix, even with a user `amq`.
        let e = engine("[[users]]\nname = \"amq\"\npassword = \"x\"\n");
        assert!(queue_owner(&e, &who("alice"), "amq.gen-Xyz").await.is_ok());
        assert!(queue_owner(&e, &who("alice"), "amq-inbox").await.is_err(), "but `amq-…` is the user amq's");
    }

    #[tokio::test]
    async fn a_user_does_not_own_a_longer_users_queues() {
        let e = engine(
            "[[users]]\nname = \"jean\"\npassword = \"pw\"\n[[users]]\nname = \"jean-pierre\"\npassword = \"pw\"\n",
        );
        let q = |uid: &'static str, name: &'static str| {
            let e = e.clone();
            async move { queue(&e, &who(uid), "/", name, R).await.is_ok() }
        };
        assert!(!q("jean", "jean-pierre-inbox").await, "jean-pierre's, though it starts with 'jean-'");
        assert!(!q("jean", "stomp-subscription-jean-pierre-s1").await, "jean-pierre's durable subscription");
        assert!(!q("jean", "jean-pierre.tasks").await);
        assert!(q("jean-pierre", "jean-pierre-inbox").await);
        assert!(q("jean-pierre", "stomp-subscription-jean-pierre-s1").await);
        assert!(q("jean", "jean-inbox").await);
        assert!(q("jean", "jean-paul-inbox").await, "'jean-paul' is no user: jean's");
        assert!(!q("jean-pierre", "jean-inbox").await);
    }
}
