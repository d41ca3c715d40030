// The architecture strip: every layer a box (type, output shape, its strongest channels as thumbnails),
// in forward order, scrolling sideways; a click opens the layer. Thumbnails come from one PNG
// (overview.png, a row per layer) cut up on canvases, so the whole model costs two requests.

import { el, listen, disposer } from '../dom.js';
import { formatShape } from '../common/format.js';

const HIDDEN_KINDS = new Set(['dropout', 'reshape']); // copies of their input: nothing new to see

/**
 * The layers the strip shows, in forward order: a container (a residual block, a stage) comes after
 * the layers inside it, where its output appears.
 */
export function stripLayers(model) {
  const shown = model.layers.filter((layer) => Array.isArray(layer.output_shape) && !HIDDEN_KINDS.has(layer.kind));
  const out = [];
  const open = []; // containers waiting for their last descendant
  const inside = (child, parent) => child.name.startsWith(`${parent.name}.`);
  for (const layer of shown) {
    while (open.length && !inside(layer, open[open.length - 1])) out.push(open.pop());
    if (layer.leaf) out.push(layer);
    else open.push(layer);
  }
  while (open.length) out.push(open.pop());
  return out;
}

/**
 * @param {HTMLElement} parent
 * @param {{onSelect: (layer: string) => void}} opts
 */
export function createArchStrip(parent, { onSelect }) {
  const list = el('ol', { className: 'arch-strip', attrs: { 'aria-label': 'Layers in forward order' } });
  const scroller = el('div', { className: 'arch-strip-scroll' }, [list]);
  parent.append(scroller);
  const bag = disposer();
  const boxes = new Map(); // layer name → {item, canvas}
  let selected = null;

  bag.add(
    listen(list, 'click', (event) => {
      const button = event.target.closest('button[data-layer]');
      if (button) onSelect(button.dataset.layer);
    }),
  );

  /** Build one box per layer (no thumbnails yet). */
  function render(model) {
    boxes.clear();
    list.dataset.model = model.id;
    list.replaceChildren(
      ...stripLayers(model).map((layer) => {
        const canvas = el('canvas', { className: 'strip-thumbs', width: 96, height: 32, attrs: { 'aria-hidden': 'true' } });
        const button = el(
          'button',
          {
            type: 'button',
            className: `strip-box kind-${layer.kind}${layer.leaf ? '' : ' is-block'}`,
            dataset: { layer: layer.name, kind: layer.kind },
            title: `${layer.name} (${layer.type}) → ${formatShape(layer.output_shape)}`,
          },
          [
            el('span', { className: 'strip-type', text: layer.type }),
            el('span', { className: 'strip-name', text: layer.name }),
            el('span', { className: 'strip-shape', text: formatShape(layer.output_shape) }),
            canvas,
          ],
        );
        const item = el('li', {}, [button]);
        boxes.set(layer.name, { item, button, canvas });
        return item;
      }),
    );
    if (selected) select(selected);
  }

  /** Draw each layer's thumbnails from the overview strip picture. */
  function thumbnails(overview, picture) {
    const size = overview.thumb_size;
    for (const layer of overview.layers) {
      const box = boxes.get(layer.name);
      if (!box) continue;
      const ctx = box.canvas.getContext('2d');
      ctx.imageSmoothingEnabled = false;
      ctx.clearRect(0, 0, box.canvas.width, box.canvas.height);
      if (layer.row === null) {
        box.canvas.classList.add('is-vector');
        continue;
      }
      const per = overview.thumbs_per_layer;
      ctx.drawImage(picture, 0, layer.row * size, per * size, size, 0, 0, box.canvas.width, box.canvas.height);
      box.button.dataset.top = layer.top_channels.join(',');
    }
    list.classList.add('has-thumbs');
  }

  function select(name) {
    selected = name;
    for (const [layerName, box] of boxes) {
      const on = layerName === name;
      box.button.classList.toggle('is-selected', on);
      box.button.setAttribute('aria-pressed', String(on));
    }
    const box = boxes.get(name);
    if (box && scroller.clientWidth > 0) {
      const itemRect = box.item.getBoundingClientRect();
      const listRect = list.getBoundingClientRect();
      const left = itemRect.left - listRect.left - scroller.clientWidth / 2 + itemRect.width / 2;
      scroller.scrollTo({ left: Math.max(0, left), behavior: 'auto' });
    }
  }

  return {
    render,
    thumbnails,
    select,
    dispose: () => bag.run(),
  };
}
