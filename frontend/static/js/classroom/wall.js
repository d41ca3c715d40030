// The class wall on the teacher's page: every submitted image with the current model's prediction,
// sortable by confidence; a click makes an image the teacher's (and so the class's) current image.

import { el, listen, disposer, isAbort } from '../dom.js';
import { urls } from '../api.js';
import { sessionApi } from './session-api.js';
import { formatPercent } from '../common/format.js';

const SORTS = {
  newest: { label: 'Newest first', order: (a, b) => b.submitted_at - a.submitted_at },
  'least-confident': { label: 'Least confident first', order: (a, b) => confidence(a) - confidence(b) },
  'most-confident': { label: 'Most confident first', order: (a, b) => confidence(b) - confidence(a) },
};

const confidence = (item) => (item.prediction ? item.prediction.probability : -1);
const percent = (p) => formatPercent(p, p >= 0.995 || p < 0.01 ? 0 : 1);

/**
 * @param {object} opts
 * @param {HTMLElement} opts.root   the wall's section (in the main area)
 * @param {string} opts.code
 * @param {string} opts.token
 * @param {(imageId: string) => void} opts.onPick
 * @param {(count: number) => void} opts.onCount  the wall now holds this many images
 */
export function createWall({ root, code, token, onPick, onCount }) {
  const bag = disposer();
  let sort = 'newest';
  let data = null;
  let controller = null;
  let loadedFor = null; // "count|model|weights" the wall shows

  const sortSelect = el('select', { className: 'wall-sort', attrs: { 'aria-label': 'Sort the wall' } },
    Object.entries(SORTS).map(([id, spec]) => el('option', { value: id, text: spec.label })));
  const clearButton = el('button', { type: 'button', className: 'button button-small', text: 'Clear wall' });
  const hideButton = el('button', { type: 'button', className: 'button button-small', text: 'Hide' });
  const summary = el('p', { className: 'wall-summary', attrs: { role: 'status' } });
  const grid = el('div', { className: 'wall-grid', attrs: { role: 'list' } });
  root.replaceChildren(
    el('div', { className: 'wall-head' }, [
      el('h2', { text: 'Class wall' }),
      el('div', { className: 'wall-controls' }, [sortSelect, clearButton, hideButton]),
    ]),
    summary,
    grid,
  );

  function tile(item, current) {
    const top = item.prediction;
    const label = top ? `${top.label}` : '—';
    const node = el('button', {
      type: 'button',
      className: 'wall-tile' + (item.image_id === current ? ' is-current' : ''),
      dataset: { imageId: item.image_id, probability: top ? String(top.probability) : '', label: top ? top.label : '' },
      attrs: { role: 'listitem', title: 'Show this image to the class' },
    }, [
      el('img', { className: 'pixelated', src: urls.image(item.image_id), alt: item.name ? `${item.name}'s image` : 'A submitted image', loading: 'lazy' }),
      el('span', { className: 'wall-name', text: item.name || 'Anonymous' }),
      el('span', { className: 'wall-pred' }, top
        ? [el('strong', { text: label }), ' ', el('span', { className: 'wall-prob', text: percent(top.probability) })]
        : [item.error || 'no prediction']),
    ]);
    if (top) node.style.setProperty('--confidence', String(top.probability));
    return node;
  }

  function render(current) {
    if (!data) return;
    const items = [...data.submissions].sort(SORTS[sort].order);
    grid.replaceChildren(...items.map((item) => tile(item, current)));
    const n = items.length;
    summary.textContent = n
      ? `${n} image${n === 1 ? '' : 's'} · predictions of ${data.model}${data.weights_used ? ` (${data.weights_used})` : ''}`
      : 'Nothing yet: ask the class to draw or upload, then press "Send my image to the wall".';
    if (data.error) summary.textContent += ` · ${data.error}`;
  }

  /** Fetch the wall again when what it shows changed (count, model or weights); `force` always does. */
  async function refresh({ count, model, weights, current, force = false }) {
    const key = `${count}|${model}|${weights}`;
    if (!force && key === loadedFor) {
      render(current);
      return;
    }
    controller?.abort();
    controller = new AbortController();
    try {
      data = await sessionApi.wall(code, token, { signal: controller.signal });
      loadedFor = `${data.submissions.length}|${model}|${weights}`;
      render(current);
      onCount(data.submissions.length);
    } catch (err) {
      if (!isAbort(err)) summary.textContent = `The wall could not be loaded: ${err.message}`;
    }
  }

  bag.add(listen(sortSelect, 'change', () => {
    sort = sortSelect.value;
    render(grid.querySelector('.is-current')?.dataset.imageId);
  }));
  bag.add(listen(grid, 'click', (event) => {
    const button = event.target.closest('.wall-tile');
    if (button) onPick(button.dataset.imageId);
  }));
  bag.add(listen(clearButton, 'click', async () => {
    clearButton.disabled = true;
    try {
      await sessionApi.clearWall(code, token);
      data = { ...(data || {}), submissions: [] };
      loadedFor = null;
      render(null);
      onCount(0);
    } catch (err) {
      summary.textContent = err.message;
    } finally {
      clearButton.disabled = false;
    }
  }));
  bag.add(listen(hideButton, 'click', () => {
    root.hidden = true;
    root.dispatchEvent(new CustomEvent('wall-hidden'));
  }));
  bag.add(() => {
    controller?.abort();
    root.replaceChildren();
    root.hidden = true;
  });

  return { refresh, dispose: () => bag.run() };
}
