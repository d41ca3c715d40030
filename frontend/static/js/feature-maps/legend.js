// A colour legend with numbers: the colour map's stops as a bar, value ticks under it, and a marker
// for the value under the pointer. Stops come from the server (the same table that coloured the pixels).

import { el } from '../dom.js';
import { formatValue } from '../common/format.js';
import { legendPosition, legendTicks } from './channel-math.js';

/** @param {HTMLElement} parent */
export function createLegend(parent, { label = 'Colour scale' } = {}) {
  const bar = el('canvas', { className: 'legend-bar', width: 256, height: 12, attrs: { 'aria-hidden': 'true' } });
  const marker = el('span', { className: 'legend-marker', attrs: { 'aria-hidden': 'true' } });
  const ticks = el('div', { className: 'legend-ticks' });
  const caption = el('span', { className: 'legend-caption', text: label });
  const root = el('div', { className: 'legend', attrs: { role: 'img', 'aria-label': label } }, [
    caption,
    el('div', { className: 'legend-track' }, [bar, marker]),
    ticks,
  ]);
  parent.append(root);
  let range = null;

  /** Show `stops` (hex colours, low → high) for values `low`..`high`. */
  function show({ stops, low, high, note = '' }) {
    range = { low, high };
    const ctx = bar.getContext('2d');
    const gradient = ctx.createLinearGradient(0, 0, bar.width, 0);
    stops.forEach((colour, i) => gradient.addColorStop(i / (stops.length - 1), colour));
    ctx.fillStyle = gradient;
    ctx.fillRect(0, 0, bar.width, bar.height);
    ticks.replaceChildren(
      ...legendTicks(low, high).map((v) => {
        const tick = el('span', { className: 'legend-tick', text: formatValue(v) });
        tick.style.left = `${legendPosition(v, low, high) * 100}%`;
        return tick;
      }),
    );
    root.dataset.low = String(low);
    root.dataset.high = String(high);
    caption.textContent = note ? `${label} · ${note}` : label;
    root.setAttribute('aria-label', `${label}: from ${formatValue(low)} to ${formatValue(high)}`);
    mark(null);
  }

  /** Move the marker to `value` (null hides it). */
  function mark(value) {
    if (value === null || value === undefined || !range) {
      marker.hidden = true;
      return;
    }
    marker.hidden = false;
    marker.style.left = `${legendPosition(value, range.low, range.high) * 100}%`;
  }

  return { show, mark, root };
}
