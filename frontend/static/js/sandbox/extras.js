// Below the sandbox: the current kernel on the whole picture (with a legend whose numbers come from the
// server), and translation equivariance (shift the input → the output shifts the same; pooling barely moves).

import { el, listen, disposer, isAbort } from '../dom.js';
import { formatCell, formatPercent } from '../common/format.js';
import { COLOURS, clear, drawLegend, drawNumberGrid, label, makeScale, rangeOf } from '../common/canvas.js';
import { encodeGrid } from './grid-codec.js';
import { explainButton } from '../common/explanation-panel.js';
import { createChannelMix } from './channel-mix.js';

const SHIFT_W = 960;
const SHIFT_H = 630;
const PANEL = 200;
const STEP = 236;

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
  const dy = el('input', { id: 'sb-shift-y', type: 'number', min: -3, max: 3, value: 0, className: 'step-through-number', attrs: { 'aria-label': 'Shift down' } });
  const dx = el('input', { id: 'sb-shift-x', type: 'number', min: -3, max: 3, value: 1, className: 'step-through-number', attrs: { 'aria-label': 'Shift right' } });
  const poolOp = el('select', { id: 'sb-shift-pool', className: 'step-through-select', attrs: { 'aria-label': 'Pooling after the convolution' } },
    ['max', 'avg', 'l2'].map((o) => el('option', { value: o, text: `${o} pool 2×2` })));
  const shiftCanvas = el('canvas', { id: 'sandbox-shift-canvas', className: 'step-through-canvas', width: SHIFT_W, height: SHIFT_H, attrs: { 'aria-label': 'Translation equivariance and pooling' } });
  const shiftNote = el('p', { className: 'sandbox-result', attrs: { role: 'status' } });
  const shiftCard = el('section', { className: 'card sandbox-card' }, [
    el('div', { className: 'card-head' }, [el('h2', { text: 'Translation equivariance, and pooling\'s tolerance to small shifts' }), explainButton('pooling')]),
    el('div', { className: 'sandbox-controls' }, [
      el('label', { className: 'step-through-field' }, ['shift down ', dy]), el('label', { className: 'step-through-field' }, ['right ', dx]),
      el('label', { className: 'step-through-field' }, ['then ', poolOp]),
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
  const mix = createChannelMix(parent, { getCtx: () => current.ctx });

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
      filterNote.textContent = `Output ${response.headers.get('X-ConvScope-Shape').replace('x', '×')} px, values from ${formatCell(lo, 3)} to ${formatCell(hi, 3)}`
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
    label(g, formatCell(lo, 3), 10, 34, { size: 13, weight: 400 });
    label(g, formatCell(hi, 3), 350, 34, { size: 13, weight: 400, align: 'right' });
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

  /** Two rows: the convolution commutes with the shift (top); pooling after it barely moves (bottom). */
  function drawShift(a, body) {
    const g = shiftCanvas.getContext('2d');
    clear(g, SHIFT_W, SHIFT_H);
    const grids = [];
    const inScale = makeScale(...rangeOf(a.input));
    const outScale = makeScale(...rangeOf([a.output, a.shifted_output]));
    const poolScale = makeScale(...rangeOf([a.pooled, a.pooled_shifted]));
    const change = a.pooled.map((row, r) => row.map((v, c) => a.pooled_shifted[r][c] - v));
    const changeBound = Math.max(...change.flat().map(Math.abs), 1e-12);
    const changeScale = makeScale(-changeBound, changeBound);
    const panel = (i, top, title, grid, scale, name) => {
      const rows = grid.length;
      const cols = grid[0].length;
      const cell = Math.floor(Math.min(PANEL / rows, PANEL / cols));
      const x = 16 + i * STEP + (PANEL - cell * cols) / 2;
      label(g, title, 16 + i * STEP + PANEL / 2, top - 8, { size: 15, align: 'center', maxWidth: STEP - 8 });
      const box = drawNumberGrid(g, x, top, cell, rows, cols, grid.flat(), { scale, digits: 2, maxFont: 20, minFont: 11 });
      grids.push({ name, rows, cols, x: box.x, y: box.y, w: box.w, h: box.h, font: box.font });
      return box;
    };
    const row1 = 40;
    panel(0, row1, 'input', a.input, inScale, 'input');
    panel(1, row1, `input shifted (↓${body.dy}, →${body.dx})`, a.shifted_input, inScale, 'shifted_input');
    panel(2, row1, 'conv(input), then shifted', a.output_shifted_by_same, outScale, 'conv_then_shift');
    const last = panel(3, row1, 'conv(shifted input)', a.shifted_output, outScale, 'shift_then_conv');
    // where the two right-hand maps must agree (away from the strip the shift emptied)
    const cellW = last.w / a.shifted_output[0].length;
    const cellH = last.h / a.shifted_output.length;
    const inside = interiorBox(a.interior);
    if (inside) {
      g.save();
      g.setLineDash([6, 4]);
      g.strokeStyle = COLOURS.current;
      g.lineWidth = 2.5;
      for (const [box, gx] of [[last, last.x], [grids[2], grids[2].x]]) {
        g.strokeRect(gx + inside.c0 * cellW - 1, box.y + inside.r0 * cellH - 1, (inside.c1 - inside.c0) * cellW + 2, (inside.r1 - inside.r0) * cellH + 2);
      }
      g.restore();
    }
    drawLegend(g, inScale, 16, row1 + PANEL + 24, PANEL + STEP, 'input values', 13);
    drawLegend(g, outScale, 16 + 2 * STEP, row1 + PANEL + 24, PANEL + STEP, 'convolution output (dashed: must be equal)', 13);
    const row2 = 370;
    label(g, `then ${body.pool_op} pooling 2×2, stride 2, on both convolution outputs at the same positions:`, 16, row2 - 36, { size: 16, weight: 700 });
    panel(0, row2, 'pool(conv(input))', a.pooled, poolScale, 'pooled');
    panel(1, row2, 'pool(conv(shifted input))', a.pooled_shifted, poolScale, 'pooled_shifted');
    panel(2, row2, 'change (right − left)', change, changeScale, 'pool_change');
    drawLegend(g, poolScale, 16, row2 + PANEL + 24, PANEL + STEP, 'pooled values', 13);
    drawLegend(g, changeScale, 16 + 2 * STEP, row2 + PANEL + 24, PANEL, 'change', 13);
    const pct = (f) => formatPercent(f, 0);
    const lines = [
      `conv output: ${pct(a.output_unchanged_fraction)} of cells`,
      'keep their value;',
      `pooled: ${pct(a.pool_unchanged_fraction)} keep their value.`,
      `relative change: conv ${pct(a.output_relative_change)},`,
      `pooled ${pct(a.pool_relative_change)}.`,
    ];
    lines.forEach((line, i) => label(g, line, 16 + 3 * STEP, row2 + 20 + i * 24, { size: 15, weight: i === 2 ? 700 : 400, maxWidth: SHIFT_W - 16 - 3 * STEP - 8 }));
    shiftCanvas.dataset.grids = JSON.stringify(grids);
    const interior = a.max_difference_interior === null ? 'the input is too small for an interior away from the borders'
      : `inside the dashed boxes conv(shifted input) and the shifted conv(input) are identical (largest difference ${formatCell(a.max_difference_interior, 3)}); outside, the shift pushed values out of the frame or brought in zeros`;
    shiftNote.textContent = `Shifting the input shifts the convolution's output the same way: ${interior}. `
      + `Compared at the same positions, the convolution output changes by ${pct(a.output_relative_change)} (relative L2) `
      + `and ${pct(a.output_unchanged_fraction)} of its cells keep their value; after ${body.pool_op} pooling 2×2 the change is `
      + `${pct(a.pool_relative_change)} and ${pct(a.pool_unchanged_fraction)} of the pooled values stay the same.`;
  }

  return {
    update(nextCtx, settings) {
      current = { ctx: nextCtx, settings };
      mix.update(nextCtx);
      refreshFilter();
      refreshShift();
    },
    dispose() {
      mix.dispose();
      if (filterAbort) filterAbort.abort();
      if (shiftAbort) shiftAbort.abort();
      if (objectUrl) URL.revokeObjectURL(objectUrl);
      bag.run();
    },
  };
}

/** The bounding rows/columns [r0, r1) × [c0, c1) of the true cells of `mask`, or null. */
function interiorBox(mask) {
  let r0 = Infinity;
  let r1 = -1;
  let c0 = Infinity;
  let c1 = -1;
  mask.forEach((row, r) => row.forEach((on, c) => {
    if (!on) return;
    r0 = Math.min(r0, r);
    r1 = Math.max(r1, r + 1);
    c0 = Math.min(c0, c);
    c1 = Math.max(c1, c + 1);
  }));
  return r1 < 0 ? null : { r0, r1, c0, c1 };
}
