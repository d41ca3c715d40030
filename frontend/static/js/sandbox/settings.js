// The sandbox's settings as they live in the URL (so a link reproduces the exact example), with defaults
// and limits. Pure: read(state) → settings, toQuery(changes) → URL keys.

import { decodeGrid, encodeGrid } from './grid-codec.js';

export const MAX_INPUT = 16;
export const MAX_KERNEL = 7;
export const ACTIVATIONS = ['none', 'relu', 'leaky_relu', 'relu6', 'softplus', 'abs'];
export const POOL_OPS = ['max', 'avg', 'l2'];

const DEFAULT_INPUT = [[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0], [0, 1, 1, 0, 0]];
const DEFAULT_KERNEL = [[1, 0, 1], [0, 1, 0], [1, 0, 1]];

const int = (text, lo, hi, fallback) => {
  const n = Number(text);
  return Number.isInteger(n) && n >= lo && n <= hi ? n : fallback;
};

/** Settings from the URL state (`get(key)`), every value checked and defaulted. */
export function readSettings(get) {
  const pad = get('pad');
  let padding = 'valid';
  if (['valid', 'same', 'full'].includes(pad)) padding = pad;
  else if (pad !== undefined && pad !== null && pad !== '' && Number.isInteger(Number(pad))) padding = Math.min(Math.max(Number(pad), 0), 8);
  const bias = Number(get('bias'));
  return {
    op: get('op') === 'pool' ? 'pool' : 'conv',
    input: decodeGrid(get('in'), MAX_INPUT) || DEFAULT_INPUT,
    kernel: decodeGrid(get('k'), MAX_KERNEL) || DEFAULT_KERNEL,
    padding,
    stride: int(get('stride'), 1, 8, 1),
    dilation: int(get('dil'), 1, 6, 1),
    mode: get('mode') === 'conv' ? 'convolution' : 'cross-correlation',
    activation: ACTIVATIONS.includes(get('act')) ? get('act') : 'none',
    bias: Number.isFinite(bias) ? bias : 0,
    poolOp: POOL_OPS.includes(get('pop')) ? get('pop') : 'max',
    poolSize: int(get('psize'), 1, 7, 2),
    poolStride: int(get('pstride'), 1, 7, 0) || null,
    poolPadding: int(get('ppad'), 0, 3, 0),
  };
}

/** URL keys for a partial settings change. */
export function toQuery(changes) {
  const q = {};
  for (const [key, value] of Object.entries(changes)) {
    if (key === 'input') q.in = encodeGrid(value);
    else if (key === 'kernel') q.k = encodeGrid(value);
    else if (key === 'padding') q.pad = String(value);
    else if (key === 'dilation') q.dil = value;
    else if (key === 'mode') q.mode = value === 'convolution' ? 'conv' : null;
    else if (key === 'activation') q.act = value === 'none' ? null : value;
    else if (key === 'poolOp') q.pop = value;
    else if (key === 'poolSize') q.psize = value;
    else if (key === 'poolStride') q.pstride = value || null;
    else if (key === 'poolPadding') q.ppad = value || null;
    else q[key] = value;
  }
  return q;
}

/** The request body for POST /api/sandbox/convolve or /pool. */
export function requestBody(s) {
  if (s.op === 'pool') {
    return { input: s.input, kernel_size: s.poolSize, stride: s.poolStride, padding: s.poolPadding, op: s.poolOp };
  }
  return { input: s.input, kernel: s.kernel, padding: s.padding, stride: s.stride, dilation: s.dilation, mode: s.mode,
    bias: s.bias, activation: s.activation };
}
