// Line charts of a run: training (solid) against held-out (dashed), per step from the streamed points, with
// each epoch's measurement as a dot, and a marker at the step the scrubber is on. A second run can be laid
// over it (thin dotted lines, hollow rings at its epochs, the same colours); both are then drawn against
// the epoch (step ÷ that run's steps per epoch), since two runs of different sizes share no step axis.

import { COLOURS, FONT, measureTextFloor } from '../common/canvas.js';
import { formatValue } from '../common/format.js';

export const TRAIN_COLOUR = COLOURS.accent;
export const HELD_OUT_COLOUR = '#c2410c';
const HELD_OUT_DASH = [4, 2.7]; // in units of `dot` (1.5 device px at 12 px type)
const OVERLAY_DASH = [1.3, 2.7];
const OVERLAY_ALPHA = 0.75;

/** Steps per epoch of a run (from its "started" event, else from its first epoch row); null when unknown. */
export function stepsPerEpoch(run) {
  if (run && run.info && run.info.steps_per_epoch) return run.info.steps_per_epoch;
  const row = run ? (run.history || []).find((r) => r.epoch > 0) : null;
  return row ? row.step / row.epoch : null;
}

/** The canvas's backing store matched to its displayed size (sharp lines, type at its true size). */
function matchDisplay(canvas) {
  const box = canvas.isConnected ? canvas.getBoundingClientRect() : null;
  if (!box || !box.width || !box.height) return;
  const ratio = window.devicePixelRatio || 1;
  const width = Math.round(box.width * ratio);
  const height = Math.round(box.height * ratio);
  if (canvas.width !== width) canvas.width = width;
  if (canvas.height !== height) canvas.height = height;
}

function drawLines(ctx, run, series, x, y, { overlay, dot, radius }) {
  const points = run.points || [];
  for (const s of series) {
    ctx.strokeStyle = s.colour;
    ctx.globalAlpha = overlay ? OVERLAY_ALPHA : 1;
    ctx.lineWidth = overlay ? 1.5 * dot : 2 * dot / 1.5;
    const dash = overlay ? OVERLAY_DASH : s.dashed ? HELD_OUT_DASH : [];
    ctx.setLineDash(dash.map((d) => d * dot)); // scaled with the type, so dashes stay dashes on any screen
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
    for (const row of run.history || []) {
      if (!Number.isFinite(row[s.epochKey])) continue;
      ctx.beginPath();
      ctx.arc(x(row.step), y(row[s.epochKey]), radius, 0, Math.PI * 2);
      if (overlay) {
        ctx.lineWidth = dot;
        ctx.stroke();
      } else {
        ctx.fillStyle = s.colour;
        ctx.fill();
      }
    }
  }
  ctx.globalAlpha = 1;
}

/**
 * Draw `series` ([{key, epochKey, colour, dashed}]) of `run` on `canvas` (the legend is the page's, in HTML).
 * @param {object} opts  {title, yMax (fixed top, e.g. 1 for accuracy), marker (a step of `run`, or null),
 *   overlay (a second run drawn over it, or null)}
 */
export function drawCurves(canvas, run, series, { title, yMax = null, marker = null, overlay = null } = {}) {
  matchDisplay(canvas);
  const ctx = canvas.getContext('2d');
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  const font = Math.max(measureTextFloor(canvas), 12);
  const dot = font / 8; // line widths and dots follow the type's scale (device pixels)
  ctx.font = `${font}px ${FONT}`;
  const runs = [run, overlay].filter(Boolean);
  const byEpoch = Boolean(overlay);
  // x in steps of each run, or in epochs (each run's own steps per epoch) when two runs share the chart
  const unit = (r) => (byEpoch ? stepsPerEpoch(r) || 1 : 1);
  const extent = (r) => {
    const last = Math.max(0, ...(r.points || []).map((p) => p.step)) / unit(r);
    const planned = byEpoch ? r.config && r.config.epochs : r.info && r.info.total_steps;
    return Math.max(planned || 0, last);
  };
  const total = Math.max(1, ...runs.map(extent));
  let hi = yMax;
  if (hi === null) {
    const values = runs.flatMap((r) => series.flatMap((s) => (r.points || []).map((p) => p[s.key]))).filter(Number.isFinite);
    hi = values.length ? Math.max(...values) * 1.05 : 1;
  }
  const widest = ctx.measureText(formatValue(hi, 2)).width;
  const left = Math.max(font * 2.6, widest + font * 0.6);
  const top = font * 1.7;
  const bottom = height - font * 1.5;
  const right = width - font * 0.8;
  const xOf = (r) => (step) => left + ((right - left) * step) / unit(r) / total;
  const y = (v) => bottom - ((bottom - top) * Math.min(Math.max(v, 0), hi)) / hi;

  ctx.fillStyle = COLOURS.ink;
  ctx.textBaseline = 'top';
  ctx.textAlign = 'left'; // the canvas keeps the last draw's alignment
  ctx.fillText(title, left + font * 0.4, font * 0.1); // beside the axis: clear of its top value
  ctx.strokeStyle = COLOURS.line;
  ctx.lineWidth = dot / 1.5;
  ctx.beginPath();
  ctx.moveTo(left, top);
  ctx.lineTo(left, bottom);
  ctx.lineTo(right, bottom);
  ctx.stroke();
  ctx.fillStyle = COLOURS.ink2;
  ctx.textBaseline = 'middle';
  ctx.textAlign = 'right';
  for (const v of [0, hi / 2, hi]) ctx.fillText(formatValue(v, 2), left - font * 0.3, y(v));
  ctx.textAlign = 'center';
  ctx.textBaseline = 'top';
  ctx.fillText(byEpoch ? 'epoch' : 'step', (left + right) / 2, bottom + font * 0.2);
  ctx.textAlign = 'left';
  ctx.fillText('0', left, bottom + font * 0.2);
  ctx.textAlign = 'right';
  ctx.fillText(String(Math.round(total)), right, bottom + font * 0.2);

  // epoch dots smaller when many epochs share the width (30 epochs' dots would hide the lines between them)
  const spacing = (right - left) / Math.max(1, ...runs.map((r) => (r.history || []).length));
  const radius = Math.min(Math.max(spacing / 3.5, dot * 0.9), dot * 2.2);
  if (overlay) drawLines(ctx, overlay, series, xOf(overlay), y, { overlay: true, dot, radius });
  if (run) drawLines(ctx, run, series, xOf(run), y, { overlay: false, dot, radius });
  // what is drawn, for tests and tools: the x axis's unit and the runs on it (this run first)
  canvas.dataset.axis = byEpoch ? 'epoch' : 'step';
  canvas.dataset.runs = runs.map((r) => r.id).join(' ');
  if (marker !== null && run) {
    const x = xOf(run)(marker);
    ctx.strokeStyle = COLOURS.current;
    ctx.lineWidth = dot * 1.3;
    ctx.setLineDash([]);
    ctx.beginPath();
    ctx.moveTo(x, top);
    ctx.lineTo(x, bottom);
    ctx.stroke();
  }
}
