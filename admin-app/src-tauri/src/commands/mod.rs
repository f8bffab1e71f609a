//! Tauri commands, one file per domain. Each command only unpacks its arguments, calls
//! library code and maps the error; the logic and its tests live in the library modules.

pub mod profiles;

include!("names.rs");
