#!/usr/bin/env bash
# Installs the packed npm tarballs (dist/, written by scripts/package) as a user
# does: a fresh project in a temp directory, no Rust (cargo and rustc taken off
# PATH), `npm install` of the root and platform tarballs. Then require() and
# import each start an engine, publish and stop (smoke.cjs, smoke.mjs), and
# `tsc --noEmit --strict` (typescript from npm) checks js-examples'
# TypeScript example and the type tests (types.mts) against the installed types.
#
#   tests/package/npm-install.sh [DIST_DIR]      default: dist/
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
DIST="$(cd "${1:-$ROOT/dist}" && pwd)"

fail() {
  echo "npm-install.sh: $*" >&2
  exit 1
}

shopt -s nullglob
roots=("$DIST"/herald-push-herald-[0-9]*.tgz)
platforms=("$DIST"/herald-push-herald-linux-x64-gnu-*.tgz)
[ "${#roots[@]}" -eq 1 ] || fail "expected one root tarball in $DIST, found ${#roots[@]} (run scripts/package)"
[ "${#platforms[@]}" -eq 1 ] || fail "expected one linux-x64-gnu tarball in $DIST, found ${#platforms[@]}"

# The package must not compile or download anything when installed.
scripts=$(tar -xOzf "${roots[0]}" package/package.json | node -e '
  const s = JSON.parse(require("fs").readFileSync(0, "utf8")).scripts || {};
  process.stdout.write(["preinstall", "install", "postinstall"].filter((k) => s[k]).join(" "));')
[ -z "$scripts" ] || fail "the root package has install scripts: $scripts"
tar -tzf "${roots[0]}" | grep -q '\.node$' && fail "the root package carries a .node file; it belongs in the platform package"

# PATH without any directory holding cargo or rustc (rustup's ~/.cargo/bin, /usr/bin ...).
clean=""
IFS=: read -ra dirs <<<"$PATH"
for d in "${dirs[@]}"; do
  if [ -z "$d" ] || [ -e "$d/cargo" ] || [ -e "$d/rustc" ]; then continue; fi
  clean="${clean:+$clean:}$d"
done
node_bin="$(dirname "$(command -v node)")"
case ":$clean:" in *":$node_bin:"*) ;; *) fail "node's directory $node_bin also holds cargo or rustc; cannot hide Rust" ;; esac
export PATH="$clean"
unset CARGO CARGO_HOME CARGO_TARGET_DIR RUSTUP_HOME RUSTUP_TOOLCHAIN
if command -v cargo >/dev/null || command -v rustc >/dev/null; then fail "cargo or rustc still on PATH"; fi

work="$(mktemp -d "${TMPDIR:-/tmp}/herald-npm-install.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cd "$work"
printf '{ "name": "first-push", "version": "1.0.0", "private": true }\n' >package.json

echo "--- npm install ${roots[0]##*/} ${platforms[0]##*/} (in $work, no cargo/rustc on PATH)"
t0=$(date +%s%N)
npm install --no-audit --no-fund --loglevel=error "${roots[0]}" "${platforms[0]}"
t1=$(date +%s%N)
install_ms=$(((t1 - t0) / 1000000))
echo "npm install of the packed packages: ${install_ms} ms"
[ ! -e node_modules/@herald-push/herald/scripts ] || fail "the installed package has a scripts/ directory"
ls node_modules/@herald-push/herald-linux-x64-gnu/herald.linux-x64-gnu.node >/dev/null

echo "--- require() and import"
cp "$HERE/smoke.cjs" "$HERE/smoke.mjs" .
timeout 60 node smoke.cjs
timeout 60 node smoke.mjs

echo "--- tsc --noEmit --strict (js-examples/typescript/first-push.mts, tests/package/types.mts)"
npm install --no-audit --no-fund --loglevel=error --save-dev typescript @types/node
cp "$ROOT/js-examples/typescript/first-push.mts" "$HERE/types.mts" .
npx --no-install tsc --version
npx --no-install tsc --noEmit --strict --module nodenext --target es2022 --types node \
  first-push.mts types.mts

echo "npm-install.sh: ok (install ${install_ms} ms)"
