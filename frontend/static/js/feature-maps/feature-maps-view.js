// The Layers view: the architecture strip across the top; below it the open layer's channels (sortable,
// zoomable, with a colour legend and the value under the pointer), the selected channel over the input
// image, and the layer's learned filters. URL keys: layer, channel, sort, scale, fw (filter weights), fin.

import { el, listen, disposer, isAbort } from '../dom.js';
import { formatShape, formatValue } from '../common/format.js';
import { ensureStylesheet } from '../common/stylesheet.js';
import { createArchStrip, stripLayers } from './arch-strip.js';
import { createChannelGrid } from './channel-grid.js';
import { createChannelDetail } from './channel-detail.js';
import { createLookForLink } from '../channel/look-for-link.js';
import { createFiltersPanel, hasTrainedWeights } from './filters-panel.js';
import { createLegend } from './legend.js';
import { createLayerData, layerUrls } from './layer-data.js';
import { sortChannels } from './channel-math.js';
import { createExplainPanel, explainButton } from '../common/explanation-panel.js';
import { createAblationCard } from '../experiments/ablation-card.js';

const STYLESHEET = '/static/js/feature-maps/feature-maps.css';
const SORTS = [['index', 'Index'], ['mean', 'Mean'], ['max', 'Max']];
const SCALES = [['layer', 'Layer'], ['channel', 'Channel'], ['global', 'Model']];

let view = null; // everything mount() made

function segmented(label, options, key) {
  return el(
    'div',
    { className: 'segmented', dataset: { key }, attrs: { role: 'radiogroup', 'aria-label': label } },
    options.map(([value, text]) => el('button', { type: 'button', text, dataset: { value }, attrs: { role: 'radio' } })),
  );
}

function markSegmented(group, value) {
  for (const b of group.querySelectorAll('button')) b.setAttribute('aria-checked', String(b.dataset.value === value));
}

/** The layer the view opens when the URL names none: the first convolution, else the first layer. */
export function defaultLayer(model) {
  const layers = stripLayers(model);
  const conv = layers.find((l) => l.kind === 'conv');
  return (conv || layers[0] || {}).name;
}

export function mount(container, ctx) {
  const stylesheet = ensureStylesheet(STYLESHEET);
  const bag = disposer();
  const set = (changes) => view.ctx.state.set(changes, { replace: true });
  const stripCard = el('section', { className: 'card layers-strip-card', attrs: { 'aria-label': 'Architecture' } });
  const stripNote = el('span', { className: 'card-note' });
  stripCard.append(el('div', { className: 'card-head' }, [el('h2', { text: 'Layers' }), stripNote]));
  const strip = createArchStrip(stripCard, { onSelect: (layer) => view.ctx.state.set({ layer, channel: null, fin: null }) });

  const title = el('h2', { className: 'layer-title' });
  const subtitle = el('span', { className: 'card-note layer-subtitle' });
  const sort = segmented('Sort channels by', SORTS, 'sort');
  const scale = segmented('Colour scale per', SCALES, 'scale');
  const zoom = el('input', { type: 'range', min: '28', max: '200', step: '4', value: '72', id: 'tile-zoom', className: 'zoom' });
  const group = (label, ...controls) => el('span', { className: 'toolbar-group' }, [label, ...controls]);
  const rfHelp = explainButton('receptive-field');
  const explain = createExplainPanel('layers', ['receptive-field', 'jump', 'parameters', 'scale', 'tile-number', 'map-over-image']);
  const toolbar = el('div', { className: 'layer-toolbar' }, [
    group(el('span', { className: 'toolbar-label', text: 'Sort' }), sort, explainButton('tile-number')),
    group(el('span', { className: 'toolbar-label', text: 'Scale' }), scale, explainButton('scale')),
    group(el('label', { className: 'toolbar-label', attrs: { for: 'tile-zoom' }, text: 'Zoom' }), zoom),
  ]);
  const legendHost = el('div', { className: 'layer-legend' });
  const legend = createLegend(legendHost, { label: 'Activation' });
  const readout = el('p', { className: 'value-readout', attrs: { 'aria-live': 'off' }, text: 'Point at a channel to read its values.' });
  const status = el('p', { className: 'layer-status placeholder' });
  const gridHost = el('div', { className: 'grid-host' });
  const layerCard = el('section', { className: 'card layer-card', attrs: { 'aria-label': 'Feature maps' } }, [
    el('div', { className: 'card-head' }, [el('div', {}, [title, subtitle, ' ', rfHelp])]),
    explain.element, toolbar, legendHost, readout, status, gridHost,
  ]);
  const detailCard = el('section', { className: 'card detail-card', attrs: { 'aria-label': 'Selected channel' } });
  const filtersCard = el('section', { className: 'card filters-card' });
  container.append(stripCard, el('div', { className: 'layers-main' }, [layerCard, el('div', { className: 'layers-side' }, [detailCard, filtersCard])]));

  const onHover = (hit) => showValue(hit);
  view = {
    ctx, bag, strip, legend, readout, status, title, subtitle, sort, scale, zoom, stripNote, layerCard, explain, rfHelp,
    data: createLayerData(ctx.api),
    grid: createChannelGrid(gridHost, { onHover, onSelect: (c, event) => view.ablation.pick(view.st.layer.name, c, event.shiftKey) || set({ channel: c }) }),
    detail: createChannelDetail(detailCard, { onHover, onOpacity: (v) => { view.opacity = v; } }),
    lookFor: createLookForLink(() => view && view.lookForTarget && { state: view.ctx.state, ...view.lookForTarget }),
    lookForTarget: null,
    filters: createFiltersPanel(filtersCard, { onVariant: (fw) => set({ fw }), onInPage: (fin) => set({ fin }) }),
    keys: {}, layer: null, abort: null, hoverToken: 0, opacity: 70,
  };
  detailCard.append(el('p', { className: 'look-for' }, [view.lookFor.element]));
  view.ablation = createAblationCard(container, { layerOf: (c) => (readState(c).layer || {}).name, where: 'in the feature maps above or in the list below' });
  bag.add(listen(sort, 'click', (e) => { const b = e.target.closest('button'); if (b) set({ sort: b.dataset.value }); }));
  bag.add(listen(scale, 'click', (e) => { const b = e.target.closest('button'); if (b) set({ scale: b.dataset.value }); }));
  bag.add(listen(zoom, 'input', () => view.grid.zoom(Number(zoom.value))));
  view.grid.zoom(Number(zoom.value));
  // until the stylesheet applies the strip does not scroll: centre the open layer once it does
  if (!stylesheet.sheet) bag.add(listen(stylesheet, 'load', () => view && view.st && view.st.layer && view.strip.select(view.st.layer.name)));
  update(ctx);
}

/** "12 layers in 2 blocks": counted as the architecture table counts them (leaf layers), blocks apart. */
export function stripNote(model) {
  const leaves = model.layers.filter((l) => l.leaf).length;
  const shown = stripLayers(model);
  const blocks = shown.filter((l) => !l.leaf).length;
  const hidden = leaves - shown.filter((l) => l.leaf).length;
  return `${leaves} layers of ${model.title}${blocks ? ` (with ${blocks} block${blocks > 1 ? 's' : ''} that group them)` : ''}`
    + `${hidden ? ` · ${hidden} without anything new to see (dropout, flatten) left out` : ''} · click one to open it`;
}

/** A linear layer with one output per class: its values are the class scores (logits). */
export function isOutputLayer(model, layer) {
  return Boolean(layer) && layer.kind === 'linear' && Array.isArray(layer.output_shape)
    && layer.output_shape.length === 1 && layer.output_shape[0] === model.num_classes;
}

function rfSummary(layer) {
  const f = layer.receptive_field;
  if (!f) return '';
  return f.whole_image ? ' · sees the whole image' : ` · receptive field ${f.size.join('×')} px · jump ${f.jump[0]}`;
}

function readState(ctx) {
  const s = ctx.state.read();
  const layers = stripLayers(ctx.model);
  const layerName = layers.some((l) => l.name === s.layer) ? s.layer : defaultLayer(ctx.model);
  const layer = ctx.model.layers.find((l) => l.name === layerName);
  const channel = s.channel !== undefined && /^\d+$/.test(s.channel) ? Number(s.channel) : null;
  return {
    layer,
    channel,
    sort: SORTS.some(([v]) => v === s.sort) ? s.sort : 'index',
    scale: SCALES.some(([v]) => v === s.scale) ? s.scale : 'layer',
    fw: ['trained', 'untrained'].includes(s.fw) && (s.fw === 'untrained' || hasTrainedWeights(ctx.model)) ? s.fw : ctx.weights,
    fin: /^\d+$/.test(s.fin || '') ? Number(s.fin) : 0,
  };
}

export function update(ctx) {
  if (!view) return;
  view.ctx = ctx;
  const st = readState(ctx);
  view.st = st;
  const { model, imageId, weights } = ctx;
  const modelKey = `${model.id}|${weights}`;
  if (view.keys.model !== modelKey) {
    view.keys.model = modelKey;
    view.strip.render(model);
    view.stripNote.textContent = stripNote(model);
  }
  markSegmented(view.sort, st.sort);
  view.ablation.update(ctx);
  markEdited();
  markSegmented(view.scale, st.scale);
  if (st.layer) view.strip.select(st.layer.name);
  const imageKey = `${modelKey}|${imageId}`;
  const overviewDue = imageId && view.keys.image !== imageKey;
  if (overviewDue) view.keys.image = imageKey;
  view.title.textContent = st.layer ? `${st.layer.name} · ${st.layer.type}` : 'No layer';
  view.subtitle.textContent = st.layer ? `output ${formatShape(st.layer.output_shape)}${rfSummary(st.layer)}` : '';
  view.rfHelp.update({ model, layer: st.layer });
  view.explain.update({ model, layer: st.layer });
  if (st.layer) view.filters.show({ api: ctx.api, model, layer: st.layer, variant: st.fw, channel: st.channel ?? 0, inStart: st.fin });
  if (!imageId) {
    view.keys.layer = null;
    view.status.hidden = false;
    view.status.textContent = 'Upload, draw or pick a sample image to see what each layer makes of it.';
    view.grid.root.replaceChildren();
    return;
  }
  const layerKey = `${imageKey}|${st.layer && st.layer.name}|${st.scale}`;
  if (view.keys.layer !== layerKey) {
    view.keys.layer = layerKey;
    // the layer's forward pass also summarises every layer, so the strip's thumbnails come after it
    const layerLoaded = loadLayer(ctx, st);
    if (overviewDue) layerLoaded.then(() => view && loadOverview(ctx));
  } else {
    if (overviewDue) loadOverview(ctx);
    if (view.layer) arrange(st);
  }
}

async function loadOverview(ctx) {
  const urls = layerUrls(ctx.api, ctx.model.id, ctx.imageId, ctx.weights);
  const key = view.keys.image;
  try {
    const [overview, picture] = await Promise.all([view.data.json(urls.overviewJson()), view.data.image(urls.overviewPng())]);
    if (view && view.keys.image === key) view.strip.thumbnails(overview, picture);
  } catch (err) {
    if (view && !isAbort(err)) view.stripNote.textContent = `Thumbnails could not be made: ${err.message}`;
  }
}

async function loadLayer(ctx, st) {
  const started = performance.now();
  const urls = layerUrls(ctx.api, ctx.model.id, ctx.imageId, ctx.weights);
  const key = view.keys.layer;
  const name = st.layer.name;
  view.layer = null;
  view.readout.textContent = 'Point at a channel to read its values.';
  view.status.hidden = false;
  view.status.textContent = `Computing ${name}…`;
  view.layerCard.classList.add('is-loading');
  try {
    const [atlas, picture, stats, labels] = await Promise.all([
      view.data.json(urls.atlasJson(name, st.scale)),
      view.data.image(urls.atlasPng(name, st.scale)),
      view.data.json(urls.stats(name)),
      isOutputLayer(ctx.model, st.layer) ? view.data.json(ctx.api.urls.modelPath(ctx.model.id, '/classes')).then((b) => b.classes) : null,
    ]);
    if (!view || view.keys.layer !== key) return;
    view.layer = { atlas, picture, stats, urls, name, labels, hover: view.data.hoverSource(urls, name, atlas.shape), order: null, sort: null };
    view.status.hidden = true;
    arrange(view.st);
    view.grid.root.dataset.openMs = String(Math.round(performance.now() - started));
  } catch (err) {
    if (!view || view.keys.layer !== key || isAbort(err)) return;
    view.keys.layer = null;
    view.status.textContent = `${name} could not be shown: ${err.message}`;
  } finally {
    if (view && view.keys.layer === key) view.layerCard.classList.remove('is-loading');
  }
}

/** Order, highlight and detail for the loaded layer under the current state. */
function arrange(st) {
  const L = view.layer;
  const { atlas, stats } = L;
  if (L.sort !== st.sort) {
    L.sort = st.sort;
    L.order = sortChannels(atlas.channels, st.sort, stats);
    view.grid.show({ atlas, picture: L.picture, order: L.order, stat: st.sort === 'index' ? stats.mean : stats[st.sort], labels: L.labels });
    view.grid.root.dataset.sort = st.sort;
  }
  const channel = st.channel !== null && st.channel < atlas.channels ? st.channel : L.order[0];
  L.channel = channel;
  view.grid.highlight(channel);
  markEdited();
  showLegend(channel);
  const ctx = view.ctx;
  const shape = atlas.shape.length === 3 ? atlas.shape.slice(1) : [1, 1];
  view.detail.show({
    c: channel,
    layerName: L.name,
    mapUrl: L.urls.channelPng(L.name, channel, st.scale),
    inputUrl: L.urls.inputPng(),
    H: shape[0],
    W: shape[1],
    inputSize: [ctx.model.input.height, ctx.model.input.width],
    field: (ctx.model.layers.find((l) => l.name === L.name) || {}).receptive_field || null,
    opacity: view.opacity,
    vector: atlas.shape.length === 1,
    label: L.labels ? L.labels[channel] : null,
  });
  // a channel map (not a vector layer's feature) has dataset examples and a feature visualisation
  view.lookForTarget = atlas.shape.length === 3 ? { layer: L.name, channel } : null;
  view.lookFor.update();
}

/** The channels the ablation card switches off, marked on the open layer's tiles. */
function markEdited() {
  const edited = view.ablation.edited();
  view.grid.markEdited(edited && view.st.layer && edited.layer === view.st.layer.name ? edited.channels : null);
}

function showLegend(channel) {
  const { atlas } = view.layer;
  const low = atlas.tiles.low[channel];
  const high = atlas.tiles.high[channel];
  const note = atlas.scale === 'channel' ? `channel ${channel}` : atlas.scale === 'global' ? 'all layers' : 'whole layer';
  view.legend.show({ stops: atlas.stops, low, high, note });
  view.legendChannel = channel;
}

/** The value under the pointer, read from the layer's float32 .npy values. */
async function showValue(hit) {
  const token = ++view.hoverToken;
  const L = view.layer;
  if (!hit || !L) {
    view.legend.mark(null);
    if (L) showLegend(L.channel);
    return;
  }
  try {
    const values = await L.hover.channel(hit.channel);
    if (!view || token !== view.hoverToken || view.layer !== L) return;
    const value = values.data[hit.y * values.shape[1] + hit.x];
    if (L.atlas.scale === 'channel' && view.legendChannel !== hit.channel) showLegend(hit.channel);
    view.legend.mark(value);
    const where = L.atlas.shape.length === 3 ? ` at (y ${hit.y}, x ${hit.x})` : '';
    const name = L.labels ? `class ${hit.channel} “${L.labels[hit.channel]}” (logit)` : `channel ${hit.channel}`;
    view.readout.textContent = `${name}${where}: ${formatValue(value)}`;
    Object.assign(view.readout.dataset, { channel: String(hit.channel), y: String(hit.y), x: String(hit.x), value: String(value) });
  } catch (err) {
    if (view && !isAbort(err)) view.readout.textContent = `The value could not be read: ${err.message}`;
  }
}

export function unmount() {
  if (!view) return;
  view.bag.run();
  view.grid.dispose();
  view.ablation.unmount();
  view.detail.dispose();
  view.lookFor.dispose();
  view.filters.dispose();
  view.strip.dispose();
  view.data.clear();
  view = null;
}
