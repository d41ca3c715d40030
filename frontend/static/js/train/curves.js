// Line charts of a run: training (solid) against held-out (dashed), per step from the streamed points, with
// each epoch's measurement as a dot, and a marker at the step the scrubber is on.

import { COLOURS, FONT, measureTextFloor } from '../common/canvas.js';
import { formatValue } from '../common/format.js';

export const TRAIN_COLOUR = COLOURS.accent;
export const HELD_OUT_COLOUR = '#c2410c';

/**
 * Draw `series` ([{key, epochKey, colour, dashed}]) of `run` on `canvas` (the legend is the page's, in HTML).
 * @param {object} opts  {title, yMax (fixed top, e.g. 1 for accuracy) , marker (a step or null), log: false}
 */
export function drawCurves(canvas, run, series, { title, yMax = null, marker = null } = {}) {
  const ctx = canvas.getContext('2d');
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  const font = Math.max(measureTextFloor(canvas), 12);
  ctx.font = `${font}px ${FONT}`;
  const left = font * 3.6;
  const top = font * 1.8;
  const bottom = height - font * 1.8;
  const right = width - font * 0.8;
  const points = run ? run.points : [];
  const history = run ? run.history : [];
  const total = (run && run.info && run.info.total_steps) || Math.max(1, ...points.map((p) => p.step));
  let hi = yMax;
  if (hi === null) {
    const values = series.flatMap((s) => points.map((p) => p[s.key])).filter(Number.isFinite);
    hi = values.length ? Math.max(...values) * 1.05 : 1;
  }
  const x = (step) => left + ((right - left) * step) / total;
  const y = (v) => bottom - ((bottom - top) * Math.min(Math.max(v, 0), hi)) / hi;

  ctx.fillStyle = COLOURS.ink;
  ctx.textBaseline = 'top';
  ctx.textAlign = 'left'; // the canvas keeps the last draw's alignment
  ctx.fillText(title, font * 0.2, font * 0.2);
  ctx.strokeStyle = COLOURS.line;
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(left, top);
  ctx.lineTo(left, bottom);
  ctx.lineTo(right, bottom);
  ctx.stroke();
  ctx.fillStyle = COLOURS.ink2;
  ctx.textBaseline = 'middle';
  ctx.textAlign = 'right';
  for (const v of [0, hi / 2, hi]) ctx.fillText(formatValue(v, 2), left - 4, y(v));
  ctx.textAlign = 'center';
  ctx.textBaseline = 'top';
  ctx.fillText('step', (left + right) / 2, bottom + font * 0.3);
  ctx.textAlign = 'left';
  ctx.fillText('0', left, bottom + font * 0.3);
  ctx.textAlign = 'right';
  ctx.fillText(String(total), right, bottom + font * 0.3);

  for (const s of series) {
    ctx.strokeStyle = s.colour;
    ctx.lineWidth = 2;
    ctx.setLineDash(s.dashed ? [6, 4] : []);
    ctx.beginPath();
    let started = false;
    for (const p of points) {
      if (!Number.isFinite(p[s.key])) continue;
      if (started) ctx.lineTo(x(p.step), y(p[s.key]));
      else ctx.moveTo(x(p.step), y(p[s.key]));
      started = true;
    }
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = s.colour;
    for (const row of history) {
      if (!Number.isFinite(row[s.epochKey])) continue;
      ctx.beginPath();
      ctx.arc(x(row.step), y(row[s.epochKey]), font * 0.3, 0, Math.PI * 2);
      ctx.fill();
    }
  }
  if (marker !== null) {
    ctx.strokeStyle = COLOURS.current;
    ctx.lineWidth = 2;
    ctx.setLineDash([]);
    ctx.beginPath();
    ctx.moveTo(x(marker), top);
    ctx.lineTo(x(marker), bottom);
    ctx.stroke();
  }
}
