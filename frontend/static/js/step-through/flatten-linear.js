// Before the softmax: flatten → linear. The last map is read into one vector, and the output layer gives
// each class a score (logit) = bias + Σ_i w_i · x_i. The terms come from …/layers/{layer}/dense.json (the
// largest |w_i · x_i| first), so the page adds up the server's own numbers to the logit the softmax uses.

import { el } from '../dom.js';
import { formatCell } from '../common/format.js';

/** The model's output layer (a linear layer with one unit per class) and what feeds it. */
export function outputChain(model) {
  const layers = model.layers.filter((l) => l.leaf);
  const outIndex = layers.map((l) => l.kind === 'linear' && Array.isArray(l.output_shape) && l.output_shape.length === 1
    && l.output_shape[0] === model.num_classes).lastIndexOf(true);
  if (outIndex < 0) return null;
  const lastMap = [...layers.slice(0, outIndex)].reverse().find((l) => Array.isArray(l.output_shape) && l.output_shape.length === 3);
  const hidden = layers.slice(0, outIndex).filter((l) => l.kind === 'linear' && (!lastMap || layers.indexOf(l) > layers.indexOf(lastMap)));
  return { output: layers[outIndex], lastMap, hidden };
}

/**
 * Render the flatten → linear part for class `target` into `host`.
 * @param {object} dense  the dense.json answer for (output layer, unit = target)
 * @param {object} cls    the softmax answer's row for the class {index, label, logit, probability}
 */
export function renderFlattenLinear(host, { model, chain, dense, cls }) {
  const parts = [el('h3', { className: 'step-through-softmax-title', text: 'Flatten → linear → softmax' })];
  if (chain.lastMap) {
    const [c, h, w] = chain.lastMap.output_shape;
    const n = c * h * w;
    const first = chain.hidden.length ? chain.hidden[0] : chain.output;
    parts.push(el('p', { className: 'flatten-step', text: `Flatten: ${chain.lastMap.name}'s ${c}×${h}×${w} maps are read channel by channel, row by row, into one vector of ${c}·${h}·${w} = ${n} numbers`
      + `${chain.hidden.length ? `, then ${chain.hidden.map((l) => `${l.name} (${l.output_shape[0]} units)`).join(', ')} mix them in dense layers` : ''}; `
      + `${chain.output.name} reads the last ${dense.in_features}.` }));
    if (first && first.kind === 'linear' && !chain.hidden.length && n !== dense.in_features) {
      parts.push(el('p', { className: 'hint', text: `(${n} ≠ ${dense.in_features}: a pooling or reshaping step sits between them.)` }));
    }
  }
  const rows = dense.contributions.map((t) => el('tr', {}, [
    el('td', { className: 'num', text: `x${sub(t.index)}` }),
    el('td', { className: 'num', text: formatCell(t.input, 4) }),
    el('td', { className: 'num', text: formatCell(t.weight, 4) }),
    el('td', { className: 'num', text: formatCell(t.product, 4) }),
  ]));
  if (dense.rest.count) {
    rows.push(el('tr', { className: 'rest' }, [el('td', { text: `${dense.rest.count} other inputs` }), el('td'), el('td'), el('td', { className: 'num', text: formatCell(dense.rest.sum, 4) })]));
  }
  rows.push(el('tr', { className: 'rest' }, [el('td', { text: '+ bias' }), el('td'), el('td'), el('td', { className: 'num', text: formatCell(dense.bias, 4) })]));
  rows.push(el('tr', { className: 'total' }, [el('td', { text: `= logit of “${cls.label}”` }), el('td'), el('td'),
    el('td', { className: 'num', text: formatCell(dense.output, 4) })]));
  parts.push(
    el('p', { className: 'step-through-formula', text: `Linear: z(${cls.label}) = bias + Σ_i w_i · x_i over ${dense.in_features} inputs; the ${dense.contributions.length} largest terms:` }),
    el('table', { className: 'linear-table', dataset: { target: String(cls.index), logit: String(dense.output) } }, [
      el('thead', {}, [el('tr', {}, ['input', 'x_i', 'weight w_i', 'w_i · x_i'].map((t) => el('th', { text: t })))]),
      el('tbody', {}, rows),
    ]),
    el('p', { className: 'hint', text: `Every class has its own ${dense.in_features} weights; the softmax below turns all ${model.num_classes} logits into probabilities. Click a class below to see its sum.` }),
  );
  host.replaceChildren(...parts);
}

const SUBS = '₀₁₂₃₄₅₆₇₈₉';
function sub(n) {
  return String(n).split('').map((d) => SUBS[Number(d)]).join('');
}

/**
 * The output step of the step-through: flatten → linear for one class, then the softmax table.
 * @returns {Promise<void>}
 */
export async function showOutput(host, { ctx, softmax, signal, target, renderSoftmax, onPick }) {
  host.replaceChildren(el('p', { className: 'hint', text: 'Computing the softmax…' }));
  const answer = await softmax(10);
  const linearHost = el('div', { className: 'flatten-linear' });
  const softmaxHost = el('div');
  host.replaceChildren(softmaxHost, linearHost); // the answer first, then how the winning score was summed
  renderSoftmax(softmaxHost, answer, ctx.model);
  for (const row of softmaxHost.querySelectorAll('tr.softmax-row')) {
    row.classList.toggle('is-selected', Number(row.dataset.index) === (target ?? answer.classes[0].index));
    const pick = () => onPick(Number(row.dataset.index));
    row.addEventListener('click', pick);
    row.addEventListener('keydown', (event) => { if (event.key === 'Enter') pick(); });
  }
  const chain = outputChain(ctx.model);
  if (!chain) {
    linearHost.replaceChildren(el('p', { className: 'hint', text: `${ctx.model.title}'s last layer is not one linear layer with a unit per class, so there is no single sum to show.` }));
    return;
  }
  const cls = answer.classes.find((c) => c.index === target) || answer.classes[0];
  const url = ctx.api.urls.modelPath(ctx.model.id, `/images/${encodeURIComponent(ctx.imageId)}/layers/${encodeURIComponent(chain.output.name)}/dense.json`,
    { unit: cls.index, top: 12, weights: ctx.weights });
  const dense = await ctx.api.getJson(url, { signal });
  renderFlattenLinear(linearHost, { model: ctx.model, chain, dense, cls });
}
