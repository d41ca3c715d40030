// The colour legend of the open map: the server's colour-map stops as a bar, with the raw values that
// its ends stand for, and a marker at the value under the pointer.

import { el } from '../dom.js';
import { formatValue } from '../common/format.js';
import { legendTicks } from './saliency-math.js';

export function createLegend(parent) {
  const bar = el('canvas', { className: 'sal-legend-bar', width: 256, height: 14, attrs: { 'aria-hidden': 'true' } });
  const marker = el('span', { className: 'sal-legend-marker', attrs: { 'aria-hidden': 'true' } });
  const ticks = el('div', { className: 'sal-legend-ticks' });
  const caption = el('p', { className: 'sal-legend-caption' });
  const root = el('div', { className: 'sal-legend', attrs: { role: 'img' } }, [
    el('div', { className: 'sal-legend-track' }, [bar, marker]),
    ticks,
    caption,
  ]);
  parent.append(root);

  /** `stops` low → high colours; map value 0 stands for raw `low`, 1 for raw `high`. */
  function show({ stops, low, high, text }) {
    const g = bar.getContext('2d');
    const gradient = g.createLinearGradient(0, 0, bar.width, 0);
    stops.forEach((colour, i) => gradient.addColorStop(i / (stops.length - 1), colour));
    g.fillStyle = gradient;
    g.fillRect(0, 0, bar.width, bar.height);
    const values = legendTicks(low, high);
    ticks.replaceChildren(...values.map((v) => el('span', { className: 'sal-legend-tick', text: formatValue(v, 3) })));
    caption.textContent = text;
    root.dataset.low = String(low);
    root.dataset.high = String(high);
    root.setAttribute('aria-label', `Colour scale from ${formatValue(low, 3)} to ${formatValue(high, 3)}. ${text}`);
    mark(null);
  }

  /** Put the marker at map value `v01` in [0, 1]; null hides it. */
  function mark(v01) {
    marker.hidden = v01 === null || v01 === undefined;
    if (!marker.hidden) marker.style.left = `${Math.min(1, Math.max(0, v01)) * 100}%`;
  }

  return { show, mark, root };
}
