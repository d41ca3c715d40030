// Fetching for the step-through: traces of single cells, the layer's input channels and its output
// channel, cached for the current (model, weights, image, layer) and aborted together when it changes.

import { parseNpy } from '../common/npy.js';

const MAX_TRACES = 600;

function mapFrom(npy) {
  const [h, w] = npy.shape.length === 2 ? npy.shape : [1, npy.shape[0]];
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of npy.data) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return { h, w, values: npy.data, range: [lo, hi] };
}

/** @param {object} api  js/api.js */
export function createTraceData(api) {
  let abort = new AbortController();
  let base = null;
  let traces = new Map();
  let inputs = new Map();
  let outputs = new Map();

  const path = (rest, params = {}) =>
    api.urls.modelPath(base.model, `/images/${encodeURIComponent(base.imageId)}/layers/${encodeURIComponent(base.layer)}${rest}`,
      { ...params, weights: base.weights });

  async function npy(url) {
    const response = await api.request(url, { signal: abort.signal });
    return mapFrom(parseNpy(await response.arrayBuffer()));
  }

  function remember(cache, key, make) {
    if (cache.has(key)) {
      const hit = cache.get(key);
      cache.delete(key);
      cache.set(key, hit);
      return hit;
    }
    const promise = make();
    cache.set(key, promise);
    promise.catch(() => cache.delete(key)); // a failed or aborted fetch may be retried later
    if (cache.size > MAX_TRACES) cache.delete(cache.keys().next().value);
    return promise;
  }

  return {
    /** Start over for {model, imageId, weights, layer}: pending fetches are aborted. */
    reset(next) {
      abort.abort();
      abort = new AbortController();
      base = next;
      traces = new Map();
      inputs = new Map();
      outputs = new Map();
    },
    trace(channel, y, x, top) {
      return remember(traces, `${channel}|${y}|${x}|${top}`, () =>
        api.getJson(path('/trace', { channel, y, x, top }), { signal: abort.signal }));
    },
    /** Peek without fetching: the settled trace or undefined. */
    inputMap(channel) {
      return remember(inputs, channel, () => npy(path('/trace/input.npy', { channel })));
    },
    outputMap(channel) {
      return remember(outputs, channel, () => npy(path('/trace/output.npy', { channel })));
    },
    softmax(top) {
      return api.getJson(api.urls.modelPath(base.model, `/images/${encodeURIComponent(base.imageId)}/softmax`,
        { top, weights: base.weights }), { signal: abort.signal });
    },
    dispose() {
      abort.abort();
      traces = new Map();
      inputs = new Map();
      outputs = new Map();
    },
  };
}
