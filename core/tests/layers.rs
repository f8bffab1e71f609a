//! The import direction of lib.rs's "Layout", checked on the sources: a
//! rule kept by a comment alone gets broken. Each floor may import only
//! the modules listed for it; comments do not count.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            rust_files(&entry.unwrap().path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_owned());
    }
}

/// The paths (`crate::<path>`) a file, or every file under a directory,
/// names outside comments.
fn imports(rel: &str) -> BTreeSet<String> {
    let mut files = Vec::new();
    rust_files(&src().join(rel), &mut files);
    assert!(!files.is_empty(), "no sources at {rel}");
    let mut found = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + "crate::".len()..];
                // `crate::{a, b::c}`: each name in the group.
                let group = rest.strip_prefix('{').map(|g| g.split('}').next().unwrap_or(g));
                for item in group.map_or(vec![rest], |g| g.split(',').collect()) {
                    let path: String = item
                        .trim_start()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                        .collect();
                    found.insert(path);
                }
            }
        }
    }
    found
}

/// Fails listing every import of `rel` outside `allowed` (top-level module
/// names, or longer paths such as `transport::conn`).
fn only(rel: &str, allowed: &[&str]) {
    let bad: Vec<String> = imports(rel)
        .into_iter()
        .filter(|p| !allowed.iter().any(|a| p == a || p.starts_with(&format!("{a}::"))))
        .collect();
    assert!(bad.is_empty(), "{rel} imports {bad:?}; allowed: {allowed:?} (lib.rs, \"Layout\")");
}

#[test]
fn leaves_import_only_leaves() {
    only("config.rs", &["config", "pem", "net", "password"]);
    only("pem.rs", &[]);
    only("password.rs", &[]);
    only("net.rs", &[]);
}

#[test]
fn transport_is_the_lower_floor() {
    only("transport", &["transport", "config", "net"]);
}

#[test]
fn the_engine_imports_no_listener_and_no_edge() {
    only(
        "engine.rs",
        &[
            "engine",
            "auth",
            "bus",
            "config",
            "directory",
            "error",
            "hub",
            "message",
            "presence",
            "router",
            "session",
            "store",
            "transport",
        ],
    );
}

#[test]
fn the_cluster_sits_above_the_engine_and_knows_no_edge() {
    only(
        "cluster",
        &[
            "cluster",
            "engine",
            "bus",
            "config",
            "store",
            "hub",
            "router",
            "presence",
            "session",
            "message",
            "transport",
        ],
    );
}

#[test]
fn presence_vocabulary_is_a_leaf_and_sessions_do_not_import_the_presence_service() {
    // session <-> presence::service was a loop: the per-resource state now
    // lives with the session, and the service builds on it.
    only("presence/mod.rs", &["presence"]);
    only("session.rs", &["session", "config", "error", "message", "presence", "transport"]);
    assert!(
        !imports("session.rs").iter().any(|p| p.starts_with("presence::service") || p.starts_with("presence::fanout")),
        "session.rs imports the presence service or fan-out"
    );
}

#[test]
fn the_middle_knows_no_edge() {
    for m in ["router", "hub.rs", "presence", "directory", "store", "session.rs"] {
        let edges: Vec<String> = imports(m)
            .into_iter()
            .filter(|p| {
                ["stomp", "xmpp", "admin", "listen", "engine"]
                    .iter()
                    .any(|e| p == e || p.starts_with(&format!("{e}::")))
            })
            .collect();
        assert!(edges.is_empty(), "{m} imports {edges:?}");
    }
}
