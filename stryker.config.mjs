// Mutation testing of the pure and critical modules: `npm run mutate` (docs/testing.md).
// Stryker copies the project into .stryker-tmp/, instruments the TypeScript sources there
// (every mutant behind a switch), builds them once with tsc and runs the compiled unit tests
// with node's test runner in TAP mode, one process per test file. Per-file coverage tells it
// which test files reach each mutant, so only those run for it. Not run in CI: too slow for 2 cores.
// One folder at a time: `npm run mutate -- --mutate 'src/util/**/*.ts'`.
import path from "node:path";
import { fileURLToPath } from "node:url";

// The sandbox lives in .stryker-tmp/, so tests that find the MIMI vectors next to the
// repository (../shared/vectors/mimi) are told where that is, as seen from here.
const root = path.dirname(fileURLToPath(import.meta.url));
process.env.MIMI_VECTORS_DIR ??= path.resolve(root, "../shared/vectors/mimi");
// Every surviving mutant costs one whole run of the test files that reach it; the property
// tests of formatting and deterministic-cbor (1,500 to 3,000 cases each, 11 to 50 s a file on 2
// shared cores) run a twentieth of their cases here (test/support/property-runs.ts). Only
// fast-check's case count changes: the examples and the huge-input tests run as always.
process.env.PROPERTY_RUNS_SCALE ??= "0.05";

// The unit test files run against each folder: the module's own tests (globs, so that new test
// files named after the module join in). Stryker's first (dry) run executes each listed file once
// to learn which mutants it reaches; then each mutant runs only the files that reach it. Tests
// that reach a folder only through the bridge (inbound-queue, outage, exactly-once ...) or through
// real servers and processes (cli, gateway, gateway-fuzz, sim) are left out: on 2 shared cores
// they cost seconds per mutant. The scores are therefore those of the modules' own unit tests.
const testsFor = {
  "src/util": ["backoff*", "keyed-queue*"],
  "src/store": ["store*"],
  "src/bridge/failure": ["failure*"],
  // formatting.test.js runs 11 to 50 s (property tests): it is run only for formatting.ts itself.
  "src/convert": ["relations*", "unbridgeable*", "media-convert*", "message-content*", "phone*"],
  "src/convert/formatting": ["formatting*"],
  "src/protocol/frames": ["frames*", "group-frames*"],
  "src/protocol/payload": ["payload*"],
  "src/protocol/mimi": ["mimi-codec*", "mimi-content*", "mimi-vectors*"],
  "src/protocol/deterministic-cbor": ["deterministic-cbor*"],
};
const mutateArgs = process.argv.flatMap((arg, i, all) =>
  (arg === "--mutate" || arg === "-m" ? (all[i + 1] ?? "") : arg.startsWith("--mutate=") ? arg.slice(9) : "").split(",").filter(Boolean),
);
const chosen = Object.keys(testsFor).filter((key) => mutateArgs.length === 0 || mutateArgs.some((glob) => glob.startsWith(key) || key.startsWith(glob.split("*")[0])));
const testFiles = [...new Set(chosen.flatMap((key) => testsFor[key]))].map((name) => `dist/test/unit/${name}.test.js`);

// Results and reports per folder (reports/mutation/<folder>/), so runs on different folders
// keep their own incremental record and may run side by side.
const areas = [...new Set(chosen.map((key) => key.split("/")[1]))];
const area = areas.length === 1 ? areas[0] : "all";

/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  packageManager: "npm",
  mutate: [
    "src/util/**/*.ts",
    "src/store/**/*.ts",
    "src/bridge/failure.ts",
    "src/convert/**/*.ts",
    "src/protocol/frames.ts",
    "src/protocol/mimi.ts",
    "src/protocol/payload.ts",
    "src/protocol/deterministic-cbor.ts",
  ],
  // dist/ is rebuilt from the instrumented sources in the sandbox; never copy a stale one.
  ignorePatterns: ["dist", ".tmp", "data", "demo-data", "reports", "*.db", "*.db-wal", "*.db-shm"],
  buildCommand: "tsc -p tsconfig.json",
  testRunner: "tap",
  tap: {
    testFiles,
    nodeArgs: ["--test-reporter=tap", "-r", "{{hookFile}}", "{{testFile}}"],
    forceBail: true,
  },
  coverageAnalysis: "perTest",
  // Mutants that do not type-check are dropped before any test runs (CompileError, not scored).
  checkers: ["typescript"],
  tsconfigFile: "tsconfig.json",
  typescriptChecker: { prioritizePerformanceOverAccuracy: true },
  // The machine has 2 cores shared with other work.
  concurrency: 1,
  timeoutMS: 10000,
  dryRunTimeoutMinutes: 20,
  // Results of unchanged mutants and tests are reused between runs.
  incremental: true,
  incrementalFile: `reports/mutation/${area}/incremental.json`,
  reporters: ["clear-text", "progress", "html", "json"],
  htmlReporter: { fileName: `reports/mutation/${area}/index.html` },
  jsonReporter: { fileName: `reports/mutation/${area}/mutation.json` },
  clearTextReporter: { allowColor: false, logTests: false, reportMutants: false },
  tempDirName: ".stryker-tmp",
  cleanTempDir: true,
};
