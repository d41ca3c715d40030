// A 1×1 convolution over several channels: each output channel is a weighted mix of the input channels
// at the same position (no neighbours). Computed by POST /api/sandbox/mix; click an output cell for its sum.
// Below, links to the real 1×1 layers of the current model in the step-through.

import { el, listen, disposer, isAbort } from '../dom.js';
import { formatCell } from '../common/format.js';
import { clear, drawLegend, drawNumberGrid, label, makeScale, rangeOf } from '../common/canvas.js';
import { createGridEditor } from './grid-editor.js';
import { explainButton } from '../common/explanation-panel.js';

const W = 960;
const H = 330;
const CHANNELS = [
  [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]],
  [[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0]],
  [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [1, 1, 1, 1]],
];
const PRESETS = {
  average: { name: 'average of the channels, and first minus second', weights: [[1 / 3, 1 / 3, 1 / 3], [1, -1, 0]], bias: [0, 0] },
  swap: { name: 'reorder: out₀ = in₂, out₁ = in₀', weights: [[0, 0, 1], [1, 0, 0]], bias: [0, 0] },
  learned: { name: 'any weights (type your own)', weights: [[0.5, -0.25, 1], [-1, 0.75, 0.5]], bias: [0.1, -0.2] },
};

/** The model's 1×1 convolutions (name, in → out channels): where channel mixing happens in a real network. */
export function pointwiseLayers(model) {
  return model.layers.filter((l) => l.kind === 'conv' && Array.isArray(l.kernel_size) && l.kernel_size[0] === 1 && l.kernel_size[1] === 1);
}

export function createChannelMix(parent, { getCtx }) {
  const bag = disposer();
  const preset = el('select', { id: 'sb-mix-preset', className: 'step-through-select', attrs: { 'aria-label': '1×1 weights preset' } },
    Object.entries(PRESETS).map(([value, p]) => el('option', { value, text: p.name })));
  const canvas = el('canvas', { id: 'sandbox-mix-canvas', className: 'step-through-canvas', width: W, height: H, attrs: { 'aria-label': 'A 1×1 convolution mixing three channels into two' } });
  const sum = el('p', { className: 'sandbox-result sandbox-mix-sum', attrs: { role: 'status' } });
  const weightsHost = el('div', { className: 'sandbox-editor' }, [el('h3', { text: 'Weights (one row per output channel)' })]);
  const biasHost = el('div', { className: 'sandbox-editor' }, [el('h3', { text: 'Bias' })]);
  const real = el('p', { className: 'hint sandbox-mix-real' });
  parent.append(el('section', { className: 'card sandbox-card sandbox-mix' }, [
    el('div', { className: 'card-head' }, [el('h2', { text: '1×1 convolution: mixing channels' }), explainButton('one-by-one')]),
    el('div', { className: 'sandbox-controls' }, [el('label', { className: 'step-through-field' }, ['Weights ', preset])]),
    canvas, sum,
    el('details', { className: 'sandbox-numbers' }, [el('summary', { text: 'Edit the weights' }), el('div', { className: 'sandbox-editors' }, [weightsHost, biasHost])]),
    real,
  ]));
  let state = { weights: PRESETS.average.weights, bias: PRESETS.average.bias, cell: { o: 0, y: 1, x: 1 } };
  let answer = null;
  let abort = null;
  let hits = [];
  const weightsEditor = createGridEditor(weightsHost, { label: '1×1 weights', onChange: (grid) => { state.weights = grid; refresh(); } });
  const biasEditor = createGridEditor(biasHost, { label: 'Bias', onChange: (grid) => { state.bias = grid[0]; refresh(); } });
  bag.add(listen(preset, 'change', () => {
    const p = PRESETS[preset.value];
    state = { ...state, weights: p.weights, bias: p.bias };
    refresh();
  }));
  bag.add(listen(canvas, 'click', (event) => {
    const rect = canvas.getBoundingClientRect();
    const px = ((event.clientX - rect.left) * W) / rect.width;
    const py = ((event.clientY - rect.top) * H) / rect.height;
    const hit = hits.find((h) => px >= h.x && px < h.x + h.w && py >= h.y && py < h.y + h.h);
    if (!hit) return;
    state.cell = { o: hit.o, y: Math.floor(((py - hit.y) / hit.h) * hit.rows), x: Math.floor(((px - hit.x) / hit.w) * hit.cols) };
    draw();
  }));

  async function refresh() {
    weightsEditor.show(state.weights.map((row) => row.map((v) => Math.round(v * 1000) / 1000)), { small: true });
    biasEditor.show([state.bias], { small: true });
    if (abort) abort.abort();
    abort = new AbortController();
    const { api } = getCtx();
    try {
      answer = await api.getJson('/api/sandbox/mix', { method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ channels: CHANNELS, weights: state.weights, bias: state.bias }), signal: abort.signal });
      draw();
    } catch (err) {
      if (!isAbort(err)) sum.textContent = err.message;
    }
  }

  function draw() {
    if (!answer) return;
    const g = canvas.getContext('2d');
    clear(g, W, H);
    hits = [];
    const inScale = makeScale(...rangeOf(CHANNELS));
    const outScale = makeScale(...rangeOf(answer.output));
    const wScale = makeScale(...rangeOf(answer.weights));
    const cell = 34;
    const { o, y, x } = state.cell;
    label(g, 'input: 3 channels', 16, 22, { size: 15 });
    CHANNELS.forEach((grid, c) => {
      const gx = 16 + c * 150;
      label(g, `in${sub(c)}`, gx + 2 * cell, 48, { size: 15, align: 'center' });
      drawNumberGrid(g, gx, 56, cell, 4, 4, grid.flat(), { scale: inScale, digits: 1, maxFont: 16, highlight: y * 4 + x });
    });
    const mx = 480;
    label(g, `× weights (${answer.weights.length}×${CHANNELS.length})`, mx, 22, { size: 15 });
    const wCell = { w: 58, h: 34 };
    const box = drawNumberGrid(g, mx, 56, wCell, answer.weights.length, CHANNELS.length, answer.weights.flat(), { scale: wScale, digits: 2, maxFont: 16 });
    g.strokeStyle = '#e11d48';
    g.lineWidth = 3;
    g.strokeRect(box.x, box.y + o * wCell.h, box.w, wCell.h);
    answer.bias.forEach((b, i) => label(g, `+ ${formatCell(b, 2)}`, mx + box.w + 8, 56 + (i + 0.5) * wCell.h + 6, { size: 15, weight: 400 }));
    label(g, '= output: 2 channels', 16, 226, { size: 15 });
    answer.output.forEach((grid, oc) => {
      const gx = 16 + oc * 240;
      const bx = drawNumberGrid(g, gx, 236, { w: 44, h: 22 }, 4, 4, grid.flat(), { scale: outScale, digits: 2, maxFont: 14, minFont: 10, highlight: oc === o ? y * 4 + x : -1 });
      label(g, `out${sub(oc)}`, gx + bx.w + 8, 236 + bx.h / 2, { size: 15 });
      hits.push({ o: oc, x: bx.x, y: bx.y, w: bx.w, h: bx.h, rows: 4, cols: 4 });
    });
    drawLegend(g, outScale, 480, 250, 300, 'output values', 13);
    const terms = CHANNELS.map((grid, c) => `${formatCell(answer.weights[o][c], 3)}·${formatCell(grid[y][x], 3)}`);
    const value = answer.output[o][y][x];
    sum.textContent = `out${sub(o)} at (y ${y}, x ${x}) = ${terms.join(' + ')} + ${formatCell(answer.bias[o], 3)} = ${formatCell(value, 4)}`
      + ` — the same weights at every position, and only that position's values: ${answer.parameters} parameters for any image size.`;
    canvas.dataset.cell = `${o},${y},${x}`;
    canvas.dataset.value = String(value);
  }

  function showRealLayers(ctx) {
    const layers = pointwiseLayers(ctx.model);
    real.replaceChildren();
    if (!layers.length) {
      real.append(`${ctx.model.title} has no 1×1 convolutions. MobileNet, ResNet-50, GoogLeNet, SqueezeNet and EfficientNet-Lite0 use them to mix channels cheaply.`);
      return;
    }
    real.append(`${ctx.model.title}'s own 1×1 layers (open one in the step-through: each input channel's weight × value, summed):`);
    layers.slice(0, 12).forEach((l) => {
      const link = el('a', { href: '#', text: `${l.name} (${l.in_channels}→${l.out_channels})`, dataset: { layer: l.name } });
      link.addEventListener('click', (event) => {
        event.preventDefault();
        ctx.state.set({ view: 'step-through', layer: l.name, channel: null, pos: null });
      });
      real.append(' ', link);
    });
    if (layers.length > 12) real.append(` … and ${layers.length - 12} more.`);
  }

  refresh();
  return {
    update(ctx) {
      showRealLayers(ctx);
    },
    dispose() {
      if (abort) abort.abort();
      weightsEditor.dispose();
      biasEditor.dispose();
      bag.run();
    },
  };
}

const SUBS = '₀₁₂₃₄₅₆₇₈₉';
function sub(n) {
  return String(n).split('').map((d) => SUBS[Number(d)]).join('');
}
