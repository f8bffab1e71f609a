#!/usr/bin/env bash
# Run Herald's cross-language test suites: pytest (stomp.py over STOMP/TCP, slixmpp over
# XMPP c2s + STARTTLS) and node --test (@stomp/stompjs over /ws, stompjs 2.3 + sockjs-client
# over /stomp, strophe.js over BOSH and XMPP WebSocket, headless Chromium over BOSH, and the
# XMPP scenarios again with Redis presence + MongoDB directory; users from MongoDB hashed by
# npm bcrypt/bcryptjs in py/test_auth_mongodb.py).
#
# Installs what is missing: python3/venv/node/npm and chromium via apt-get (Debian, as root),
# redis-server, nginx and SecantusDB (a MongoDB-wire server) via tests/services/install.sh, a venv at
# $HERALD_VENV (default /var/tmp/herald-venv) with tests/requirements.txt, and the npm
# workspace (npm ci at the repo root) when node_modules is missing or stale.
# A dependency that cannot be installed fails the run; no test is skipped for want of it.
#
# The server binary is $HERALD_BIN or ${CARGO_TARGET_DIR:-/var/tmp/herald-target}/debug/herald;
# it is not built here. Extra arguments are passed to pytest (e.g. -k heartbeat).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
VENV="${HERALD_VENV:-/var/tmp/herald-venv}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/herald-target}"
export HERALD_BIN="${HERALD_BIN:-$CARGO_TARGET_DIR/debug/herald}"

apt_install() {
  if ! command -v apt-get >/dev/null; then
    echo "run.sh: missing $* and no apt-get to install it" >&2
    exit 1
  fi
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -o DPkg::Lock::Timeout=900 "$@"
}

# --- system packages --------------------------------------------------------
need=()
command -v python3 >/dev/null || need+=(python3)
if command -v python3 >/dev/null; then
  python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
else
  need+=(python3-venv)
fi
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
# Headless browser for js/xmpp-browser.test.mjs (driven by playwright-core).
[ -x "${HERALD_CHROMIUM:-/usr/bin/chromium}" ] || need+=(chromium)
if [ "${#need[@]}" -gt 0 ]; then
  echo "run.sh: installing ${need[*]}"
  apt_install "${need[@]}"
fi
python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' || {
  echo "run.sh: Python >= 3.10 is required (stomp.py 9)" >&2
  exit 1
}

# --- services for the Redis + MongoDB run (redis-server, secantusd-py) ---------
if [ -f "$HERE/services/install.sh" ]; then
  HERALD_VENV="$VENV" bash "$HERE/services/install.sh"
fi

# --- python venv ------------------------------------------------------------
req_stamp="$VENV/.herald-requirements.sha256"
req_sum="$(sha256sum "$HERE/requirements.txt" | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ]; then
  echo "run.sh: creating venv $VENV"
  python3 -m venv "$VENV"
fi
if [ "$(cat "$req_stamp" 2>/dev/null || true)" != "$req_sum" ] ||
  ! "$VENV/bin/python" -c 'import stomp, pytest, pytest_timeout, slixmpp, jsonschema, openapi_spec_validator, argon2, pymongo' 2>/dev/null; then
  echo "run.sh: installing tests/requirements.txt into $VENV"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$HERE/requirements.txt"
  echo "$req_sum" >"$req_stamp"
fi

# --- node workspace ---------------------------------------------------------
# (Re)install when node_modules is missing or older than the lock file / tests/package.json.
hidden_lock="$ROOT/node_modules/.package-lock.json"
if [ ! -f "$hidden_lock" ] || [ "$ROOT/package-lock.json" -nt "$hidden_lock" ] ||
  [ "$HERE/package.json" -nt "$hidden_lock" ]; then
  echo "run.sh: installing npm workspace dependencies"
  if [ -f "$ROOT/package-lock.json" ] && [ ! "$HERE/package.json" -nt "$ROOT/package-lock.json" ]; then
    (cd "$ROOT" && npm ci --no-audit --no-fund) || (cd "$ROOT" && npm install --no-audit --no-fund)
  else
    (cd "$ROOT" && npm install --no-audit --no-fund)
  fi
fi

# Every module the suites import must resolve (XMPP suites: strophe.js 5 + its Node peers,
# playwright-core for Chromium, the mongodb driver for seeding).
node_ok() {
  (cd "$HERE" && node -e "
    for (const m of ['@stomp/stompjs', 'stompjs', 'sockjs-client', 'ws', 'strophe.js', '@xmldom/xmldom',
                     'saxes', 'playwright-core', 'mongodb', 'bcrypt', 'bcryptjs']) require.resolve(m);
    if (require('strophe.js/package.json').version.split('.')[0] !== '5') process.exit(1);
  ") >/dev/null 2>&1
}
if ! node_ok; then
  echo "run.sh: npm modules missing; running npm install"
  (cd "$ROOT" && npm install --no-audit --no-fund)
  node_ok || { echo "run.sh: npm modules still missing after npm install" >&2; exit 1; }
fi

# --- required services and browser -------------------------------------------
missing=()
command -v redis-server >/dev/null || missing+=("redis-server (tests/services/install.sh)")
[ -x "$VENV/bin/secantusd-py" ] || command -v secantusd-py >/dev/null || missing+=("secantusd-py (tests/services/install.sh)")
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=("nginx (tests/services/install.sh)")
[ -x "${HERALD_CHROMIUM:-/usr/bin/chromium}" ] || missing+=("chromium (apt-get install chromium)")
if [ "${#missing[@]}" -gt 0 ]; then
  printf 'run.sh: missing: %s\n' "${missing[@]}" >&2
  exit 1
fi
mkdir -p "$HERE/artifacts"

# --- run --------------------------------------------------------------------
echo "run.sh: herald binary: $HERALD_BIN"
if [ ! -x "$HERALD_BIN" ]; then
  echo "run.sh: WARNING: $HERALD_BIN is missing; every test will fail (build herald or set HERALD_BIN)" >&2
fi

py_rc=0
echo "=== pytest (stomp.py over STOMP/TCP, slixmpp over XMPP c2s + STARTTLS) ==="
(cd "$HERE" && "$VENV/bin/python" -m pytest -p no:cacheprovider "$@") || py_rc=$?

node_flags=(--test)
node --test-concurrency=1 -e 0 >/dev/null 2>&1 && node_flags+=(--test-concurrency=1)
node --test-reporter=spec -e 0 >/dev/null 2>&1 && node_flags+=(--test-reporter=spec)
# hard bound per test on top of the per-wait timeouts inside the tests
node --test-timeout=120000 -e 0 >/dev/null 2>&1 && node_flags+=(--test-timeout=120000)
js_rc=0
echo "=== node --test (@stomp/stompjs, stompjs 2.3 + SockJS, strophe.js over BOSH/WebSocket, Chromium, Redis+MongoDB) ==="
# js/cluster.test.mjs runs this checkout's addon as a cluster node: rebuild it if stale.
(cd "$ROOT" && node node-binding/scripts/install.js && cd "$HERE" && node "${node_flags[@]}" js/*.test.mjs) || js_rc=$?

addon_rc=0
echo "=== node --test (the Node addon: node-binding/__test__) ==="
# install.js rebuilds a stale addon even when node_modules is fresh.
(cd "$ROOT" && node node-binding/scripts/install.js && npm test -w node-binding) || addon_rc=$?

echo "run.sh: pytest exit=$py_rc, node --test exit=$js_rc, addon exit=$addon_rc"
if [ "$py_rc" -ne 0 ] || [ "$js_rc" -ne 0 ] || [ "$addon_rc" -ne 0 ]; then
  exit 1
fi
