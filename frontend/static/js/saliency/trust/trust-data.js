// "Which map should we trust?": the server calls. sanity.json is a background job (202 with progress
// until done); deletion.json is one heavy request per method, asked one after another (the server lets
// one client hold only two places in its queue of long work).

const enc = encodeURIComponent;

/** The five methods the panel compares, in the order the page lists them. */
export const TRUST_METHODS = ['gradcam', 'guided-backprop', 'gradient', 'integrated-gradients', 'scorecam'];

export function trustUrls(api, { modelId, imageId, weights, target, baseline }) {
  const base = `/images/${enc(imageId)}/saliency`;
  const common = { target: target === null ? undefined : target, weights };
  return {
    sanity: () => api.urls.modelPath(modelId, `${base}/sanity.json`, { methods: TRUST_METHODS.join(','), ...common }),
    deletion: (method) => api.urls.modelPath(modelId, `${base}/deletion.json`, { method, baseline, ...common }),
  };
}

/**
 * Poll sanity.json until it answers 200: `onProgress(job)` for each 202. Resolves to the result.
 * Aborts with `signal`; a failed job rejects with the server's message.
 */
export async function waitForSanity(api, url, { signal, onProgress, intervalMs = 1000 }) {
  for (;;) {
    const response = await api.request(url, { signal });
    if (response.status === 200) return response.json();
    onProgress(await response.json());
    await new Promise((resolve, reject) => {
      const timer = setTimeout(resolve, intervalMs);
      signal.addEventListener('abort', () => {
        clearTimeout(timer);
        reject(new DOMException('aborted', 'AbortError'));
      }, { once: true });
    });
  }
}

/** Stop the sanity job (an explicit Stop: classmates may share the same job). */
export function cancelSanity(api, url) {
  return api.request(url, { method: 'DELETE' }).catch(() => {});
}

/** deletion.json for each method in turn; `onResult(method, answer)` as each arrives. */
export async function loadDeletions(api, urls, methods, { signal, onResult, onError }) {
  for (const method of methods) {
    try {
      onResult(method, await api.getJson(urls.deletion(method), { signal }));
    } catch (err) {
      if (err && err.name === 'AbortError') throw err;
      onError(method, err);
    }
  }
}
