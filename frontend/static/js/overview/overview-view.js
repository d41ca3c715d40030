// The Overview view: the model's top-5 predictions for the current image, and its architecture table.

import { el, isAbort } from '../dom.js';
import { createPredictionsChart } from '../common/predictions-chart.js';
import { createArchitectureTable } from './architecture-table.js';
import { createExplainPanel } from '../common/explanation-panel.js';

const TOP_K = 5;

let parts = null; // everything mount() made, so unmount() can undo it

/** @param {HTMLElement} container  @param {object} ctx  see views/registry.js */
export function mount(container, ctx) {
  const predictionsBody = el('div', { className: 'card-body' });
  const predictionsNote = el('p', { className: 'card-note' });
  const archBody = el('div', { className: 'card-body' });
  const archHead = el('div', { className: 'card-head' }, [el('h2', { id: 'arch-heading', text: 'Architecture' })]);
  const explain = createExplainPanel('overview', ['softmax', 'parameters', 'receptive-field']);
  explain.update({ model: ctx.model });
  container.append(
    explain.element,
    el('section', { className: 'card card-predictions', attrs: { 'aria-labelledby': 'pred-heading' } }, [
      el('div', { className: 'card-head' }, [el('h2', { id: 'pred-heading', text: 'Predictions' }), predictionsNote]),
      predictionsBody,
    ]),
    el('section', { className: 'card card-architecture', attrs: { 'aria-labelledby': 'arch-heading' } }, [
      archHead,
      archBody,
    ]),
  );
  parts = {
    ctx: null,
    chart: createPredictionsChart(predictionsBody),
    note: predictionsNote,
    table: createArchitectureTable(archBody, archHead, (showBlocks) => parts.ctx.state.set({ blocks: showBlocks ? '1' : null })),
    tableKey: null,
    predictionKey: null,
    abort: null,
  };
  update(ctx);
}

/** @param {object} ctx  see views/registry.js */
export function update(ctx) {
  if (!parts) return;
  parts.ctx = ctx;
  const showBlocks = ctx.state.get('blocks') === '1';
  const tableKey = `${ctx.model.id}|${showBlocks}`;
  if (tableKey !== parts.tableKey) {
    parts.tableKey = tableKey;
    parts.table.render(ctx.model, { showBlocks });
  }
  const predictionKey = `${ctx.model.id}|${ctx.weights}|${ctx.imageId}`;
  if (predictionKey !== parts.predictionKey) {
    parts.predictionKey = predictionKey;
    loadPredictions(ctx);
  }
}

async function loadPredictions(ctx) {
  const { model, imageId, weights, api } = ctx;
  if (parts.abort) parts.abort.abort();
  parts.abort = null;
  const untrained = weights === 'untrained';
  parts.note.textContent = `top ${Math.min(TOP_K, model.num_classes)} of ${model.num_classes} classes`;
  parts.note.classList.toggle('warn', untrained);
  if (untrained) parts.note.textContent += ' · untrained weights: these probabilities are not learned';
  if (!imageId) {
    parts.chart.empty(`Upload, draw or pick a sample image to see what ${model.title} predicts.`);
    return;
  }
  const abort = new AbortController();
  parts.abort = abort;
  parts.chart.loading();
  try {
    const answer = await api.predictions(model.id, imageId, weights, { topK: TOP_K, signal: abort.signal });
    if (parts && parts.abort === abort) parts.chart.show(answer.predictions, `${model.id}|${weights}|${imageId}`);
  } catch (err) {
    if (isAbort(err) || !parts || parts.abort !== abort) return;
    parts.chart.error(`Predictions could not be computed: ${err.message}`);
  } finally {
    if (parts && parts.abort === abort) parts.abort = null;
  }
}

export function unmount() {
  if (!parts) return;
  if (parts.abort) parts.abort.abort();
  parts.table.dispose();
  parts = null;
}
