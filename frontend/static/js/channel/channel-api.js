// URLs and polling of the "what a channel looks for" endpoints: dataset examples (202 while the
// server precomputes them) and the feature visualisation job (start, poll, cancel, picture).

const enc = encodeURIComponent;

/** The dataset that fits a model's own training data (the server's choice, which knows the image folders). */
export function defaultDataset(model) {
  if (model.examples_dataset) return model.examples_dataset;
  const name = (model.dataset || '').toLowerCase();
  if (name.startsWith('mnist')) return 'mnist';
  if (name.startsWith('shapes')) return 'shapes';
  return 'photos';
}

let foldersPromise = null;

/** The server's named image folders ([{name, dataset, images, classes, …}]), fetched once per page. */
export function imageFolders(api) {
  if (!foldersPromise) foldersPromise = api.getJson('/api/image-folders').then((b) => b.folders).catch(() => {
    foldersPromise = null;
    return [];
  });
  return foldersPromise;
}

export function channelPath(api, model, layer, channel, rest, params) {
  return api.urls.modelPath(model, `/layers/${enc(layer)}/channels/${channel}${rest}`, params);
}

/** GET examples.json; resolves to {state: 'done', body} or {state: 'computing', body} (202). */
export async function fetchExamples(api, { model, layer, channel, dataset, k, weights }, signal) {
  const response = await api.request(channelPath(api, model, layer, channel, '/examples.json', { dataset, k, weights }), { signal });
  const body = await response.json();
  return { state: response.status === 202 ? 'computing' : 'done', body };
}

export function cropUrl(api, { model, layer, channel, dataset, weights }, index) {
  // context: the receptive field outlined inside a wider region (early layers see only a few pixels)
  return channelPath(api, model, layer, channel, `/examples/${index}.png`, { dataset, weights, context: 'true' });
}

export async function featureVis(api, { model, layer, channel, weights, seed }, method, signal) {
  const params = { weights, seed };
  const url = method === 'GET' ? channelPath(api, model, layer, channel, '/feature-vis.json', params)
    : channelPath(api, model, layer, channel, '/feature-vis', params);
  const response = await api.request(url, { method, signal });
  return response.json();
}

export function featureVisPng(api, { model, layer, channel, weights, seed }) {
  return channelPath(api, model, layer, channel, '/feature-vis.png', { weights, seed });
}

/** Wait `ms`, or reject when `signal` aborts. */
export function pause(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(timer); reject(new DOMException('aborted', 'AbortError')); }, { once: true });
  });
}
