// Below the sandbox: the current kernel on the whole picture (with a legend whose numbers come from the
// server), and translation equivariance (shift the input → the output shifts the same; pooling barely moves).

import { el, listen, disposer, isAbort } from '../dom.js';
import { COLOURS, clear, drawMap, fmt, label, makeScale, rangeOf } from '../stepper/renderer.js';
import { encodeGrid } from './grid-codec.js';

const LEGEND_STOPS = {
  diverging: ['#053061', '#2166ac', '#4393c3', '#92c5de', '#d1e5f0', '#f7f7f7', '#fddbc7', '#f4a582', '#d6604d', '#b2182b', '#67001f'],
  gray: ['#000000', '#ffffff'],
};

export function createExtras(parent, { ctx }) {
  const bag = disposer();
  const filterImg = el('img', { className: 'sandbox-filtered pixelated', alt: 'The kernel applied to the whole picture' });
  const original = el('img', { className: 'sandbox-filtered', alt: 'The picture, in grey, before filtering' });
  const legend = el('canvas', { className: 'sandbox-legend', width: 360, height: 40, attrs: { role: 'img', 'aria-label': 'Colour scale of the filtered picture' } });
  const filterNote = el('p', { className: 'hint' });
  const filterCard = el('section', { className: 'card sandbox-card' }, [
    el('div', { className: 'card-head' }, [el('h2', { text: 'The kernel on the whole picture' })]),
    filterNote,
    el('div', { className: 'sandbox-pictures' }, [el('figure', {}, [original, el('figcaption', { text: 'your picture' })]),
      el('figure', {}, [filterImg, el('figcaption', { text: 'after the kernel (same padding, grey input)' })])]),
    legend,
  ]);
  const dy = el('input', { id: 'sb-shift-y', type: 'number', min: -3, max: 3, value: 0, className: 'stepper-number', attrs: { 'aria-label': 'Shift down' } });
  const dx = el('input', { id: 'sb-shift-x', type: 'number', min: -3, max: 3, value: 1, className: 'stepper-number', attrs: { 'aria-label': 'Shift right' } });
  const poolOp = el('select', { id: 'sb-shift-pool', className: 'stepper-select', attrs: { 'aria-label': 'Pooling after the convolution' } },
    ['max', 'avg', 'l2'].map((o) => el('option', { value: o, text: `${o} pool 2×2` })));
  const shiftCanvas = el('canvas', { className: 'stepper-canvas', width: 960, height: 250, attrs: { 'aria-label': 'Translation equivariance' } });
  const shiftNote = el('p', { className: 'sandbox-result', attrs: { role: 'status' } });
  const shiftCard = el('section', { className: 'card sandbox-card' }, [
    el('div', { className: 'card-head' }, [el('h2', { text: 'Translation equivariance' })]),
    el('div', { className: 'sandbox-controls' }, [
      el('label', { className: 'stepper-field' }, ['shift down ', dy]), el('label', { className: 'stepper-field' }, ['right ', dx]),
      el('label', { className: 'stepper-field' }, ['then ', poolOp]),
    ]),
    shiftCanvas, shiftNote,
  ]);
  parent.append(filterCard, shiftCard);
  let filterKey = null;
  let shiftKey = null;
  let filterAbort = null;
  let shiftAbort = null;
  let objectUrl = null;
  let current = { ctx, settings: null };

  [dy, dx, poolOp].forEach((control) => bag.add(listen(control, 'change', () => refreshShift(true))));

  async function refreshFilter() {
    const { ctx: c, settings: s } = current;
    if (!c.imageId) {
      filterNote.textContent = 'Upload or pick an image to see this kernel applied to all of it.';
      filterImg.hidden = true;
      original.hidden = true;
      return;
    }
    const params = new URLSearchParams({ kernel: encodeGrid(s.kernel), padding: 'same', stride: String(s.stride), dilation: String(s.dilation), mode: s.mode });
    const url = `/api/sandbox/images/${encodeURIComponent(c.imageId)}/filtered.png?${params}`;
    if (url === filterKey) return;
    filterKey = url;
    if (filterAbort) filterAbort.abort();
    filterAbort = new AbortController();
    try {
      const response = await c.api.request(url, { signal: filterAbort.signal });
      const blob = await response.blob();
      if (objectUrl) URL.revokeObjectURL(objectUrl);
      objectUrl = URL.createObjectURL(blob);
      filterImg.src = objectUrl;
      filterImg.hidden = false;
      original.src = c.api.urls.image(c.imageId);
      original.hidden = false;
      const lo = Number(response.headers.get('X-ConvScope-Min'));
      const hi = Number(response.headers.get('X-ConvScope-Max'));
      const map = response.headers.get('X-ConvScope-Colormap');
      drawFilterLegend(lo, hi, map);
      filterNote.textContent = `Output ${response.headers.get('X-ConvScope-Shape').replace('x', '×')} px, values from ${fmt(lo, 3)} to ${fmt(hi, 3)}`
        + (map === 'diverging' ? ' (blue negative, white zero, red positive).' : ' (one sign: black lowest, white highest).');
    } catch (err) {
      if (!isAbort(err)) filterNote.textContent = `The picture could not be filtered: ${err.message}`;
    }
  }

  function drawFilterLegend(lo, hi, map) {
    const g = legend.getContext('2d');
    g.clearRect(0, 0, legend.width, legend.height);
    const stops = LEGEND_STOPS[map] || LEGEND_STOPS.gray;
    const gradient = g.createLinearGradient(10, 0, 350, 0);
    stops.forEach((colour, i) => gradient.addColorStop(i / (stops.length - 1), colour));
    g.fillStyle = gradient;
    g.fillRect(10, 4, 340, 12);
    g.strokeStyle = COLOURS.line;
    g.strokeRect(10, 4, 340, 12);
    label(g, fmt(lo, 3), 10, 34, { size: 13, weight: 400 });
    label(g, fmt(hi, 3), 350, 34, { size: 13, weight: 400, align: 'right' });
    if (map === 'diverging') label(g, '0', 180, 34, { size: 13, weight: 400, align: 'center' });
  }

  async function refreshShift(force = false) {
    const { ctx: c, settings: s } = current;
    const body = { input: s.input, kernel: s.kernel, dy: Number(dy.value) || 0, dx: Number(dx.value) || 0, pool_size: 2, pool_op: poolOp.value };
    const key = JSON.stringify(body);
    if (key === shiftKey && !force) return;
    shiftKey = key;
    if (shiftAbort) shiftAbort.abort();
    shiftAbort = new AbortController();
    try {
      const answer = await c.api.getJson('/api/sandbox/shift', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: key, signal: shiftAbort.signal });
      drawShift(answer, body);
    } catch (err) {
      if (!isAbort(err)) shiftNote.textContent = err.message;
    }
  }

  function drawShift(a, body) {
    const g = shiftCanvas.getContext('2d');
    clear(g, 960, 250);
    const inScale = makeScale(...rangeOf(a.input));
    const outScale = makeScale(...rangeOf([a.output, a.shifted_output]));
    const panels = [
      ['input', a.input, inScale], [`input shifted (${body.dy}, ${body.dx})`, a.shifted_input, inScale],
      ['conv(input), then shifted', a.output_shifted_by_same, outScale], ['conv(shifted input)', a.shifted_output, outScale],
    ];
    panels.forEach(([title, grid, scale], i) => {
      label(g, title, 16 + i * 236 + 105, 20, { size: 14, align: 'center' });
      drawMap(g, { x: 16 + i * 236, y: 30, w: 210, h: 210 }, { rows: grid.length, cols: grid[0].length, values: (r, c) => grid[r][c], scale, numbers: 'auto' });
    });
    const interior = a.max_difference_interior === null ? 'the input is too small for an interior away from the borders'
      : `away from the borders the last two are identical (largest difference ${fmt(a.max_difference_interior, 3)})`;
    const pct = (f) => `${Math.round(f * 100)}%`;
    shiftNote.textContent = `Shifting the input shifts the output the same way: ${interior}. `
      + `Compared at the same positions, the convolution output changes by ${pct(a.output_relative_change)} (relative L2) `
      + `and ${pct(a.output_unchanged_fraction)} of its cells keep their value; after ${body.pool_op} pooling 2×2 the change is `
      + `${pct(a.pool_relative_change)} and ${pct(a.pool_unchanged_fraction)} of the pooled values stay the same.`;
  }

  return {
    update(nextCtx, settings) {
      current = { ctx: nextCtx, settings };
      refreshFilter();
      refreshShift();
    },
    dispose() {
      if (filterAbort) filterAbort.abort();
      if (shiftAbort) shiftAbort.abort();
      if (objectUrl) URL.revokeObjectURL(objectUrl);
      bag.run();
    },
  };
}
