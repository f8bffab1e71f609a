//! Generates the app's ACL manifest. Given an explicit command list, Tauri no longer allows
//! every app command to every window: it generates `allow-<command>` / `deny-<command>`
//! permissions, and `capabilities/*.json` grant them window by window.

include!("src/commands/names.rs");

fn main() {
    println!("cargo:rerun-if-changed=src/commands/names.rs");
    if !std::path::Path::new("../dist/index.html").exists() {
        // Tauri's own error for this comes later, from inside generate_context!; say it first.
        println!(
            "cargo:warning=admin-app/dist/index.html is missing: build the UI first \
             (cd admin-app && npm ci && npm run build)"
        );
    }
    tauri_build::try_build(
        tauri_build::Attributes::new().app_manifest(tauri_build::AppManifest::new().commands(NAMES)),
    )
    .expect("tauri-build failed");
}
