// The Saliency view's server calls: URLs for maps and overlays, the top-k JSON, one class's JSON and
// values, the method list (fetched once) and progress polling for long runs.

import { parseNpy } from '../common/npy.js';

const enc = encodeURIComponent;
let methodsPromise = null;

/** {methods, default, default_colormap, colormaps}; fetched once per page. */
export function loadMethods(api) {
  if (!methodsPromise) methodsPromise = api.getJson('/api/saliency/methods').catch((err) => {
    methodsPromise = null;
    throw err;
  });
  return methodsPromise;
}

/** URL builders for one (model, image, weights, method, layer). `layer` is omitted for layer-free methods. */
export function saliencyUrls(api, { modelId, imageId, weights, method, layer }) {
  const base = `/images/${enc(imageId)}/saliency`;
  const common = (extra = {}) => ({ method, layer: layer || undefined, weights, ...extra });
  const path = (suffix, extra) => api.urls.modelPath(modelId, base + suffix, common(extra));
  return {
    topk: (k) => path('/topk.json', { k }),
    json: (target) => path('.json', { target }),
    npy: (target) => path('.npy', { target }),
    raw: (target) => path('/raw.npy', { target }),
    png: (target, cmap) => path('.png', { target, colormap: cmap, opacity: 1 }),
    overlay: (target, cmap, opacity) => path('.png', { target, colormap: cmap, opacity }),
    progress: () => path('/progress'),
    input: () => api.urls.modelInput(modelId, imageId, weights),
  };
}

/** The H×W values of one map as {shape, data}. */
export async function loadValues(api, url, signal) {
  const response = await api.request(url, { signal });
  return parseNpy(await response.arrayBuffer());
}

/**
 * Poll `url` every `intervalMs` while a long request runs; `onProgress({done, total})` for running runs.
 * Returns the function that stops polling.
 */
export function pollProgress(api, url, onProgress, intervalMs = 500) {
  let stopped = false;
  let timer = null;
  const abort = new AbortController();
  async function tick() {
    try {
      const state = await api.getJson(url, { signal: abort.signal });
      if (!stopped && state.state === 'running') onProgress(state);
    } catch {
      // progress is a courtesy: a failed poll is simply skipped
    }
    if (!stopped) timer = setTimeout(tick, intervalMs);
  }
  timer = setTimeout(tick, intervalMs);
  return () => {
    stopped = true;
    clearTimeout(timer);
    abort.abort();
  };
}
