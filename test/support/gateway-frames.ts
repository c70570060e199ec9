/** The frames the test gateway recorded (stack option recordFrames, on by default), decoded where they decode. */
import fs from "node:fs";
import path from "node:path";
import { decodeFrame, Frame } from "../../src/protocol/frames";

export interface RecordedFrame {
  direction: "in" | "out";
  at: number;
  bytes: Buffer;
  frame?: Frame;
}

/** Every frame the gateway of the stack in `stackDir` relayed or received, as its recorder wrote them. */
export function recordedFrames(stackDir: string): RecordedFrame[] {
  const file = path.join(stackDir, "gateway-frames.log");
  return fs
    .readFileSync(file, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((line) => {
      const [direction, at, hex] = line.split(" ");
      const bytes = Buffer.from(hex, "hex");
      let frame: Frame | undefined;
      try {
        frame = decodeFrame(bytes, { maxFrameBytes: 64 * 1024 * 1024 });
      } catch {
        frame = undefined;
      }
      return { direction: direction as "in" | "out", at: Number(at), bytes, frame };
    });
}
