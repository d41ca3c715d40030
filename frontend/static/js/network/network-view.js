// The Network view: the whole model on one screen for the current image, CNN-Explainer style but for any
// model — the input at the left, one column per layer of its strongest channels, the class probabilities
// at the right. Hovering a unit draws what it reads; clicking one opens its detail in place (URL key
// open=unit with layer / channel / pos, shared with the step-through) and "Back to the network" returns.

import { messageWithPlace } from '../common/inputs-place.js';
import { el, listen, disposer, isAbort } from '../dom.js';
import { ensureStylesheet } from '../common/stylesheet.js';
import { buildColumn, buildInput, buildOutput, vectorFrom, TILE, GAP } from './network-columns.js';
import { createEdges } from './network-edges.js';
import { rowsThatFit } from './network-math.js';
import { createUnitDetail } from './unit-detail.js';
import { parseNpy } from '../common/npy.js';
import { createExplainPanel } from '../common/explanation-panel.js';
import { createAblationCard } from '../experiments/ablation-card.js';

const MAX_ROWS = 8;
// what the overview's own marks mean, for its "What am I looking at?" panel
const NETWORK_CONCEPTS = [
  ['Boxes and lines', 'Pointing at a cell draws, on each shown map of the previous column, the box of cells it is '
    + 'computed from (its receptive field one layer back) and a line to it. A convolution reads a window of every '
    + 'input channel (a grouped one only of its group); pooling, activations and normalisation read their own channel.'],
  ['Strongest channels, "+N more"', 'A wide layer shows the channels with the largest value on this picture, '
    + 'strongest first; "+N more" adds the next ones. The number on a tile is the channel\'s index.'],
  ['Colours', 'Each column has its own colour scale (the bar under its name, with its lowest and highest value). '
    + 'With negative values the map is diverging: blue negative, white exactly zero, red positive.'],
  ['Blocks', 'A deep model is shown by its blocks (a ResNet residual block, an EfficientNet MBConv block): such a '
    + 'column is the output of the whole block. The Layers and Step-through views show the layers inside.'],
];
let v = null;

export function mount(container, ctx) {
  ensureStylesheet('/static/js/network/network.css');
  const bag = disposer();
  const note = el('p', { className: 'card-note net-note' });
  const readout = el('p', { className: 'net-readout', attrs: { role: 'status' }, text: 'Point at a unit to see what it reads; click it to open it.' });
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('class', 'net-edges');
  svg.setAttribute('aria-hidden', 'true');
  const content = el('div', { className: 'net-content' });
  const scroller = el('div', { className: 'net-scroll' }, [content]);
  const message = el('p', { className: 'hint net-message', hidden: true });
  const legends = el('p', { className: 'hint net-legends' });
  const explain = createExplainPanel('network', ['receptive-field', 'jump']);
  explain.update({}, NETWORK_CONCEPTS);
  const network = el('section', { className: 'card net', attrs: { 'aria-labelledby': 'net-heading' } }, [
    el('div', { className: 'card-head' }, [el('h2', { id: 'net-heading', text: 'Network' }), note]),
    message, scroller, readout, legends, explain.element,
  ]);
  const detailHost = el('div', { className: 'net-detail-host', hidden: true });
  container.append(network, detailHost);
  v = {
    ctx, bag, note, readout, svg, content, scroller, message, network, legends, detailHost, key: null, abort: null,
    cols: [], atlases: new Map(), vectors: new Map(), maps: new Map(),
  };
  v.edges = createEdges(content, svg, () => v.cols, (text) => { readout.textContent = text; }, valueAt);
  v.detail = createUnitDetail(detailHost, { onBack: () => v.ctx.state.set({ open: null, pos: null }) });
  v.ablation = createAblationCard(container, { layerOf: (c) => c.state.get('layer'), where: 'in the network above or in the list below' });
  bag.add(listen(content, 'pointermove', (e) => v.edges.hover(e)));
  bag.add(listen(content, 'pointerleave', () => v.edges.clear()));
  // keyboard focus shows the edges too (a click's focus is not focus-visible: the pointer already did)
  bag.add(listen(content, 'focusin', (e) => e.target.matches(':focus-visible') && v.edges.hover(e)));
  bag.add(listen(content, 'click', onClick));
  bag.add(listen(scroller, 'scroll', () => v.edges.clear(), { passive: true }));
  update(ctx);
}

function onClick(event) {
  const unit = event.target.closest('.net-tile, .net-unit, .net-prob');
  if (!unit || unit.closest('.net-more-row')) return;
  if (unit.classList.contains('net-tile') && v.ablation.pick(unit.dataset.layer, Number(unit.dataset.channel), event.shiftKey)) return;
  const column = v.cols.find((c) => c.name === unit.dataset.layer);
  const changes = { open: 'unit', layer: unit.dataset.layer, channel: unit.dataset.layer === '@softmax' ? null : unit.dataset.channel, pos: null };
  if (unit.classList.contains('net-tile') && column) {
    const last = v.edges.lastCell();
    if (last && last.layer === column.name && String(last.channel) === unit.dataset.channel) changes.pos = `${last.y},${last.x}`;
  }
  v.ctx.state.set(changes);
}

export function update(ctx) {
  if (!v) return;
  v.ctx = ctx;
  const open = ctx.state.get('open') === 'unit' && ctx.imageId;
  v.network.hidden = Boolean(open);
  v.detailHost.hidden = !open;
  if (open) v.detail.show(ctx, v.cols);
  else v.detail.hide();
  v.ablation.update(ctx);
  markEdited();
  const key = `${ctx.model.id}|${ctx.weights}|${ctx.imageId}`;
  if (key === v.key) return;
  v.key = key;
  load(ctx, key);
}

/** Say `text` (a string, or nodes) above the network; '' says nothing. */
function say(text) {
  v.message.replaceChildren(...(Array.isArray(text) ? text : [text || '']));
  v.message.hidden = !text;
}

async function load(ctx, key) {
  const { model, imageId, weights, api } = ctx;
  if (v.abort) v.abort.abort();
  v.abort = new AbortController();
  const { signal } = v.abort;
  v.content.replaceChildren();
  v.legends.replaceChildren();
  v.cols = [];
  v.atlases.clear();
  v.vectors.clear();
  v.maps.clear();
  delete v.network.dataset.ready;
  v.note.textContent = '';
  v.readout.hidden = true; // nothing to point at until the columns are drawn
  if (!imageId) {
    say(messageWithPlace('Upload, draw or pick a sample image', ' (left)', ' (press S to show the inputs)', ` to see every layer of ${model.title} at once.`));
    return;
  }
  say('Running the network…');
  const started = performance.now();
  try {
    const base = `/images/${encodeURIComponent(imageId)}`;
    const [net, image, predictions, input] = await Promise.all([
      api.getJson(api.urls.modelPath(model.id, `${base}/network.json`, { weights }), { signal }),
      loadImage(api.urls.modelPath(model.id, `${base}/network.png`, { weights }), signal),
      api.predictions(model.id, imageId, weights, { topK: Math.min(10, model.num_classes), signal }),
      // a colour input is also shown as its three channels, so the first layer's edges go to each
      model.input.channels === 3
        ? api.request(api.urls.modelPath(model.id, `${base}/input.npy`, { weights }), { signal }).then((r) => r.arrayBuffer()).then(parseNpy)
        : null,
    ]);
    if (!v || v.key !== key) return;
    say('');
    render(ctx, net, image, predictions.predictions, input);
    v.readout.hidden = false;
    markEdited();
    const d = v.network.dataset;
    d.ready = '1';
    d.paintMs = String(Math.round(performance.now() - started));
    d.columns = String(net.columns.length);
  } catch (err) {
    if (!isAbort(err) && v && v.key === key) say(`The network could not be drawn: ${err.message}`);
  }
}

/** The channels the ablation card switches off, marked on their tiles. */
function markEdited() {
  const edited = v.ablation.edited();
  for (const tile of v.content.querySelectorAll('.net-tile')) {
    tile.classList.toggle('is-ablated', Boolean(edited) && tile.dataset.layer === edited.layer && edited.channels.has(Number(tile.dataset.channel)));
  }
}

function loadImage(src, signal) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error('network.png could not be loaded'));
    signal.addEventListener('abort', () => { image.src = ''; reject(new DOMException('aborted', 'AbortError')); });
    image.src = src;
  });
}

function render(ctx, net, image, predictions, inputNpy) {
  const { model, imageId, weights, api } = ctx;
  const layerInfo = new Map(model.layers.map((l) => [l.name, l]));
  const input = { name: '@input', shape: [model.input.channels, model.input.height, model.input.width], channels: model.input.channels,
    field: { size: [1, 1], jump: [1, 1], start: [0, 0] }, vector: false };
  const columns = net.columns.map((c) => ({ ...c, layer: layerInfo.get(c.name) || {}, field: (layerInfo.get(c.name) || {}).receptive_field }));
  v.cols = [input, ...columns];
  const top = v.scroller.getBoundingClientRect().top;
  const rows = Math.min(MAX_ROWS, rowsThatFit(window.innerHeight - top - 170, TILE, GAP, 4));
  const colCtx = {
    image, rows,
    fetchAtlas: (name) => fetchAtlas(ctx, name),
    fetchVector: (name) => fetchVector(ctx, name),
    onGrow: () => v.edges.clear(),
  };
  v.content.replaceChildren(
    buildInput(model, api.urls.modelInput(model.id, imageId, weights), inputNpy),
    ...columns.map((c) => buildColumn(c, colCtx)),
    buildOutput(predictions, weights === 'untrained'),
    v.svg,
  );
  const blocks = columns.filter((c) => !c.leaf).length;
  v.note.textContent = `${columns.length} layers${blocks ? ` (${blocks} blocks shown by their output)` : ''} · strongest channels first`;
  const diverging = columns.some((c) => c.range[0] < 0);
  v.legends.textContent = `Colours: each column has its own scale, drawn under its name with its lowest and highest value${diverging ? '; a column with negative values uses a diverging map where white is exactly 0' : ''}. The small number on a tile is its channel index.`;
}

function fetchAtlas(ctx, name) {
  if (!v.atlases.has(name)) {
    const path = `/images/${encodeURIComponent(ctx.imageId)}/layers/${encodeURIComponent(name)}`;
    const params = { weights: ctx.weights, scale: 'layer' };
    const promise = Promise.all([
      ctx.api.getJson(ctx.api.urls.modelPath(ctx.model.id, `${path}/atlas.json`, params), { signal: v.abort.signal }),
      loadImage(ctx.api.urls.modelPath(ctx.model.id, `${path}/atlas.png`, params), v.abort.signal),
    ]).then(([atlas, image]) => ({ atlas, image }));
    promise.catch(() => v && v.atlases.delete(name));
    v.atlases.set(name, promise);
  }
  return v.atlases.get(name);
}

const MAPS_KEPT = 64; // channel maps fetched for hover values (each at most a few hundred KB)

/** The value of cell (y, x) of channel `c` of `layer`, from its channels/{c}.npy (fetched once). */
function valueAt(layer, c, y, x) {
  if (!v || !v.ctx.imageId) return null;
  const ctx = v.ctx;
  const key = `${layer}|${c}`;
  if (!v.maps.has(key)) {
    const url = ctx.api.urls.modelPath(ctx.model.id, `/images/${encodeURIComponent(ctx.imageId)}/layers/${encodeURIComponent(layer)}/channels/${c}.npy`, { weights: ctx.weights });
    const promise = ctx.api.request(url, { signal: v.abort.signal }).then((r) => r.arrayBuffer()).then(parseNpy);
    promise.catch(() => v && v.maps.delete(key));
    v.maps.set(key, promise);
    if (v.maps.size > MAPS_KEPT) v.maps.delete(v.maps.keys().next().value);
  }
  return v.maps.get(key).then((npy) => npy.data[y * npy.shape[npy.shape.length - 1] + x]);
}

function fetchVector(ctx, name) {
  if (!v.vectors.has(name)) {
    const url = ctx.api.urls.modelPath(ctx.model.id, `/images/${encodeURIComponent(ctx.imageId)}/layers/${encodeURIComponent(name)}/activations.npy`, { weights: ctx.weights });
    const promise = ctx.api.request(url, { signal: v.abort.signal }).then((r) => r.arrayBuffer()).then(vectorFrom);
    promise.catch(() => v && v.vectors.delete(name));
    v.vectors.set(name, promise);
  }
  return v.vectors.get(name);
}

export function unmount() {
  if (!v) return;
  if (v.abort) v.abort.abort();
  v.detail.dispose();
  v.ablation.unmount();
  v.bag.run();
  v = null;
}
