// A small reader for NumPy .npy files (format versions 1–3), enough for the arrays the server sends:
// little-endian float32 / float64 / uint8 / int32 in C order. Pure: no DOM, testable anywhere.

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY

const TYPES = {
  '<f4': Float32Array,
  '<f8': Float64Array,
  '|u1': Uint8Array,
  '<u1': Uint8Array,
  '<i4': Int32Array,
};

/**
 * Parse a .npy file.
 * @param {ArrayBuffer} buffer
 * @returns {{dtype: string, shape: number[], data: Float32Array|Float64Array|Uint8Array|Int32Array}}
 */
export function parseNpy(buffer) {
  const bytes = new Uint8Array(buffer);
  if (bytes.length < 10 || MAGIC.some((b, i) => bytes[i] !== b)) throw new Error('not a .npy file');
  const major = bytes[6];
  const view = new DataView(buffer);
  let headerLength;
  let offset;
  if (major === 1) {
    headerLength = view.getUint16(8, true);
    offset = 10;
  } else if (major === 2 || major === 3) {
    headerLength = view.getUint32(8, true);
    offset = 12;
  } else {
    throw new Error(`unsupported .npy version ${major}`);
  }
  const header = new TextDecoder('latin1').decode(bytes.subarray(offset, offset + headerLength));
  const descr = /'descr':\s*'([^']+)'/.exec(header);
  const fortran = /'fortran_order':\s*(True|False)/.exec(header);
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header);
  if (!descr || !fortran || !shapeText) throw new Error('malformed .npy header');
  if (fortran[1] === 'True') throw new Error('Fortran-ordered arrays are not supported');
  const Type = TYPES[descr[1]];
  if (!Type) throw new Error(`unsupported .npy dtype ${descr[1]}`);
  const shape = shapeText[1]
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map(Number);
  const count = shape.reduce((a, b) => a * b, 1);
  const start = offset + headerLength;
  const byteLength = count * Type.BYTES_PER_ELEMENT;
  if (start + byteLength > buffer.byteLength) throw new Error('truncated .npy data');
  // typed arrays need aligned offsets; the format pads headers to 64 bytes, but copy when it does not
  const data =
    start % Type.BYTES_PER_ELEMENT === 0
      ? new Type(buffer, start, count)
      : new Type(buffer.slice(start, start + byteLength));
  return { dtype: descr[1], shape, data };
}
