/**
 * `mimi decode FILE.cbor` prints a MIMI message as one JSON object; `mimi encode FILE.json` writes its CBOR.
 * The main CLI passes the arguments after `mimi`; running this module directly does the same.
 */
import { readFile } from "node:fs/promises";
import { decodeMimi, encodeMimi, MimiError, mimiFromJson, mimiToJson } from "./mimi";

const USAGE = "usage: mimi decode FILE.cbor | mimi encode FILE.json";

function writeAll(stream: NodeJS.WritableStream, chunk: string | Uint8Array): Promise<void> {
  // Waits for the write so a caller that exits right after does not cut off piped output.
  return new Promise((resolve, reject) => {
    stream.write(chunk, (e?: Error | null) => (e ? reject(e) : resolve()));
  });
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, " ").trim();
}

async function readInput(file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const reason = code === "ENOENT" ? "no such file" : code === "EISDIR" ? "is a directory" : code === "EACCES" ? "permission denied" : (e as Error).message;
    throw new MimiError("INVALID_ARGUMENT", `cannot read the file: ${reason}`);
  }
}

async function decodeCommand(file: string, out: NodeJS.WritableStream): Promise<void> {
  const json = mimiToJson(decodeMimi(await readInput(file)));
  await writeAll(out, JSON.stringify(json, null, 2) + "\n");
}

async function encodeCommand(file: string, out: NodeJS.WritableStream): Promise<void> {
  const text = (await readInput(file)).toString("utf8");
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new MimiError("INVALID_JSON", `not valid JSON: ${(e as Error).message}`);
  }
  await writeAll(out, encodeMimi(mimiFromJson(parsed)));
}

/**
 * Runs `mimi <decode|encode> FILE`. Returns the exit code: 0 done, 1 bad input (one line on `err`),
 * 2 wrong usage. Never throws for bad input.
 */
export async function runMimiCommand(args: string[], out: NodeJS.WritableStream, err: NodeJS.WritableStream): Promise<number> {
  const [command, file, ...extra] = args;
  if (command === "--help" || command === "-h" || command === "help") {
    await writeAll(out, USAGE + "\n");
    return 0;
  }
  if ((command !== "decode" && command !== "encode") || file === undefined || extra.length > 0) {
    await writeAll(err, USAGE + "\n");
    return 2;
  }
  try {
    if (command === "decode") await decodeCommand(file, out);
    else await encodeCommand(file, out);
    return 0;
  } catch (e) {
    const reason = e instanceof MimiError ? e.message : `internal error: ${e instanceof Error ? e.message : String(e)}`;
    await writeAll(err, `mimi ${command}: ${file}: ${oneLine(reason)}\n`).catch(() => undefined);
    return 1;
  }
}

if (require.main === module) {
  runMimiCommand(process.argv.slice(2), process.stdout, process.stderr).then((code) => {
    process.exitCode = code;
  });
}
