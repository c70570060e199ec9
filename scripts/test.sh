#!/usr/bin/env bash
# The test command (`npm test`): sets up what is missing, builds, lints, then runs every unit and
# end-to-end test with node's test runner in one run, so the summary counts them all.
# End-to-end tests start their own Synapse, gateway, simulator and bridge per test file
# (see docs/testing.md); they run one file at a time because each file starts a whole stack.
# Everything runs on Node 24 (scripts/node.sh); BRIDGE_NODE=22 runs on Node 22 instead.
#   npm test                     everything
#   npm test -- unit             unit tests only (no homeserver needed)
#   npm test -- dist/test/e2e/x.test.js   chosen files
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/node.sh
source scripts/node.sh
use_node

if [ "${1:-}" = "unit" ]; then
  bash scripts/setup.sh --no-synapse
  shift
  set -- dist/test/unit/*.test.js "$@"
else
  bash scripts/setup.sh
fi
# Habits before behaviour: type check, eslint, import cycles and undeclared packages, formatting
# (npm run lint). A finding stops the run here, before the suites spend their minutes.
npm run -s lint
if [ "$#" -eq 0 ]; then
  set -- dist/test/unit/*.test.js dist/test/e2e/*.test.js
fi
export LOG_LEVEL="${LOG_LEVEL:-warn}"
# The runtime, for the CI log (one line per runtime tested).
echo "node $(node --version)"
# TAP on every Node: it ends with the `# tests N`, `# pass N`, `# fail N` summary CI reads
# (Node 24's default reporter is spec, whose summary has other markers).
exec node --test --test-reporter=tap --test-concurrency=1 "$@"
