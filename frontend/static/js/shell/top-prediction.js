// The top-1 prediction as a badge in the header, so every view (and the class, on the projector) always
// sees what the network says, e.g. "3 · 98.7 %". Fetched from the same predictions endpoint as the bars
// (the server caches it), for the URL's model, weights and image.

import { el, isAbort } from '../dom.js';
import { formatPercent } from '../common/format.js';

/**
 * @param {object} opts
 * @param {object} opts.api   js/api.js
 * @returns {{render: ({model, imageId, weights}) => void}}
 */
export function createTopPrediction({ api }) {
  const root = document.getElementById('top-prediction');
  let key = null;
  let abort = null;

  function render({ model, imageId, weights }) {
    const next = imageId ? `${model.id}|${weights}|${imageId}` : null;
    if (next === key) return;
    key = next;
    if (abort) abort.abort();
    abort = null;
    if (!next) {
      root.hidden = true;
      root.textContent = '';
      delete root.dataset.for;
      return;
    }
    root.classList.add('is-stale');
    abort = new AbortController();
    const mine = next;
    api.predictions(model.id, imageId, weights, { topK: 1, signal: abort.signal }).then((answer) => {
      if (mine !== key) return;
      const top = answer.predictions[0];
      root.replaceChildren(
        el('span', { className: 'top-prediction-label', text: top.label }),
        el('span', { className: 'top-prediction-value', text: formatPercent(top.probability, 1) }),
      );
      root.title = `The network's top answer for this image: ${top.label}, ${formatPercent(top.probability, 1)}`;
      root.dataset.for = mine;
      root.dataset.index = String(top.index);
      root.dataset.probability = String(top.probability);
      root.classList.remove('is-stale');
      root.hidden = false;
    }).catch((err) => {
      if (isAbort(err) || mine !== key) return;
      root.hidden = true; // the views say what went wrong; the badge just stays out of the way
    });
  }

  return { render };
}
