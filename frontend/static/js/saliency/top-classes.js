// The top-k classes side by side: each the class's map over the model's input, its label and probability.
// Clicking one opens it in the focus panel. Images are stacked (input below, colour map above) so that the
// opacity slider is a style change, not a new request.

import { el, listen, disposer } from '../dom.js';
import { formatPercent } from '../common/format.js';

export function createTopClasses(parent, { onSelect }) {
  const bag = disposer();
  const list = el('ol', { className: 'sal-top', attrs: { 'aria-label': 'Top classes and their maps' } });
  const status = el('p', { className: 'sal-status placeholder' });
  const progress = el('progress', { className: 'sal-progress', max: 1, value: 0 });
  progress.hidden = true;
  parent.append(status, progress, list);
  let heatImages = [];

  bag.add(listen(list, 'click', (e) => {
    const card = e.target.closest('button[data-index]');
    if (card) onSelect(Number(card.dataset.index));
  }));

  /** `classes`: the topk.json items; `urls`: saliencyUrls(...); `selected`: the open class index. */
  function show({ classes, urls, cmap, opacity, selected }) {
    status.hidden = true;
    progress.hidden = true;
    heatImages = [];
    list.replaceChildren(
      ...classes.map((item, rank) => {
        const heat = el('img', { className: 'sal-heat', alt: '', src: urls.png(item.index, cmap) });
        heat.style.opacity = String(opacity);
        heatImages.push(heat);
        const bar = el('span', { className: 'sal-prob-fill' });
        bar.style.width = `${Math.max(0, Math.min(1, item.probability)) * 100}%`;
        return el('li', {}, [
          el('button', {
            type: 'button', className: 'sal-card', dataset: { index: String(item.index) },
            attrs: { 'aria-pressed': String(item.index === selected), 'aria-label': `${item.label}, ${formatPercent(item.probability, 1, { markTiny: true })}` },
          }, [
            el('span', { className: 'sal-stack' }, [el('img', { className: 'sal-base', alt: '', src: urls.input() }), heat]),
            el('span', { className: 'sal-card-label' }, [el('span', { className: 'sal-rank', text: `${rank + 1}` }), item.label]),
            el('span', { className: 'sal-prob' }, [el('span', { className: 'sal-prob-track' }, [bar]), formatPercent(item.probability, 1, { markTiny: true })]),
            item.empty ? el('span', { className: 'sal-card-note', text: 'no positive evidence' }) : null,
          ]),
        ]);
      }),
    );
  }

  function mark(selected) {
    for (const b of list.querySelectorAll('button[data-index]')) {
      b.setAttribute('aria-pressed', String(Number(b.dataset.index) === selected));
    }
  }

  function setOpacity(opacity) {
    for (const img of heatImages) img.style.opacity = String(opacity);
  }

  function message(text, { busy = false } = {}) {
    status.hidden = false;
    status.textContent = text;
    list.classList.toggle('is-loading', busy);
    if (!busy) {
      list.replaceChildren();
      progress.hidden = true;
    }
  }

  function setProgress({ done, total }) {
    progress.hidden = !(total > 0);
    progress.max = Math.max(1, total);
    progress.value = done;
    status.textContent = `${status.textContent.replace(/ — \d+ of \d+$/, '')} — ${done} of ${total}`;
  }

  return {
    show, mark, setOpacity, message, setProgress,
    loaded: () => list.classList.remove('is-loading'),
    dispose: () => bag.run(),
  };
}
