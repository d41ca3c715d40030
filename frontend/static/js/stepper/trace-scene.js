// One frame of the real-model step-through, drawn on a fixed 960×520 canvas (so PNG/GIF/WebM exports
// look the same as the screen): the layer input with the window, the output being filled in, the
// receptive field on the picture, and the arithmetic of the current phase. Returns hit regions.

import { COLOURS, MONO, clear, drawLegend, drawMap, drawNumberGrid, drawTaps, fmt, label, makeScale, markCell, shadeBorder } from './renderer.js';

export const WIDTH = 960;
export const HEIGHT = 520;
const RGB_NAMES = ['R', 'G', 'B'];

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
 *   rf {image, box, imageHW} | null, geometryLines [..]}
 */
export function drawScene(ctx, s) {
  clear(ctx, WIDTH, HEIGHT);
  label(ctx, s.title, 16, 26, { size: 18, weight: 700 });
  label(ctx, s.subtitle, 16, 47, { size: 14, weight: 400, colour: COLOURS.ink2 });
  const hits = { input: null, output: null, grids: [] };
  const mapBox = { w: 220, h: 220 };
  // input map with the window
  if (s.input) {
    const [lo, hi] = s.input.range;
    const scale = makeScale(lo, hi);
    hits.input = drawMap(ctx, { x: 16, y: 80, ...mapBox }, {
      rows: s.input.h, cols: s.input.w, values: (r, c) => s.input.values[r * s.input.w + c], scale, pad: s.pad,
    });
    if (s.trace && s.trace.padded_by) shadeBorder(ctx, hits.input, s.trace.padded_by); // zeros a ZeroPad2d added
    drawTaps(ctx, hits.input, s.taps, { highlight: s.tapHighlight ?? -1 });
    drawLegend(ctx, scale, 36, 310, 180);
    hits.input.values = s.input;
  } else {
    label(ctx, 'loading the layer input…', 126, 190, { size: 14, weight: 400, colour: COLOURS.ink2, align: 'center' });
  }
  label(ctx, s.input ? s.input.label : 'layer input', 126, 72, { size: 14, align: 'center' });
  // output map, filled in up to the current cell
  if (s.output) {
    const [lo, hi] = s.output.range;
    const scale = makeScale(lo, hi);
    hits.output = drawMap(ctx, { x: 262, y: 80, ...mapBox }, {
      rows: s.output.h, cols: s.output.w, values: (r, c) => s.output.values[r * s.output.w + c], scale, visible: s.revealed,
    });
    markCell(ctx, hits.output, s.pos.y, s.pos.x);
    drawLegend(ctx, scale, 282, 310, 180);
    hits.output.values = s.output;
  }
  label(ctx, s.output ? s.output.label : 'layer output', 372, 72, { size: 14, align: 'center' });
  arrow(ctx, 239, 190, 259, 190);
  drawReceptiveField(ctx, s.rf, 16, 368);
  s.geometryLines.forEach((line, i) => label(ctx, line, 168, 384 + i * 21, { size: 14, weight: 400, colour: COLOURS.ink2, font: MONO }));
  // the arithmetic
  ctx.save();
  ctx.fillStyle = '#f8fafc';
  ctx.fillRect(492, 58, 456, 452);
  ctx.strokeStyle = COLOURS.line;
  ctx.strokeRect(492, 58, 456, 452);
  ctx.restore();
  if (!s.trace) {
    label(ctx, 'computing this cell…', 720, 280, { size: 15, weight: 400, colour: COLOURS.ink2, align: 'center' });
  } else if (s.trace.kind === 'conv') {
    drawConvMath(ctx, s, hits);
  } else if (s.trace.kind === 'pool') {
    drawPoolMath(ctx, s, hits);
  } else {
    drawActivationMath(ctx, s);
  }
  return hits;
}

function arrow(ctx, x1, y1, x2, y2) {
  ctx.save();
  ctx.strokeStyle = COLOURS.ink2;
  ctx.fillStyle = COLOURS.ink2;
  ctx.lineWidth = 2;
  ctx.beginPath();
  ctx.moveTo(x1, y1);
  ctx.lineTo(x2 - 6, y2);
  ctx.stroke();
  ctx.beginPath();
  ctx.moveTo(x2, y2);
  ctx.lineTo(x2 - 8, y2 - 5);
  ctx.lineTo(x2 - 8, y2 + 5);
  ctx.fill();
  ctx.restore();
}

function drawReceptiveField(ctx, rf, x, y) {
  const size = 128;
  label(ctx, 'receptive field in the input', x, y - 6, { size: 13, weight: 600, colour: COLOURS.ink2 });
  if (!rf || !rf.image || !rf.image.complete || !rf.image.naturalWidth) {
    ctx.strokeStyle = COLOURS.line;
    ctx.strokeRect(x, y, size, size);
    return;
  }
  const [h, w] = rf.imageHW;
  const cell = Math.min(size / w, size / h);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(rf.image, x, y, w * cell, h * cell);
  ctx.strokeStyle = COLOURS.line;
  ctx.strokeRect(x, y, w * cell, h * cell);
  if (rf.box) {
    const b = rf.box;
    ctx.save();
    ctx.fillStyle = 'rgba(15, 23, 42, 0.45)';
    ctx.beginPath();
    ctx.rect(x, y, w * cell, h * cell);
    ctx.rect(x + b.left * cell, y + b.top * cell, (b.right - b.left + 1) * cell, (b.bottom - b.top + 1) * cell);
    ctx.fill('evenodd');
    ctx.strokeStyle = COLOURS.window;
    ctx.lineWidth = 2;
    ctx.strokeRect(x + b.left * cell, y + b.top * cell, (b.right - b.left + 1) * cell, (b.bottom - b.top + 1) * cell);
    ctx.restore();
    label(ctx, `${b.bottom - b.top + 1}×${b.right - b.left + 1} px${b.clipped ? ' (clipped at the border)' : ''}`,
      x, y + size + 16, { size: 12, weight: 400, colour: COLOURS.ink2 });
  }
}

function gridCell(k, width) {
  return Math.max(12, Math.min(46, Math.floor(width / k)));
}

function drawConvMath(ctx, s, hits) {
  const t = s.trace;
  const [kh, kw] = t.geometry.kernel_shape;
  const phase = s.phase;
  const inC = t.input_shape[0];
  const shownIndex = phase.kind === 'channel' ? phase.j : t.channels.length - 1;
  const ch = t.channels[Math.max(0, Math.min(shownIndex, t.channels.length - 1))];
  const cell = gridCell(Math.max(kh, kw), 124);
  const gw = kw * cell;
  const x0 = 506;
  const y0 = 104;
  label(ctx, `${channelName(ch.index, inC)}: window × kernel = products`, x0, 84, { size: 15 });
  const digits = cell >= 40 ? 2 : 1;
  const windowScale = s.input ? makeScale(...s.input.range) : makeScale(...rangeOfList(ch.inputs)); // colours as on the map
  const kernelScale = makeScale(...rangeOfList(ch.weights));
  const productScale = makeScale(...rangeOfList(ch.products));
  const show = cell >= 24;
  const g1 = drawNumberGrid(ctx, x0, y0 + 14, cell, kh, kw, ch.inputs, { numbers: show, scale: windowScale, mask: t.padding, title: 'window', digits, highlight: s.tapHighlight ?? -1 });
  label(ctx, '×', x0 + gw + 12, y0 + 14 + (kh * cell) / 2 + 6, { size: 22, align: 'center' });
  const g2 = drawNumberGrid(ctx, x0 + gw + 24, y0 + 14, cell, kh, kw, ch.weights, { numbers: show, scale: kernelScale, title: 'kernel', digits, highlight: s.tapHighlight ?? -1 });
  label(ctx, '=', x0 + 2 * gw + 36, y0 + 14 + (kh * cell) / 2 + 6, { size: 22, align: 'center' });
  const g3 = drawNumberGrid(ctx, x0 + 2 * gw + 48, y0 + 14, cell, kh, kw, ch.products, { numbers: show, scale: productScale, title: 'products', digits, highlight: s.tapHighlight ?? -1 });
  hits.grids = [
    { box: g1, rows: kh, cols: kw, name: 'window', values: ch.inputs },
    { box: g2, rows: kh, cols: kw, name: 'kernel', values: ch.weights },
    { box: g3, rows: kh, cols: kw, name: 'product', values: ch.products },
  ];
  const yS = y0 + 14 + kh * cell + 26;
  label(ctx, `Σ products = ${fmt(ch.sum, 4)}`, 936, yS, { size: 15, font: MONO, weight: 600, align: 'right' });
  // the ledger: partial sums adding up, each revealed in its phase
  const row = (head, value, extra = '') => ({ head: head.padEnd(18), value: fmt(value, 4).padStart(10), extra });
  const lines = [];
  let running = 0;
  const soFar = () => `   Σ so far ${fmt(running, 4)}`;
  t.channels.forEach((c, j) => {
    running += c.sum;
    lines.push({ ...row(`${j === 0 ? '  ' : '+ '}${channelName(c.index, inC)}`, c.sum, j ? soFar() : ''), active: phase.kind === 'channel' && phase.j === j, shown: phaseAtLeast(s, j) });
  });
  if (t.rest) {
    running += t.rest.sum;
    lines.push({ ...row(`+ ${t.rest.channels} other channels`, t.rest.sum, soFar()), active: phase.kind === 'rest', shown: phase.kind !== 'channel' });
  }
  const done = phase.kind === 'bias' || phase.kind === 'after';
  lines.push({ ...row('+ bias', t.bias), active: phase.kind === 'bias', shown: done });
  lines.push({ ...row('= total', t.total, `   (PyTorch: ${fmt(t.layer_output, 4)})`), active: phase.kind === 'bias', shown: done, strong: true });
  t.after.forEach((a) => {
    const head = a.kind === 'norm' ? `→ ${a.layer} (batch norm) = ` : `→ ${a.layer}: ${a.type} ${a.formula} = `;
    lines.push({ head, value: fmt(a.output, 4), extra: '', active: phase.kind === 'after', shown: phase.kind === 'after', strong: true });
  });
  // keep the active line in view with the lines before it (the sum so far) when they do not all fit
  const maxLines = Math.floor((500 - yS - 24) / 21);
  const active = Math.max(0, lines.findIndex((l) => l.active));
  const first = Math.min(Math.max(0, active - (maxLines - 3)), Math.max(0, lines.length - maxLines));
  const visible = lines.slice(first, first + maxLines);
  visible.forEach((line, i) => {
    const y = yS + 34 + i * 21;
    if (line.active) {
      ctx.fillStyle = '#fef3c7';
      ctx.fillRect(x0 - 6, y - 15, 440, 20);
    }
    const text = line.shown ? `${line.head}${line.value}${line.extra}` : `${line.head}${'…'.padStart(line.value.length)}`;
    label(ctx, text, x0, y, { size: 14, font: MONO, weight: line.strong ? 700 : 400, colour: line.shown ? COLOURS.ink : '#94a3b8' });
  });
}

function phaseAtLeast(s, j) {
  return s.phase.kind !== 'channel' || s.phase.j >= j;
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
  const cell = gridCell(Math.max(kh, kw), 220);
  const x0 = 506;
  const opName = { max: 'max pooling', avg: 'average pooling', l2: 'L2 pooling' }[t.op] || `${t.op} pooling`;
  label(ctx, `${opName} of channel ${t.channel}: the window`, x0, 84, { size: 15 });
  const scale = makeScale(...rangeOfList(t.inputs));
  const g = drawNumberGrid(ctx, x0, 104, cell, kh, kw, t.inputs, { scale, mask: t.padding, highlight: t.op === 'max' ? t.argmax : -1, digits: cell >= 40 ? 2 : 1 });
  hits.grids = [{ box: g, rows: kh, cols: kw, name: 'input', values: t.inputs }];
  let y = 104 + kh * cell + 40;
  const lines = [];
  if (t.op === 'max') lines.push(`max of ${t.inputs.filter((v) => v !== null).length} values = ${fmt(t.result, 4)}`);
  else if (t.op === 'avg') lines.push(`sum ${fmt(t.sum, 4)} ÷ ${t.divisor} = ${fmt(t.result, 4)}`);
  else lines.push(`(Σ xᵖ = ${fmt(t.sum_of_powers, 4)})^(1/${t.norm_type}) = ${fmt(t.result, 4)}`);
  lines.push(`PyTorch: ${fmt(t.layer_output, 4)}`);
  if (t.padding.some(Boolean)) lines.push(t.op === 'max' ? 'padding cells never win a max' : 'padding cells add nothing to the sum');
  lines.forEach((line) => {
    label(ctx, line, x0, y, { size: 15, font: MONO, weight: 600 });
    y += 24;
  });
}

function drawActivationMath(ctx, s) {
  const t = s.trace;
  const x0 = 506;
  label(ctx, `${t.type}: one value in, one value out`, x0, 84, { size: 15 });
  label(ctx, `f(x) = ${t.formula}`, x0, 150, { size: 18, font: MONO });
  label(ctx, `x = ${fmt(t.input, 4)}`, x0, 200, { size: 18, font: MONO });
  label(ctx, `f(x) = ${fmt(t.output, 4)}`, x0, 240, { size: 18, font: MONO, weight: 700 });
  label(ctx, 'Applied to every cell of every channel separately: the window is one cell.', x0, 300, { size: 13, weight: 400, colour: COLOURS.ink2 });
}
