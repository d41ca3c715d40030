// The plot of an activation function with the current (x, f(x)) marked, drawn into a box of a canvas: the
// step-through's activation phase and the sandbox's "then activation" choice share it.

import { COLOURS, label } from './canvas.js';
import { formatCell } from './format.js';

/**
 * @param {CanvasRenderingContext2D} ctx
 * @param {(x: number) => number} f  the function (common/activation-functions.js)
 * @param {{type: string, input: number, output: number}} t  the value in and PyTorch's value out
 * @param {{x: number, y: number, w: number, h: number}} box
 * @param {number} [size]  type size of the axis labels, canvas px
 */
export function drawActivationPlot(ctx, f, t, box, size = 20) {
  const lo = Math.min(-4, t.input - 1);
  const hi = Math.max(4, t.input + 1);
  const xs = Array.from({ length: 161 }, (_, i) => lo + ((hi - lo) * i) / 160);
  const ys = xs.map(f);
  const yLo = Math.min(...ys, 0);
  const yHi = Math.max(...ys, 1);
  const px = (x) => box.x + ((x - lo) / (hi - lo)) * box.w;
  const py = (y) => box.y + box.h - ((y - yLo) / (yHi - yLo)) * box.h;
  ctx.save();
  ctx.strokeStyle = COLOURS.line;
  ctx.lineWidth = 1;
  ctx.strokeRect(box.x, box.y, box.w, box.h);
  ctx.strokeStyle = COLOURS.ink2;
  ctx.beginPath();
  ctx.moveTo(box.x, py(0));
  ctx.lineTo(box.x + box.w, py(0));
  ctx.moveTo(px(0), box.y);
  ctx.lineTo(px(0), box.y + box.h);
  ctx.stroke();
  ctx.strokeStyle = COLOURS.accent;
  ctx.lineWidth = 3;
  ctx.beginPath();
  xs.forEach((x, i) => (i ? ctx.lineTo(px(x), py(ys[i])) : ctx.moveTo(px(x), py(ys[i]))));
  ctx.stroke();
  const mx = px(t.input);
  const my = py(t.output);
  ctx.setLineDash([5, 4]);
  ctx.strokeStyle = COLOURS.current;
  ctx.lineWidth = 2;
  ctx.beginPath();
  ctx.moveTo(mx, py(0));
  ctx.lineTo(mx, my);
  ctx.lineTo(px(0), my);
  ctx.stroke();
  ctx.setLineDash([]);
  ctx.fillStyle = COLOURS.current;
  ctx.beginPath();
  ctx.arc(mx, my, 7, 0, 2 * Math.PI);
  ctx.fill();
  ctx.restore();
  label(ctx, formatCell(lo, 1), box.x, box.y + box.h + 22, { size, weight: 400, colour: COLOURS.ink2 });
  label(ctx, formatCell(hi, 1), box.x + box.w, box.y + box.h + 22, { size, weight: 400, colour: COLOURS.ink2, align: 'right' });
  label(ctx, `f up to ${formatCell(yHi, 2)}`, box.x + 6, box.y + 22, { size, weight: 400, colour: COLOURS.ink2 });
  label(ctx, `(${formatCell(t.input, 3)}, ${formatCell(t.output, 3)})`, Math.min(mx + 12, box.x + box.w - 150), Math.max(my - 12, box.y + 20), { size, weight: 700, colour: COLOURS.current });
  ctx.canvas.dataset.plot = JSON.stringify({ type: t.type, x: t.input, fx: f(t.input), torch: t.output });
}
