/**
 * The import-cycle check of `npm run lint` (issue 13: no cycle in src/, gateway/, sim/).
 * tsPreCompilationDeps counts type-only imports too: a cycle through types still ties two
 * modules together.
 */
module.exports = {
  forbidden: [
    {
      name: "no-circular",
      severity: "error",
      comment: "Modules that import each other (also through types) cannot be understood, tested or moved apart.",
      from: {},
      to: { circular: true },
    },
    {
      name: "not-in-package-json",
      severity: "error",
      comment: "Every package the code imports is declared, so an upgrade of another package cannot take it away.",
      from: {},
      to: { dependencyTypes: ["npm-no-pkg", "npm-unknown"] },
    },
    {
      name: "no-dev-dependency-at-run-time",
      severity: "error",
      comment: "What src/, gateway/ and sim/ load at run time must be installed in production (npm ci --omit=dev).",
      from: { path: "^(src|gateway|sim)/" },
      to: { dependencyTypes: ["npm-dev"], dependencyTypesNot: ["type-only"] },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    exclude: { path: "^dist/" },
  },
};
