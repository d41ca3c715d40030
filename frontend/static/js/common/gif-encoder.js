// A small animated-GIF (GIF89a) encoder, written for ConvScope's slide exports: a fixed 6×7×6 colour
// cube (white, black and the greys of text land exactly on it), LZW with 12-bit codes, endless loop.
// Pure: RGBA pixels in, bytes out.

const LEVELS = [6, 7, 6]; // red, green, blue steps: 252 colours

function palette() {
  const table = new Uint8Array(256 * 3);
  let i = 0;
  for (let r = 0; r < LEVELS[0]; r += 1) {
    for (let g = 0; g < LEVELS[1]; g += 1) {
      for (let b = 0; b < LEVELS[2]; b += 1) {
        table.set([Math.round((r * 255) / (LEVELS[0] - 1)), Math.round((g * 255) / (LEVELS[1] - 1)), Math.round((b * 255) / (LEVELS[2] - 1))], i * 3);
        i += 1;
      }
    }
  }
  return table;
}

/** Palette index of each pixel of RGBA data (nearest level per channel). */
export function quantize(rgba) {
  const n = rgba.length / 4;
  const out = new Uint8Array(n);
  const [lr, lg, lb] = LEVELS.map((l) => (l - 1) / 255);
  for (let p = 0; p < n; p += 1) {
    const r = Math.round(rgba[p * 4] * lr);
    const g = Math.round(rgba[p * 4 + 1] * lg);
    const b = Math.round(rgba[p * 4 + 2] * lb);
    out[p] = (r * LEVELS[1] + g) * LEVELS[2] + b;
  }
  return out;
}

/** LZW-compress palette indices as GIF wants them (minimum code size 8). */
export function lzw(indices, minCodeSize = 8) {
  const clearCode = 1 << minCodeSize;
  const endCode = clearCode + 1;
  const out = [];
  let codeSize = minCodeSize + 1;
  let next = endCode + 1;
  let table = new Map();
  let acc = 0;
  let bits = 0;
  const emit = (code) => {
    acc |= code << bits;
    bits += codeSize;
    while (bits >= 8) {
      out.push(acc & 255);
      acc >>>= 8;
      bits -= 8;
    }
  };
  emit(clearCode);
  let prefix = indices[0];
  for (let i = 1; i < indices.length; i += 1) {
    const k = indices[i];
    const key = prefix * 256 + k;
    const found = table.get(key);
    if (found !== undefined) {
      prefix = found;
      continue;
    }
    emit(prefix);
    if (next === 4096) {
      emit(clearCode);
      table = new Map();
      codeSize = minCodeSize + 1;
      next = endCode + 1;
    } else {
      if (next >= 1 << codeSize) codeSize += 1;
      table.set(key, next);
      next += 1;
    }
    prefix = k;
  }
  emit(prefix);
  emit(endCode);
  if (bits > 0) out.push(acc & 255);
  return out;
}

/** Collects frames; `finish()` returns the GIF as a Uint8Array. */
export function createGifEncoder(width, height) {
  const chunks = [];
  const bytes = (...values) => chunks.push(Uint8Array.from(values));
  const word = (v) => [v & 255, (v >> 8) & 255];
  chunks.push(new TextEncoder().encode('GIF89a'));
  bytes(...word(width), ...word(height), 0xf7, 0, 0); // global table of 256 colours
  chunks.push(palette());
  bytes(0x21, 0xff, 11, ...new TextEncoder().encode('NETSCAPE2.0'), 3, 1, 0, 0, 0); // loop forever

  return {
    /** Add a frame of RGBA pixels (width×height×4) shown for `delayMs`. */
    addFrame(rgba, delayMs) {
      const delay = Math.max(2, Math.round(delayMs / 10));
      bytes(0x21, 0xf9, 4, 0, ...word(delay), 0, 0);
      bytes(0x2c, 0, 0, 0, 0, ...word(width), ...word(height), 0);
      const data = lzw(quantize(rgba));
      const body = [8];
      for (let i = 0; i < data.length; i += 255) {
        const block = data.slice(i, i + 255);
        body.push(block.length, ...block);
      }
      body.push(0);
      chunks.push(Uint8Array.from(body));
    },
    finish() {
      bytes(0x3b);
      const total = chunks.reduce((n, c) => n + c.length, 0);
      const out = new Uint8Array(total);
      let offset = 0;
      for (const c of chunks) {
        out.set(c, offset);
        offset += c.length;
      }
      return out;
    },
  };
}
