#!/usr/bin/env bash
# Installs everything the bridge, its tests, the demo and the benchmarks need on a fresh
# Debian machine: Node 24 when the system's is older (scripts/node.sh), Debian packages, npm
# dependencies (only when package-lock.json or the Node ABI changed), the build, and the Synapse
# used for end-to-end tests. Safe to run again: it skips what is done.
#   scripts/setup.sh            everything
#   scripts/setup.sh --no-synapse   skip the homeserver (unit tests only)
# The node it chose is on PATH only inside this script: run things through scripts/run.sh
# (npm scripts do), which sets PATH the same way. BRIDGE_NODE=22 sets up for Node 22 instead.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "[setup] $*" >&2; }
WANT_SYNAPSE=1
[ "${1:-}" = "--no-synapse" ] && WANT_SYNAPSE=0

# Debian packages: ffmpeg probes and converts media; python3/make/g++ build better-sqlite3;
# python3-matrix-nio (with libolm) is the independent E2EE client of the encryption tests.
DEB_PACKAGES=(ffmpeg python3 make g++ python3-matrix-nio)
# The browser tests (test/e2e/element.test.ts) drive Element in Debian's Chromium through
# playwright-core, which never downloads a browser of its own. Unit tests do not need it.
[ "$WANT_SYNAPSE" = 1 ] && DEB_PACKAGES+=(chromium)
missing=()
for p in "${DEB_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  else
    say "missing Debian packages (install them as root): ${missing[*]}"
    exit 1
  fi
fi

# Node: the tested runtime (24), or the one BRIDGE_NODE names.
# shellcheck source=scripts/node.sh
source scripts/node.sh
use_node
say "node $(node --version) ($(command -v node))"

# npm dependencies: reinstall only when the lock file changed since the last install. The stamp
# also names the Node ABI (process.versions.modules) the native addon was built for: a
# node_modules built under another Node major cannot load it. better-sqlite3 is the only addon
# compiled here (libsignal ships N-API prebuilds, which every ABI loads); one compiled copy per
# ABI is kept in the cache, so switching between Node 24 and 22 (CI does) is a copy, not a
# 75-second build.
abi="$(node -p process.versions.modules)"
# better-sqlite3's installer first tries to download a prebuilt binary from GitHub, which cannot
# be reached here and only costs a timeout: build from source straight away (set only for the
# two commands that build, since npm warns about the setting everywhere else).
build_from_source=(env npm_config_build_from_source=true)
lock="$(sha256sum package-lock.json | cut -d' ' -f1)"
stamp="node_modules/.lock-hash"
have="$(cat "$stamp" 2>/dev/null || true)"
native_cache() { # the cache folder for the better-sqlite3 version in node_modules and this ABI
  local v
  v="$(node -p 'require("./node_modules/better-sqlite3/package.json").version')"
  echo "$NODE_CACHE/native/better-sqlite3-$v-abi$abi-$(uname -m)"
}
addon="node_modules/better-sqlite3/build/Release/better_sqlite3.node"
save_addon() { local d; d="$(native_cache)"; mkdir -p "$d" && cp "$addon" "$d/.tmp.$$" && mv "$d/.tmp.$$" "$d/better_sqlite3.node"; }
if [ "${have%% *}" != "$lock" ]; then
  say "installing npm dependencies for Node ABI $abi (better-sqlite3 builds from source: about 75 s)"
  "${build_from_source[@]}" npm ci --no-audit --no-fund >&2
  save_addon
  echo "$lock abi=$abi" > "$stamp"
elif [ "$have" != "$lock abi=$abi" ]; then
  cached="$(native_cache)/better_sqlite3.node"
  if [ -f "$cached" ]; then
    say "better-sqlite3 for Node ABI $abi from the cache"
    cp "$cached" "$addon.tmp.$$" && mv "$addon.tmp.$$" "$addon"
  else
    say "rebuilding better-sqlite3 for Node ABI $abi (about 75 s, once per ABI)"
    "${build_from_source[@]}" npm rebuild better-sqlite3 --no-audit --no-fund >&2
    save_addon
  fi
  echo "$lock abi=$abi" > "$stamp"
fi
# Whatever the stamp says, the addon must load on this node (a copied or hand-edited node_modules).
if ! node -e 'new (require("better-sqlite3"))(":memory:").close()' 2>/dev/null; then
  say "better-sqlite3 does not load on Node ABI $abi; rebuilding it (about 75 s)"
  "${build_from_source[@]}" npm rebuild better-sqlite3 --no-audit --no-fund >&2
  save_addon
  echo "$lock abi=$abi" > "$stamp"
fi

say "building"
npx tsc -p tsconfig.json

if [ "$WANT_SYNAPSE" = 1 ] && [ -z "${MATRIX_HOMESERVER_URL:-}" ]; then
  bash scripts/install-synapse.sh >/dev/null
fi
say "ready"
