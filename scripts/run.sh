#!/usr/bin/env bash
# Runs a command on the project's Node (24; BRIDGE_NODE=22 for 22) after scripts/setup.sh: what
# every npm script uses, so `node` below is the tested runtime whatever the system has.
#   scripts/run.sh [--no-synapse] node dist/scripts/demo.js
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
setup_args=()
[ "${1:-}" = "--no-synapse" ] && { setup_args+=(--no-synapse); shift; }
# shellcheck source=scripts/node.sh
source scripts/node.sh
use_node
# Setup's output goes to stderr, so commands whose stdout is data (bench --json) stay clean.
bash scripts/setup.sh "${setup_args[@]}" >&2
exec "$@"
