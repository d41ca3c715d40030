// One unit of a linear (dense) layer: output = bias + Σ_i w_i · x_i, its largest terms as bars, the rest
// summed, and the check that the parts add up to the value PyTorch computed (dense.json).

import { el, isAbort } from '../dom.js';
import { formatShort } from '../common/format.js';

const TOP = 12;

/** Name input i of a linear layer: (c, y, x) when the flattened map before it is known. */
export function inputName(i, shape) {
  if (!shape || shape.length !== 3) return `x${i}`;
  const [, h, w] = shape;
  if (h * w === 1) return `channel ${i}`;
  return `c${Math.floor(i / (h * w))} (y ${Math.floor((i % (h * w)) / w)}, x ${i % w})`;
}

export function createDenseView(host) {
  const root = el('section', { className: 'card net-dense' });
  host.append(root);
  let abort = null;
  let key = null;

  async function show(ctx, { layer, channel, cols }) {
    const k = `${ctx.model.id}|${ctx.weights}|${ctx.imageId}|${layer.name}|${channel}`;
    if (k === key) return;
    key = k;
    if (abort) abort.abort();
    abort = new AbortController();
    root.replaceChildren(el('p', { className: 'hint', text: 'Multiplying weights by inputs…' }));
    const url = ctx.api.urls.modelPath(ctx.model.id, `/images/${encodeURIComponent(ctx.imageId)}/layers/${encodeURIComponent(layer.name)}/dense.json`,
      { unit: channel, top: TOP, weights: ctx.weights });
    try {
      const answer = await ctx.api.getJson(url, { signal: abort.signal });
      if (k !== key) return;
      render(answer, flattenedShape(ctx.model, layer));
    } catch (err) {
      if (!isAbort(err) && k === key) root.replaceChildren(el('p', { className: 'error-text', text: err.message }));
    }
  }

  function render(a, shape) {
    const biggest = Math.max(...a.contributions.map((c) => Math.abs(c.product)), 1e-12);
    const rows = a.contributions.map((c) => {
      const bar = el('span', { className: `net-dense-bar ${c.product < 0 ? 'neg' : 'pos'}` });
      bar.style.width = `${(Math.abs(c.product) / biggest) * 50}%`;
      return el('tr', {}, [
        el('td', { text: inputName(c.index, shape) }),
        el('td', { className: 'num', text: formatShort(c.weight) }),
        el('td', { className: 'num', text: formatShort(c.input) }),
        el('td', { className: 'num', text: formatShort(c.product) }),
        el('td', { className: 'net-dense-bar-cell' }, [bar]),
      ]);
    });
    rows.push(el('tr', { className: 'rest' }, [
      el('td', { text: `${a.rest.count} other inputs` }), el('td', { text: '' }), el('td', { text: '' }),
      el('td', { className: 'num', text: formatShort(a.rest.sum) }),
      el('td', { className: 'hint', text: `+${formatShort(a.rest.positive)} / ${formatShort(a.rest.negative)}` }),
    ]));
    rows.push(el('tr', { className: 'rest' }, [el('td', { text: 'bias b' }), el('td'), el('td'), el('td', { className: 'num', text: formatShort(a.bias) }), el('td')]));
    const head = el('tr', {}, ['input i', 'weight w_i', 'input x_i', 'w_i · x_i', ''].map((t) => el('th', { text: t })));
    root.replaceChildren(
      el('h3', { text: `Unit ${a.unit} of ${a.layer}: a weighted sum of all ${a.in_features} inputs` }),
      el('p', { className: 'net-formula', text: `y = b + Σ w_i · x_i = ${formatShort(a.bias)} + (${formatShort(a.sum_of_products)}) = ${formatShort(a.output)}` }),
      el('p', { className: 'hint', text: `The ${a.contributions.length} largest terms by size; positive terms push the unit up (total +${formatShort(a.positive_total)}), negative ones down (${formatShort(a.negative_total)}). Every one of the ${a.out_features} units of this layer has its own ${a.in_features} weights.` }),
      el('table', { className: 'net-dense-table' }, [el('thead', {}, [head]), el('tbody', {}, rows)]),
    );
    root.dataset.output = String(a.output);
    root.dataset.sum = String(a.bias + a.sum_of_products);
  }

  return {
    show,
    dispose() {
      if (abort) abort.abort();
      key = null;
    },
  };
}

/** The C×H×W map that was flattened into this linear layer's input, when the table shows one. */
function flattenedShape(model, layer) {
  const i = model.layers.findIndex((l) => l.name === layer.name);
  for (let j = i - 1; j >= 0; j -= 1) {
    const prev = model.layers[j];
    if (!prev.leaf || ['reshape', 'dropout'].includes(prev.kind)) continue;
    const shape = prev.output_shape || [];
    const size = shape.reduce((p, s) => p * s, 1);
    if (size !== layer.in_features) return null;
    return shape.length === 3 ? shape : null;
  }
  return null;
}
