/**
 * Stickers for the simulator: a tiny lossless WebP of one solid colour, written by hand so the
 * simulator needs no image library. WebP lossless (VP8L, RFC 9649) with every prefix code
 * holding a single symbol codes each pixel in zero bits, so the whole image is a fixed handful
 * of header bits whatever its size.
 */

class BitWriter {
  private readonly bytes: number[] = [];
  private current = 0;
  private used = 0;

  /** Appends the low `count` bits of `value`, least significant first (VP8L bit order). */
  write(value: number, count: number): void {
    for (let i = 0; i < count; i++) {
      this.current |= ((value >>> i) & 1) << this.used;
      this.used += 1;
      if (this.used === 8) {
        this.bytes.push(this.current);
        this.current = 0;
        this.used = 0;
      }
    }
  }

  finish(): Buffer {
    if (this.used > 0) this.bytes.push(this.current);
    return Buffer.from(this.bytes);
  }
}

/** A prefix code that holds one symbol (RFC 9649 §3.7.2.1.1, "simple code length code"). */
function writeSingleSymbolCode(bits: BitWriter, symbol: number): void {
  bits.write(1, 1); // simple code
  bits.write(0, 1); // num_symbols - 1
  if (symbol < 2) {
    bits.write(0, 1); // is_first_8bits
    bits.write(symbol, 1);
  } else {
    bits.write(1, 1);
    bits.write(symbol, 8);
  }
}

export interface Rgba {
  r: number;
  g: number;
  b: number;
  a: number;
}

/** A width × height lossless WebP filled with one colour. */
export function solidWebp(width: number, height: number, colour: Rgba): Buffer {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1 || width > 16384 || height > 16384)
    throw new RangeError("WebP dimensions must be integers in 1..16384");
  const bits = new BitWriter();
  bits.write(0x2f, 8); // VP8L signature
  bits.write(width - 1, 14);
  bits.write(height - 1, 14);
  bits.write(colour.a === 255 ? 0 : 1, 1); // alpha_is_used (a hint)
  bits.write(0, 3); // version
  bits.write(0, 1); // no transform
  bits.write(0, 1); // no colour cache
  bits.write(0, 1); // no meta prefix codes: one prefix code group for the whole image
  // The group's five codes: green (with the length prefixes), red, blue, alpha, distance.
  writeSingleSymbolCode(bits, colour.g);
  writeSingleSymbolCode(bits, colour.r);
  writeSingleSymbolCode(bits, colour.b);
  writeSingleSymbolCode(bits, colour.a);
  writeSingleSymbolCode(bits, 0);
  const vp8l = bits.finish();

  const padding = vp8l.length % 2;
  const chunkHeader = Buffer.alloc(8);
  chunkHeader.write("VP8L", 0, "ascii");
  chunkHeader.writeUInt32LE(vp8l.length, 4);
  const riffHeader = Buffer.alloc(12);
  riffHeader.write("RIFF", 0, "ascii");
  riffHeader.writeUInt32LE(4 + chunkHeader.length + vp8l.length + padding, 4);
  riffHeader.write("WEBP", 8, "ascii");
  return Buffer.concat([riffHeader, chunkHeader, vp8l, Buffer.alloc(padding)]);
}

/** A sticker whose colour follows from a seed, so consecutive stickers differ. */
export function stickerImage(seed: number): { bytes: Buffer; width: number; height: number; mimetype: "image/webp" } {
  const hue = (seed * 67) % 360;
  const [r, g, b] = hueToRgb(hue);
  return { bytes: solidWebp(128, 128, { r, g, b, a: 255 }), width: 128, height: 128, mimetype: "image/webp" };
}

function hueToRgb(hue: number): [number, number, number] {
  const x = Math.round(255 * (1 - Math.abs(((hue / 60) % 2) - 1)));
  const sector = Math.floor(hue / 60);
  const table: Array<[number, number, number]> = [
    [255, x, 0],
    [x, 255, 0],
    [0, 255, x],
    [0, x, 255],
    [x, 0, 255],
    [255, 0, x],
  ];
  return table[sector % 6]!;
}
