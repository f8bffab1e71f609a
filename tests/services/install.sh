#!/usr/bin/env bash
# Installs the services the backend tests (core/tests/backends.rs) run
# against, on a fresh Debian machine, as root. Idempotent: installs only what
# is missing, and runs apt-get update only when something must come from apt.
#   - redis-server (Debian package)      -> RedisPresence; with redis-cli (redis-tools)
#     the cluster bus tests (core/tests/bus.rs: standalone and a 3-master Redis Cluster)
#   - SecantusDB, a MongoDB-wire server  -> MongoDirectory, and [auth.mongodb] users
#     (tests/py/test_auth_mongodb.py)
#     (PyPI, pre-release, in the venv /var/tmp/herald-venv; command secantusd-py)
#   - nginx (Debian package)             -> tests/py/test_proxy_nginx.py (a real reverse
#     proxy in front of Herald; the tests start their own unprivileged instance)
# Override the venv with HERALD_VENV=/path.
set -euo pipefail

VENV="${HERALD_VENV:-/var/tmp/herald-venv}"

say() { echo "services/install.sh: $*"; }

apt_pkgs=()
if command -v redis-server >/dev/null 2>&1; then
    say "redis-server present: $(command -v redis-server) ($(redis-server --version | head -n1))"
else
    apt_pkgs+=(redis-server)
fi
# redis-cli builds the test Redis Cluster (`--cluster create`); Debian ships it in redis-tools.
if ! command -v redis-cli >/dev/null 2>&1; then
    apt_pkgs+=(redis-tools)
fi
# Debian puts nginx in /usr/sbin, which a non-root PATH may lack.
if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
    say "nginx present: $(command -v nginx || echo /usr/sbin/nginx)"
else
    apt_pkgs+=(nginx)
fi
need_venv=0
if [ -x "$VENV/bin/secantusd-py" ]; then
    say "secantusd-py present: $VENV/bin/secantusd-py"
else
    need_venv=1
    # Debian's python3 needs python3-venv (ensurepip) to make a venv.
    if [ ! -x "$VENV/bin/python" ] && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        apt_pkgs+=(python3 python3-venv)
    fi
fi

if [ "${#apt_pkgs[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        say "missing ${apt_pkgs[*]} and this is not root: run it as root (sudo bash $0)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    say "apt-get update"
    apt-get update
    say "apt-get install -y ${apt_pkgs[*]}"
    apt-get install -y -o DPkg::Lock::Timeout=900 "${apt_pkgs[@]}"
    if ! command -v redis-server >/dev/null 2>&1; then
        say "redis-server still not on PATH after apt-get install" >&2
        exit 1
    fi
    # The package may start a system instance on 6379; the tests start their own.
    say "redis-server: $(redis-server --version | head -n1)"
    if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
        say "nginx still missing after apt-get install" >&2
        exit 1
    fi
    # The package may start a system nginx on port 80; the tests start their own.
    say "nginx: $( (command -v nginx || echo /usr/sbin/nginx) | head -n1)"
fi

if [ "$need_venv" = 1 ]; then
    if [ -x "$VENV/bin/python" ]; then
        say "reusing venv $VENV"
    else
        say "python3 -m venv $VENV"
        python3 -m venv "$VENV"
    fi
    say "$VENV/bin/pip install --pre secantusdb"
    "$VENV/bin/pip" install --pre secantusdb
    if [ ! -x "$VENV/bin/secantusd-py" ]; then
        say "secantusd-py missing from $VENV/bin after pip install" >&2
        exit 1
    fi
    say "installed secantusdb $("$VENV/bin/pip" show secantusdb 2>/dev/null | sed -n 's/^Version: //p')"
fi
say "done"
