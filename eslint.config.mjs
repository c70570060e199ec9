// typescript-eslint's recommended rules over the project's TypeScript and config files
// (`npm run lint`). Layout is prettier's business, not eslint's.
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["dist/", "node_modules/", "stubs/", ".tmp/"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      // `_name` marks a parameter or binding kept for its position or shape.
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_", caughtErrors: "none" }],
      // A binding read by a closure before its one assignment (a server's handler, a timer) has to stay `let`.
      "prefer-const": ["error", { ignoreReadBeforeAssign: true }],
    },
  },
  {
    // ES module config files run by Node (stryker.config.mjs).
    files: ["**/*.mjs"],
    languageOptions: { globals: { process: "readonly" } },
  },
  {
    // CommonJS config files (.dependency-cruiser.cjs).
    files: ["**/*.cjs"],
    languageOptions: { sourceType: "commonjs", globals: { module: "writable", require: "readonly", __dirname: "readonly" } },
  },
  {
    // These read arbitrary JSON (Matrix events and API answers, YAML configs) or objects of the
    // browser page Element runs in (no DOM types here) by path, where
    // `unknown` would only add casts. Until they get types of their own, `any` is allowed in
    // these files only; everything else, src/ included, has none.
    files: [
      "bench/scale.ts",
      "test/e2e/bad-input.test.ts",
      "test/e2e/controls.test.ts",
      "test/e2e/element.test.ts",
      "test/e2e/encryption.test.ts",
      "test/e2e/fidelity.test.ts",
      "test/e2e/provisioning.test.ts",
      "test/e2e/element-encrypted.test.ts",
      "test/support/element.ts",
      "test/support/matrix-client.ts",
      "test/support/stack.ts",
      "test/unit/bad-input.test.ts",
      "test/unit/config.test.ts",
      "test/unit/mimi-codec.test.ts",
    ],
    rules: { "@typescript-eslint/no-explicit-any": "off" },
  },
);
