// The Sandbox view: a small input and kernel a teacher types (or picks from the course's presets), every
// padding / stride / dilation / mode / activation / pooling choice, computed by the server step by step
// and animated; then the kernel on the whole picture and the translation-equivariance demo (extras.js).

import { el, listen, disposer, isAbort } from '../dom.js';
import { createAnimator } from '../common/animator.js';
import { createPlayer } from '../common/player.js';
import { ensureStylesheet } from '../common/stylesheet.js';
import { STYLESHEET as STEP_THROUGH_STYLESHEET } from '../step-through/step-through-view.js'; // the player and stage styles it shares
import { pick, setupHover } from '../common/canvas-hover.js';
import { window2d } from '../common/window-math.js';
import { MAX_EXPORT_FRAMES, exportGif, exportPng } from '../common/canvas-export.js';
import { WIDTH, HEIGHT, drawSandbox } from './sandbox-scene.js';
import { createGridEditor } from './grid-editor.js';
import { ACTIVATIONS, MAX_INPUT, MAX_KERNEL, POOL_OPS, readSettings, requestBody, toQuery } from './settings.js';
import { resizeGrid } from './grid-codec.js';
import { createExtras } from './extras.js';
import { fitCanvasToViewport } from '../common/fit-canvas.js';
import { createAnimationUrl } from '../common/animation-url.js';
import { activationFunction } from '../common/activation-functions.js';
import { drawActivationPlot } from '../common/activation-plot.js';
import { createExplainPanel } from '../common/explanation-panel.js';

let v = null;

const select = (id, options, label) => el('select', { id, className: 'step-through-select', attrs: { 'aria-label': label } },
  options.map(([value, text]) => el('option', { value: String(value), text })));
const number = (id, min, max, label) => el('input', { id, type: 'number', min, max, className: 'step-through-number', attrs: { 'aria-label': label } });
const field = (text, control, forKey) => el('label', { className: 'step-through-field', dataset: forKey ? { for: forKey } : {} }, [text, control]);

export function mount(container, ctx) {
  ensureStylesheet(STEP_THROUGH_STYLESHEET);
  const bag = disposer();
  const c = {
    op: select('sb-op', [['conv', 'Convolution'], ['pool', 'Pooling']], 'Operation'),
    example: select('sb-example', [['', 'Load an example…']], 'Example input'),
    rows: number('sb-rows', 1, MAX_INPUT, 'Input rows'),
    cols: number('sb-cols', 1, MAX_INPUT, 'Input columns'),
    preset: select('sb-preset', [['', 'Load a kernel…']], 'Kernel preset'),
    krows: number('sb-krows', 1, MAX_KERNEL, 'Kernel rows'),
    kcols: number('sb-kcols', 1, MAX_KERNEL, 'Kernel columns'),
    padding: select('sb-padding', [['valid', 'valid'], ['same', 'same'], ['full', 'full'], ...[0, 1, 2, 3].map((n) => [n, String(n)])], 'Padding'),
    stride: number('sb-stride', 1, 8, 'Stride'),
    dilation: number('sb-dilation', 1, 6, 'Dilation'),
    mode: select('sb-mode', [['cross-correlation', 'cross-correlation'], ['convolution', 'true convolution (flip)']], 'Mode'),
    activation: select('sb-activation', ACTIVATIONS.map((a) => [a, a === 'none' ? 'no activation' : a]), 'Activation'),
    bias: el('input', { id: 'sb-bias', type: 'number', step: 'any', className: 'step-through-number', attrs: { 'aria-label': 'Bias' } }),
    poolOp: select('sb-pool-op', POOL_OPS.map((o) => [o, `${o} pool`]), 'Pooling operation'),
    poolSize: number('sb-pool-size', 1, 7, 'Pool size'),
    poolStride: number('sb-pool-stride', 1, 7, 'Pool stride'),
    poolPadding: number('sb-pool-padding', 0, 3, 'Pool padding'),
  };
  const gabor = el('span', { className: 'sandbox-gabor', hidden: true }, [
    field('θ ', el('input', { id: 'sb-theta', type: 'range', min: 0, max: 180, step: 15, value: 0 })),
    field('λ ', el('input', { id: 'sb-lambda', type: 'range', min: 2, max: 12, step: 0.5, value: 4 })),
  ]);
  const formula = el('div', { className: 'sandbox-formula', attrs: { role: 'status' } });
  const inputHost = el('div', { className: 'sandbox-editor' }, [el('h3', { text: 'Input' })]);
  const kernelHost = el('div', { className: 'sandbox-editor', dataset: { for: 'conv' } }, [el('h3', { text: 'Kernel' })]);
  const canvas = el('canvas', { id: 'sandbox-canvas', className: 'step-through-canvas', width: WIDTH, height: HEIGHT, attrs: { 'aria-label': 'Sandbox animation' } });
  const tooltip = el('div', { className: 'step-through-tooltip', hidden: true });
  const actPlot = el('canvas', { id: 'sandbox-activation-plot', className: 'sandbox-activation-plot', width: 320, height: 200, hidden: true,
    attrs: { 'aria-label': 'The activation function with the current cell marked' } });
  const playerHost = el('div');
  const exportNote = el('span', { className: 'step-through-export-note', attrs: { role: 'status' } });
  const exportButtons = ['png', 'gif'].map((kind) => el('button', { type: 'button', className: 'button button-small', text: kind.toUpperCase(), dataset: { export: kind } }));
  const extrasHost = el('div', { className: 'sandbox-extras' });
  const explain = createExplainPanel('sandbox', ['padding', 'stride', 'dilation', 'output-size', 'pooling', 'one-by-one']);
  container.append(el('section', { className: 'card sandbox' }, [explain.element,
    el('div', { className: 'sandbox-controls' }, [field('', c.op), field('Input ', c.example), field('size ', el('span', {}, [c.rows, ' × ', c.cols]))]),
    el('div', { className: 'sandbox-controls', dataset: { for: 'conv' } }, [field('Kernel ', c.preset), gabor, field('size ', el('span', {}, [c.krows, ' × ', c.kcols])),
      field('padding ', c.padding), field('stride ', c.stride), field('dilation ', c.dilation), field('', c.mode)]),
    el('div', { className: 'sandbox-controls', dataset: { for: 'conv' } }, [field('bias ', c.bias), field('then ', c.activation), actPlot]),
    el('div', { className: 'sandbox-controls', dataset: { for: 'pool' } }, [field('', c.poolOp), field('size ', c.poolSize), field('stride ', c.poolStride), field('padding ', c.poolPadding)]),
    formula,
    el('div', { className: 'sandbox-player-row' }, [playerHost, el('div', { className: 'sandbox-export' }, ['Export ', ...exportButtons, exportNote])]),
    el('div', { className: 'step-through-stage' }, [canvas, tooltip]),
    el('details', { className: 'sandbox-numbers', open: true }, [el('summary', { text: 'Edit the numbers' }),
      el('div', { className: 'sandbox-editors' }, [inputHost, kernelHost])]),
  ]), extrasHost);

  v = { ctx, bag, c, gabor, formula, canvas, g: canvas.getContext('2d'), actPlot, tooltip, exportNote, container, hits: null,
    settings: null, answer: null, key: null, abort: null, presets: null };
  v.inputEditor = createGridEditor(inputHost, { label: 'Input', onChange: (grid) => set({ input: grid }) });
  v.kernelEditor = createGridEditor(kernelHost, { label: 'Kernel', onChange: (grid) => set({ kernel: grid }) });
  v.animator = createAnimator({ count: 1, onFrame: drawFrame, onPlayState: (playing) => {
    if (!v) return;
    v.player.setPlaying(playing);
    if (v.answer) v.url.write(v.ctx.state, playing);
  } });
  v.player = createPlayer(playerHost, { animator: () => v.animator, describe, onSpeed: () => v.answer && v.url.write(v.ctx.state) });
  // the step shown, Play and speed in the URL: a link reproduces them and the class follows them
  v.url = createAnimationUrl({
    animator: () => v.animator, player: v.player, keys: ['sbstep'],
    toKeys: (frame) => ({ sbstep: frame ? String(frame) : null }),
    toFrame: (get) => (/^\d+$/.test(get('sbstep') || '') ? Math.min(Number(get('sbstep')), v.animator.count - 1) : 0),
  });
  v.extras = createExtras(extrasHost, { ctx });

  const on = (control, handler, type = 'change') => bag.add(listen(control, type, handler));
  on(c.op, () => set({ op: c.op.value }));
  on(c.padding, () => set({ padding: c.padding.value }));
  on(c.stride, () => set({ stride: c.stride.value }));
  on(c.dilation, () => set({ dilation: c.dilation.value }));
  on(c.mode, () => set({ mode: c.mode.value }));
  on(c.activation, () => set({ activation: c.activation.value }));
  on(c.bias, () => set({ bias: Number(c.bias.value) || null }));
  on(c.poolOp, () => set({ poolOp: c.poolOp.value }));
  on(c.poolSize, () => set({ poolSize: c.poolSize.value }));
  on(c.poolStride, () => set({ poolStride: Number(c.poolStride.value) }));
  on(c.poolPadding, () => set({ poolPadding: Number(c.poolPadding.value) }));
  on(c.rows, () => set({ input: resizeGrid(v.settings.input, clampInt(c.rows.value, 1, MAX_INPUT), v.settings.input[0].length) }));
  on(c.cols, () => set({ input: resizeGrid(v.settings.input, v.settings.input.length, clampInt(c.cols.value, 1, MAX_INPUT)) }));
  on(c.krows, () => set({ kernel: resizeGrid(v.settings.kernel, clampInt(c.krows.value, 1, MAX_KERNEL), v.settings.kernel[0].length) }));
  on(c.kcols, () => set({ kernel: resizeGrid(v.settings.kernel, v.settings.kernel.length, clampInt(c.kcols.value, 1, MAX_KERNEL)) }));
  on(c.example, loadExample);
  on(c.preset, loadPreset);
  gabor.querySelectorAll('input').forEach((slider) => on(slider, loadGabor, 'input'));
  on(canvas, (event) => {
    const hit = pick(canvas, v.hits, event);
    if (hit && hit.map === 'output' && v.answer) {
      v.animator.pause();
      v.animator.seek(hit.r * v.answer.geometry.output_shape[1] + hit.c);
    }
  }, 'click');
  exportButtons.forEach((button) => on(button, () => runExport(button.dataset.export), 'click'));
  bag.add(setupHover(canvas, tooltip, () => v.hits));
  bag.add(fitCanvasToViewport(canvas, { onFit: () => { if (v && v.answer) drawFrame(v.animator.frame); } }).dispose);
  loadPresets();
  update(ctx);
}

const clampInt = (text, lo, hi) => Math.min(Math.max(Math.round(Number(text)) || lo, lo), hi);

function set(changes) {
  v.ctx.state.set(toQuery(changes), { replace: true });
}

export function update(ctx) {
  if (!v) return;
  v.ctx = ctx;
  const s = readSettings(ctx.state.get);
  v.settings = s;
  showControls(s);
  v.extras.update(ctx, s);
  const key = JSON.stringify(requestBody(s)) + s.op;
  if (key === v.key) {
    if (v.answer) v.url.apply(ctx.state); // the step, Play or speed changed from outside
    return;
  }
  v.key = key;
  const problem = localCheck(s);
  v.formula.replaceChildren(...formulaLines(s, problem));
  if (problem && problem.fatal) {
    v.answer = null;
    v.animator.pause();
    v.g.clearRect(0, 0, WIDTH, HEIGHT);
    return;
  }
  compute(s, key);
}

function showControls(s) {
  const { c } = v;
  c.op.value = s.op;
  c.rows.value = String(s.input.length);
  c.cols.value = String(s.input[0].length);
  c.krows.value = String(s.kernel.length);
  c.kcols.value = String(s.kernel[0].length);
  c.padding.value = String(s.padding);
  c.stride.value = String(s.stride);
  c.dilation.value = String(s.dilation);
  c.mode.value = s.mode;
  c.activation.value = s.activation;
  if (document.activeElement !== c.bias) c.bias.value = String(s.bias);
  c.poolOp.value = s.poolOp;
  c.poolSize.value = String(s.poolSize);
  c.poolStride.value = String(s.poolStride || s.poolSize);
  c.poolPadding.value = String(s.poolPadding);
  v.container.querySelectorAll('[data-for="conv"]').forEach((node) => { node.hidden = s.op !== 'conv'; });
  v.container.querySelectorAll('[data-for="pool"]').forEach((node) => { node.hidden = s.op !== 'pool'; });
  v.inputEditor.show(s.input, { small: s.input[0].length > 10 });
  v.kernelEditor.show(s.kernel);
}

/** The window math of the current settings, checked before asking the server. */
function localCheck(s) {
  try {
    const w = s.op === 'conv'
      ? window2d([s.input.length, s.input[0].length], [s.kernel.length, s.kernel[0].length], { stride: s.stride, padding: s.padding, dilation: s.dilation })
      : window2d([s.input.length, s.input[0].length], [s.poolSize, s.poolSize], { stride: s.poolStride || s.poolSize, padding: s.poolPadding });
    const message = w.tilingMessage();
    return { window: w, message, fatal: w.outShape[0] === 0 || w.outShape[1] === 0 };
  } catch (err) {
    return { window: null, message: err.message, fatal: true };
  }
}

function formulaLines(s, check) {
  const lines = [];
  if (check.window) {
    const { rows, cols } = check.window;
    for (const [name, a] of [['H', rows], ['W', cols]]) {
      lines.push(el('div', { className: 'sandbox-formula-line', text: `${name}_out = ⌊(${a.size} + ${a.padBefore} + ${a.padAfter} − ${a.dilation}·(${a.kernel} − 1) − 1) / ${a.stride}⌋ + 1 = ${a.outSize}` }));
    }
  }
  if (s.op === 'conv' && s.padding === 'same' && (s.stride > 1 || s.kernel.length % 2 === 0 || s.kernel[0].length % 2 === 0)) {
    lines.push(el('div', { className: 'hint', text: "'same' as Keras/TensorFlow define it: output = ⌈input / stride⌉, and an odd padding cell goes after (bottom/right)." }));
  }
  if (check.message) lines.push(el('div', { className: check.fatal ? 'error-text' : 'sandbox-warning', text: check.message }));
  return lines;
}

async function compute(s, key) {
  if (v.abort) v.abort.abort();
  const abort = new AbortController();
  v.abort = abort;
  try {
    const answer = await v.ctx.api.getJson(`/api/sandbox/${s.op === 'conv' ? 'convolve' : 'pool'}`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(requestBody(s)), signal: abort.signal,
    });
    if (!v || v.key !== key) return;
    v.answer = answer;
    v.answerSettings = s;
    v.animator.setCount(answer.steps.length);
    // the URL's step, Play and speed (a link, the teacher; the step shown before new settings stays there)
    v.url.reset();
    v.url.apply(v.ctx.state);
  } catch (err) {
    if (!isAbort(err) && v && v.key === key) v.formula.append(el('div', { className: 'error-text', text: err.message }));
  }
}

function drawFrame(frame) {
  if (!v || !v.answer) return;
  v.hits = drawSandbox(v.g, { op: v.answerSettings.op, input: v.answerSettings.input, answer: v.answer, settings: v.answerSettings, step: frame });
  v.player.sync(frame, v.animator.count);
  if (!v.animator.playing) v.url.write(v.ctx.state);
  const step = v.answer.steps[frame];
  Object.assign(v.canvas.dataset, { frame: String(frame), count: String(v.animator.count), cell: step.out.join(','),
    value: String(step.activated ?? step.result), outputShape: v.answer.geometry.output_shape.join('x'),
    outputGeom: JSON.stringify({ x0: v.hits.output.x0, y0: v.hits.output.y0, cell: v.hits.output.cell }) });
  drawActivation(step);
}

// the sandbox's activation names → the PyTorch module names activation-functions.js knows
const ACTIVATION_TYPES = { relu: 'ReLU', leaky_relu: 'LeakyReLU', relu6: 'ReLU6', softplus: 'Softplus', abs: 'Abs' };

/** f with this cell's (bias-added sum, activated value) marked, beside the "then" choice. */
function drawActivation(step) {
  const s = v.answerSettings;
  const type = s.op === 'conv' ? ACTIVATION_TYPES[s.activation] : undefined;
  const f = type && activationFunction(type, v.answer.activation_formula);
  v.actPlot.hidden = !f;
  if (!f) return;
  const g = v.actPlot.getContext('2d');
  g.clearRect(0, 0, v.actPlot.width, v.actPlot.height);
  drawActivationPlot(g, f, { type, input: step.total, output: step.activated }, { x: 8, y: 8, w: 304, h: 158 }, 18);
}

function describe(frame) {
  if (!v || !v.answer) return '';
  const [oy, ox] = v.answer.steps[frame].out;
  return `cell ${frame + 1}/${v.answer.steps.length} (y ${oy}, x ${ox})`;
}

async function loadPresets() {
  try {
    v.presets = await v.ctx.api.getJson('/api/sandbox/presets');
  } catch (err) {
    return;
  }
  if (!v) return;
  const image = el('option', { value: 'crop', text: 'a crop of the current image' });
  v.c.example.append(...v.presets.examples.map((e) => el('option', { value: e.id, text: e.title })), image);
  v.c.preset.append(...v.presets.kernels.map((k) => el('option', { value: k.id, text: k.title })), el('option', { value: 'gabor', text: 'Gabor (orientation, wavelength)' }));
}

async function loadExample() {
  const id = v.c.example.value;
  v.c.example.value = '';
  if (id === 'crop') {
    if (!v.ctx.imageId) {
      v.exportNote.textContent = 'Upload or pick an image first.';
      return;
    }
    const side = Math.max(v.settings.input.length, 8);
    const crop = await v.ctx.api.getJson(`/api/sandbox/images/${encodeURIComponent(v.ctx.imageId)}/crop?size=${side}&fit=32`);
    if (v) set({ input: crop.input });
    return;
  }
  const example = v.presets && v.presets.examples.find((e) => e.id === id);
  if (example) set(example.id === 'pool_4x4' ? { input: example.input, op: 'pool' } : { input: example.input });
}

function loadPreset() {
  const id = v.c.preset.value;
  v.gabor.hidden = id !== 'gabor';
  if (id === 'gabor') {
    loadGabor();
    return;
  }
  v.c.preset.value = '';
  const kernel = v.presets && v.presets.kernels.find((k) => k.id === id);
  if (kernel) set({ kernel: kernel.kernel });
}

async function loadGabor() {
  const theta = v.gabor.querySelector('#sb-theta').value;
  const lambda = v.gabor.querySelector('#sb-lambda').value;
  try {
    const answer = await v.ctx.api.getJson(`/api/sandbox/kernels/gabor?size=7&theta=${theta}&wavelength=${lambda}`);
    if (v) set({ kernel: answer.kernel });
  } catch (err) {
    if (v) v.exportNote.textContent = err.message;
  }
}

async function runExport(kind) {
  if (!v.answer) return;
  v.animator.pause();
  if (v.exportAbort) v.exportAbort.abort();
  const abort = new AbortController();
  v.exportAbort = abort; // unmount aborts it: no drawing on a view that is gone
  const name = `convscope-sandbox-${v.answerSettings.op}`;
  try {
    if (kind === 'png') {
      await exportPng(v.canvas, `${name}.png`);
      v.exportNote.textContent = 'PNG saved';
      return;
    }
    const frames = Array.from({ length: Math.min(MAX_EXPORT_FRAMES, v.animator.count) }, (_, i) => i);
    const draw = (f) => { v.hits = drawSandbox(v.g, { op: v.answerSettings.op, input: v.answerSettings.input, answer: v.answer, settings: v.answerSettings, step: f }); };
    await exportGif({ canvas: v.canvas, frames, draw, delayMs: 1000 / v.player.speed(), filename: `${name}.gif`, signal: abort.signal,
      onProgress: (d, n) => { if (v) v.exportNote.textContent = `encoding GIF ${d}/${n}…`; } });
    if (v) v.exportNote.textContent = `GIF saved (${frames.length} frames)`;
  } catch (err) {
    if (v && !isAbort(err)) v.exportNote.textContent = `Export failed: ${err.message}`;
  } finally {
    if (v && v.exportAbort === abort) v.exportAbort = null;
    if (v) drawFrame(v.animator.frame);
  }
}

export function unmount() {
  if (!v) return;
  v.animator.dispose();
  if (v.abort) v.abort.abort();
  if (v.exportAbort) v.exportAbort.abort();
  v.player.dispose();
  v.inputEditor.dispose();
  v.kernelEditor.dispose();
  v.extras.dispose();
  v.bag.run();
  v = null;
}
