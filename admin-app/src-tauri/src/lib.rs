//! # Herald Console (desktop)
//!
//! The Tauri v2 shell around the admin UI in `admin-app/` (built to `admin-app/dist` and
//! embedded at compile time). The UI talks to a Herald node's admin API itself, with
//! `fetch` (see `docs/admin-api.md`); this crate only gives it what a browser tab lacks:
//! a place to keep connection profiles, and the profile to open at launch.
//!
//! # Layout
//!
//! - [`profiles`] — `Profile {name, url, token}` and the atomic JSON [`profiles::ProfileStore`]
//!   (`<app config dir>/profiles.json`).
//! - [`startup`] — the launch profile from `--url`/`--token` or `HERALD_ADMIN_*`.
//! - [`commands`] — thin `#[tauri::command]`s over the two; their names are in
//!   `commands/names.rs`, which `build.rs` turns into ACL permissions.
//! - `capabilities/main.json` — the `main` window gets `core:default` and these commands;
//!   nothing else. `tauri.conf.json` — window, CSP (`connect-src` any http/https node).
//! - [`webview`] — WebKitGTK workarounds (an invalid `navigator.language` under the C
//!   locale) and `HERALD_ADMIN_WEBVIEW_LOG=1` (page console on stdout).

pub mod commands;
pub mod profiles;
pub mod startup;
pub mod webview;

use tauri::Manager;

/// Managed state: the profile given at launch, if any.
#[derive(Debug, Default)]
pub struct StartupProfile(pub Option<profiles::Profile>);

/// Entry point of the `herald-admin` binary: reads the launch profile (exits with status 2
/// and a usage message if it is malformed), then runs the app until its window closes.
pub fn main() {
    let startup = match startup::startup_profile(std::env::args().skip(1), |k| std::env::var(k).ok()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("herald-admin: {e}\n{}", startup::USAGE);
            std::process::exit(2);
        }
    };
    if let Some(p) = &startup {
        eprintln!("herald-admin: startup profile {:?} -> {}", p.name, p.url);
    }
    run(startup);
}

/// Builds and runs the Tauri app with the given launch profile.
pub fn run(startup: Option<profiles::Profile>) {
    tauri::Builder::default()
        .plugin(webview::locale_fix())
        .manage(StartupProfile(startup))
        .setup(|app| {
            let dir = app.path().app_config_dir()?;
            let store = profiles::ProfileStore::new(dir.join("profiles.json"));
            eprintln!("herald-admin: profiles in {}", store.path().display());
            app.manage(store);
            if std::env::var_os("HERALD_ADMIN_WEBVIEW_LOG").is_some_and(|v| v != "0") {
                webview::log_console(app)?;
            }
            Ok(())
        })
        .invoke_handler(tauri::generate_handler![
            commands::profiles::profiles_list,
            commands::profiles::profile_save,
            commands::profiles::profile_delete,
            commands::profiles::startup_profile,
        ])
        .run(tauri::generate_context!())
        .expect("error while running the Herald Console");
}
