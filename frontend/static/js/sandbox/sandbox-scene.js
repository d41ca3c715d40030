// One frame of the sandbox animation on a fixed 960×520 canvas: the padded input with the window, the
// kernel (and its flip for true convolution), the output filling in, and the arithmetic of the cell.

import { COLOURS, MONO, clear, drawMap, drawNumberGrid, drawTaps, label, makeScale, markCell, rangeOf, textFloor } from '../common/canvas.js';
import { formatCell } from '../common/format.js';

export const WIDTH = 960;
export const HEIGHT = 520;

const POOL_NAMES = { max: 'max pooling', avg: 'average pooling', l2: 'L2 pooling' };

/**
 * @param {CanvasRenderingContext2D} ctx
 * @param {object} s  {op: 'conv'|'pool', input: number[][], answer (server response), settings, step: number}
 */
export function drawSandbox(ctx, s) {
  clear(ctx, WIDTH, HEIGHT);
  const { answer, input, settings } = s;
  const geometry = answer.geometry;
  const step = answer.steps[s.step];
  const [oh, ow] = geometry.output_shape;
  const p = geometry.padding;
  const title = s.op === 'conv'
    ? `${answer.mode === 'convolution' ? 'True convolution (kernel flipped)' : 'Cross-correlation (what CNN layers compute)'}`
    : `${POOL_NAMES[answer.op]} ${settings.poolSize}×${settings.poolSize}`;
  label(ctx, title, 16, 26, { size: 18, weight: 700 });
  label(ctx, `padding ${describePadding(settings, p)} · stride ${geometry.stride[0]} · dilation ${geometry.dilation[0]} · output ${oh}×${ow}`,
    16, 47, { size: 14, weight: 400, colour: COLOURS.ink2 });
  const hits = { grids: [] };
  const inScale = makeScale(...rangeOf(input));
  label(ctx, `input ${input.length}×${input[0].length}${p.top + p.bottom + p.left + p.right ? ' + zero padding' : ''}`, 181, 72, { size: 14, align: 'center' });
  hits.input = drawMap(ctx, { x: 16, y: 80, w: 330, h: 330 }, {
    rows: input.length, cols: input[0].length, values: (r, c) => input[r][c], scale: inScale, pad: p, numbers: 'auto',
  });
  hits.input.values = { values: input.flat() };
  drawTaps(ctx, hits.input, step.cells.map(([iy, ix], i) => ({ iy, ix, pad: step.padding[i] })));
  if (s.op === 'conv') drawKernel(ctx, answer, hits);
  else drawPoolBox(ctx, answer, step, settings);
  const outValues = s.op === 'conv' ? (settings.activation !== 'none' || settings.bias ? answer.activated : answer.output) : answer.output;
  const outScale = makeScale(...rangeOf(outValues));
  label(ctx, `output ${oh}×${ow}`, 790, 72, { size: 14, align: 'center' });
  hits.output = drawMap(ctx, { x: 630, y: 80, w: 320, h: 320 }, {
    rows: oh, cols: ow, values: (r, c) => outValues[r][c], scale: outScale, numbers: 'auto',
    visible: (r, c) => r * ow + c <= s.step,
  });
  hits.output.values = { values: outValues.flat() };
  markCell(ctx, hits.output, step.out[0], step.out[1]);
  drawArithmetic(ctx, s, step);
  return hits;
}

function describePadding(settings, p) {
  const amounts = `(top ${p.top}, bottom ${p.bottom}, left ${p.left}, right ${p.right})`;
  return typeof settings.padding === 'string' ? `${settings.padding} ${amounts}` : amounts;
}

function drawKernel(ctx, answer, hits) {
  const kernel = answer.kernel;
  const used = answer.kernel_used;
  const [kh, kw] = [kernel.length, kernel[0].length];
  const cell = Math.max(16, Math.min(40, Math.floor(200 / Math.max(kh, kw))));
  const scale = makeScale(...rangeOf(kernel));
  const x = 488 - (kw * cell) / 2;
  if (answer.mode === 'convolution') {
    const small = Math.max(12, Math.floor(cell * 0.6));
    drawNumberGrid(ctx, 488 - (kw * small) / 2, 100, small, kh, kw, kernel.flat(), { scale, title: 'kernel as typed', digits: 1, numbers: small >= 22 });
    label(ctx, '↓ turned 180°', 488, 100 + kh * small + 22, { size: 13, weight: 600, colour: COLOURS.accent, align: 'center' });
    const y = 100 + kh * small + 56;
    const box = drawNumberGrid(ctx, x, y, cell, kh, kw, used.flat(), { scale, title: 'flipped kernel (slides)', digits: 2 });
    hits.grids.push({ box, rows: kh, cols: kw, name: 'kernel', values: used.flat() });
  } else {
    const box = drawNumberGrid(ctx, x, 110, cell, kh, kw, used.flat(), { scale, title: 'kernel (slides as it is)', digits: 2 });
    hits.grids.push({ box, rows: kh, cols: kw, name: 'kernel', values: used.flat() });
  }
}

function drawPoolBox(ctx, answer, step, settings) {
  label(ctx, POOL_NAMES[answer.op], 488, 110, { size: 16, align: 'center' });
  const rule = { max: 'the largest value in the window', avg: `sum ÷ ${settings.poolSize * settings.poolSize} (padding counts as 0)`, l2: '√(sum of squares)' }[answer.op];
  label(ctx, rule, 488, 134, { size: 13, weight: 400, colour: COLOURS.ink2, align: 'center' });
  label(ctx, 'no weights to learn:', 488, 180, { size: 13, weight: 400, colour: COLOURS.ink2, align: 'center' });
  label(ctx, 'the same rule everywhere', 488, 198, { size: 13, weight: 400, colour: COLOURS.ink2, align: 'center' });
  label(ctx, `→ ${formatCell(step.result, 3)}`, 488, 250, { size: 22, align: 'center', font: MONO });
}

function drawArithmetic(ctx, s, step) {
  const y = 446;
  ctx.fillStyle = '#f8fafc';
  ctx.fillRect(16, y - 26, 934, 92);
  ctx.strokeStyle = COLOURS.line;
  ctx.strokeRect(16, y - 26, 934, 92);
  const [oy, ox] = step.out;
  label(ctx, `output (y ${oy}, x ${ox}) =`, 28, y - 6, { size: 14, weight: 600, colour: COLOURS.ink2 });
  if (s.op === 'conv') {
    const used = s.answer.kernel_used.flat();
    const paren = (x) => (x < 0 ? `(${formatCell(x, 2)})` : formatCell(x, 2));
    const terms = step.inputs.map((x, i) => `${paren(x)}·${paren(used[i])}`);
    label(ctx, fit(ctx, terms, ` = ${formatCell(step.sum, 3)}`, 900), 28, y + 18, { size: 15, font: MONO, weight: 400 });
    const a = s.settings;
    let line = `Σ ${formatCell(step.sum, 3)}`;
    if (a.bias) line += ` + bias ${formatCell(a.bias, 3)} = ${formatCell(step.total, 3)}`;
    if (a.activation !== 'none') line += `  →  ${s.answer.activation_formula}  →  ${formatCell(step.activated, 3)}`;
    label(ctx, line, 28, y + 44, { size: 15, font: MONO, weight: 700 });
  } else {
    const values = step.inputs.map((v) => (v === null ? 'pad' : formatCell(v, 2)));
    const head = { max: 'max(', avg: '(', l2: '√(' }[s.answer.op];
    const joiner = { max: ', ', avg: ' + ', l2: ' + ' }[s.answer.op];
    const shown = s.answer.op === 'l2' ? values.map((v) => (v === 'pad' ? v : `${v}²`)) : values;
    const tail = s.answer.op === 'avg' ? `) ÷ ${step.divisor} = ${formatCell(step.result, 3)}` : `) = ${formatCell(step.result, 3)}`;
    label(ctx, fit(ctx, shown, tail, 900, head, joiner), 28, y + 18, { size: 15, font: MONO, weight: 400 });
  }
}

/** Join terms with `joiner`, dropping middle terms (…) until the line fits `width` pixels. */
function fit(ctx, terms, tail, width, head = '', joiner = ' + ') {
  ctx.font = `400 ${Math.max(15, textFloor(ctx))}px ${MONO}`;
  let keep = terms.length;
  let text = head + terms.join(joiner) + tail;
  while (ctx.measureText(text).width > width && keep > 2) {
    keep -= 1;
    text = `${head}${terms.slice(0, keep - 1).join(joiner)}${joiner}…${joiner}${terms[terms.length - 1]}${tail}`;
  }
  return text;
}
