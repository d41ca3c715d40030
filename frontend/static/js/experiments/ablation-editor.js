// Switch channels off, wherever a layer is open: pick channels of the layer (click, shift-click, top k by
// mean activation, all but these, everything but the top k), edit them (zero, mean, scale) and see the new
// top-5 beside the old, the change per class, the new Grad-CAM beside the old, and how far each later layer
// moved. Used by the Experiments view (with its own layer picker) and by the ablation card of the Layers,
// Network and Step-through views (the layer is the view's). URL keys: layer, channels, invert, mode,
// factor, k — the same in every view, so a link or a classroom shows the same experiment.

import { el } from '../dom.js';
import { createPredictionsChart } from '../common/predictions-chart.js';
import { formatPercent } from '../common/format.js';
import { createLatestRequest } from '../common/latest-request.js';
import { createLayerChart, formatChange } from './layer-chart.js';
import { editedChannels, parseChannels, pickChannel, topChannels } from './selection.js';

/** The layers whose channels can be switched off: those with a C×H×W output. */
export const channelLayers = (model) => model.layers.filter((l) => l.output_shape && l.output_shape.length === 3);

/** The ablation the URL describes, for `layer` (the view's; the model's default when it has no channels). */
export function readAblation(ctx, layer) {
  const st = ctx.state;
  const layers = channelLayers(ctx.model);
  const name = layers.some((l) => l.name === layer) ? layer : ctx.model.default_layer;
  const info = layers.find((l) => l.name === name);
  return {
    layer: name, count: info ? info.output_shape[0] : 0, fits: layers.some((l) => l.name === layer),
    channels: st.get('channels') || '0', invert: st.get('invert') === '1', mode: ['zero', 'mean', 'scale'].includes(st.get('mode')) ? st.get('mode') : 'zero',
    factor: st.get('factor') || '0.5', k: Math.max(1, Math.min(64, Number(st.get('k')) || 3)),
  };
}

/**
 * @param {HTMLElement} host
 * @param {{explain: (facts: string[][]) => void, layerPicker?: boolean, layerOf?: (ctx) => string}} opts
 *   layerPicker: show a layer select (the Experiments view); layerOf: the view's open layer.
 */
export function createAblationEditor(host, { explain, layerPicker = false, layerOf = (ctx) => ctx.state.get('layer') }) {
  const layerSelect = el('select', { className: 'xp-layer', attrs: { 'aria-label': 'Layer' } });
  const modeSelect = el('select', { className: 'xp-mode', attrs: { 'aria-label': 'Mode' } },
    [['zero', 'set to zero'], ['mean', 'replace by its mean'], ['scale', 'scale by a factor']].map(([v, t]) => el('option', { value: v, text: t })));
  const factor = el('input', { type: 'range', min: '0', max: '2', step: '0.1', className: 'xp-factor', attrs: { 'aria-label': 'Factor' } });
  const factorText = el('output', { className: 'xp-factor-text' });
  const kInput = el('input', { type: 'number', min: '1', max: '64', className: 'xp-k', attrs: { 'aria-label': 'k' } });
  const topButton = el('button', { type: 'button', text: 'Top k by mean', className: 'xp-top-k' });
  const allButTop = el('button', { type: 'button', text: 'Everything but top k', className: 'xp-all-but-top' });
  const invert = el('input', { type: 'checkbox', className: 'xp-invert' });
  const chips = el('div', { className: 'xp-chips', attrs: { role: 'group', 'aria-label': 'Channels (click; shift-click adds)' } });
  const summary = el('p', { className: 'xp-summary', attrs: { 'aria-live': 'polite' } });
  const beforeHost = el('div');
  const afterHost = el('div');
  const changes = el('table', { className: 'xp-changes' });
  const camBefore = el('img', { className: 'xp-cam', alt: 'Grad-CAM before' });
  const camAfter = el('img', { className: 'xp-cam xp-cam-after', alt: 'Grad-CAM after' });
  const chartHost = el('div');
  host.append(
    el('div', { className: 'xp-controls' }, [
      ...(layerPicker ? [el('label', {}, ['Layer ', layerSelect])] : []), el('label', {}, ['Channels ', modeSelect]),
      el('label', { className: 'xp-factor-label' }, ['× ', factor, factorText]),
      el('label', {}, ['k ', kInput]), topButton, allButTop,
      el('label', {}, [invert, ' all but these']),
    ]),
    chips, summary,
    el('div', { className: 'xp-grid' }, [
      el('div', { className: 'xp-pane' }, [el('h3', { text: 'Before' }), beforeHost, el('h3', { text: 'Grad-CAM before' }), camBefore]),
      el('div', { className: 'xp-pane' }, [el('h3', { text: 'With the channels edited' }), afterHost, el('h3', { text: 'Grad-CAM after' }), camAfter]),
      el('div', { className: 'xp-pane' }, [el('h3', { text: 'Change per class' }), changes, chartHost]),
    ]),
  );
  const before = createPredictionsChart(beforeHost);
  const after = createPredictionsChart(afterHost);
  const chart = createLayerChart(chartHost);
  const statsRequest = createLatestRequest();
  const ablationRequest = createLatestRequest();
  const s = { ctx: null, stats: null, statsFor: null };
  const set = (changes_, replace = false) => s.ctx.state.set(changes_, { replace });
  const current = () => readAblation(s.ctx, layerPicker ? s.ctx.state.get('layer') : layerOf(s.ctx));

  layerSelect.onchange = () => set({ layer: layerSelect.value, channels: '0', invert: null });
  modeSelect.onchange = () => set({ mode: modeSelect.value });
  factor.oninput = () => { factorText.textContent = factor.value; };
  factor.onchange = () => set({ factor: factor.value });
  kInput.onchange = () => set({ k: kInput.value }, true);
  invert.onchange = () => set({ invert: invert.checked ? '1' : null });
  const top = (inverted) => s.stats && s.statsFor === current().layer
    && set({ channels: topChannels(s.stats.mean, current().k).join(','), invert: inverted ? '1' : null });
  topButton.onclick = () => top(false);
  allButTop.onclick = () => top(true);
  chips.onclick = (event) => {
    const chip = event.target.closest('[data-channel]');
    if (chip) pick(current().layer, Number(chip.dataset.channel), event.shiftKey);
  };

  /** A click on channel `c` of `layer`: only it (shift: add or remove it). Another layer starts afresh. */
  function pick(layer, c, additive) {
    const q = current();
    const same = layer === q.layer;
    const channels = pickChannel(same ? q.channels : '', c, additive && same);
    if (channels) set({ ...(same ? {} : { layer }), channels, ...(same ? {} : { invert: null }) });
  }

  function renderControls(q) {
    if (layerPicker) {
      layerSelect.replaceChildren(...channelLayers(s.ctx.model).map((l) => el('option', { value: l.name, text: `${l.name} (${l.output_shape[0]} ch)` })));
      layerSelect.value = q.layer;
    }
    modeSelect.value = q.mode;
    factor.value = q.factor; factorText.textContent = q.factor;
    factor.parentElement.hidden = q.mode !== 'scale';
    kInput.value = String(q.k);
    invert.checked = q.invert;
  }

  function renderChips(q) {
    const picked = new Set(parseChannels(q.channels));
    const means = s.stats && s.statsFor === q.layer ? s.stats.mean : null;
    const largest = means ? Math.max(1e-12, ...means.map(Math.abs)) : 1;
    const shown = Math.min(q.count, 512);
    const nodes = [];
    for (let c = 0; c < shown; c += 1) {
      const edited = q.invert ? !picked.has(c) : picked.has(c);
      const chip = el('button', { type: 'button', className: edited ? 'xp-chip is-edited' : 'xp-chip', text: String(c),
        dataset: { channel: String(c) }, title: means ? `channel ${c}: mean activation ${means[c].toPrecision(3)}` : `channel ${c}` });
      if (means) chip.style.setProperty('--m', String(Math.abs(means[c]) / largest));
      nodes.push(chip);
    }
    if (q.count > shown) nodes.push(el('span', { className: 'card-note', text: `… ${q.count - shown} more (type them in the URL or use top k)` }));
    chips.replaceChildren(...nodes);
  }

  async function loadStats(q) {
    const { model, imageId, weights, api } = s.ctx;
    const url = api.urls.modelPath(model.id, `/images/${imageId}/layers/${encodeURIComponent(q.layer)}/stats.json`, { weights });
    if (statsRequest.isCurrent(url)) return;
    s.stats = null;
    try {
      const got = await statsRequest.run(url, (signal) => api.getJson(url, { signal }));
      if (!got) return;
      s.stats = got.value; s.statsFor = q.layer;
      renderChips(current());
    } catch {
      s.stats = null;
    }
  }

  async function loadAblation(q) {
    const { model, imageId, weights, api } = s.ctx;
    const params = { layer: q.layer, channels: q.channels, mode: q.mode, weights };
    if (q.mode === 'scale') params.factor = q.factor;
    if (q.invert) params.invert = 'true';
    const key = JSON.stringify([model.id, imageId, params]);
    if (ablationRequest.isCurrent(key)) return;
    before.loading(); after.loading();
    host.dataset.state = 'loading';
    try {
      const got = await ablationRequest.run(key, (signal) => api.getJson(api.urls.modelPath(model.id, `/images/${imageId}/ablation.json`, params), { signal }));
      if (!got) return;
      show(got.value);
      host.dataset.state = 'ready';
      host.dataset.for = key;
    } catch (err) {
      host.dataset.state = 'error';
      summary.textContent = err.message;
      summary.classList.add('error-text');
    }
  }

  function show(answer) {
    const { model, imageId, weights, api } = s.ctx;
    before.show(answer.baseline, 'baseline');
    after.show(answer.predictions, 'ablated');
    changes.replaceChildren(
      el('tr', {}, ['class', 'before', 'after', 'change'].map((t) => el('th', { text: t }))),
      ...answer.changes.map((c) => el('tr', { dataset: { index: String(c.index), change: String(c.change) } }, [
        el('td', { text: c.label }), el('td', { text: formatPercent(c.before) }), el('td', { text: formatPercent(c.after) }),
        el('td', { className: c.change < 0 ? 'xp-down' : 'xp-up', text: formatChange(c.change) })])),
    );
    camBefore.src = api.urls.modelPath(model.id, `/images/${imageId}/saliency.png`, { method: 'gradcam', weights, opacity: 0.5 });
    camAfter.src = answer.gradcam.png;
    chart.show(answer.layers, 'How far each later layer moved: relative L2 = ‖edited − original‖ / ‖original‖');
    const n = answer.channels.length;
    const total = current().count || n;
    const b = answer.baseline[0]; const a = answer.predictions[0];
    const what = answer.mode === 'zero' ? 'set to zero' : answer.mode === 'mean' ? 'replaced by their mean over the image' : `multiplied by ${answer.factor}`;
    summary.classList.remove('error-text');
    summary.textContent = `${n} of ${total} channels of ${answer.layer} ${what}: top-1 was “${b.label}” ${formatPercent(b.probability)}, now “${a.label}” ${formatPercent(a.probability)}.`;
    const next = answer.layers[0];
    const last = answer.layers[answer.layers.length - 1];
    explain([
      ['This experiment', summary.textContent],
      ['Channels', `Each channel of ${answer.layer} is the map of one learned filter. Editing ${n} of them changes everything computed after ${answer.layer}; the layers before it are not recomputed (the answer reused them: recomputed from the ${answer.recomputed_from}).`],
      ['Relative L2', next ? `How much a later layer's output moved, ‖edited − original‖ / ‖original‖: ${next.name} right after by ${next.relative_l2.toPrecision(3)}, the output layer ${last.name} by ${last.relative_l2.toPrecision(3)}.` : 'No layer runs after this one.'],
      ['Grad-CAM beside it', `Left: where ${model.title} looked for “${b.label}” on the original network; right: the same method on the edited network, for its new top class.`],
    ]);
  }

  return {
    update(ctx) {
      s.ctx = ctx;
      const q = current();
      renderControls(q);
      renderChips(q);
      if (!ctx.imageId) {
        before.empty('Pick or draw an image first.');
        return;
      }
      loadStats(q);
      loadAblation(q);
    },
    pick,
    /** The layer and the set of channels the URL edits (for marking them in a view). */
    edited() {
      const q = current();
      return { layer: q.layer, channels: editedChannels(q.channels, q.invert, q.count) };
    },
    unmount() {
      statsRequest.abort();
      ablationRequest.abort();
    },
  };
}
