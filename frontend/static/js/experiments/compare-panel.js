// Compare two networks on one image: two panes (this model and weights; compare_model and compare_weights),
// each with its predictions, Grad-CAM, the feature maps of one matched layer and the step-through of one of
// its cells, and the matched layers' cosine similarity. Layers are matched by name when the architectures
// are the same, else by depth. URL keys: compare_model, compare_weights, compare_layer, compare_cell.

import { el, isAbort } from '../dom.js';
import { createPredictionsChart } from '../common/predictions-chart.js';
import { createLatestRequest } from '../common/latest-request.js';
import { createStepBox, matchedCell, readCell } from './compare-step.js';
import { isTraceable } from '../common/traceable.js';

export function create(host, explain) {
  const modelSelect = el('select', { className: 'xp-compare-model', attrs: { 'aria-label': 'Second model' } });
  const weightsSelect = el('select', { className: 'xp-compare-weights', attrs: { 'aria-label': 'Second model weights' } },
    ['trained', 'untrained'].map((w) => el('option', { value: w, text: w })));
  const layerSelect = el('select', { className: 'xp-compare-layer', attrs: { 'aria-label': 'Matched layers shown' } });
  const status = el('p', { className: 'xp-compare-status', attrs: { 'aria-live': 'polite' } });
  const table = el('table', { className: 'xp-cosines' });
  const panes = [0, 1].map((i) => {
    const title = el('h3', { className: 'xp-pane-title' });
    const chartHost = el('div');
    const cam = el('img', { className: 'xp-cam', alt: `Grad-CAM, pane ${i + 1}` });
    const maps = el('img', { className: 'xp-atlas', alt: `Feature maps, pane ${i + 1}` });
    const mapsNote = el('p', { className: 'card-note' });
    const stepHost = el('div');
    const pane = el('div', { className: 'xp-pane xp-compare-pane', dataset: { pane: String(i) } }, [title, chartHost,
      el('div', { className: 'xp-pair' }, [el('figure', {}, [cam, el('figcaption', { text: 'Grad-CAM' })]),
        el('figure', {}, [maps, mapsNote])]), stepHost]);
    return { pane, title, chart: createPredictionsChart(chartHost), cam, maps, mapsNote, step: createStepBox(stepHost), request: createLatestRequest() };
  });
  const cellInputs = ['channel', 'y', 'x'].map((name) => el('input', { type: 'number', min: '0', className: `xp-cell-${name}`, attrs: { 'aria-label': `Step-through cell ${name}` } }));
  host.append(
    el('div', { className: 'xp-controls' }, [el('label', {}, ['Compare with ', modelSelect]), el('label', {}, ['weights ', weightsSelect]),
      el('label', {}, ['Layers shown ', layerSelect]),
      el('span', { className: 'xp-cell' }, ['Cell: channel ', cellInputs[0], ' y ', cellInputs[1], ' x ', cellInputs[2]])]),
    status,
    el('div', { className: 'xp-grid xp-compare' }, [panes[0].pane, panes[1].pane, el('div', { className: 'xp-pane' }, [el('h3', { text: 'Cosine similarity per matched layer' }), table])]),
  );
  const s = { ctx: null, models: null, rows: [] };
  const request = createLatestRequest();
  const set = (changes, replace = false) => s.ctx.state.set(changes, { replace });
  const other = () => {
    const st = s.ctx.state;
    return { model: st.get('compare_model') || s.ctx.model.id,
      weights: st.get('compare_weights') || (s.ctx.weights === 'untrained' ? 'trained' : 'untrained') };
  };
  modelSelect.onchange = () => set({ compare_model: modelSelect.value, compare_layer: null });
  weightsSelect.onchange = () => set({ compare_weights: weightsSelect.value });
  layerSelect.onchange = () => set({ compare_layer: layerSelect.value, compare_cell: null });
  cellInputs.forEach((input) => { input.onchange = () => set({ compare_cell: cellInputs.map((c) => Math.max(0, Math.round(Number(c.value)) || 0)).join(',') }); });

  async function loadModels() {
    if (s.models) return;
    s.models = (await s.ctx.api.models()).models.filter((m) => m.weights.state !== 'unavailable');
  }

  function fillPane(p, modelId, weights, layer) {
    const { imageId, api } = s.ctx;
    p.title.textContent = `${modelId} · ${weights}`;
    p.chart.loading();
    api.predictions(modelId, imageId, weights, { topK: 5 }).then((a) => p.chart.show(a.predictions, `${modelId}|${weights}`))
      .catch((err) => { if (!isAbort(err)) p.chart.error(err.message); });
    p.cam.src = api.urls.modelPath(modelId, `/images/${imageId}/saliency.png`, { method: 'gradcam', weights, opacity: 0.5 });
    if (layer) {
      p.maps.src = api.urls.modelPath(modelId, `/images/${imageId}/layers/${encodeURIComponent(layer)}/atlas.png`, { weights });
      p.mapsNote.textContent = `feature maps of ${layer}`;
    }
  }

  async function load() {
    const { model, imageId, weights, api } = s.ctx;
    const o = other();
    const key = JSON.stringify([model.id, weights, imageId, o]);
    if (!request.isCurrent(key)) {
      host.dataset.state = 'loading';
      status.textContent = 'Comparing…';
      try {
        const got = await request.run(key, (signal) => api.getJson(api.urls.modelPath(model.id, `/images/${imageId}/compare.json`, { weights, with_model: o.model, with_weights: o.weights }), { signal }));
        if (!got) return;
        s.rows = got.value.layers;
        s.answer = got.value;
        host.dataset.state = 'ready';
        host.dataset.for = key;
      } catch (err) {
        s.rows = [];
        s.answer = null;
        host.dataset.state = 'error';
        status.textContent = err.message;
        status.classList.add('error-text');
        table.replaceChildren();
      }
    }
    render();
  }

  function render() {
    const { model, weights } = s.ctx;
    const o = other();
    const rows = s.rows;
    const wanted = s.ctx.state.get('compare_layer');
    const row = rows.find((r) => r.name === wanted) || rows[Math.floor(rows.length / 2)];
    layerSelect.replaceChildren(...rows.map((r) => el('option', { value: r.name, text: r.name === r.with_name ? r.name : `${r.name} ↔ ${r.with_name}` })));
    if (row) layerSelect.value = row.name;
    fillPane(panes[0], model.id, weights, row && row.name);
    fillPane(panes[1], o.model, o.weights, row && row.with_name);
    showSteps(row, o);
    if (!s.answer) return;
    status.classList.remove('error-text');
    status.textContent = s.answer.matched_by === 'name'
      ? `Same architecture: layers matched by name. Showing ${row ? row.name : ''} in both panes.`
      : `Different architectures: layers matched by their fraction of depth. Showing ${row ? `${row.name} (left) with ${row.with_name} (right)` : ''}.`;
    table.replaceChildren(el('tr', {}, ['layer', 'matched with', 'cosine'].map((t) => el('th', { text: t }))),
      ...rows.map((r) => el('tr', { dataset: { layer: r.name, cosine: String(r.cosine) }, className: row && r.name === row.name ? 'is-current' : '' }, [
        el('td', { text: r.name }), el('td', { text: r.with_name }),
        el('td', { text: r.cosine === null ? `— (${r.shape.join('×')} vs ${r.with_shape.join('×')})` : r.cosine.toFixed(3) })])));
    const known = rows.filter((r) => r.cosine !== null);
    const low = known.reduce((m, r) => (m === null || r.cosine < m.cosine ? r : m), null);
    explain([
      ['This experiment', `Left: ${model.id} (${weights}); right: ${o.model} (${o.weights}), on the same image.`],
      ['Cosine similarity', low ? `For each matched layer, the cosine of the angle between the two outputs flattened: 1 = the same direction, 0 = unrelated. Lowest here: ${low.name} at ${low.cosine.toFixed(3)}; ${known.length} of ${rows.length} pairs have the same shape.`
        : 'No matched pair has outputs of the same shape, so no cosine can be computed.'],
      ['Step-through', 'Under each pane: one output cell of the shown layer computed as the step-through computes it (for a convolution the window × kernel sum per input channel, the bias and the activation after it). The right pane takes the cell at the same place of its own output; “Step through it” opens the whole animation.'],
      ['Matching', s.answer.matched_by === 'name' ? 'Both networks have the same layers, so each layer is compared with its namesake.'
        : `The networks differ, so layer i of ${rows.length} is matched with the layer at the same fraction of the other network's depth.`],
    ]);
  }

  /** The step-through of the chosen cell in both panes (the right one's at the same place of its layer). */
  function showSteps(row, o) {
    const { model, weights, imageId, api } = s.ctx;
    const layerOf = (m, name) => m && m.layers.find((l) => l.name === name);
    const traceable = [isTraceable(layerOf(model, row && row.name)), isTraceable(layerOf(s.otherModel, row && row.with_name))];
    if (!row || !traceable[0] || !traceable[1]) {
      const why = !row ? '' : `The step-through covers single convolution, pooling and activation layers; ${
        traceable[0] ? `${row.with_name} of ${o.model}` : row.name} is none (pick another matched layer above).`;
      panes.forEach((p) => { p.request.abort(); p.step.none(why); });
      return;
    }
    const cell = readCell(s.ctx.state.get('compare_cell'), row.shape);
    cellInputs.forEach((input, i) => { input.value = String([cell.c, cell.y, cell.x][i]); input.max = String(row.shape[i] - 1); });
    const other = matchedCell(cell, row.shape, row.with_shape);
    const same = other.c === cell.c && other.y === cell.y && other.x === cell.x;
    const sides = [[panes[0], model.id, weights, row.name, cell, ''], [panes[1], o.model, o.weights, row.with_name, other, same ? '' : '(the same place in its output)']];
    for (const [pane, id, w, layer, c, note] of sides) {
      const url = api.urls.modelPath(id, `/images/${imageId}/layers/${encodeURIComponent(layer)}/trace`, { weights: w, channel: c.c, y: c.y, x: c.x, top: 3 });
      const page = new URLSearchParams(window.location.search);
      Object.entries({ model: id, weights: w, view: 'step-through', layer, channel: c.c, pos: `${c.y},${c.x}` }).forEach(([k, v]) => page.set(k, String(v)));
      pane.request.run(url, (signal) => pane.step.show(api, { url, link: `?${page.toString()}`, layer, cell: c, note }, signal))
        .catch((err) => pane.step.none(err.message));
    }
  }

  return {
    update(ctx) {
      s.ctx = ctx;
      const o = other();
      if (!ctx.imageId) { panes[0].chart.empty('Pick or draw an image first.'); return; }
      loadModels().then(async () => {
        const otherKey = `${o.model}|${o.weights}`;
        if (s.otherKey !== otherKey) {
          s.otherModel = await ctx.api.model(o.model, o.weights);
          s.otherKey = otherKey;
        }
        modelSelect.replaceChildren(...s.models.map((m) => el('option', { value: m.id, text: m.title })));
        modelSelect.value = o.model;
        weightsSelect.value = o.weights;
        load();
      }).catch((err) => { status.textContent = err.message; });
    },
    unmount() {
      request.abort();
      panes.forEach((p) => p.request.abort());
    },
  };
}
