/**
 * Conformance against the draft's published examples (../shared/vectors/mimi, or $MIMI_VECTORS_DIR):
 * every .cbor decodes, has the id its .edn header states, and re-encodes to the same bytes, directly,
 * through the JSON form, and through the CLI.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { decodeMimi, encodeMimi, messageIdOf, mimiFromJson, mimiToJson } from "../../src/protocol/mimi";
import { runMimiCommand } from "../../src/protocol/mimi-cli";

function findRepoRoot(start: string): string {
  for (let dir = start; ; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, "package.json"))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`no package.json above ${start}`);
  }
}

const vectorsDir = process.env.MIMI_VECTORS_DIR ?? path.resolve(findRepoRoot(__dirname), "../shared/vectors/mimi");

/** The id in the header: "# message ID = h'<32 hex>\n#   <32 hex>'". */
function expectedIdFromEdn(edn: string, file: string): string {
  const match = /message ID\s*=\s*h'([^']*)'/.exec(edn);
  assert.ok(match, `${file}: no "message ID = h'…'" in the header`);
  const hex = match[1].replace(/[#\s]/g, "").toLowerCase();
  assert.match(hex, /^[0-9a-f]{64}$/, `${file}: header id is not 32 bytes of hex`);
  return hex;
}

class Collector extends Writable {
  readonly chunks: Buffer[] = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    this.chunks.push(Buffer.from(chunk));
    done();
  }
  bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

test("the MIMI vectors folder exists and holds examples", () => {
  assert.ok(existsSync(vectorsDir), `MIMI vectors not found at ${vectorsDir}; set MIMI_VECTORS_DIR or restore ../shared/vectors/mimi next to the repository`);
  const cbors = readdirSync(vectorsDir).filter((f) => f.endsWith(".cbor"));
  assert.ok(cbors.length > 0, `no .cbor files in ${vectorsDir}`);
});

const vectorFiles = existsSync(vectorsDir)
  ? readdirSync(vectorsDir)
      .filter((f) => f.endsWith(".cbor"))
      .sort()
  : [];

for (const file of vectorFiles) {
  const name = file.slice(0, -".cbor".length);
  const cborPath = path.join(vectorsDir, file);
  const ednPath = path.join(vectorsDir, `${name}.edn`);

  test(`vector ${name}: id, re-encoding and JSON round trip`, () => {
    const bytes = new Uint8Array(readFileSync(cborPath));
    assert.ok(existsSync(ednPath), `${name}.edn is missing, so the expected id is unknown`);
    const expectedId = expectedIdFromEdn(readFileSync(ednPath, "utf8"), `${name}.edn`);

    const msg = decodeMimi(bytes);
    const id = messageIdOf(msg);
    assert.ok(id, `${name}: sender or room URI missing from the extensions`);
    assert.equal(hex(id), expectedId, `${name}: message id`);

    assert.equal(hex(encodeMimi(msg)), hex(bytes), `${name}: re-encoding`);

    const json = JSON.parse(JSON.stringify(mimiToJson(msg)));
    assert.equal(json.messageId, expectedId, `${name}: messageId in JSON`);
    assert.equal(hex(encodeMimi(mimiFromJson(json))), hex(bytes), `${name}: JSON round trip`);
  });

  test(`vector ${name}: CLI decode then encode gives the same bytes`, async () => {
    const bytes = readFileSync(cborPath);
    const decodedOut = new Collector();
    const decodeErr = new Collector();
    assert.equal(await runMimiCommand(["decode", cborPath], decodedOut, decodeErr), 0, decodeErr.bytes().toString());
    assert.equal(decodeErr.bytes().length, 0);
    const printed = decodedOut.bytes().toString("utf8");
    const json = JSON.parse(printed);
    assert.equal(json.messageId, expectedIdFromEdn(readFileSync(ednPath, "utf8"), `${name}.edn`));

    const dir = mkdtempSync(path.join(tmpdir(), "mimi-vectors-"));
    try {
      const jsonPath = path.join(dir, `${name}.json`);
      writeFileSync(jsonPath, printed);
      const encodedOut = new Collector();
      const encodeErr = new Collector();
      assert.equal(await runMimiCommand(["encode", jsonPath], encodedOut, encodeErr), 0, encodeErr.bytes().toString());
      assert.equal(hex(encodedOut.bytes()), hex(bytes));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
