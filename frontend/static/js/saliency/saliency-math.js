// Pure helpers of the Saliency view (no DOM): URL-state parsing, layer and label filtering, legend ticks,
// number formatting, pixel lookup and a .npy reader. Browser tests import this module directly.

export const TOP_K = 5;
export const DEFAULT_OPACITY = 0.6;

/** Layers whose output is C×H×W (the ones a CAM can use), in model order. */
export function spatialLayers(model) {
  return (model.layers || []).filter((l) => Array.isArray(l.output_shape) && l.output_shape.length === 3);
}

/**
 * The view's state from the URL keys (method, cam_layer, target, opacity, cmap), with every value checked
 * against what the model and server offer; anything unknown falls back to a default.
 */
export function readSaliencyState(raw, model, methods, colormaps) {
  const method = methods.some((m) => m.name === raw.method) ? raw.method : 'gradcam';
  const layers = spatialLayers(model);
  const layer = layers.some((l) => l.name === raw.cam_layer) ? raw.cam_layer : model.default_layer;
  const target = /^\d+$/.test(raw.target || '') && Number(raw.target) < model.num_classes ? Number(raw.target) : null;
  const opacityNumber = Number(raw.opacity);
  const opacity = raw.opacity !== undefined && Number.isFinite(opacityNumber) ? clamp(opacityNumber, 0, 1) : DEFAULT_OPACITY;
  const cmap = Object.prototype.hasOwnProperty.call(colormaps, raw.cmap) ? raw.cmap : 'viridis';
  return { method, layer, target, opacity, cmap };
}

export function clamp(v, lo, hi) {
  return Math.min(hi, Math.max(lo, v));
}

/**
 * Labels matching `query` (case-insensitive): those starting with it first, then those containing it,
 * each group in class order. A query of digits also matches the class index. Returns [{index, label}].
 */
export function filterLabels(labels, query, limit = 8) {
  const q = query.trim().toLowerCase();
  if (!q) return [];
  const starts = [];
  const contains = [];
  labels.forEach((label, index) => {
    const text = String(label).toLowerCase();
    if (text.startsWith(q) || String(index) === q) starts.push({ index, label });
    else if (text.includes(q)) contains.push({ index, label });
  });
  return starts.concat(contains).slice(0, limit);
}

/** About five round tick values from `low` to `high` (both ends included). */
export function legendTicks(low, high, count = 5) {
  if (!(high > low)) return [low];
  return Array.from({ length: count }, (_, i) => low + ((high - low) * i) / (count - 1));
}

/** The value of an H×W map under a point at (x, y) of a box `width`×`height` showing it. */
export function valueAt(values, shape, x, y, width, height) {
  const [h, w] = shape;
  const col = clamp(Math.floor((x / width) * w), 0, w - 1);
  const row = clamp(Math.floor((y / height) * h), 0, h - 1);
  return { row, col, value: values[row * w + col] };
}
