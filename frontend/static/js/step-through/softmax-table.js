// Softmax at the output as a lecture writes it: logits z, z − max, e^(z − max), ÷ Σ, probability.

import { el } from '../dom.js';
import { formatCell } from '../common/format.js';

/** Render the /softmax answer into `host`. */
export function renderSoftmax(host, answer, model) {
  const rows = answer.classes.map((c) => el('tr', { className: 'softmax-row', dataset: { index: String(c.index) }, tabIndex: 0, title: `How the logit of ${c.label} is made` }, [
    el('td', { text: c.label }),
    el('td', { className: 'num', text: formatCell(c.logit, 4) }),
    el('td', { className: 'num', text: formatCell(c.shifted, 4) }),
    el('td', { className: 'num', text: formatCell(c.exponential, 4) }),
    el('td', { className: 'num', text: `${formatCell(c.probability * 100, 2)} %` }),
    el('td', { className: 'bar-cell' }, [barOf(c.probability)]),
  ]));
  if (answer.rest) {
    rows.push(el('tr', { className: 'rest' }, [
      el('td', { text: `${answer.rest.classes} other classes` }),
      el('td', { className: 'num', text: '…' }),
      el('td', { className: 'num', text: '…' }),
      el('td', { className: 'num', text: formatCell(answer.rest.exponential_sum, 4) }),
      el('td', { className: 'num', text: `${formatCell(answer.rest.probability * 100, 2)} %` }),
      el('td', { className: 'bar-cell' }, [barOf(answer.rest.probability)]),
    ]));
  }
  const head = el('tr', {}, ['class', 'logit z', 'z − max z', 'e^(z − max z)', 'p = e^(…) ÷ Σ', ''].map((t) => el('th', { text: t })));
  const parts = [
    el('h3', { className: 'step-through-softmax-title', text: `Softmax over ${answer.num_classes} logits of ${model.title}` }),
    el('p', { className: 'step-through-formula', text: `p_i = e^(z_i − max z) / Σ_j e^(z_j − max z)   ·   max z = ${formatCell(answer.max_logit, 4)}   ·   Σ = ${formatCell(answer.sum_of_exponentials, 5)}` }),
    el('p', { className: 'hint', text: 'Subtracting the largest logit changes no probability (it cancels in the division) but keeps e^z from overflowing.' }),
    el('table', { className: 'step-through-softmax-table' }, [el('thead', {}, [head]), el('tbody', {}, rows)]),
  ];
  if (answer.weights_used === 'untrained') parts.push(el('p', { className: 'card-note warn', text: 'Untrained weights: these probabilities are not learned.' }));
  host.replaceChildren(...parts);
}

function barOf(p) {
  const bar = el('span', { className: 'step-through-bar' });
  bar.style.width = `${Math.max(0.5, p * 100)}%`;
  return bar;
}
