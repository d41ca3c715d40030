// The open class in detail: its map over the input at a large size, the legend with the raw values that
// the colours stand for, the value under the pointer, and links to the PNG and the .npy data.

import { el, listen, disposer } from '../dom.js';
import { formatPercent, formatValue } from '../common/format.js';
import { createLegend } from './legend.js';
import { valueAt } from './saliency-math.js';

export function createFocus(parent) {
  const bag = disposer();
  const base = el('img', { className: 'sal-base', alt: 'What the model sees' });
  const heat = el('img', { className: 'sal-heat', alt: '' });
  const stack = el('div', { className: 'sal-stack sal-focus-stack' }, [base, heat]);
  // while there is no map: an empty frame saying so, never an <img> without a picture (a broken-image icon)
  const placeholder = el('div', { className: 'sal-focus-placeholder', attrs: { role: 'status' } });
  const title = el('h3', { className: 'sal-focus-title' });
  const facts = el('p', { className: 'sal-focus-facts' });
  const readout = el('p', { className: 'sal-readout', attrs: { 'aria-live': 'off' }, text: 'Point at the map to read its value.' });
  const note = el('p', { className: 'sal-note' });
  note.hidden = true;
  const links = el('p', { className: 'sal-links' });
  const legendHost = el('div');
  const legend = createLegend(legendHost);
  parent.append(el('div', { className: 'sal-focus' }, [
    stack, placeholder,
    el('div', { className: 'sal-focus-side' }, [title, facts, legendHost, readout, note, links]),
  ]));
  let current = null; // {info, values}

  bag.add(listen(stack, 'pointermove', (e) => {
    if (!current || !current.values) return;
    const box = stack.getBoundingClientRect();
    const { row, col, value } = valueAt(current.values.data, current.values.shape, e.clientX - box.left, e.clientY - box.top, box.width, box.height);
    const { low, high } = current.info;
    const raw = low + value * (high - low);
    readout.textContent = `(${row}, ${col}): ${formatValue(value, 3)} of the scale · ${current.rawLabel} ${formatValue(raw, 3)}`;
    legend.mark(value);
  }));
  bag.add(listen(stack, 'pointerleave', () => {
    readout.textContent = 'Point at the map to read its value.';
    legend.mark(null);
  }));

  /** info: a class item of saliency.json / topk.json; method: {title, display}; stops: colour map stops. */
  function show({ info, urls, method, layer, cmap, stops, opacity }) {
    const magnitude = method.display === 'magnitude';
    current = { info, values: null, rawLabel: magnitude ? '|attribution|' : 'map' };
    stack.hidden = false;
    placeholder.hidden = true;
    legend.root.hidden = false;
    readout.hidden = false;
    base.src = urls.input();
    heat.src = urls.png(info.index, cmap);
    heat.style.opacity = String(opacity);
    stack.dataset.target = String(info.index);
    delete stack.dataset.values;
    title.textContent = `${method.title} · ${info.label}`;
    facts.textContent = `class #${info.index} · p = ${formatPercent(info.probability, 1, { markTiny: true })} · logit ${formatValue(info.logit, 3)}`
      + (layer ? ` · layer ${layer}` : ' · input pixels');
    legend.show({
      stops, low: info.low, high: info.high,
      text: magnitude
        ? `|attribution| summed over input channels; the top end is its 99.5th percentile (brighter values are clipped).`
        : `ReLU of the signed map, placed on each pixel's receptive-field centre; colours run from its lowest to its highest value.`,
    });
    note.hidden = !info.empty;
    note.textContent = info.empty ? 'This map is zero everywhere: nothing at this layer speaks for this class.' : '';
    links.replaceChildren(
      el('a', { href: urls.overlay(info.index, cmap, opacity), text: 'PNG', attrs: { download: '' } }), ' · ',
      el('a', { href: urls.npy(info.index), text: 'map .npy', attrs: { download: '' } }), ' · ',
      el('a', { href: urls.raw(info.index), text: `signed raw map .npy (${info.raw_shape.join('×')})`, attrs: { download: '' } }),
    );
  }

  function setValues(values) {
    if (!current) return;
    current.values = values;
    stack.dataset.values = 'ready'; // hover values available (tests wait for this)
  }

  function setOpacity(opacity) {
    heat.style.opacity = String(opacity);
  }

  function clear(text) {
    current = null;
    title.textContent = text;
    facts.textContent = '';
    stack.hidden = true;
    placeholder.hidden = false;
    placeholder.textContent = text;
    legend.root.hidden = true; // an empty legend says nothing
    readout.hidden = true;
    base.removeAttribute('src');
    heat.removeAttribute('src');
    links.replaceChildren();
    note.hidden = true;
  }

  return { show, setValues, setOpacity, clear, dispose: () => bag.run() };
}
