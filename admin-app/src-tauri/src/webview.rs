//! Fixes and switches for the embedded WebView (WebKitGTK on Linux).

use tauri::plugin::TauriPlugin;
use tauri::{Runtime, Wry};

/// Runs before any page script. Under the C locale (`LANG` unset, `C` or `C.UTF-8`, as in CI
/// and containers) WebKitGTK reports `navigator.language === "C"`, which is not a BCP 47
/// tag: `new Intl.NumberFormat(navigator.language)` throws `RangeError: invalid language
/// tag: C`, and uPlot does exactly that when its module loads, so the whole UI fails to
/// start. When the reported language is unusable, report `en-US` instead.
const LOCALE_FIX: &str = r#"(() => {
  try { new Intl.NumberFormat(navigator.language); return; } catch (_) {}
  const ok = (navigator.languages || []).filter((l) => {
    try { new Intl.NumberFormat(l); return true; } catch (_) { return false; }
  });
  const langs = Object.freeze(ok.length ? ok : ['en-US']);
  Object.defineProperty(navigator, 'language', { get: () => langs[0], configurable: true });
  Object.defineProperty(navigator, 'languages', { get: () => langs, configurable: true });
})();"#;

/// An app-internal plugin (no commands, so nothing to grant) that injects [`LOCALE_FIX`].
pub fn locale_fix<R: Runtime>() -> TauriPlugin<R> {
    tauri::plugin::Builder::new("herald-locale").js_init_script(LOCALE_FIX).build()
}

/// Makes WebKitGTK print the page's `console.*` messages and uncaught errors on stdout
/// (lines containing `CONSOLE`), so a headless run shows why a page did not render.
/// Switched on by `HERALD_ADMIN_WEBVIEW_LOG=1`.
#[cfg(target_os = "linux")]
pub fn log_console(app: &tauri::App<Wry>) -> tauri::Result<()> {
    use tauri::Manager;
    use webkit2gtk::{SettingsExt, WebViewExt};
    for window in app.webview_windows().into_values() {
        window.with_webview(|webview| {
            if let Some(settings) = webview.inner().settings() {
                settings.set_enable_write_console_messages_to_stdout(true);
            }
        })?;
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
pub fn log_console(_app: &tauri::App<Wry>) -> tauri::Result<()> {
    Ok(())
}
