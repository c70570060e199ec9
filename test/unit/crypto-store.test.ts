import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { describe, it } from "node:test";
import BetterSqlite3 from "better-sqlite3";

const CHILD = path.resolve(__dirname, "../support/crypto-child.js");
const SECRET = "a store key of at least some length";

/** Runs the child; resolves with its first stdout line as JSON (and the process). */
function runChild(args: string[]): Promise<{ line: Record<string, unknown>; child: ReturnType<typeof spawn>; exited: Promise<number | null> }> {
  const child = spawn(process.execPath, [CHILD, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (d) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code, signal) => resolve(signal ? null : code)));
  return new Promise((resolve, reject) => {
    const lines = readline.createInterface({ input: child.stdout! });
    lines.once("line", (l) => resolve({ line: JSON.parse(l), child, exited }));
    child.on("exit", (code) => reject(new Error(`child exited (${code}) before answering: ${stderr}`)));
  });
}

describe("durable crypto store", () => {
  it("an OlmMachine's device, identity keys and sessions survive a SIGKILL; the file is 0600 and holds no plaintext", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "crypto-store-"));
    const file = path.join(dir, "crypto.db");
    try {
      const first = await runChild([file, SECRET, "create"]);
      assert.equal(first.line.bobRead, "before the kill", "the message decrypts before the kill");
      first.child.kill("SIGKILL");
      assert.equal(await first.exited, null, "the child died by SIGKILL");

      assert.equal(fs.statSync(file).mode & 0o777, 0o600, "only the bridge's user may read the crypto store");
      const raw = Buffer.concat([file, `${file}-wal`].filter((f) => fs.existsSync(f)).map((f) => fs.readFileSync(f)));
      const identity = first.line.identity as Record<string, string>;
      for (const needle of ["@alice:test.invalid", "ALICEDEV", "!room:test.invalid", identity.alice, "matrix-sdk-crypto", "before the kill"]) {
        assert.equal(raw.includes(Buffer.from(needle)), false, `${needle} is not readable in the file`);
      }

      const second = await runChild([file, SECRET, "reopen", JSON.stringify(first.line.event)]);
      assert.deepEqual(second.line.identity, first.line.identity, "same identity keys after restart");
      assert.equal(second.line.aliceDevice, "ALICEDEV", "same device after restart");
      assert.equal(second.line.deviceKeysUploadedAgain, false, "no new device keys are uploaded");
      assert.equal(second.line.bobReadOld, "before the kill", "the inbound session decrypts the old message");
      assert.equal(second.line.reshareRequests, 0, "the outbound session was kept: nothing to share again");
      assert.equal(second.line.bobReadNew, "after the kill", "a new message decrypts");
      assert.equal(await second.exited, 0);

      // Key hygiene: the room's inbound keys are deleted, and stay deleted after a restart.
      const forget = await runChild([file, SECRET, "forget-room", JSON.stringify(first.line.event)]);
      assert.equal(forget.line.deleted, 1, "bob's one key of the room was deleted");
      assert.equal(forget.line.error, "MissingRoomKey", "the message no longer decrypts");
      assert.equal(await forget.exited, 0);
      const after = await runChild([file, SECRET, "try-decrypt", JSON.stringify(first.line.event)]);
      assert.equal(after.line.error, "MissingRoomKey", "the deletion was journalled: still gone after a restart");

      const wrongKey = runChild([file, "another key entirely", "reopen", "{}"]);
      await assert.rejects(wrongKey, /different store key/, "a wrong store key is refused, not a new device");
      const db = new BetterSqlite3(file, { readonly: true });
      const rows = db.prepare("SELECT COUNT(*) AS n FROM idb_records").get() as { n: number };
      db.close();
      assert.ok(rows.n > 0);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
