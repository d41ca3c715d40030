// How far each layer's output moved (relative L2), as a bar per layer over depth. The value is printed
// beside each bar; bars share one scale (the largest value), stated in the caption.

import { el } from '../dom.js';

/** @param {HTMLElement} host  @returns {{show(rows: {name:string, relative_l2:number}[], caption:string): void}} */
export function createLayerChart(host) {
  const root = el('figure', { className: 'xp-layer-chart' });
  host.append(root);
  return {
    show(rows, caption) {
      const top = Math.max(1e-12, ...rows.map((r) => r.relative_l2));
      const items = rows.map((row) => {
        const fill = el('span', { className: 'xp-lbar-fill' });
        fill.style.setProperty('--p', String(row.relative_l2 / top));
        return el('li', { className: 'xp-lbar', dataset: { layer: row.name, value: String(row.relative_l2) } }, [
          el('span', { className: 'xp-lbar-name', text: row.name }),
          el('span', { className: 'xp-lbar-track' }, [fill]),
          el('span', { className: 'xp-lbar-value', text: row.relative_l2.toPrecision(3) }),
        ]);
      });
      root.replaceChildren(
        el('figcaption', { text: `${caption} (bar length: share of the largest, ${top.toPrecision(3)})` }),
        rows.length ? el('ol', { className: 'xp-lbars' }, items) : el('p', { className: 'placeholder', text: 'No later layer.' }),
      );
    },
  };
}

/** A probability as a signed change in percentage points, e.g. "−12.3 pp". */
export function formatChange(delta) {
  const pp = delta * 100;
  const sign = pp > 0.05 ? '+' : pp < -0.05 ? '−' : '±';
  return `${sign}${Math.abs(pp).toFixed(1)} pp`;
}
