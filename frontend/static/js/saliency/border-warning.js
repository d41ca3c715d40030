// The border warning of the Saliency view: when the open class's map peaks on the outermost cells of the
// layer's own grid, and that ring holds far more than its share of the positive evidence (the server's
// `border` check on each map), say so in words and offer the deeper layer in one click.

import { el, listen, disposer } from '../dom.js';
import { formatPercent } from '../common/format.js';

/** `parent` gets the notice; `onDeeper(layer)` switches the view to that layer. */
export function createBorderWarning(parent, { onDeeper }) {
  const bag = disposer();
  const text = el('p', { className: 'sal-border-text' });
  const button = el('button', { type: 'button', className: 'sal-border-deeper' });
  const box = el('div', { className: 'sal-border-warning', attrs: { role: 'status', 'aria-live': 'polite' } }, [text, button]);
  box.hidden = true;
  parent.append(box);
  bag.add(listen(button, 'click', () => onDeeper(button.dataset.layer)));

  /** `border`: the map's check (or null: no layer grid); `label`: the class the map is for. */
  function show(border, label) {
    if (!border || !border.warning) {
      box.hidden = true;
      return;
    }
    const [h, w] = border.grid;
    text.textContent = `The map of “${label}” peaks on the border of ${border.layer}'s ${h}×${w} grid: the outer ring `
      + `of cells holds ${formatPercent(border.ring_share, 0)} of the positive evidence but is only `
      + `${formatPercent(border.area_share, 0)} of the image. Peaks at the edge of a layer this early are often `
      + 'an effect of the zero padding around the image, not evidence on the object.';
    button.hidden = !border.deeper_layer;
    if (border.deeper_layer) {
      button.dataset.layer = border.deeper_layer;
      button.textContent = `Show it at ${border.deeper_layer}`;
    } else {
      text.textContent += ' This is already the deepest layer offered; compare another method.';
    }
    box.hidden = false;
  }

  return { show, hide: () => { box.hidden = true; }, dispose: () => bag.run() };
}
