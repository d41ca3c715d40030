// All channels of a layer as a grid of tiles cut from the layer's atlas PNG, in the chosen order, at
// the chosen zoom. Reports the channel and cell under the pointer, and clicks. A vector (linear layer)
// has 1×1 "channels": it is drawn as one mosaic of cells instead of thousands of tiles.

import { el, listen, disposer } from '../dom.js';
import { formatShort } from '../common/format.js';
import { cellAt, tileRect } from './channel-math.js';

/**
 * @param {HTMLElement} parent
 * @param {{onHover: (hit: {channel:number,y:number,x:number}|null) => void, onSelect: (c:number, event: Event) => void}} opts
 */
export function createChannelGrid(parent, { onHover, onSelect }) {
  const grid = el('div', { className: 'channel-grid', attrs: { role: 'list', 'aria-label': 'Channels' } });
  parent.append(grid);
  const bag = disposer();
  let current = null; // {atlas, vector, order, mosaicCols}

  function hitFromEvent(event) {
    if (!current) return null;
    if (current.vector) {
      const row = event.target.closest('li.class-row');
      if (row) return { channel: Number(row.dataset.channel), y: 0, x: 0 };
      const canvas = event.target.closest('canvas.vector-mosaic');
      if (!canvas) return null;
      const rect = canvas.getBoundingClientRect();
      const cols = current.mosaicCols;
      const rows = Math.ceil(current.order.length / cols);
      const cell = cellAt(event.clientX - rect.left, event.clientY - rect.top, rect.width, rect.height, rows, cols);
      if (!cell) return null;
      const k = cell.y * cols + cell.x;
      return k < current.order.length ? { channel: current.order[k], y: 0, x: 0 } : null;
    }
    const canvas = event.target.closest('canvas.tile-canvas');
    if (!canvas) return null;
    const rect = canvas.getBoundingClientRect();
    const { height, width } = current.atlas.tile;
    const cell = cellAt(event.clientX - rect.left, event.clientY - rect.top, rect.width, rect.height, height, width);
    return cell ? { channel: Number(canvas.dataset.channel), ...cell } : null;
  }

  bag.add(listen(grid, 'pointermove', (event) => onHover(hitFromEvent(event))));
  bag.add(listen(grid, 'pointerleave', () => onHover(null)));
  bag.add(
    listen(grid, 'keydown', (event) => {
      const tile = event.target.closest('figure.tile');
      if (tile && (event.key === 'Enter' || event.key === ' ')) {
        event.preventDefault();
        onSelect(Number(tile.dataset.channel), event);
      }
    }),
  );
  bag.add(
    listen(grid, 'click', (event) => {
      const hit = hitFromEvent(event);
      if (hit) onSelect(hit.channel, event);
    }),
  );

  function renderTiles(atlas, picture, order, caption) {
    const tiles = order.map((c) => {
      const r = tileRect(c, atlas);
      const canvas = el('canvas', {
        className: 'tile-canvas',
        width: r.width,
        height: r.height,
        dataset: { channel: String(c) },
        attrs: { 'aria-label': `channel ${c}` },
      });
      const ctx = canvas.getContext('2d');
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(picture, r.x, r.y, r.width, r.height, 0, 0, r.width, r.height);
      return el('figure', { className: 'tile', tabIndex: 0, dataset: { channel: String(c) }, attrs: { role: 'listitem' } }, [
        canvas,
        el('figcaption', {}, [el('span', { className: 'tile-index', text: `#${c}` }), el('span', { className: 'tile-stat', text: caption(c) })]),
      ]);
    });
    grid.classList.remove('is-vector');
    grid.replaceChildren(...tiles);
  }

  function renderVector(atlas, picture, order) {
    // re-arrange the atlas's cells in display order on one canvas
    const source = el('canvas', { width: atlas.image.width, height: atlas.image.height });
    const sctx = source.getContext('2d');
    sctx.drawImage(picture, 0, 0);
    const pixels = sctx.getImageData(0, 0, source.width, source.height).data;
    const cols = Math.max(1, Math.ceil(Math.sqrt(order.length)));
    const rows = Math.ceil(order.length / cols);
    const mosaic = el('canvas', { className: 'vector-mosaic', width: cols, height: rows, attrs: { 'aria-label': `${order.length} features` } });
    const mctx = mosaic.getContext('2d');
    const out = mctx.createImageData(cols, rows);
    order.forEach((c, k) => {
      const src = ((Math.floor(c / atlas.grid.columns)) * source.width + (c % atlas.grid.columns)) * 4;
      out.data.set(pixels.subarray(src, src + 4), k * 4);
    });
    mctx.putImageData(out, 0, 0);
    current.mosaicCols = cols;
    grid.classList.add('is-vector');
    grid.replaceChildren(mosaic);
  }

  /** The output layer: one row per class, its name, its colour and its score (not an unlabelled mosaic). */
  function renderClasses(atlas, picture, order, stat, labels) {
    const source = el('canvas', { width: atlas.image.width, height: atlas.image.height });
    const sctx = source.getContext('2d');
    sctx.drawImage(picture, 0, 0);
    const pixels = sctx.getImageData(0, 0, source.width, source.height).data;
    const rows = order.map((c) => {
      const at = ((Math.floor(c / atlas.grid.columns)) * source.width + (c % atlas.grid.columns)) * 4;
      const [r, g, b] = pixels.subarray(at, at + 3);
      const swatch = el('span', { className: 'class-swatch' });
      swatch.style.background = `rgb(${r}, ${g}, ${b})`; // CSSOM, not a style attribute (the CSP forbids those)
      return el('li', { className: 'class-row', dataset: { channel: String(c) }, attrs: { title: `${labels[c]}: ${stat ? stat[c] : ''}` } }, [
        swatch,
        el('span', { className: 'class-name', text: labels[c] }),
        el('span', { className: 'class-value', text: stat ? formatShort(stat[c]) : '' }),
      ]);
    });
    grid.classList.add('is-vector');
    grid.replaceChildren(el('ol', { className: 'class-list', attrs: { 'aria-label': 'The score of every class' } }, rows));
  }

  /**
   * Show a layer. `atlas`: atlas.json; `picture`: the decoded atlas.png; `order`: channel order;
   * `stat`: per-channel values shown under each tile (or null); `labels`: class names when the layer
   * is the model's output (one value per class).
   */
  function show({ atlas, picture, order, stat, labels = null }) {
    const vector = atlas.tile.width === 1 && atlas.tile.height === 1;
    current = { atlas, vector, order, mosaicCols: 1 };
    grid.dataset.layer = atlas.layer;
    if (vector && labels && labels.length === order.length) renderClasses(atlas, picture, order, stat, labels);
    else if (vector) renderVector(atlas, picture, order);
    else renderTiles(atlas, picture, order, (c) => (stat ? formatShort(stat[c]) : ''));
  }

  /** Tile display size in CSS pixels. */
  function zoom(px) {
    grid.style.setProperty('--tile-size', `${px}px`);
  }

  function highlight(channel) {
    for (const tile of grid.querySelectorAll('figure.tile.is-selected')) tile.classList.remove('is-selected');
    const tile = grid.querySelector(`figure.tile[data-channel="${channel}"]`);
    if (tile) tile.classList.add('is-selected');
  }

  /** Mark the channels an experiment switches off (a Set; null: none). */
  function markEdited(channels) {
    for (const tile of grid.querySelectorAll('figure.tile')) tile.classList.toggle('is-ablated', Boolean(channels) && channels.has(Number(tile.dataset.channel)));
  }

  return { show, zoom, highlight, markEdited, root: grid, dispose: () => bag.run() };
}
