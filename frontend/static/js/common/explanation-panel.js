// Explanations on the page: a "?" button beside a control that shows a short text on hover and on
// keyboard focus, and a collapsible "What am I looking at?" panel per view. Texts: explanations.js.

import { el } from '../dom.js';
import { CONCEPTS, VIEWS, conceptText } from './explanations.js';

let counter = 0;

/** A "?" with a tooltip for concept `id`; `.update({model, layer})` refills the numbers. */
export function explainButton(id, facts = {}) {
  counter += 1;
  const tipId = `explain-tip-${counter}`;
  const concept = CONCEPTS[id] || { title: id };
  const tip = el('span', { className: 'explain-tip', id: tipId, attrs: { role: 'tooltip' } });
  const button = el('button', { type: 'button', className: 'explain-q', text: '?',
    attrs: { 'aria-label': `What is “${concept.title}”?`, 'aria-describedby': tipId }, dataset: { concept: id } });
  const wrap = el('span', { className: 'explain' }, [button, tip]);
  wrap.update = (next) => {
    tip.textContent = conceptText(id, next);
  };
  wrap.update(facts);
  return wrap;
}

/**
 * A collapsible panel: the view's explanation, then each concept with its current text.
 * @param {string} viewId  a key of VIEWS
 * @param {string[]} concepts  concept ids listed in the panel
 */
export function createExplainPanel(viewId, concepts) {
  const list = el('dl', { className: 'explain-list' });
  const details = el('details', { className: 'explain-panel', dataset: { view: viewId } }, [
    el('summary', { text: 'What am I looking at?' }),
    el('p', { className: 'explain-view', text: VIEWS[viewId] || '' }),
    list,
  ]);
  function update(facts = {}, extra = []) {
    const items = concepts.map((id) => [CONCEPTS[id].title, conceptText(id, facts), id]);
    list.replaceChildren(...[...items, ...extra.map(([title, text]) => [title, text, ''])].flatMap(([title, text, id]) => [
      el('dt', { text: title, dataset: { concept: id } }), el('dd', { text, dataset: { concept: id } }),
    ]));
  }
  update();
  return { element: details, update };
}
