#!/usr/bin/env bash
# End-to-end test of the Herald Console desktop app (admin-app/src-tauri), see
# desktop_test.py: a real herald with a STOMP session, herald-admin launched through
# tauri-driver + WebKitWebDriver under Xvfb, DOM and command checks over WebDriver, and a
# screenshot of the window at tests/artifacts/desktop-overview.png.
#
# Builds nothing. Binaries:
#   HERALD_ADMIN_BIN  default ${CARGO_TARGET_DIR:-/var/tmp/herald-tauri-target}/debug/herald-admin
#   HERALD_BIN        default /var/tmp/herald-target/debug/herald
#   TAURI_DRIVER      default $HERALD_TOOLS/bin/tauri-driver (HERALD_TOOLS=/var/tmp/herald-tools);
#                     installed there with `cargo install tauri-driver --version ^2 --locked`
#                     when missing (~35 s), reused afterwards.
# Installs missing system packages with apt-get (Debian, as root or via sudo): xvfb,
# xdotool, imagemagick, webkit2gtk-driver, python3, and libwebkit2gtk-4.1-0 if the app's
# libraries do not resolve. A dependency that cannot be installed fails the run.
# Bounded: the test itself gets DESKTOP_TIMEOUT seconds (default 150).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TOOLS="${HERALD_TOOLS:-/var/tmp/herald-tools}"
export HERALD_ADMIN_BIN="${HERALD_ADMIN_BIN:-${CARGO_TARGET_DIR:-/var/tmp/herald-tauri-target}/debug/herald-admin}"
export HERALD_BIN="${HERALD_BIN:-/var/tmp/herald-target/debug/herald}"
export TAURI_DRIVER="${TAURI_DRIVER:-$TOOLS/bin/tauri-driver}"
export WEBKIT_WEBDRIVER="${WEBKIT_WEBDRIVER:-/usr/bin/WebKitWebDriver}"
export ARTIFACTS="${ARTIFACTS:-$ROOT/tests/artifacts}"

die() {
  echo "desktop/run.sh: $*" >&2
  exit 1
}

apt_install() {
  command -v apt-get >/dev/null || die "missing $* and no apt-get to install it"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=900 "$@"
}

# --- binaries under test -------------------------------------------------------
[ -x "$HERALD_ADMIN_BIN" ] || die "no herald-admin at $HERALD_ADMIN_BIN (cargo build -p herald-admin, after npm run build in admin-app; or set HERALD_ADMIN_BIN)"
[ -x "$HERALD_BIN" ] || die "no herald at $HERALD_BIN (cargo build -p herald-server, or set HERALD_BIN)"

# --- system packages -------------------------------------------------------------
need=()
command -v python3 >/dev/null || need+=(python3)
command -v Xvfb >/dev/null || need+=(xvfb)
command -v xdotool >/dev/null || need+=(xdotool)
{ command -v import >/dev/null && command -v convert >/dev/null && command -v identify >/dev/null; } || need+=(imagemagick)
[ -x "$WEBKIT_WEBDRIVER" ] || need+=(webkit2gtk-driver)
if ldd "$HERALD_ADMIN_BIN" | grep -q 'not found'; then need+=(libwebkit2gtk-4.1-0); fi
if [ "${#need[@]}" -gt 0 ]; then
  echo "desktop/run.sh: installing ${need[*]}"
  apt_install "${need[@]}"
fi
missing=()
command -v python3 >/dev/null || missing+=(python3)
command -v Xvfb >/dev/null || missing+=("Xvfb (xvfb)")
command -v xdotool >/dev/null || missing+=(xdotool)
command -v import >/dev/null || missing+=("import (imagemagick)")
[ -x "$WEBKIT_WEBDRIVER" ] || missing+=("$WEBKIT_WEBDRIVER (webkit2gtk-driver)")
if ldd "$HERALD_ADMIN_BIN" | grep 'not found' >&2; then missing+=("libraries of $HERALD_ADMIN_BIN"); fi
[ "${#missing[@]}" -eq 0 ] || die "missing: ${missing[*]}"

# --- tauri-driver (the WebDriver front for Tauri apps; proxies to WebKitWebDriver) -------
if [ ! -x "$TAURI_DRIVER" ]; then
  command -v cargo >/dev/null || die "no tauri-driver at $TAURI_DRIVER and no cargo to install it"
  echo "desktop/run.sh: installing tauri-driver into $TOOLS"
  cargo install tauri-driver --version '^2' --locked --root "$TOOLS"
  [ -x "$TAURI_DRIVER" ] || die "tauri-driver install did not produce $TAURI_DRIVER"
fi

mkdir -p "$ARTIFACTS"
echo "desktop/run.sh: herald-admin $HERALD_ADMIN_BIN"
echo "desktop/run.sh: herald       $HERALD_BIN"
echo "desktop/run.sh: tauri-driver $TAURI_DRIVER -> $WEBKIT_WEBDRIVER"
exec timeout --kill-after=10 "${DESKTOP_TIMEOUT:-150}" python3 "$HERE/desktop_test.py"
