// Pure index math for the Layers view: channel order, where a channel sits in an atlas, which cell of
// a feature map lies under the pointer, and how numbers are written. No DOM; easy to test.

/** Channel indices 0..n-1 sorted by `values` (descending; ties keep index order); 'index' keeps order. */
export function sortChannels(count, by, stats) {
  const order = Array.from({ length: count }, (_, i) => i);
  if (by === 'index' || !stats || !stats[by]) return order;
  const values = stats[by];
  return order.sort((a, b) => values[b] - values[a] || a - b);
}

/** The source rectangle of channel `c` in an atlas laid out row-major. */
export function tileRect(c, atlas) {
  const { columns } = atlas.grid;
  const { width, height } = atlas.tile;
  return { x: (c % columns) * width, y: Math.floor(c / columns) * height, width, height };
}

/**
 * The feature-map cell under a pointer at (px, py) inside an element drawn `boxW`×`boxH` showing an
 * H×W map; null when outside.
 */
export function cellAt(px, py, boxW, boxH, H, W) {
  if (px < 0 || py < 0 || px >= boxW || py >= boxH) return null;
  const x = Math.min(W - 1, Math.floor((px / boxW) * W));
  const y = Math.min(H - 1, Math.floor((py / boxH) * H));
  return { x, y };
}

/** Value of channel c at (y, x) of a C×H×W array (flat, C order); a vector is C channels of 1×1. */
export function valueAt(array, c, y, x) {
  const shape = array.shape.length === 1 ? [array.shape[0], 1, 1] : array.shape;
  const [, H, W] = shape;
  return array.data[c * H * W + y * W + x];
}

/** Where `value` sits on a legend from `low` to `high`, 0..1 (clipped). */
export function legendPosition(value, low, high) {
  if (!(high > low)) return 0.5;
  return Math.min(1, Math.max(0, (value - low) / (high - low)));
}

/** Legend tick values: low, zero when the range crosses it (else the midpoint), high. */
export function legendTicks(low, high) {
  if (low < 0 && high > 0) return [low, 0, high];
  return [low, (low + high) / 2, high];
}

/** The page of output kernels (of `perPage`) that contains channel c. */
export function kernelPageStart(c, perPage) {
  return Math.floor(c / perPage) * perPage;
}
