#!/usr/bin/env bash
# Installs everything the bridge, its tests, the demo and the benchmarks need on a fresh
# Debian machine: Debian packages, npm dependencies (only when package-lock.json changed),
# the build, and the Synapse used for end-to-end tests. Safe to run again: it skips what is done.
#   scripts/setup.sh            everything
#   scripts/setup.sh --no-synapse   skip the homeserver (unit tests only)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "[setup] $*" >&2; }
WANT_SYNAPSE=1
[ "${1:-}" = "--no-synapse" ] && WANT_SYNAPSE=0

# Debian packages: ffmpeg probes and converts media; python3/make/g++ build better-sqlite3.
DEB_PACKAGES=(ffmpeg python3 make g++)
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

# npm dependencies: reinstall only when the lock file changed since the last install.
stamp="node_modules/.lock-hash"
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  say "installing npm dependencies (better-sqlite3 builds from source: about 75 s)"
  npm ci --no-audit --no-fund >&2
  echo "$want" > "$stamp"
fi

say "building"
npx tsc -p tsconfig.json

if [ "$WANT_SYNAPSE" = 1 ] && [ -z "${MATRIX_HOMESERVER_URL:-}" ]; then
  bash scripts/install-synapse.sh >/dev/null
fi
say "ready"
