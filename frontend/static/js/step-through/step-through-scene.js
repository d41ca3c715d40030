// One frame of the real-model step-through, drawn on a fixed 1200×520 canvas (so PNG/GIF/WebM exports
// look the same as the screen): the layer input with the window, the output being filled in, the
// receptive field on the picture, and the arithmetic of the current phase. Returns hit regions.

import { activationFunction } from '../common/activation-functions.js';
import { formatCell } from '../common/format.js';
import { drawActivationPlot } from '../common/activation-plot.js';
import { COLOURS, MONO, clear, drawLegend, drawMap, drawNumberGrid, drawTaps, label, makeScale, markCell, shadeBorder, textFloor } from '../common/canvas.js';

export const WIDTH = 1200;
export const HEIGHT = 520;
const RGB_NAMES = ['R', 'G', 'B'];
// Type sizes in canvas px. The canvas is drawn at 1200 px and shown at the width the page gives it
// (≈ 0.8–1.05× in projector mode at 1024–1280 px wide), so numbers start at 20 to stay ≥ 16 CSS px.
const NUM = 20;
const TEXT = 17;
const MAP = { x: 16, w: 160, inY: 88, outY: 318 };
const PANEL = { x: 206, y: 66, w: 980, h: 446 };

/** What a phase of a conv cell is: one input channel's products, the rest, the bias, the activation. */
export function convPhases(shownChannels, hasRest, afterCount) {
  const phases = [];
  for (let j = 0; j < shownChannels; j += 1) phases.push({ kind: 'channel', j });
  if (hasRest) phases.push({ kind: 'rest' });
  phases.push({ kind: 'bias' });
  if (afterCount) phases.push({ kind: 'after' });
  return phases;
}

export function channelName(index, inChannels) {
  return inChannels === 3 ? `${RGB_NAMES[index]} (channel ${index})` : `channel ${index}`;
}

/**
 * @param {CanvasRenderingContext2D} ctx
 * @param {object} s  scene: {title, subtitle, input {h, w, values, label} | null, output {h, w, values, label},
 *   pos {y, x}, revealed(r, c), taps [{iy, ix, pad}], pad {top,…}, trace | null, phase, phaseIndex, phaseCount,
 *   rf {image, box, imageHW} | null}
 */
export function drawScene(ctx, s) {
  clear(ctx, WIDTH, HEIGHT);
  label(ctx, s.title, 16, 30, { size: 22, weight: 700 });
  label(ctx, s.subtitle, 16, 56, { size: TEXT, weight: 400, colour: COLOURS.ink2 });
  const hits = { input: null, output: null, grids: [] };
  const mapBox = { w: MAP.w, h: MAP.w };
  const centre = MAP.x + MAP.w / 2;
  // input map with the window (left column, top)
  if (s.input) {
    const scale = makeScale(...s.input.range);
    hits.input = drawMap(ctx, { x: MAP.x, y: MAP.inY, ...mapBox }, {
      rows: s.input.h, cols: s.input.w, values: (r, c) => s.input.values[r * s.input.w + c], scale, pad: s.pad,
    });
    if (s.trace && s.trace.padded_by) shadeBorder(ctx, hits.input, s.trace.padded_by); // zeros a ZeroPad2d added
    drawTaps(ctx, hits.input, s.taps, { highlight: s.tapHighlight ?? -1 });
    drawLegend(ctx, scale, MAP.x, MAP.inY + MAP.w + 8, MAP.w, '', NUM);
    hits.input.values = s.input;
  } else {
    label(ctx, 'loading…', centre, MAP.inY + MAP.w / 2, { size: TEXT, weight: 400, colour: COLOURS.ink2, align: 'center' });
  }
  label(ctx, s.input ? s.input.label : 'layer input', centre, MAP.inY - 8, { size: TEXT, align: 'center', maxWidth: MAP.w + 24 });
  // output map, filled in up to the current cell (left column, bottom)
  if (s.output) {
    const scale = makeScale(...s.output.range);
    hits.output = drawMap(ctx, { x: MAP.x, y: MAP.outY, ...mapBox }, {
      rows: s.output.h, cols: s.output.w, values: (r, c) => s.output.values[r * s.output.w + c], scale, visible: s.revealed,
    });
    markCell(ctx, hits.output, s.pos.y, s.pos.x);
    drawLegend(ctx, scale, MAP.x, MAP.outY + MAP.w + 8, MAP.w, '', NUM);
    hits.output.values = s.output;
  }
  label(ctx, s.output ? s.output.label : 'layer output', centre, MAP.outY - 8, { size: TEXT, align: 'center', maxWidth: MAP.w + 24 });
  // the arithmetic
  ctx.save();
  ctx.fillStyle = '#f8fafc';
  ctx.fillRect(PANEL.x, PANEL.y, PANEL.w, PANEL.h);
  ctx.strokeStyle = COLOURS.line;
  ctx.strokeRect(PANEL.x, PANEL.y, PANEL.w, PANEL.h);
  ctx.restore();
  // the arithmetic keeps left of the receptive field's caption and picture (its highlight must not cover them)
  hits.mathRight = drawReceptiveField(ctx, s.rf, PANEL.x + PANEL.w - 12, PANEL.y + PANEL.h - 8) - 8;
  if (!s.trace) {
    label(ctx, 'computing this cell…', PANEL.x + PANEL.w / 2, 300, { size: TEXT, weight: 400, colour: COLOURS.ink2, align: 'center' });
  } else if (s.trace.kind === 'conv') {
    drawConvMath(ctx, s, hits);
  } else if (s.trace.kind === 'pool') {
    drawPoolMath(ctx, s, hits);
  } else {
    drawActivationMath(ctx, s);
  }
  return hits;
}

function drawReceptiveField(ctx, rf, right, bottom) {
  const size = 104;
  const x = right - size;
  const y = bottom - size;
  const box = rf && rf.box;
  // the caption sits left of the picture, at its bottom (above it, it ran into the Σ line of the grids)
  const lines = box
    ? ['receptive field', `${box.bottom - box.top + 1}×${box.right - box.left + 1} px${box.clipped ? ' (clipped)' : ''}`]
    : ['receptive field'];
  const step = Math.max(15, textFloor(ctx)) * 1.25;
  let left = x;
  lines.forEach((line, i) => {
    label(ctx, line, x - 10, bottom - 4 - (lines.length - 1 - i) * step, { size: 15, weight: 600, colour: COLOURS.ink2, align: 'right' });
    left = Math.min(left, x - 10 - ctx.measureText(line).width);
  });
  // where the caption is, for tests (nothing may be drawn over it)
  ctx.canvas.dataset.rfCaption = JSON.stringify([left, bottom - 4 - lines.length * step, x - 10 - left, lines.length * step + 4]);
  if (!rf || !rf.image || !rf.image.complete || !rf.image.naturalWidth) {
    ctx.strokeStyle = COLOURS.line;
    ctx.strokeRect(x, y, size, size);
    return left;
  }
  const [h, w] = rf.imageHW;
  const cell = Math.min(size / w, size / h);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(rf.image, x, y, w * cell, h * cell);
  ctx.strokeStyle = COLOURS.line;
  ctx.strokeRect(x, y, w * cell, h * cell);
  if (box) {
    ctx.save();
    ctx.fillStyle = 'rgba(15, 23, 42, 0.45)';
    ctx.beginPath();
    ctx.rect(x, y, w * cell, h * cell);
    ctx.rect(x + box.left * cell, y + box.top * cell, (box.right - box.left + 1) * cell, (box.bottom - box.top + 1) * cell);
    ctx.fill('evenodd');
    ctx.strokeStyle = COLOURS.window;
    ctx.lineWidth = 2;
    ctx.strokeRect(x + box.left * cell, y + box.top * cell, (box.right - box.left + 1) * cell, (box.bottom - box.top + 1) * cell);
    ctx.restore();
  }
  return left;
}

/** Cell size for three kh×kw grids side by side across the panel (left of nothing: full width). */
function gridCell(k, width) {
  return Math.max(12, Math.min(76, Math.floor(width / k)));
}

function drawConvMath(ctx, s, hits) {
  const t = s.trace;
  const [kh, kw] = t.geometry.kernel_shape;
  const phase = s.phase;
  const inC = t.input_shape[0];
  const shownIndex = phase.kind === 'channel' ? phase.j : t.channels.length - 1;
  const ch = t.channels[Math.max(0, Math.min(shownIndex, t.channels.length - 1))];
  const gap = 44;
  const x0 = PANEL.x + 16;
  // as wide as the panel allows (numbers need width), as tall as the ledger below leaves room for
  const cw = gridCell(kw, (PANEL.w - 32 - 2 * gap) / 3);
  const cell = { w: cw, h: Math.min(cw, gridCell(kh, 220)) };
  const gw = kw * cell.w;
  const gy = PANEL.y + 60;
  const heading = kh === 1 && kw === 1
    ? `${channelName(ch.index, inC)}: value × weight (a 1×1 kernel reads no neighbours: it mixes channels)`
    : `${channelName(ch.index, inC)}: window × kernel = products`;
  label(ctx, heading, x0, PANEL.y + 28, { size: 19, maxWidth: PANEL.w - 32 });
  const windowScale = s.input ? makeScale(...s.input.range) : makeScale(...rangeOfList(ch.inputs)); // colours as on the map
  const kernelScale = makeScale(...rangeOfList(ch.weights));
  const productScale = makeScale(...rangeOfList(ch.products));
  const opts = { digits: 2, maxFont: 24, minFont: NUM, highlight: s.tapHighlight ?? -1 };
  const g1 = drawNumberGrid(ctx, x0, gy, cell, kh, kw, ch.inputs, { ...opts, scale: windowScale, mask: t.padding, title: 'window' });
  label(ctx, '×', x0 + gw + gap / 2, gy + (kh * cell.h) / 2 + 8, { size: 26, align: 'center' });
  const g2 = drawNumberGrid(ctx, x0 + gw + gap, gy, cell, kh, kw, ch.weights, { ...opts, scale: kernelScale, title: 'kernel' });
  label(ctx, '=', x0 + 2 * gw + 1.5 * gap, gy + (kh * cell.h) / 2 + 8, { size: 26, align: 'center' });
  const g3 = drawNumberGrid(ctx, x0 + 2 * (gw + gap), gy, cell, kh, kw, ch.products, { ...opts, scale: productScale, title: 'products' });
  hits.grids = [
    { box: g1, rows: kh, cols: kw, name: 'window', values: ch.inputs },
    { box: g2, rows: kh, cols: kw, name: 'kernel', values: ch.weights },
    { box: g3, rows: kh, cols: kw, name: 'product', values: ch.products },
  ];
  const yS = gy + kh * cell.h + 26;
  label(ctx, `Σ products = ${formatCell(ch.sum, 4)}`, x0 + 2 * (gw + gap) + gw, yS, { size: NUM, font: MONO, weight: 600, align: 'right' });
  drawLedger(ctx, t, phase, inC, { x: x0, top: yS + 10, bottom: PANEL.y + PANEL.h - 8, right: hits.mathRight });
}

/**
 * The partial sums adding up, each revealed in its phase. When they do not all fit, the active line stays
 * in view with the ones before it, and a grey line says what is above or below (never a silent cut).
 */
export function ledgerLines(t, phase, inC) {
  const row = (head, value, extra = '') => ({ head: head.padEnd(16), value: formatCell(value, 4).padStart(9), extra });
  const lines = [];
  let running = 0;
  const soFar = () => `  Σ so far ${formatCell(running, 4)}`;
  t.channels.forEach((c, j) => {
    running += c.sum;
    lines.push({ ...row(`${j === 0 ? '  ' : '+ '}${channelName(c.index, inC)}`, c.sum, j ? soFar() : ''), active: phase.kind === 'channel' && phase.j === j, shown: phase.kind !== 'channel' || phase.j >= j, running });
  });
  if (t.rest) {
    running += t.rest.sum;
    lines.push({ ...row(`+ ${t.rest.channels} others`, t.rest.sum, soFar()), active: phase.kind === 'rest', shown: phase.kind !== 'channel', running });
  }
  const done = phase.kind === 'bias' || phase.kind === 'after';
  lines.push({ ...row('+ bias', t.bias), active: phase.kind === 'bias', shown: done, running: running + t.bias });
  lines.push({ ...row('= total', t.total, `  (PyTorch: ${formatCell(t.layer_output, 4)})`), active: phase.kind === 'bias', shown: done, strong: true });
  t.after.forEach((a) => {
    const head = a.kind === 'norm' ? `→ ${a.layer} (batch norm) = ` : `→ ${a.layer}: ${a.type} ${a.formula} = `;
    lines.push({ head, value: formatCell(a.output, 4), extra: '', active: phase.kind === 'after', shown: phase.kind === 'after', strong: true });
  });
  return lines;
}

/** Which ledger lines to draw in `room` lines: {first, count, above, below} (above/below: lines left out). */
export function ledgerWindow(lines, room) {
  if (lines.length <= room) return { first: 0, count: lines.length, above: 0, below: 0 };
  const active = Math.max(0, lines.findIndex((l) => l.active));
  // one line each is kept for the "above" and "below" notes when needed
  let first = Math.min(Math.max(0, active - (room - 3)), lines.length - (room - 1));
  if (first === 1) first = 0; // a note for one line would take that line's room
  const above = first;
  let count = room - (above ? 1 : 0);
  if (first + count < lines.length) count -= 1;
  count = Math.max(1, count);
  return { first, count, above, below: lines.length - first - count };
}

function drawLedger(ctx, t, phase, inC, { x, top, bottom, right }) {
  const step = 27;
  const lines = ledgerLines(t, phase, inC);
  const room = Math.max(2, Math.floor((bottom - top) / step));
  const w = ledgerWindow(lines, room);
  let y = top + step - 4;
  const note = (text) => {
    label(ctx, text, x, y, { size: 16, font: MONO, weight: 400, colour: COLOURS.ink2 });
    y += step;
  };
  if (w.above) note(`▲ ${w.above} line${w.above > 1 ? 's' : ''} above · Σ so far ${formatCell(lines[w.first - 1].running, 4)}`);
  lines.slice(w.first, w.first + w.count).forEach((line) => {
    if (line.active) {
      const box = [x - 6, y - 20, Math.min(700, right - (x - 6)), 26];
      ctx.fillStyle = '#fef3c7';
      ctx.fillRect(...box);
      ctx.canvas.dataset.highlight = JSON.stringify(box);
    }
    const text = line.shown ? `${line.head}${line.value}${line.extra}` : `${line.head}${'…'.padStart(line.value.length)}`;
    label(ctx, text, x, y, { size: NUM, font: MONO, weight: line.strong ? 700 : 400, colour: line.shown ? COLOURS.ink : '#94a3b8' });
    y += step;
  });
  if (w.below) note(`▼ ${w.below} more line${w.below > 1 ? 's' : ''} below (bias, total, …)`);
  ctx.canvas.dataset.ledger = JSON.stringify({ total: lines.length, first: w.first, shown: w.count, above: w.above, below: w.below });
}

function rangeOfList(values) {
  const real = values.filter((v) => v !== null && v !== undefined);
  return real.length ? [Math.min(...real), Math.max(...real)] : [0, 1];
}

function drawPoolMath(ctx, s, hits) {
  const t = s.trace;
  const n = t.cells.length;
  const kh = t.geometry.kernel_shape ? t.geometry.kernel_shape[0] : t.geometry.window[0];
  const kw = Math.round(n / kh);
  const cell = gridCell(Math.max(kh, kw), 260);
  const x0 = PANEL.x + 16;
  const opName = { max: 'max pooling', avg: 'average pooling', l2: 'L2 pooling' }[t.op] || `${t.op} pooling`;
  label(ctx, `${opName} of channel ${t.channel}: the window`, x0, PANEL.y + 28, { size: 19 });
  const scale = makeScale(...rangeOfList(t.inputs));
  const g = drawNumberGrid(ctx, x0, PANEL.y + 56, cell, kh, kw, t.inputs, { scale, mask: t.padding, highlight: t.op === 'max' ? t.argmax : -1, digits: 2, maxFont: 26, minFont: NUM });
  hits.grids = [{ box: g, rows: kh, cols: kw, name: 'input', values: t.inputs }];
  let y = PANEL.y + 56 + kh * cell + 44;
  const lines = [];
  if (t.op === 'max') lines.push(`max of ${t.inputs.filter((v) => v !== null).length} values = ${formatCell(t.result, 4)}`);
  else if (t.op === 'avg') lines.push(`sum ${formatCell(t.sum, 4)} ÷ ${t.divisor} = ${formatCell(t.result, 4)}`);
  else lines.push(`(Σ xᵖ = ${formatCell(t.sum_of_powers, 4)})^(1/${t.norm_type}) = ${formatCell(t.result, 4)}`);
  lines.push(`PyTorch: ${formatCell(t.layer_output, 4)}`);
  if (t.padding.some(Boolean)) lines.push(t.op === 'max' ? 'padding cells never win a max' : 'padding cells add nothing to the sum');
  lines.forEach((line) => {
    label(ctx, line, x0, y, { size: 22, font: MONO, weight: 600 });
    y += 32;
  });
}

function drawActivationMath(ctx, s) {
  const t = s.trace;
  const x0 = PANEL.x + 16;
  label(ctx, `${t.type}: one value in, one value out`, x0, PANEL.y + 28, { size: 19 });
  label(ctx, `f(x) = ${t.formula}`, x0, PANEL.y + 80, { size: 22, font: MONO, maxWidth: 400 });
  label(ctx, `x = ${formatCell(t.input, 4)}`, x0, PANEL.y + 130, { size: 24, font: MONO });
  label(ctx, `f(x) = ${formatCell(t.output, 4)}`, x0, PANEL.y + 175, { size: 24, font: MONO, weight: 700 });
  label(ctx, 'Applied to every cell of every', x0, PANEL.y + 240, { size: TEXT, weight: 400, colour: COLOURS.ink2 });
  label(ctx, 'channel separately: the window is one cell.', x0, PANEL.y + 264, { size: TEXT, weight: 400, colour: COLOURS.ink2 });
  const f = activationFunction(t.type, t.formula);
  if (f) drawActivationPlot(ctx, f, t, { x: PANEL.x + 440, y: PANEL.y + 46, w: 400, h: 250 }, NUM);
}
