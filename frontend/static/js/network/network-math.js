// Pure index math of the network overview (no DOM): which units of the previous column a unit reads,
// and where in them. Receptive fields come from the model JSON (size, jump, start per layer, in input
// pixels); the cells of the previous layer a unit reads are exactly those whose own receptive field lies
// inside the unit's (a conv's taps, a pool's window, the same cell for an activation), which also holds
// for whole blocks, so summarised columns of deep models get their edges from the same rule.

/** The image-space interval [lo, hi] (pixels, inclusive) of cell `i` along one axis of a field. */
export function fieldInterval(field, axis, i) {
  const half = (field.size[axis] - 1) / 2;
  const centre = field.start[axis] + i * field.jump[axis];
  return [centre - half, centre + half];
}

/**
 * Cells [first, last] (inclusive, clipped to 0..count-1) of the previous layer read by cell `i` of this
 * one along `axis`. `prevField` null means the previous column is the input image itself (one pixel each).
 */
export function readRange(field, prevField, axis, i, count) {
  const [lo, hi] = fieldInterval(field, axis, i);
  const prev = prevField || { size: [1, 1], jump: [1, 1], start: [0, 0] };
  const half = (prev.size[axis] - 1) / 2;
  const jump = prev.jump[axis];
  const eps = 1e-6;
  // prev cell j covers [start + j·jump − half, start + j·jump + half]; keep those inside [lo, hi]
  let first = Math.ceil((lo + half - prev.start[axis]) / jump - eps);
  let last = Math.floor((hi - half - prev.start[axis]) / jump + eps);
  if (last < first) { // a layer that reads less than one previous cell's field (never for real nets)
    const centre = Math.round((lo + hi) / 2 - prev.start[axis]) / jump;
    first = Math.floor(centre);
    last = first;
  }
  return [Math.max(0, first), Math.min(count - 1, last)];
}

/**
 * The box read in the previous column by cell (y, x) of `column`: {top, left, bottom, right} in previous
 * map cells (inclusive), or the whole map when either side has no spatial layout.
 */
export function readBox(column, prev, y, x) {
  const [, prevH = 1, prevW = 1] = prev ? prev.shape : [];
  const whole = { top: 0, left: 0, bottom: prevH - 1, right: prevW - 1 };
  const field = column.field;
  if (!field || field.whole_image || column.vector || (prev && prev.vector)) return whole;
  const prevField = prev ? prev.field : null;
  if (prev && (!prevField || prevField.whole_image)) return whole;
  const [top, bottom] = readRange(field, prevField, 0, y, prevH);
  const [left, right] = readRange(field, prevField, 1, x, prevW);
  return { top, left, bottom, right };
}

/**
 * The previous column's channels that channel `c` of `column` reads: {all: true} or {channels: [...]}.
 * A grouped conv reads its group's inputs; pools, activations, norms, dropout and padding read their own channel.
 */
export function readChannels(column, prevChannels, c) {
  const layer = column.layer || {};
  if (column.leaf && ['pool', 'activation', 'norm', 'dropout', 'padding'].includes(column.kind) && column.channels === prevChannels) {
    return { channels: [c] };
  }
  if (column.leaf && column.kind === 'conv' && layer.groups > 1 && layer.in_channels === prevChannels) {
    const perGroupIn = layer.in_channels / layer.groups;
    const perGroupOut = layer.out_channels / layer.groups;
    const group = Math.floor(c / perGroupOut);
    return { channels: Array.from({ length: perGroupIn }, (_, i) => group * perGroupIn + i) };
  }
  return { all: true };
}

/** The map cell under a point at (px, py) of a tile `size` CSS pixels wide showing an h×w map. */
export function cellAt(px, py, width, height, h, w) {
  return {
    y: Math.min(h - 1, Math.max(0, Math.floor((py / height) * h))),
    x: Math.min(w - 1, Math.max(0, Math.floor((px / width) * w))),
  };
}

/** Rows of a column's tile grid: as many as fit in `available` CSS pixels, at least `min`. */
export function rowsThatFit(available, tile, gap, min = 4) {
  return Math.max(min, Math.floor((available + gap) / (tile + gap)));
}

/** The colour of `value` on a column's scale: `stops` (hex, low → high) spread over `range` [lo, hi]. */
export function colourAt(stops, [lo, hi], value) {
  const t = hi > lo ? Math.min(1, Math.max(0, (value - lo) / (hi - lo))) : 0.5;
  const pos = t * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(pos));
  const f = pos - i;
  const a = hexRgb(stops[i]);
  const b = hexRgb(stops[i + 1]);
  return `rgb(${a.map((v, k) => Math.round(v + (b[k] - v) * f)).join(', ')})`;
}

function hexRgb(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}
