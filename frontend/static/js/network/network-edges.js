// Hover edges of the network overview: pointing at a cell of a unit draws, in an SVG laid over the
// columns, the box it reads in each shown unit of the previous column and a line from each box to it.

import { cellAt, readBox, readChannels } from './network-math.js';
import { formatShort } from '../common/format.js';

const SVG = 'http://www.w3.org/2000/svg';
const MAX_EDGES = 96;

function svgEl(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

/**
 * @param {HTMLElement} content  the positioned element holding the columns and the svg
 * @param {SVGElement} svg
 * @param {() => object[]} columns  [input pseudo-column, layer columns…] (see network-view.js)
 * @param {(text: string) => void} say  the readout line
 * @param {(layer: string, channel: number, y: number, x: number) => Promise<number>|null} valueAt  the
 *        exact value of a map cell (fetched once per channel), or null when there is none to fetch
 */
export function createEdges(content, svg, columns, say, valueAt = () => null) {
  let last = '';
  let lastCell = null;

  function local(rect, origin) {
    return { x: rect.left - origin.left, y: rect.top - origin.top, w: rect.width, h: rect.height };
  }

  function clear() {
    svg.replaceChildren();
    last = '';
  }

  function unitsOf(name) {
    return [...content.querySelectorAll(`.net-col[data-layer="${CSS.escape(name)}"] .net-tile, .net-col[data-layer="${CSS.escape(name)}"] .net-unit`)];
  }

  /** Draw the edges for the unit element under the pointer event. */
  function hover(event) {
    const unit = event.target.closest('.net-tile, .net-unit, .net-prob');
    if (!unit || !content.contains(unit)) {
      if (last) clear();
      return;
    }
    const cols = columns();
    const origin = content.getBoundingClientRect();
    const box = local(unit.getBoundingClientRect(), origin);
    const name = unit.dataset.layer;
    const k = name === '@softmax' ? cols.length : cols.findIndex((c) => c.name === name);
    if (k < 1) return;
    const column = cols[k] || { name: '@softmax', vector: true, shape: [0], kind: 'softmax', channels: 0 };
    const prev = cols[k - 1];
    const channel = Number(unit.dataset.channel);
    const h = Number(unit.dataset.h || 1);
    const w = Number(unit.dataset.w || 1);
    const spatial = unit.classList.contains('net-tile');
    const canvasBox = spatial ? local(unit.querySelector('canvas').getBoundingClientRect(), origin) : box;
    if (!canvasBox.w || !canvasBox.h) return; // hidden (the detail is open)
    // keyboard focus has no pointer: use the tile's centre cell
    const px = Number.isFinite(event.clientX) ? event.clientX - origin.left - canvasBox.x : canvasBox.w / 2;
    const py = Number.isFinite(event.clientY) ? event.clientY - origin.top - canvasBox.y : canvasBox.h / 2;
    const cell = spatial ? cellAt(px, py, canvasBox.w, canvasBox.h, h, w) : { y: 0, x: 0 };
    const key = `${name}|${channel}|${cell.y}|${cell.x}`;
    if (key === last) return;
    last = key;
    lastCell = { layer: name, channel, y: cell.y, x: cell.x };
    svg.replaceChildren();
    const target = spatial
      ? { x: canvasBox.x + (cell.x / w) * canvasBox.w, y: canvasBox.y + (cell.y / h) * canvasBox.h, w: canvasBox.w / w, h: canvasBox.h / h }
      : box;
    const read = readBox(column, prev, cell.y, cell.x);
    const which = column.name === '@softmax' ? { all: true } : readChannels(column, prev.channels, channel);
    const [, ph = 1, pw = 1] = prev.shape;
    const padOnly = read.bottom < read.top || read.right < read.left; // a zero-padding cell reads nothing
    let drawn = 0;
    let hidden = 0;
    const inputChannels = [...content.querySelectorAll('.net-input-channel')];
    let sources;
    if (prev.name !== '@input') sources = unitsOf(prev.name).map((node) => ({ node, channel: Number(node.dataset.channel) }));
    else if (inputChannels.length) sources = inputChannels.map((node) => ({ node, channel: Number(node.dataset.channel) }));
    else sources = [content.querySelector('.net-input-image')].filter(Boolean).map((node) => ({ node, channel: null }));
    const wanted = which.all ? null : new Set(which.channels);
    for (const { node, channel: c } of padOnly ? [] : sources) {
      if (wanted && c !== null && !wanted.has(c)) continue;
      if (drawn >= MAX_EDGES) { hidden += 1; continue; }
      const srcCanvas = node.querySelector('canvas') || node;
      const r = local(srcCanvas.getBoundingClientRect(), origin);
      const src = prev.vector || node.classList.contains('net-unit') ? r : {
        x: r.x + (read.left / pw) * r.w, y: r.y + (read.top / ph) * r.h,
        w: ((read.right - read.left + 1) / pw) * r.w, h: ((read.bottom - read.top + 1) / ph) * r.h,
      };
      if (!prev.vector && !node.classList.contains('net-unit')) svg.append(svgEl('rect', { x: src.x, y: src.y, width: src.w, height: src.h, class: 'net-edge-box' }));
      svg.append(svgEl('line', { x1: src.x + src.w, y1: src.y + src.h / 2, x2: target.x, y2: target.y + target.h / 2, class: 'net-edge' }));
      drawn += 1;
    }
    svg.append(svgEl('rect', { x: target.x, y: target.y, width: target.w, height: target.h, class: 'net-edge-target' }));
    const totalRead = which.all ? prev.channels : which.channels.length;
    const shownRead = Math.min(drawn, totalRead);
    const size = `${read.bottom - read.top + 1}×${read.right - read.left + 1}`;
    const where = spatial ? ` cell (y ${cell.y}, x ${cell.x})` : '';
    let what = column.name === '@softmax' ? `class ${unit.querySelector('.net-prob-label').textContent}`
      : `${column.name} ${column.vector ? 'unit' : 'channel'} ${channel}${where}`;
    const pending = spatial && !padOnly ? valueAt(name, channel, cell.y, cell.x) : null;
    if (pending) {
      // the exact value under the pointer: the tiles are pictures (and shrunk for large maps)
      pending.then((value) => {
        if (last !== key) return;
        what = `${what} = ${formatShort(value)}`;
        say(readSentence());
      }).catch(() => {});
    }
    const from = prev.name === '@input' ? 'the input image' : prev.name;
    if (padOnly) {
      say(`${what} is zero padding added around ${prev.name === '@input' ? 'the input image' : prev.name}: it reads nothing.`);
      return;
    }
    const region = prev.vector || column.vector ? 'every value' : `a ${size} window`;
    const noun = prev.vector ? 'unit' : 'channel';
    function readSentence() {
      return `${what} reads ${region} of ${totalRead} ${noun}${totalRead === 1 ? '' : 's'} of ${from}`
        + (totalRead > shownRead && prev.name !== '@input' ? ` (${shownRead} shown here)` : '') + '. Click to open it.';
    }
    say(readSentence());
  }

  return { hover, clear, lastCell: () => lastCell };
}
