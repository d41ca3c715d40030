// Where the image inputs are, said in words that stay true: "(left)" while the sidebar is shown, and how to
// bring it back while it is hidden (S, or projector mode). Both are in the page; CSS shows the one that
// holds (html.is-sidebar-hidden, set by common/presenter.js), so toggling the inputs needs no re-render.

import { el } from '../dom.js';

/**
 * A phrase naming the inputs' place, e.g. inputsPlace(' (left)', ' (press S to show the inputs)').
 * @param {string} shown   said while the inputs are shown
 * @param {string} hidden  said while they are hidden
 */
export function inputsPlace(shown, hidden) {
  return el('span', { className: 'inputs-place' }, [
    el('span', { className: 'when-inputs-shown', text: shown }),
    el('span', { className: 'when-inputs-hidden', text: hidden }),
  ]);
}

/** A message as nodes: `before`, the inputs' place, `after`. */
export function messageWithPlace(before, shown, hidden, after) {
  return [before, inputsPlace(shown, hidden), after];
}
