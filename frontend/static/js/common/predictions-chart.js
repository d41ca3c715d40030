// Top-k predictions as a horizontal bar chart: label, bar, percentage. Each row carries the exact
// probability in data-probability (the text is rounded to 0.1 %).

import { el } from '../dom.js';
import { formatPercent } from './format.js';

export function createPredictionsChart(container) {
  const root = el('div', { className: 'predictions', attrs: { 'aria-live': 'polite' } });
  container.append(root);

  function message(text, className = 'placeholder') {
    root.classList.remove('is-stale');
    root.dataset.for = '';
    root.replaceChildren(el('p', { className, text }));
  }

  return {
    /** Nothing to predict on yet. */
    empty(text) {
      message(text);
    },

    /** A request is on its way: dim the bars already shown rather than blanking them (no flicker). */
    loading() {
      root.dataset.for = '';
      if (root.querySelector('.bar-row')) root.classList.add('is-stale');
      else message('Running the model…');
    },

    error(text) {
      message(text, 'error-text');
      root.firstChild.setAttribute('role', 'alert');
    },

    /**
     * @param {{index:number,label:string,probability:number}[]} predictions  sorted, best first
     * @param {string} key  what they are for ("model|weights|image"), kept in data-for for tests and tools
     */
    show(predictions, key = '') {
      root.classList.remove('is-stale');
      root.dataset.for = key;
      const rows = predictions.map((p, rank) => {
        const fill = el('span', { className: 'bar-fill' });
        // CSSOM custom property (allowed by the CSP, unlike style="" attributes)
        fill.style.setProperty('--p', String(Math.max(0, Math.min(1, p.probability))));
        return el(
          'li',
          {
            className: rank === 0 ? 'bar-row is-top' : 'bar-row',
            dataset: { index: String(p.index), probability: String(p.probability) },
            title: `class ${p.index}: p = ${p.probability}`,
          },
          [
            el('span', { className: 'bar-label', text: p.label }),
            el('span', { className: 'bar-track' }, [fill]),
            el('span', { className: 'bar-value', text: formatPercent(p.probability) }),
          ],
        );
      });
      root.replaceChildren(el('ol', { className: 'bars' }, rows));
    },
  };
}
