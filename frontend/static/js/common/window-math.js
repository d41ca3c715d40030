// Pure index math of sliding windows — the page's copy of server/services/window_math.py, checked against
// it case by case in tests/browser/test_window_math_js.py. No DOM: which input cells feed which output
// cell, for any kernel, stride, padding (valid | same | full | n | asymmetric), dilation and ceil mode.
//
// One axis: input n, kernel k, stride s, dilation d, padding (pb, pa):
//   k_eff = d·(k − 1) + 1;  n_out = ⌊(n + pb + pa − k_eff) / s⌋ + 1;  tap t of output o reads i = o·s − pb + t·d
// 'same' is Keras/TensorFlow's: n_out = ⌈n / s⌉, total = max((n_out − 1)·s + k_eff − n, 0), the odd cell after.

export const PADDING_NAMES = ['valid', 'same', 'full'];

export const effectiveKernel = (kernel, dilation = 1) => dilation * (kernel - 1) + 1;

/** [before, after] padding along one axis for a name, a number or a [before, after] pair. */
export function resolvePadding(padding, size, kernel, stride = 1, dilation = 1) {
  const kEff = effectiveKernel(kernel, dilation);
  if (typeof padding === 'string') {
    if (padding === 'valid') return [0, 0];
    if (padding === 'full') return [kEff - 1, kEff - 1];
    if (padding === 'same') {
      const out = Math.ceil(size / stride);
      const total = Math.max((out - 1) * stride + kEff - size, 0);
      return [Math.floor(total / 2), total - Math.floor(total / 2)];
    }
    const asNumber = Number(padding);
    if (padding.trim() !== '' && Number.isInteger(asNumber)) return resolvePadding(asNumber, size, kernel, stride, dilation);
    throw new Error(`padding must be valid, same, full or a number, not ${padding}`);
  }
  const [before, after] = Array.isArray(padding) ? padding : [padding, padding];
  if (before < 0 || after < 0) throw new Error('padding cannot be negative');
  return [before, after];
}

/** Output cells along one axis (0 when the kernel does not fit). */
export function outputSize(size, kernel, stride, padBefore, padAfter, dilation = 1, ceilMode = false) {
  const span = size + padBefore + padAfter - effectiveKernel(kernel, dilation);
  if (span < 0) return 0;
  if (!ceilMode) return Math.floor(span / stride) + 1;
  let out = Math.ceil(span / stride) + 1;
  if ((out - 1) * stride >= size + padBefore) out -= 1; // PyTorch: the last window starts inside
  return out;
}

/** One axis of a sliding window, padding resolved. */
export function axis(size, kernel, stride = 1, padding = 0, dilation = 1, ceilMode = false) {
  if (!(kernel >= 1 && stride >= 1 && dilation >= 1)) throw new Error('kernel size, stride and dilation must be at least 1');
  const [padBefore, padAfter] = resolvePadding(padding, size, kernel, stride, dilation);
  const kEff = effectiveKernel(kernel, dilation);
  const outSize = outputSize(size, kernel, stride, padBefore, padAfter, dilation, ceilMode);
  const taps = (o) => Array.from({ length: kernel }, (_, t) => o * stride - padBefore + t * dilation);
  const leftover = () => {
    if (outSize === 0) return 0;
    return Math.max(size + padBefore + padAfter - ((outSize - 1) * stride + kEff), 0);
  };
  return { size, kernel, stride, dilation, padBefore, padAfter, ceilMode, kEff, outSize, taps, leftover };
}

/**
 * A 2-D window. stride/dilation: number or [rows, cols]; padding: name, number, [rows, cols] (each a
 * name, number or pair), [top, bottom, left, right], or {top, bottom, left, right}.
 */
export function window2d(inHW, kernelHW, { stride = 1, padding = 0, dilation = 1, ceilMode = false } = {}) {
  const s = pair(stride);
  const d = pair(dilation);
  let pads;
  if (padding && typeof padding === 'object' && !Array.isArray(padding)) {
    pads = [[padding.top || 0, padding.bottom || 0], [padding.left || 0, padding.right || 0]];
  } else if (Array.isArray(padding) && padding.length === 4) {
    pads = [[padding[0], padding[1]], [padding[2], padding[3]]];
  } else if (Array.isArray(padding) && padding.length === 2) {
    pads = padding;
  } else {
    pads = [padding, padding];
  }
  const rows = axis(inHW[0], kernelHW[0], s[0], pads[0], d[0], ceilMode);
  const cols = axis(inHW[1], kernelHW[1], s[1], pads[1], d[1], ceilMode);
  return {
    rows,
    cols,
    outShape: [rows.outSize, cols.outSize],
    padding: { top: rows.padBefore, bottom: rows.padAfter, left: cols.padBefore, right: cols.padAfter },
    /** [{ky, kx, iy, ix, pad}] row-major for output (y, x). */
    cells(y, x) {
      if (!(y >= 0 && y < rows.outSize && x >= 0 && x < cols.outSize)) throw new Error(`output (${y}, ${x}) is outside the map`);
      const out = [];
      rows.taps(y).forEach((iy, ky) => {
        cols.taps(x).forEach((ix, kx) => {
          out.push({ ky, kx, iy, ix, pad: !(iy >= 0 && iy < rows.size && ix >= 0 && ix < cols.size) });
        });
      });
      return out;
    },
    tilingMessage: () => tilingMessage(rows, cols),
    formula: () => [['height', rows], ['width', cols]].map(([label, a]) => formulaLine(label, a)),
  };
}

function pair(value) {
  return Array.isArray(value) ? [value[0], value[value.length - 1]] : [value, value];
}

function formulaLine(label, a) {
  return `${label}: ⌊(${a.size} + ${a.padBefore} + ${a.padAfter} − ${a.dilation}·(${a.kernel} − 1) − 1) / ${a.stride}⌋ + 1 = ${a.outSize}`;
}

function tilingMessage(rows, cols) {
  if (rows.outSize === 0 || cols.outSize === 0) {
    return `The kernel (spanning ${rows.kEff}×${cols.kEff} cells with its dilation) is larger than the padded input ` +
      `(${rows.size + rows.padBefore + rows.padAfter}×${cols.size + cols.padBefore + cols.padAfter}): there is no output.`;
  }
  const parts = [];
  if (rows.leftover()) parts.push(`the last ${rows.leftover()} row(s)`);
  if (cols.leftover()) parts.push(`the last ${cols.leftover()} column(s)`);
  if (!parts.length) return null;
  return `These settings do not tile the input: ${parts.join(' and ')} of the padded input are never under the window, so they do not affect the output.`;
}

/**
 * The input pixels a unit sees, from a layer's receptive_field {size, jump, start} (per axis [h, w]):
 * unit i is centred at start + i·jump; the box is clipped to the image. Returns {top, left, bottom, right}
 * (inclusive pixel indices) and whether it was clipped.
 */
export function receptiveBox(field, y, x, imageHW) {
  const box = {};
  let clipped = false;
  [['top', 'bottom', 0, y], ['left', 'right', 1, x]].forEach(([lo, hi, a, i]) => {
    const centre = field.start[a] + i * field.jump[a];
    const first = Math.ceil(centre - (field.size[a] - 1) / 2);
    const last = Math.floor(centre + (field.size[a] - 1) / 2);
    box[lo] = Math.max(first, 0);
    box[hi] = Math.min(last, imageHW[a] - 1);
    if (first < 0 || last > imageHW[a] - 1) clipped = true;
  });
  return { ...box, clipped };
}
