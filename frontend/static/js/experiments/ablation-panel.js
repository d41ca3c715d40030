// Switch channels off: pick channels of a layer (click, shift-click, top k by mean activation, all but
// these, everything but the top k), edit them (zero, mean, scale) and see the new top-5 beside the old,
// the change per class, the new Grad-CAM beside the old, and how far each later layer moved.
// URL keys: layer, channels, invert, mode, factor, k.

import { el, isAbort } from '../dom.js';
import { createPredictionsChart } from '../common/predictions-chart.js';
import { formatPercent } from '../common/format.js';
import { createLayerChart, formatChange } from './layer-chart.js';
import { parseChannels, topChannels } from './selection.js';

export function create(host, explain) {
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
      el('label', {}, ['Layer ', layerSelect]), el('label', {}, ['Channels ', modeSelect]),
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
  const s = { ctx: null, key: null, statsKey: null, stats: null, abort: null, statsAbort: null, layers: [] };
  const set = (changes_, replace = false) => s.ctx.state.set(changes_, { replace });

  const current = () => {
    const st = s.ctx.state;
    return {
      layer: st.get('layer') && s.layers.some((l) => l.name === st.get('layer')) ? st.get('layer') : s.ctx.model.default_layer,
      channels: st.get('channels') || '0', invert: st.get('invert') === '1', mode: st.get('mode') || 'zero',
      factor: st.get('factor') || '0.5', k: Number(st.get('k') || 3),
    };
  };
  layerSelect.onchange = () => set({ layer: layerSelect.value, channels: '0', invert: null });
  modeSelect.onchange = () => set({ mode: modeSelect.value });
  factor.oninput = () => { factorText.textContent = factor.value; };
  factor.onchange = () => set({ factor: factor.value });
  kInput.onchange = () => set({ k: kInput.value }, true);
  invert.onchange = () => set({ invert: invert.checked ? '1' : null });
  topButton.onclick = () => s.stats && set({ channels: topChannels(s.stats.mean, current().k).join(','), invert: null });
  allButTop.onclick = () => s.stats && set({ channels: topChannels(s.stats.mean, current().k).join(','), invert: '1' });
  chips.onclick = (event) => {
    const chip = event.target.closest('[data-channel]');
    if (!chip) return;
    const c = Number(chip.dataset.channel);
    const picked = new Set(parseChannels(current().channels));
    if (event.shiftKey) { if (picked.has(c)) picked.delete(c); else picked.add(c); } else { picked.clear(); picked.add(c); }
    if (picked.size) set({ channels: [...picked].sort((a, b) => a - b).join(',') });
  };

  function renderControls(q) {
    layerSelect.replaceChildren(...s.layers.map((l) => el('option', { value: l.name, text: `${l.name} (${l.output_shape[0]} ch)` })));
    layerSelect.value = q.layer;
    modeSelect.value = q.mode;
    factor.value = q.factor; factorText.textContent = q.factor;
    factor.parentElement.hidden = q.mode !== 'scale';
    kInput.value = String(q.k);
    invert.checked = q.invert;
  }

  function renderChips(q) {
    const count = (s.layers.find((l) => l.name === q.layer) || { output_shape: [0] }).output_shape[0];
    const picked = new Set(parseChannels(q.channels));
    const means = s.stats ? s.stats.mean : null;
    const top = means ? Math.max(1e-12, ...means.map(Math.abs)) : 1;
    const shown = Math.min(count, 512);
    const nodes = [];
    for (let c = 0; c < shown; c += 1) {
      const edited = q.invert ? !picked.has(c) : picked.has(c);
      const chip = el('button', { type: 'button', className: edited ? 'xp-chip is-edited' : 'xp-chip', text: String(c),
        dataset: { channel: String(c) }, title: means ? `channel ${c}: mean activation ${means[c].toPrecision(3)}` : `channel ${c}` });
      if (means) chip.style.setProperty('--m', String(Math.abs(means[c]) / top));
      nodes.push(chip);
    }
    if (count > shown) nodes.push(el('span', { className: 'card-note', text: `… ${count - shown} more (type them in the URL or use top k)` }));
    chips.replaceChildren(...nodes);
  }

  async function loadStats(q) {
    const { model, imageId, weights, api } = s.ctx;
    const key = `${model.id}|${weights}|${imageId}|${q.layer}`;
    if (key === s.statsKey) return;
    s.statsKey = key; s.stats = null;
    if (s.statsAbort) s.statsAbort.abort();
    const abort = (s.statsAbort = new AbortController());
    try {
      s.stats = await api.getJson(api.urls.modelPath(model.id, `/images/${imageId}/layers/${encodeURIComponent(q.layer)}/stats.json`, { weights }), { signal: abort.signal });
      renderChips(current());
    } catch (err) {
      if (!isAbort(err)) s.stats = null;
    }
  }

  async function loadAblation(q) {
    const { model, imageId, weights, api } = s.ctx;
    const params = { layer: q.layer, channels: q.channels, mode: q.mode, weights };
    if (q.mode === 'scale') params.factor = q.factor;
    if (q.invert) params.invert = 'true';
    const key = JSON.stringify([model.id, imageId, params]);
    if (key === s.key) return;
    s.key = key;
    if (s.abort) s.abort.abort();
    const abort = (s.abort = new AbortController());
    before.loading(); after.loading();
    host.dataset.state = 'loading';
    try {
      const answer = await api.getJson(api.urls.modelPath(model.id, `/images/${imageId}/ablation.json`, params), { signal: abort.signal });
      if (abort !== s.abort) return;
      show(answer);
      host.dataset.state = 'ready';
      host.dataset.for = key;
    } catch (err) {
      if (isAbort(err) || abort !== s.abort) return;
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
    const total = (s.layers.find((l) => l.name === answer.layer) || { output_shape: [n] }).output_shape[0];
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
      s.layers = ctx.model.layers.filter((l) => l.output_shape && l.output_shape.length === 3);
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
    unmount() {
      if (s.abort) s.abort.abort();
      if (s.statsAbort) s.statsAbort.abort();
    },
  };
}
