// Everything the Layers view fetches: URLs of the feature-map and filter endpoints, and small caches so
// that hovering or switching back to a layer does not ask the server again. Values for hover travel as
// .npy (float32), never as JSON lists: the whole layer when it is small, one channel at a time otherwise.

import { parseNpy } from '../common/npy.js';

const enc = encodeURIComponent;
const WHOLE_LAYER_MAX_BYTES = 1 << 20; // above this, fetch only the channels the pointer visits
const CACHE_ITEMS = 48;

/** URL builders; `w` is the weights variant ('trained' | 'untrained'). */
export function layerUrls(api, modelId, imageId, w) {
  const image = `/images/${enc(imageId)}`;
  const layerPath = (layer) => `${image}/layers/${enc(layer)}`;
  const path = (rest, params = {}) => api.urls.modelPath(modelId, rest, { ...params, weights: w });
  return {
    overviewJson: () => path(`${image}/overview.json`),
    overviewPng: () => path(`${image}/overview.png`),
    atlasJson: (layer, scale) => path(`${layerPath(layer)}/atlas.json`, { scale }),
    atlasPng: (layer, scale) => path(`${layerPath(layer)}/atlas.png`, { scale }),
    stats: (layer) => path(`${layerPath(layer)}/stats.json`),
    activations: (layer) => path(`${layerPath(layer)}/activations.npy`),
    channelPng: (layer, c, scale) => path(`${layerPath(layer)}/channels/${c}.png`, { scale }),
    channelNpy: (layer, c) => path(`${layerPath(layer)}/channels/${c}.npy`),
    inputPng: () => path(`${image}/input.png`),
  };
}

/** Filter URLs of a layer, for an explicit weights variant. */
export function filterUrls(api, modelId, layer, w) {
  const path = (rest, params = {}) => api.urls.modelPath(modelId, `/layers/${enc(layer)}${rest}`, { ...params, weights: w });
  return {
    json: (page) => path('/filters.json', page),
    png: (page) => path('/filters.png', page),
    histogram: (bins = 40) => path('/histogram.json', { bins }),
  };
}

/** A tiny LRU of promises keyed by URL (failed requests are forgotten so they can be retried). */
function promiseCache(limit) {
  const items = new Map();
  return {
    get(key, make) {
      if (items.has(key)) {
        const hit = items.get(key);
        items.delete(key);
        items.set(key, hit);
        return hit;
      }
      const promise = make().catch((err) => {
        items.delete(key);
        throw err;
      });
      items.set(key, promise);
      while (items.size > limit) items.delete(items.keys().next().value);
      return promise;
    },
    clear: () => items.clear(),
  };
}

/** Fetchers with caching; one per mounted view. */
export function createLayerData(api) {
  const cache = promiseCache(CACHE_ITEMS);
  const abort = new AbortController(); // clear() stops every request still on its way
  const { signal } = abort;
  const json = (url) => cache.get(url, () => api.getJson(url, { signal }));
  const npy = (url) =>
    cache.get(url, async () => parseNpy(await (await api.request(url, { signal })).arrayBuffer()));
  const image = (url) =>
    cache.get(
      url,
      () =>
        new Promise((resolve, reject) => {
          const img = new Image();
          img.decoding = 'async';
          img.onload = () => resolve(img);
          img.onerror = () => reject(new Error(`the picture at ${url} could not be loaded`));
          signal.addEventListener('abort', () => img.removeAttribute('src'), { once: true });
          img.src = url;
        }),
    );

  /**
   * Hover values for a layer: returns {get(c) → Promise<{shape, data}> of one channel (H×W)}.
   * Small layers load whole once; large ones per channel on demand.
   */
  function hoverSource(urls, layer, shape) {
    const count = shape.reduce((a, b) => a * b, 1);
    if (count * 4 <= WHOLE_LAYER_MAX_BYTES) {
      return {
        whole: true,
        channel: async (c) => {
          const arr = await npy(urls.activations(layer)); // fetched once, on the first hover
          const [C, H, W] = arr.shape.length === 1 ? [arr.shape[0], 1, 1] : arr.shape;
          if (c < 0 || c >= C) throw new Error(`no channel ${c}`);
          return { shape: [H, W], data: arr.data.subarray(c * H * W, (c + 1) * H * W) };
        },
      };
    }
    return {
      whole: false,
      channel: async (c) => {
        const arr = await npy(urls.channelNpy(layer, c));
        return { shape: arr.shape.length === 2 ? arr.shape : [1, 1], data: arr.data };
      },
    };
  }

  return {
    json,
    npy,
    image,
    hoverSource,
    clear() {
      abort.abort();
      cache.clear();
    },
  };
}
