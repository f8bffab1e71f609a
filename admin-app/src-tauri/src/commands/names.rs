// Every app command name. Shared by `build.rs` (which generates an `allow-<name>` /
// `deny-<name>` permission for each, with `_` written as `-`) and `commands/mod.rs`
// (which checks it against the handler list); `include!`d by both, so one list.
pub const NAMES: &[&str] = &["profiles_list", "profile_save", "profile_delete", "startup_profile"];
