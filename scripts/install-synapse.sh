#!/usr/bin/env bash
# Installs a real Synapse homeserver for the tests, the demo and the benchmarks.
# Debian bookworm has no matrix-synapse package; Debian sid has one. So we build a minimal
# sid chroot with debootstrap (needs root) and cache it outside the repository, keyed by
# a version string, so only the first run on a machine pays for it (about 3 minutes).
# Prints the chroot's path on its last line.
set -euo pipefail

CACHE_VERSION="sid-synapse-v1"
ROOT="${SYNAPSE_CHROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/matrix-interop-bridge/$CACHE_VERSION}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

log() { echo "[install-synapse] $*" >&2; }

if [ -f "$ROOT/.complete" ]; then
  echo "$ROOT"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  log "building the Synapse chroot needs root (debootstrap, chroot); set MATRIX_HOMESERVER_URL to use an existing homeserver instead"
  exit 1
fi

mkdir -p "$(dirname "$ROOT")"
exec 9>"$ROOT.lock"
flock 9
if [ -f "$ROOT/.complete" ]; then echo "$ROOT"; exit 0; fi

cleanup_mounts() { umount "$ROOT/proc" 2>/dev/null || true; }
trap cleanup_mounts EXIT

if ! command -v debootstrap >/dev/null; then
  log "installing debootstrap"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2
fi

rm -rf "$ROOT"
log "debootstrap sid into $ROOT (about a minute)"
debootstrap --variant=minbase sid "$ROOT" "$MIRROR" >&2

mount -t proc proc "$ROOT/proc"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
log "installing matrix-synapse inside the chroot (about 80 s)"
# The sid mirror reachable here is frozen; its Release file has expired.
chroot "$ROOT" apt-get -qq -o Acquire::Check-Valid-Until=false update >&2
chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends matrix-synapse >&2
chroot "$ROOT" apt-get clean
rm -rf "$ROOT"/var/lib/apt/lists/*
umount "$ROOT/proc"
chroot "$ROOT" python3 -c 'import synapse; print(synapse.__version__)' > "$ROOT/.synapse-version"
log "Synapse $(cat "$ROOT/.synapse-version") installed"
touch "$ROOT/.complete"
echo "$ROOT"
