// The header's model controls: the model <select> (grouped bundled / timm / torchvision / models file, each option saying
// what state its weights are in, and "Open a model…" for an .onnx/.keras file), the trained/untrained toggle,
// the UNTRAINED badge and the detail line.

import { el, listen, disposer } from '../dom.js';

const FAMILY_TITLES = {
  bundled: 'Bundled (offline)',
  timm: 'timm (ImageNet)',
  torchvision: 'torchvision (ImageNet)',
  file: 'Your models (models file)',
  upload: 'Opened here (.onnx, .keras)',
};
const OPEN_MODEL = '__open-model__'; // the option that opens a model file instead of picking a model

/** What an option says about the model's weights, in a few words. */
export function weightsLabel(weights) {
  switch (weights.state) {
    case 'bundled':
      return 'trained';
    case 'cached':
      return 'trained (cached)';
    case 'local':
      return 'trained (your weights)';
    case 'downloadable':
      return 'untrained until downloaded';
    case 'untrained':
      return 'untrained';
    case 'unavailable':
      return 'unavailable — hover for why';
    default:
      return weights.state;
  }
}

/** Trained weights can be loaded for this model right now. */
export const hasTrainedWeights = (summary) => ['bundled', 'cached', 'local'].includes(summary.weights.state);

function weightsSentence(model) {
  if (model.weights_used !== 'untrained') return `weights: ${model.weights.detail}`;
  if (hasTrainedWeights(model)) return 'running with untrained (random) weights; switch to Trained for the learned ones';
  return `running with untrained (random) weights: ${model.weights.detail}`;
}

/**
 * @param {object} opts
 * @param {(id: string) => void} opts.onModel  the user picked another model
 * @param {(w: 'trained'|'untrained') => void} opts.onWeights  the user flipped the toggle
 * @param {() => void} [opts.onOpen]  the user chose "Open a model…"
 */
export function createModelPicker({ onModel, onWeights, onOpen = null }) {
  const select = document.getElementById('model-select');
  const toggle = document.getElementById('weights-toggle');
  const badge = document.getElementById('untrained-badge');
  const detail = document.getElementById('model-detail');
  const bag = disposer();
  let shownId = null; // the model on show: the select goes back to it after "Open a model…"

  bag.add(
    listen(select, 'change', () => {
      if (select.value !== OPEN_MODEL) {
        onModel(select.value);
        return;
      }
      if (shownId !== null) select.value = shownId;
      if (onOpen) onOpen();
    }),
  );
  bag.add(
    listen(toggle, 'click', (event) => {
      const button = event.target.closest('button[data-weights]');
      if (button && button.getAttribute('aria-checked') !== 'true') onWeights(button.dataset.weights);
    }),
  );

  /** Fill the <select> from GET /api/models. */
  function setModels(models) {
    const groups = new Map();
    for (const m of models) {
      if (!groups.has(m.family)) groups.set(m.family, []);
      groups.get(m.family).push(m);
    }
    const children = [];
    for (const [family, members] of groups) {
      children.push(
        el(
          'optgroup',
          { label: FAMILY_TITLES[family] || family },
          members.map((m) =>
            el('option', {
              value: m.id,
              text: `${m.title} · ${weightsLabel(m.weights)}`,
              title: m.weights.detail,
              dataset: { weightsState: m.weights.state },
            }),
          ),
        ),
      );
    }
    if (onOpen) children.push(el('option', { value: OPEN_MODEL, text: 'Open a model… (.onnx, .keras)' }));
    select.replaceChildren(...children);
    select.disabled = models.length === 0;
  }

  /** Show the loaded model (GET /api/models/{id} JSON). */
  function render(model) {
    shownId = model.id;
    if (select.value !== model.id) select.value = model.id;
    const untrained = model.weights_used === 'untrained';
    badge.hidden = !untrained;
    toggle.hidden = !hasTrainedWeights(model);
    for (const button of toggle.querySelectorAll('button')) {
      button.setAttribute('aria-checked', String(button.dataset.weights === model.weights_used));
    }
    const input = model.input;
    const parts = [
      el('strong', { text: model.title }),
      ` · ${model.dataset} · input ${input.channels}×${input.height}×${input.width} · ${model.num_classes} classes · `,
      el('span', { className: untrained ? 'detail-warn' : '', text: weightsSentence(model) }),
    ];
    if (model.description) parts.push(el('span', { className: 'detail-description', text: ` — ${model.description}` }));
    detail.replaceChildren(...parts);
    detail.title = detail.textContent; // the line is cut to one row; the whole of it on hover
  }

  return { setModels, render, dispose: bag.run };
}
