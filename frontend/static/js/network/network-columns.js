// The network's columns as DOM: the input picture, one column per layer (tiles drawn from network.png,
// or unit rows for vector layers), the class probabilities. "+N more" grows a column from the layer's
// own atlas (maps) or activations (vectors), a page at a time, in the order of the channels' maxima.

import { el } from '../dom.js';
import { formatPercent, formatShort } from '../common/format.js';
import { parseNpy } from '../common/npy.js';
import { colourAt } from './network-math.js';

export const TILE = 40; // CSS px of one channel tile
export const GAP = 4;
const PAGE = 24; // channels added per "+N more" click

function tile(column, channel, draw, title) {
  const [, h, w] = column.shape;
  const canvas = el('canvas', { width: 1, height: 1, attrs: { 'aria-hidden': 'true' } });
  draw(canvas);
  return el('button', {
    type: 'button', className: 'net-tile', title,
    dataset: { layer: column.name, channel: String(channel), h: String(h), w: String(w) },
    attrs: { 'aria-label': `${column.name} channel ${channel}: open its detail` },
  }, [canvas, el('span', { className: 'net-tile-label', text: String(channel) })]);
}

function drawFrom(image, [x, y, w, h]) {
  return (canvas) => {
    canvas.width = w;
    canvas.height = h;
    canvas.getContext('2d').drawImage(image, x, y, w, h, 0, 0, w, h);
  };
}

function unitRow(column, channel, value) {
  const swatch = el('span', { className: 'net-swatch' });
  swatch.style.background = colourAt(column.stops, column.range, value);
  return el('button', {
    type: 'button', className: 'net-unit', title: `${column.name} unit ${channel} = ${value}`,
    dataset: { layer: column.name, channel: String(channel), h: '1', w: '1' },
    attrs: { 'aria-label': `${column.name} unit ${channel}, value ${formatShort(value)}: open its detail` },
  }, [swatch, el('span', { className: 'net-unit-index', text: `#${channel}` }), el('span', { className: 'net-unit-value', text: formatShort(value) })]);
}

function scale(column) {
  const bar = el('canvas', { className: 'net-scale-bar', width: 64, height: 6, attrs: { 'aria-hidden': 'true' } });
  const g = bar.getContext('2d');
  const gradient = g.createLinearGradient(0, 0, 64, 0);
  column.stops.forEach((c, i) => gradient.addColorStop(i / (column.stops.length - 1), c));
  g.fillStyle = gradient;
  g.fillRect(0, 0, 64, 6);
  const [lo, hi] = column.range;
  return el('span', { className: 'net-scale', title: `colour scale of ${column.name}: ${lo} to ${hi}` }, [
    el('span', { text: formatShort(lo) }), bar, el('span', { text: formatShort(hi) })]);
}

function header(column) {
  const name = el('span', { className: 'net-col-name', text: column.name, title: `${column.name} · ${column.type}` });
  const what = column.leaf ? column.type : `${column.type} (block)`;
  return el('div', { className: `net-col-head kind-${column.kind}` }, [
    name, el('span', { className: 'net-col-type', text: what, title: what }),
    el('span', { className: 'net-col-shape', text: column.shape.join('×') }), scale(column),
  ]);
}

/**
 * Build one layer column. `ctx` = {image (network.png), rows, fetchAtlas(name), fetchVector(name), onGrow()}.
 * Returns the column element.
 */
export function buildColumn(column, ctx) {
  const grid = el('div', { className: column.vector ? 'net-units' : 'net-tiles' });
  // balanced sub-columns: 8 tiles with room for 7 rows make two columns of 4, not 7 + 1
  const count = column.shown.length;
  const rows = Math.max(1, Math.ceil(count / Math.ceil(count / ctx.rows)));
  grid.style.gridTemplateRows = `repeat(${rows}, ${TILE}px)`;
  for (const unit of column.shown) {
    grid.append(column.vector ? unitRow(column, unit.channel, unit.value)
      : tile(column, unit.channel, drawFrom(ctx.image, unit.tile), `${column.name} · channel ${unit.channel} · max ${formatShort(unit.max)} · mean ${formatShort(unit.mean)}`));
  }
  let shown = column.shown.length;
  const more = el('button', { type: 'button', className: 'button button-small net-more', hidden: column.more <= 0 });
  const status = el('span', { className: 'net-more-status', attrs: { role: 'status' } });
  const label = () => { more.textContent = `+${column.channels - shown} more`; more.hidden = shown >= column.channels; };
  label();
  more.title = `Show the next ${PAGE} channels by their largest value`;
  more.addEventListener('click', async () => {
    more.disabled = true;
    status.textContent = 'loading…';
    try {
      const next = column.order.slice(shown, shown + PAGE);
      if (column.vector) {
        const values = await ctx.fetchVector(column.name);
        for (const c of next) grid.append(unitRow(column, c, values[c]));
      } else {
        const { atlas, image } = await ctx.fetchAtlas(column.name);
        const { columns } = atlas.grid;
        const { width: tw, height: th } = atlas.tile;
        for (const c of next) {
          const rect = [(c % columns) * tw, Math.floor(c / columns) * th, tw, th];
          grid.append(tile(column, c, drawFrom(image, rect), `${column.name} · channel ${c}`));
        }
      }
      shown += next.length;
      status.textContent = '';
      ctx.onGrow();
    } catch (err) {
      status.textContent = `could not load: ${err.message}`;
    } finally {
      more.disabled = false;
      label();
    }
  });
  const node = el('div', { className: 'net-col', dataset: { layer: column.name } }, [header(column), grid, el('div', { className: 'net-more-row' }, [more, status])]);
  return node;
}

const TINTS = [[255, 60, 60], [40, 200, 40], [60, 90, 255]];

/** One input channel as a small tinted map (its own min → black, max → full colour). */
function inputChannel(npy, c) {
  const [, h, w] = npy.shape;
  const canvas = el('canvas', { width: w, height: h, attrs: { 'aria-hidden': 'true' } });
  const values = npy.data.subarray(c * h * w, (c + 1) * h * w);
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) { if (v < lo) lo = v; if (v > hi) hi = v; }
  const g = canvas.getContext('2d');
  const image = g.createImageData(w, h);
  const span = hi > lo ? hi - lo : 1;
  for (let i = 0; i < values.length; i += 1) {
    const t = (values[i] - lo) / span;
    for (let k = 0; k < 3; k += 1) image.data[4 * i + k] = Math.round(TINTS[c][k] * t);
    image.data[4 * i + 3] = 255;
  }
  g.putImageData(image, 0, 0);
  const name = 'RGB'[c];
  return el('span', { className: 'net-input-channel', dataset: { channel: String(c) }, title: `input channel ${c} (${name}) as the model sees it: ${lo.toPrecision(3)} to ${hi.toPrecision(3)} after normalisation` },
    [canvas, el('span', { className: 'net-tile-label', text: name })]);
}

/** The input column: the picture the model sees and, for colour models, its three channels. */
export function buildInput(model, src, npy) {
  const img = el('img', { className: 'net-input-image pixelated', src, alt: 'The image as the model sees it' });
  const channels = npy && npy.shape[0] === 3
    ? el('div', { className: 'net-input-channels' }, [0, 1, 2].map((c) => inputChannel(npy, c))) : null;
  return el('div', { className: 'net-col net-col-input', dataset: { layer: '@input' } }, [
    el('div', { className: 'net-col-head kind-input' }, [el('span', { className: 'net-col-name', text: 'input' }),
      el('span', { className: 'net-col-type', text: `${model.input.channels === 1 ? 'grey' : 'RGB'}` }),
      el('span', { className: 'net-col-shape', text: `${model.input.channels}×${model.input.height}×${model.input.width}` })]),
    img, channels,
  ]);
}

export function buildOutput(predictions, untrained) {
  const rows = predictions.map((p) => {
    const bar = el('span', { className: 'net-prob-bar' });
    bar.style.width = `${Math.max(1, p.probability * 100)}%`;
    return el('button', {
      type: 'button', className: 'net-prob', dataset: { layer: '@softmax', channel: String(p.index) },
      title: `${p.label}: ${formatPercent(p.probability, 2)} — open the softmax`,
    }, [el('span', { className: 'net-prob-label', text: p.label }), el('span', { className: 'net-prob-track' }, [bar]),
      el('span', { className: 'net-prob-value', text: formatPercent(p.probability) })]);
  });
  return el('div', { className: 'net-col net-col-output', dataset: { layer: '@softmax' } }, [
    el('div', { className: 'net-col-head kind-output' }, [el('span', { className: 'net-col-name', text: 'softmax' }),
      el('span', { className: 'net-col-type', text: untrained ? 'untrained: not learned' : 'probabilities' })]),
    el('div', { className: 'net-probs' }, rows),
  ]);
}

/** Parse a vector layer's activations.npy response body. */
export function vectorFrom(buffer) {
  return parseNpy(buffer).data;
}
