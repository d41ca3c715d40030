// "What does this channel look for?": a link from any view that shows one channel (Layers, Step-through)
// to the Network view's unit detail for the same layer and channel, where the channel panel shows the
// dataset images that excite it most and its feature visualisation. A real link (its href is the URL
// state it opens), so it can be opened in a new tab or shared; a plain click changes the state in place.

import { el, listen } from '../dom.js';

/**
 * @param {() => ({state: object, layer: string, channel: number}|null)} target  what to open, or null
 * @returns {{element: HTMLAnchorElement, update: () => void, dispose: () => void}}
 */
export function createLookForLink(target) {
  const element = el('a', { className: 'look-for-link', hidden: true, text: 'What does this channel look for?',
    title: 'The dataset images that excite this channel most, and an image optimised to excite it (Network view)' });
  const changes = (t) => ({ view: 'network', open: 'unit', layer: t.layer, channel: String(t.channel), pos: null });

  function update() {
    const t = target();
    element.hidden = !t;
    if (!t) return;
    const query = new URLSearchParams(window.location.search);
    for (const [key, value] of Object.entries(changes(t))) {
      if (value === null) query.delete(key);
      else query.set(key, value);
    }
    element.href = `${window.location.pathname}?${query}`;
    Object.assign(element.dataset, { layer: t.layer, channel: String(t.channel) });
  }

  const off = listen(element, 'click', (event) => {
    if (event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return;
    const t = target();
    if (!t) return;
    event.preventDefault();
    t.state.set(changes(t));
  });
  return { element, update, dispose: off };
}
