import fs from "node:fs";
import path from "node:path";

/** This bridge's version, from package.json (read once; "unknown" if the file is missing). */
export const BRIDGE_VERSION: string = (() => {
  try {
    return (JSON.parse(fs.readFileSync(path.resolve(__dirname, "..", "..", "package.json"), "utf8")) as { version: string }).version;
  } catch {
    return "unknown";
  }
})();
