// The step-through side by side in the comparison: one output cell of the matched layer in each pane, with
// every number behind it (a convolution's per-channel window · kernel sums, bias and activation; a pooling
// window; an activation's formula), from the step-through's own trace endpoint. The cell is the URL key
// compare_cell = "channel,y,x" of the left pane's layer; the right pane takes the cell at the same fraction
// of its own output (the same cell when the shapes match) and says so. A link opens the full step-through.

import { el } from '../dom.js';
import { formatValue } from '../common/format.js';

/** The cell of a layer of `shape` (C×H×W) at the same place as (c, y, x) of a layer of `from`. */
export function matchedCell(cell, from, shape) {
  const scale = (v, a, b) => Math.min(b - 1, Math.floor(((v + 0.5) * b) / a));
  return { c: Math.min(shape[0] - 1, cell.c), y: scale(cell.y, from[1], shape[1]), x: scale(cell.x, from[2], shape[2]) };
}

/** compare_cell from the URL, inside `shape` (the middle of channel 0 by default). */
export function readCell(text, shape) {
  const parts = String(text || '').split(',').map(Number);
  const ok = parts.length === 3 && parts.every((p) => Number.isInteger(p) && p >= 0);
  const [c, y, x] = ok ? parts : [0, Math.floor(shape[1] / 2), Math.floor(shape[2] / 2)];
  return { c: Math.min(c, shape[0] - 1), y: Math.min(y, shape[1] - 1), x: Math.min(x, shape[2] - 1) };
}

function describe(trace) {
  const v = (n) => formatValue(n, 4);
  if (trace.kind === 'conv') {
    const parts = trace.channels.map((ch) => `input channel ${ch.index}: ${v(ch.sum)}`);
    if (trace.rest) parts.push(`the other ${trace.rest.channels}: ${v(trace.rest.sum)}`);
    const after = (trace.after || []).map((a) => ` → ${a.formula || a.type} = ${v(a.output)}`).join('');
    return [`Σ window · kernel per input channel (${trace.channels.length + (trace.rest ? trace.rest.channels : 0)} of them, ${trace.cells.length} cells each):`,
      parts.join(' + '), `sum ${v(trace.sum_of_channels)} + bias ${v(trace.bias)} = ${v(trace.total)}${after}`];
  }
  if (trace.kind === 'pool') {
    const what = trace.op === 'max' ? 'max' : `sum / ${trace.divisor}`;
    return [`${trace.type}: ${what} of ${trace.inputs.length} cells`, trace.inputs.map(v).join(', '), `= ${v(trace.result)}`];
  }
  return [`${trace.type}: ${trace.formula}`, `x = ${v(trace.input)}`, `= ${v(trace.output)}`];
}

/** One pane's step-through box. @param {HTMLElement} host */
export function createStepBox(host) {
  const title = el('h4', { className: 'xp-step-title' });
  const lines = el('div', { className: 'xp-step-lines' });
  const link = el('a', { className: 'xp-step-link', text: 'Step through it' });
  host.append(el('div', { className: 'xp-step' }, [title, lines, link]));
  return {
    /** @param {{url: string, link: string, layer: string, cell: {c,y,x}, note?: string}} at */
    async show(api, at, signal) {
      title.textContent = `${at.layer}, channel ${at.cell.c} at (y ${at.cell.y}, x ${at.cell.x})${at.note ? ` ${at.note}` : ''}`;
      link.href = at.link;
      lines.replaceChildren(el('p', { className: 'placeholder', text: 'Tracing…' }));
      const trace = await api.getJson(at.url, { signal });
      lines.replaceChildren(...describe(trace).map((text) => el('p', { text })));
      lines.dataset.value = String(trace.kind === 'conv' ? trace.total : trace.kind === 'pool' ? trace.result : trace.output);
      return trace;
    },
    none(text) {
      title.textContent = '';
      link.removeAttribute('href');
      delete lines.dataset.value;
      lines.replaceChildren(el('p', { className: 'card-note', text }));
    },
  };
}
