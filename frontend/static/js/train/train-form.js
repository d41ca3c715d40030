// The course's knobs for a new run. Values start from the chosen architecture's bundled recipe (the server
// lists the recipes); the server checks every knob and names the one that is out of range. The architecture
// and data menus are what the server can train here (its `choices`: models-file models that fit, named image
// folders), the built-in lists until it has answered.

import { el } from '../dom.js';

const SELECTS = {
  architecture: [['lenet5', 'LeNet-5'], ['mnist-shallow', 'MNIST shallow'], ['mnist-deep', 'MNIST deep'], ['tinyvgg-shapes', 'TinyVGG']],
  dataset: [['mnist', 'MNIST'], ['fashion-mnist', 'Fashion-MNIST'], ['shapes', 'Shapes']],
  optimizer: [['sgd', 'SGD'], ['momentum', 'SGD + momentum'], ['adam', 'Adam'], ['adamw', 'AdamW']],
  schedule: [['constant', 'constant'], ['step', 'step decay'], ['cosine', 'cosine'], ['onecycle', 'one-cycle']],
  init: [['random', 'random weights'], ['current', 'its trained weights']],
};
const NUMBERS = [
  ['epochs', 'Epochs', 1, 50, 1], ['batch_size', 'Batch size', 1, 512, 1], ['lr', 'Learning rate', 0.000001, 1, 'any'],
  ['weight_decay', 'Weight decay', 0, 0.1, 'any'], ['dropout', 'Dropout p', 0, 0.9, 0.05],
  ['train_size', 'Training images', 10, 60000, 1], ['seed', 'Seed', 0, 2147483647, 1],
];
const LABELS = { architecture: 'Architecture', dataset: 'Data', optimizer: 'Optimiser', schedule: 'LR schedule', init: 'Start from' };

/**
 * @param {(body: object) => void} onStart
 * @returns {{element, setRecipes(recipes), setChoices(choices), setBusy(bool)}}
 */
export function createTrainForm(onStart) {
  const fields = {};
  const rows = [];
  for (const [name, options] of Object.entries(SELECTS)) {
    fields[name] = el('select', { name }, options.map(([value, text]) => el('option', { value, text })));
    rows.push(el('label', { className: 'train-field' }, [LABELS[name], fields[name]]));
  }
  for (const [name, label, min, max, step] of NUMBERS) {
    fields[name] = el('input', { type: 'number', name, min: String(min), max: String(max), step: String(step) });
    rows.push(el('label', { className: 'train-field' }, [label, fields[name]]));
  }
  for (const [name, label] of [['batch_norm', 'Batch norm'], ['augment', 'Augmentation']]) {
    fields[name] = el('input', { type: 'checkbox', name });
    rows.push(el('label', { className: 'train-field train-check' }, [fields[name], label]));
  }
  const start = el('button', { type: 'submit', className: 'button button-accent train-start', text: 'Start training' });
  const form = el('form', { className: 'train-form', attrs: { 'aria-label': 'New training run' } }, [...rows, start]);
  let recipes = {};

  function fill(architecture) {
    const recipe = recipes[architecture];
    if (!recipe) return;
    for (const name of ['dataset', 'optimizer', 'schedule', 'init', 'epochs', 'batch_size', 'lr', 'weight_decay', 'dropout', 'seed']) {
      fields[name].value = String(recipe[name]);
    }
    fields.train_size.value = recipe.train_size ? String(recipe.train_size) : '';
    fields.train_size.placeholder = 'all';
    fields.batch_norm.checked = recipe.batch_norm;
    fields.augment.checked = recipe.augment.length > 0;
  }

  fields.architecture.addEventListener('change', () => fill(fields.architecture.value));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const body = { architecture: fields.architecture.value, dataset: fields.dataset.value, optimizer: fields.optimizer.value, init: fields.init.value,
      schedule: fields.schedule.value, batch_norm: fields.batch_norm.checked, augment: fields.augment.checked };
    for (const [name] of NUMBERS) {
      if (fields[name].value !== '') body[name] = Number(fields[name].value);
    }
    onStart(body);
  });
  return {
    element: form,
    setRecipes(next) {
      const first = Object.keys(recipes).length === 0;
      recipes = next;
      if (first) fill(fields.architecture.value);
    },
    /** The menus from the server's `choices` ({architectures: [{id, title, family}], datasets: [{id, title}]}). */
    setChoices(choices) {
      if (!choices) return;
      const refill = (select, options) => {
        const keep = select.value;
        select.replaceChildren(...options.map(([value, text]) => el('option', { value, text })));
        if (options.some(([value]) => value === keep)) select.value = keep;
      };
      refill(fields.architecture, choices.architectures.map((a) => [a.id, a.family === 'file' ? `${a.title} (models file)` : a.title]));
      refill(fields.dataset, choices.datasets.map((d) => [d.id, d.id.startsWith('folder:') ? `${d.title} (image folder)` : d.title]));
    },
    setBusy(busy) {
      start.disabled = busy;
    },
  };
}
