// The Step-through view: one conv / pool / activation layer of the real model on the current image, cell
// by cell, with the layer's true stride, padding, dilation and groups; softmax at the output.
// Panel = layout, controls, URL state; the animator keeps time, window-math says where the window is,
// trace-scene draws, trace-data fetches.

import { el, listen, disposer, isAbort } from '../dom.js';
import { ensureStylesheet } from '../common/stylesheet.js';
import { createAnimator } from '../common/animator.js';
import { createPlayer } from '../common/player.js';
import { createAnimationUrl } from '../common/animation-url.js';
import { geometryNodes, geometryText } from './output-size.js';
import { createTraceData } from './step-through-data.js';
import { WIDTH, HEIGHT, convPhases, drawScene, channelName } from './step-through-scene.js';
import { window2d, receptiveBox } from '../common/window-math.js';
import { MAX_EXPORT_FRAMES, canRecordWebm, exportGif, exportPng, exportWebm } from '../common/canvas-export.js';
import { renderSoftmax } from './softmax-table.js';
import { showOutput } from './flatten-linear.js';
import { pick, setupHover } from '../common/canvas-hover.js';
import { fitCanvasToViewport } from '../common/fit-canvas.js';
import { messageWithPlace } from '../common/inputs-place.js';
import { createLookForLink } from '../channel/look-for-link.js';
import { createExplainPanel, explainButton } from '../common/explanation-panel.js';
import { createAblationCard } from '../experiments/ablation-card.js';
import { traceableLayers } from '../common/traceable.js';

const SOFTMAX = '@softmax';
const TOPS = [3, 8, 16];
let v = null; // the mounted view's parts

export const STYLESHEET = '/static/js/step-through/step-through.css';

export { traceableLayers };

export function mount(container, ctx) {
  ensureStylesheet(STYLESHEET);
  const bag = disposer();
  const layerSelect = el('select', { id: 'step-through-layer', className: 'step-through-select', attrs: { 'aria-label': 'Layer' } });
  const channelInput = el('input', { id: 'step-through-channel', type: 'number', min: 0, value: 0, className: 'step-through-number', attrs: { 'aria-label': 'Output channel' } });
  const topSelect = el('select', { id: 'step-through-top', className: 'step-through-select', attrs: { 'aria-label': 'Input channels shown in full' } },
    TOPS.map((t) => el('option', { value: String(t), text: `top ${t} channels` })));
  const detail = el('input', { type: 'checkbox', id: 'step-through-detail', checked: true });
  const exportButtons = ['png', 'gif', 'webm'].map((kind) => el('button', { type: 'button', className: 'button button-small', text: kind.toUpperCase(), dataset: { export: kind }, title: kind === 'png' ? 'The current frame as PNG' : `The animation from this frame on (≤ ${MAX_EXPORT_FRAMES} frames) as ${kind.toUpperCase()}` }));
  const exportNote = el('span', { className: 'step-through-export-note', attrs: { role: 'status' } });
  const canvas = el('canvas', { id: 'step-through-canvas', className: 'step-through-canvas', width: WIDTH, height: HEIGHT, attrs: { 'aria-label': 'Step-through animation' } });
  const tooltip = el('div', { className: 'step-through-tooltip', hidden: true, attrs: { role: 'status' } });
  const stage = el('div', { className: 'step-through-stage' }, [canvas, tooltip]);
  const playerHost = el('div');
  const message = el('p', { className: 'step-through-message', hidden: true });
  const softmaxHost = el('div', { className: 'step-through-softmax', hidden: true });
  const geometry = el('p', { className: 'step-through-geometry', attrs: { 'aria-label': 'Output size of this layer' } });
  const topHelp = explainButton('top-channels');
  const detailHelp = explainButton('each-input-channel');
  const rfHelp = explainButton('receptive-field');
  const explain = createExplainPanel('step-through', ['receptive-field', 'jump', 'parameters', 'top-channels', 'stride', 'padding', 'dilation', 'groups', 'output-size']);
  // the channel's dataset examples and feature visualisation live in the Network view's unit detail (which
  // embeds this panel itself: there the link would lead to where it already is)
  const lookFor = createLookForLink(() => (v && v.lookForTarget && v.ctx.state.get('open') !== 'unit' ? { state: v.ctx.state, ...v.lookForTarget } : null));
  bag.add(lookFor.dispose);
  const controls = el('div', { className: 'step-through-controls' }, [
    el('label', { className: 'step-through-field' }, ['Layer ', layerSelect]),
    el('label', { className: 'step-through-field', attrs: { 'data-for': 'channel' } }, ['Output channel ', channelInput]),
    el('span', { className: 'step-through-field', attrs: { 'data-for': 'top' } }, [topSelect, topHelp]),
    el('span', { className: 'step-through-field', attrs: { 'data-for': 'detail' } }, [el('label', {}, [detail, ' each input channel']), detailHelp]),
    el('span', { className: 'step-through-field', attrs: { 'data-for': 'rf' } }, ['Receptive field', rfHelp]),
    el('span', { className: 'step-through-export' }, ['Export ', ...exportButtons, exportNote]),
  ]);
  container.append(el('section', { className: 'card step-through' }, [explain.element, controls, message, el('div', { className: 'step-through-player-host' }, [playerHost, stage]), geometry, softmaxHost]));

  v = { ctx, bag, lookFor, lookForTarget: null, canvas, g: canvas.getContext('2d'), tooltip, geometry, explain, rfHelp, layerSelect, channelInput, topSelect, detail, message,
    softmaxHost, stage, playerHost, exportButtons, exportNote, data: createTraceData(ctx.api), key: null, setup: null,
    got: { traces: new Map(), inputs: new Map(), outputs: new Map() }, hits: null, exportAbort: null, rfImage: null };
  // embedded in the Network view's unit detail the Network view's own card serves (open=unit)
  v.ablation = createAblationCard(container, { layerOf: (c) => openLayer(c), where: 'in the list below' });
  v.animator = createAnimator({ count: 1, onFrame: drawFrame, onPlayState: onPlayState });
  // the link sits on the readout's line, which has room: a row of its own pushed the animation below the fold
  v.player = createPlayer(playerHost, { animator: () => v.animator, describe, phasesPerCell: () => (v.setup ? v.setup.phases.length : 1), extra: lookFor.element,
    onSpeed: () => v.setup && v.url.write(v.ctx.state) });
  // the cell, its sub-step, Play and speed live in the URL: links reproduce them and the class follows them
  v.url = createAnimationUrl({
    animator: () => v.animator, player: v.player, keys: ['pos', 'phase'],
    toKeys: (frame) => {
      const { y, x, phaseIndex } = currentCell(frame);
      return { pos: `${y},${x}`, phase: phaseIndex ? String(phaseIndex) : null };
    },
    toFrame: (get) => {
      const pos = parsePos(get('pos'), v.setup);
      if (!pos) return null;
      const P = v.setup.phases.length;
      return (pos.y * v.setup.outW + pos.x) * P + Math.min(P - 1, Math.max(0, Number(get('phase')) || 0));
    },
  });

  bag.add(listen(layerSelect, 'change', () => ctx.state.set({ layer: layerSelect.value, channel: null, pos: null, phase: null, play: null })));
  bag.add(listen(channelInput, 'change', () => ctx.state.set({ channel: channelInput.value, pos: null, phase: null, play: null })));
  bag.add(listen(topSelect, 'change', () => v.ctx.state.set({ top: topSelect.value })));
  bag.add(listen(detail, 'change', () => v.ctx.state.set({ detail: detail.checked ? null : 'cells' })));
  bag.add(listen(canvas, 'click', onCanvasClick));
  exportButtons.forEach((button) => bag.add(listen(button, 'click', () => runExport(button.dataset.export))));
  bag.add(setupHover(canvas, tooltip, () => v.hits));
  // in projector mode the output-size formula under the picture stays above the fold with it
  const projector = () => document.documentElement.classList.contains('is-projector');
  bag.add(fitCanvasToViewport(canvas, { margin: () => 12 + (projector() ? geometry.offsetHeight : 0), onFit: () => redraw() }).dispose);
  update(ctx);
}

/** The layer the URL opens: a traceable one, the softmax, else the first traceable layer. */
function openLayer(ctx) {
  const layers = traceableLayers(ctx.model);
  const wanted = ctx.state.get('layer');
  return wanted === SOFTMAX || layers.some((l) => l.name === wanted) ? wanted : (layers[0] || {}).name || SOFTMAX;
}

export function update(ctx) {
  if (!v) return;
  v.ctx = ctx;
  const layers = traceableLayers(ctx.model);
  const layerName = openLayer(ctx);
  fillLayerSelect(layers, layerName);
  v.ablation.element.hidden = ctx.state.get('open') === 'unit';
  if (!v.ablation.element.hidden) v.ablation.update(ctx);
  const top = TOPS.includes(Number(ctx.state.get('top'))) ? Number(ctx.state.get('top')) : 8;
  v.topSelect.value = String(top);
  v.detail.checked = ctx.state.get('detail') !== 'cells';
  if (!ctx.imageId) {
    showMessage(messageWithPlace('Upload, draw or pick a sample image', ' (left)', ' (press S to show the inputs)', ' to step through the model on it.'));
    return;
  }
  const layer = layers.find((l) => l.name === layerName);
  const channel = layer ? Math.min(Math.max(0, Number(ctx.state.get('channel')) || 0), layer.output_shape[0] - 1) : 0;
  v.lookForTarget = layer && layerName !== SOFTMAX && layer.output_shape.length === 3 ? { layer: layerName, channel } : null;
  v.lookFor.update();
  const key = [ctx.model.id, ctx.weights, ctx.imageId, layerName, channel, top, v.detail.checked, layerName === SOFTMAX ? ctx.state.get('cls') : ''].join('|');
  if (key !== v.key) {
    v.key = key;
    start({ layer, layerName, channel, top });
  } else if (v.setup) {
    v.url.apply(ctx.state); // the URL's cell, sub-step, Play or speed changed from outside (a link, the teacher)
  }
}

function fillLayerSelect(layers, selected) {
  const names = [...layers.map((l) => l.name), SOFTMAX].join(',');
  if (v.layerSelect.dataset.names !== names) {
    v.layerSelect.dataset.names = names;
    v.layerSelect.replaceChildren(...layers.map((l) => el('option', { value: l.name, text: `${l.name} · ${l.type}` })),
      el('option', { value: SOFTMAX, text: 'softmax at the output' }));
  }
  v.layerSelect.value = selected;
  const option = v.layerSelect.selectedOptions[0];
  v.layerSelect.title = option ? option.textContent : ''; // the full name when the select is narrower
}

/** Show `text` (a string, or nodes) instead of the picture; '' shows the picture. */
function showMessage(text) {
  v.animator.pause();
  v.message.replaceChildren(...(Array.isArray(text) ? text : [text || '']));
  v.message.hidden = !text || (Array.isArray(text) && !text.length);
  v.stage.hidden = !v.message.hidden;
  v.playerHost.hidden = !v.message.hidden;
}

async function start({ layer, layerName, channel, top }) {
  const { ctx } = v;
  v.setup = null; // first: pausing the old animation must not write its cell into the new one's URL
  v.animator.pause();
  v.got = { traces: new Map(), inputs: new Map(), outputs: new Map() };
  v.data.reset({ model: ctx.model.id, imageId: ctx.imageId, weights: ctx.weights, layer: layerName === SOFTMAX ? '' : layerName });
  const softmax = layerName === SOFTMAX;
  v.geometry.textContent = '';
  v.softmaxHost.hidden = !softmax;
  for (const name of ['channel', 'top', 'detail', 'rf']) v.layerSelect.closest('.step-through-controls').querySelector(`[data-for="${name}"]`).hidden = softmax;
  v.exportButtons[0].parentElement.hidden = softmax; // the softmax is a table, not an animation
  if (softmax) {
    showMessage('');
    v.stage.hidden = true;
    v.playerHost.hidden = true;
    loadSoftmax(v.key);
    return;
  }
  showMessage('');
  window.dispatchEvent(new Event('convscope:layout')); // the stage is shown again: refit the canvas
  v.channelInput.max = String(layer.output_shape[0] - 1);
  v.channelInput.value = String(channel);
  const myKey = v.key;
  try {
    const [outC, outH, outW] = layer.output_shape;
    const pos = parsePos(ctx.state.get('pos'), { outH, outW }) || { y: 0, x: 0 };
    v.url.reset();
    const first = await v.data.trace(channel, pos.y, pos.x, top);
    if (myKey !== v.key) return;
    v.got.traces.set(`${pos.y}|${pos.x}`, first);
    const perCell = first.kind === 'conv' && v.detail.checked
      ? convPhases(first.channels.length, Boolean(first.rest), first.after.length) : [{ kind: 'all' }];
    const [, inH, inW] = first.input_shape || [0, outH, outW];
    v.setup = { layer, channel, top, outC, outH, outW, inH, inW, phases: perCell, kind: first.kind, window: layerWindow(layer, first, inH, inW) };
    v.geometry.replaceChildren(...geometryNodes(v.setup.window));
    v.rfHelp.update({ model: ctx.model, layer });
    v.explain.update({ model: ctx.model, layer }, [['This layer', `${layer.name} · ${subtitle(v.setup, null)}`], ['Output size here', geometryText(v.setup.window)]]);
    v.rfImage = new Image();
    v.rfImage.onload = () => v && v.setup && redraw();
    v.rfImage.src = ctx.api.urls.modelInput(ctx.model.id, ctx.imageId, ctx.weights);
    v.animator.setCount(outH * outW * perCell.length);
    v.animator.setSpeed(v.player.speed());
    // the URL's cell, sub-step, speed and Play (a link or the teacher's); else the first cell
    if (!v.url.apply(ctx.state) || !parsePos(ctx.state.get('pos'), v.setup)) v.animator.seek((pos.y * outW + pos.x) * perCell.length);
    need(v.data.outputMap(channel), v.got.outputs, channel);
  } catch (err) {
    if (!isAbort(err) && myKey === v.key) showMessage(`This layer could not be traced: ${err.message}`);
  }
}

/** The sliding window of a conv / pool layer in window-math terms (null: adaptive pools, activations). */
function layerWindow(layer, trace, inH, inW) {
  if (trace.kind === 'activation' || !layer.kernel_size) return null;
  const padding = typeof layer.padding === 'string' ? [layer.padding, layer.padding] : (layer.padding || [0, 0]);
  return window2d([inH, inW], layer.kernel_size, { stride: layer.stride || layer.kernel_size, padding, dilation: layer.dilation || 1, ceilMode: Boolean(layer.ceil_mode) });
}

function parsePos(text, { outH, outW }) {
  const m = /^(\d+),(\d+)$/.exec(text || '');
  if (!m) return null;
  const y = Number(m[1]);
  const x = Number(m[2]);
  return y < outH && x < outW ? { y, x } : null;
}

function currentCell(frame = v.animator.frame) {
  const P = v.setup.phases.length;
  const posIndex = Math.floor(frame / P);
  return { posIndex, phaseIndex: frame % P, y: Math.floor(posIndex / v.setup.outW), x: posIndex % v.setup.outW };
}

/** Settle a promise into `store` and redraw when it lands. */
function need(promise, store, key) {
  const mine = v.key;
  promise.then((value) => {
    if (!v || v.key !== mine) return;
    store.set(key, value);
    redraw();
  }).catch((err) => {
    if (!isAbort(err) && v && v.key === mine) v.exportNote.textContent = `Could not load: ${err.message}`;
  });
}

function redraw() {
  if (v && v.setup) drawFrame(v.animator.frame);
}

function traceAt(y, x) {
  const hit = v.got.traces.get(`${y}|${x}`);
  if (!hit) need(v.data.trace(v.setup.channel, y, x, v.setup.top), v.got.traces, `${y}|${x}`);
  return hit || null;
}

function sceneFor(frame) {
  const s = v.setup;
  const { posIndex, phaseIndex, y, x } = currentCell(frame);
  const phase = s.phases[phaseIndex];
  const trace = traceAt(y, x);
  if (trace && posIndex + 1 < s.outH * s.outW) traceAt(Math.floor((posIndex + 1) / s.outW), (posIndex + 1) % s.outW); // prefetch
  let inChannel = s.channel;
  if (trace && trace.kind === 'conv') {
    const j = phase.kind === 'channel' ? phase.j : trace.channels.length - 1; // the math panel shows the same one
    inChannel = trace.channels[Math.min(j, trace.channels.length - 1)].index;
  }
  let input = v.got.inputs.get(inChannel) || null;
  if (!input) need(v.data.inputMap(inChannel), v.got.inputs, inChannel);
  const output = v.got.outputs.get(s.channel) || null;
  const taps = s.window ? s.window.cells(y, x) : trace && trace.cells ? trace.cells.map(([iy, ix], i) => ({ iy, ix, pad: trace.padding[i] })) : [{ iy: y, ix: x, pad: false }];
  const inC = trace && trace.input_shape ? trace.input_shape[0] : s.outC;
  if (input) input = { ...input, label: trace && trace.kind === 'conv' ? `input ${channelName(inChannel, inC)}` : `input channel ${inChannel}` };
  const field = s.layer.receptive_field;
  const imageHW = [v.ctx.model.input.height, v.ctx.model.input.width];
  return {
    title: `${s.layer.name} · ${s.layer.type} · output channel ${s.channel}, cell (y ${y}, x ${x})`,
    subtitle: subtitle(s, trace),
    input, output: output && { ...output, label: `output channel ${s.channel} (${s.outH}×${s.outW})` },
    pos: { y, x },
    revealed: (r, c) => r * s.outW + c < posIndex || (r * s.outW + c === posIndex && phaseIndex === s.phases.length - 1),
    taps, pad: s.window ? s.window.padding : { top: 0, bottom: 0, left: 0, right: 0 },
    trace, phase,
    rf: field && !field.whole_image ? { image: v.rfImage, imageHW, box: receptiveBox(field, y, x, imageHW) } : null,
  };
}

function subtitle(s, trace) {
  const l = s.layer;
  if (l.kind === 'conv') return `${l.in_channels}→${l.out_channels} channels · kernel ${l.kernel_size.join('×')} · stride ${l.stride.join('×')} · padding ${Array.isArray(l.padding) ? l.padding.join('×') : l.padding} · dilation ${l.dilation.join('×')} · groups ${l.groups}${trace && trace.padded_by ? ` · zero padding from ${trace.padded_by.layer}` : ''}`;
  if (l.kind === 'pool') return `${l.op || ''} pooling · ${l.kernel_size ? `kernel ${l.kernel_size.join('×')} · stride ${l.stride.join('×')} · padding ${l.padding.join('×')}` : `output ${l.output_size}`}`;
  return 'element-wise activation';
}

function drawFrame(frame) {
  if (!v || !v.setup) return;
  const scene = sceneFor(frame);
  v.hits = drawScene(v.g, scene);
  v.player.sync(frame, v.animator.count);
  // what is on the canvas, for tests and assistive tools that cannot read pixels
  const t = scene.trace;
  const d = v.canvas.dataset;
  Object.assign(d, { frame: String(frame), count: String(v.animator.count), cell: `${scene.pos.y},${scene.pos.x}`,
    phase: String(currentCell(frame).phaseIndex), ready: t && scene.input && scene.output ? '1' : '0' });
  d.value = t ? String(t.kind === 'conv' ? t.total : t.kind === 'pool' ? t.result : t.output) : '';
  d.final = t && t.kind === 'conv' ? String(t.final) : '';
  d.grids = JSON.stringify(v.hits.grids.map((g) => ({ name: g.name, rows: g.rows, cols: g.cols, x: g.box.x, y: g.box.y, w: g.box.w, h: g.box.h, font: g.box.font })));
  d.outputGeom = v.hits.output ? JSON.stringify({ x0: v.hits.output.x0, y0: v.hits.output.y0, cell: v.hits.output.cell }) : '';
  if (!v.animator.playing) v.url.write(v.ctx.state); // not while playing: the URL keeps where it started
}

function describe(frame) {
  if (!v || !v.setup) return '';
  const { posIndex, phaseIndex, y, x } = currentCell(frame);
  const P = v.setup.phases.length;
  return `cell ${posIndex + 1}/${v.setup.outH * v.setup.outW} (y ${y}, x ${x})${P > 1 ? ` · step ${phaseIndex + 1}/${P}` : ''}`;
}

function onPlayState(playing) {
  if (!v) return;
  v.player.setPlaying(playing);
  if (v.setup) v.url.write(v.ctx.state, playing);
}

function onCanvasClick(event) {
  if (!v.setup || !v.hits) return;
  const cell = pick(v.canvas, v.hits, event);
  if (!cell || cell.map !== 'output') return;
  v.animator.pause();
  v.animator.seek((cell.r * v.setup.outW + cell.c) * v.setup.phases.length);
}

async function loadSoftmax(key) {
  const target = /^\d+$/.test(v.ctx.state.get('cls') || '') ? Number(v.ctx.state.get('cls')) : null;
  if (v.outputAbort) v.outputAbort.abort();
  v.outputAbort = new AbortController();
  try {
    await showOutput(v.softmaxHost, { ctx: v.ctx, softmax: (top) => v.data.softmax(top), signal: v.outputAbort.signal, target, renderSoftmax,
      onPick: (index) => v.ctx.state.set({ cls: String(index) }, { replace: true }) });
  } catch (err) {
    if (!isAbort(err) && v && v.key === key) v.softmaxHost.replaceChildren(el('p', { className: 'error-text', text: err.message }));
  }
}

async function runExport(kind) {
  if (!v.setup) return;
  if (v.exportAbort) v.exportAbort.abort();
  const abort = new AbortController();
  v.exportAbort = abort;
  v.animator.pause();
  const start = v.animator.frame;
  const frames = Array.from({ length: Math.min(MAX_EXPORT_FRAMES, v.animator.count - start) }, (_, i) => start + i);
  const name = `convscope-${v.ctx.model.id}-${v.setup.layer.name}-c${v.setup.channel}`;
  try {
    if (kind === 'png') {
      await exportPng(v.canvas, `${name}-${currentCell().y}-${currentCell().x}.png`);
      v.exportNote.textContent = 'PNG saved';
      return;
    }
    v.exportNote.textContent = 'fetching the frames…';
    const cells = [...new Set(frames.map((f) => currentCell(f).posIndex))];
    await Promise.all(cells.map((p) => v.data.trace(v.setup.channel, Math.floor(p / v.setup.outW), p % v.setup.outW, v.setup.top)
      .then((t) => v.got.traces.set(`${Math.floor(p / v.setup.outW)}|${p % v.setup.outW}`, t))));
    for (const t of v.got.traces.values()) {
      for (const ch of t.channels || []) if (!v.got.inputs.has(ch.index)) v.got.inputs.set(ch.index, await v.data.inputMap(ch.index));
    }
    if (!v.got.inputs.has(v.setup.channel) && v.setup.kind !== 'conv') v.got.inputs.set(v.setup.channel, await v.data.inputMap(v.setup.channel));
    const draw = (f) => { v.hits = drawScene(v.g, sceneFor(f)); };
    const fps = v.player.speed();
    if (kind === 'gif') {
      await exportGif({ canvas: v.canvas, frames, draw, delayMs: 1000 / fps, filename: `${name}.gif`, signal: abort.signal,
        onProgress: (d, n) => { v.exportNote.textContent = `encoding GIF ${d}/${n}…`; } });
    } else {
      if (!canRecordWebm()) throw new Error('this browser cannot record WebM; use GIF');
      v.exportNote.textContent = `recording ${frames.length} frames…`;
      await exportWebm({ canvas: v.canvas, frames, draw, fps: Math.max(fps, 4), filename: `${name}.webm`, signal: abort.signal });
    }
    if (v) v.exportNote.textContent = `${kind.toUpperCase()} saved (${frames.length} frames)`;
  } catch (err) {
    if (v && !isAbort(err)) v.exportNote.textContent = `Export failed: ${err.message}`;
  } finally {
    if (v && v.exportAbort === abort) v.exportAbort = null;
    if (v) redraw();
  }
}

export function unmount() {
  if (!v) return;
  v.animator.dispose();
  if (v.exportAbort) v.exportAbort.abort();
  v.data.dispose();
  if (v.outputAbort) v.outputAbort.abort();
  v.player.dispose();
  v.ablation.unmount();
  v.bag.run();
  if (v.rfImage) v.rfImage.onload = null;
  v = null;
}
