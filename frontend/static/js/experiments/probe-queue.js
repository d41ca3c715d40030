// The occlusion probe's request loop: at most one request on its way; positions that come meanwhile wait
// and go together in the next request (one forward pass for all of them); the newest position's answer
// is the one shown, after the others are recorded as visited.

const MAX_PER_REQUEST = 16;

/** @param {object} ctx  the view ctx  @param {number|null} cls  the watched class
 *  @param {(patch, result, answer) => void} onResult  called per patch, oldest first */
export function createProbeQueue(ctx, cls, onResult) {
  const { model, imageId, weights, api } = ctx;
  const url = api.urls.modelPath(model.id, `/images/${imageId}/occlusion-probe`, { weights });
  let waiting = [];
  let busy = false;
  let stopped = false;
  const abort = new AbortController();
  const queue = { cls, key: '', push, stop };

  function push(patch) {
    waiting.push(patch);
    if (waiting.length > MAX_PER_REQUEST) waiting = waiting.slice(-MAX_PER_REQUEST);
    if (!busy) send();
  }

  async function send() {
    if (stopped || !waiting.length) return;
    const patches = waiting;
    waiting = [];
    busy = true;
    try {
      const body = { patches };
      if (queue.cls !== null && queue.cls !== undefined) body.classes = [queue.cls];
      const answer = await api.getJson(url, { method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(body), signal: abort.signal });
      if (stopped) return;
      answer.results.forEach((result, i) => onResult(patches[i], result, answer));
    } catch (err) {
      if (err && err.name === 'AbortError') return;
      console.warn('occlusion probe failed', err);
    } finally {
      busy = false;
    }
    if (!stopped) send();
  }

  function stop() {
    stopped = true;
    abort.abort();
  }

  return queue;
}
