// Canvas drawing primitives shared by the step-through and the sandbox: value maps with a padding ring,
// kernel taps over them, small number grids, arrows and labels. Pure drawing: the caller decides what.

import { formatCell } from './format.js';

// Blue – white – red for signed values (white is exactly zero) and a dark-to-light ramp for values of one
// sign; the anchors are the ones server/services/colormaps.py uses, so page and server pictures agree.
const DIVERGING = ['#053061', '#2166ac', '#4393c3', '#92c5de', '#d1e5f0', '#f7f7f7', '#fddbc7', '#f4a582', '#d6604d', '#b2182b', '#67001f'];
const SEQUENTIAL = ['#440154', '#472d7b', '#3b528b', '#2c728e', '#21918c', '#28ae80', '#5ec962', '#addc30', '#fde725'];

export const COLOURS = {
  ink: '#0b1220',
  ink2: '#3b4556',
  line: '#c5cdd8',
  accent: '#1d4ed8',
  window: '#f59e0b',
  current: '#e11d48',
  padding: '#e2e8f0',
  paddingLine: '#94a3b8',
  surface: '#ffffff',
  muted: '#f1f5f9',
};
export const FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif';
export const MONO = 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace';

function hexToRgb(hex) {
  const v = parseInt(hex.slice(1), 16);
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}

function ramp(stops, t) {
  const rgb = stops.map(hexToRgb);
  const x = Math.min(Math.max(t, 0), 1) * (rgb.length - 1);
  const i = Math.min(Math.floor(x), rgb.length - 2);
  const f = x - i;
  return rgb[i].map((c, k) => Math.round(c + (rgb[i + 1][k] - c) * f));
}

/** A colour scale for values in [lo, hi]: diverging around 0 when the values have both signs. */
export function makeScale(lo, hi) {
  const diverging = lo < 0;
  const bound = Math.max(Math.abs(lo), Math.abs(hi), 1e-12);
  const span = Math.max(hi - lo, 1e-12);
  const rgbOf = diverging ? (v) => ramp(DIVERGING, (v / bound + 1) / 2) : (v) => ramp(SEQUENTIAL, (v - lo) / span);
  return {
    diverging,
    lo: diverging ? -bound : lo,
    hi: diverging ? bound : hi,
    rgb: rgbOf,
    colour: (v) => `rgb(${rgbOf(v).join(',')})`,
    /** Ink that reads on the cell's colour. */
    ink(v) {
      const [r, g, b] = rgbOf(v);
      return 0.299 * r + 0.587 * g + 0.114 * b > 140 ? COLOURS.ink : '#ffffff';
    },
    stops: diverging ? DIVERGING : SEQUENTIAL,
  };
}

/** Range of a typed array or nested list. */
export function rangeOf(values) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values.flat ? values.flat(2) : values) {
    if (v === null || v === undefined || Number.isNaN(v)) continue;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return lo === Infinity ? [0, 1] : [lo, hi];
}

// The smallest text a canvas may draw, in its own (backing) px: the page's --min-text (12 CSS px, 16 in
// projector mode; base.css) times backing px per CSS px at the canvas's displayed size. Read once per
// picture by clear() (a new frame), so a canvas shown smaller than it is drawn gets larger type.
const floors = new WeakMap();

/** Read the text floor of `canvas` now (call when its displayed size or the page mode may have changed). */
export function measureTextFloor(canvas) {
  const css = parseFloat(getComputedStyle(document.documentElement).getPropertyValue('--min-text')) || 12;
  const shown = canvas.isConnected ? canvas.getBoundingClientRect().width : 0;
  // rounded up to a tenth of a px, so that a font of this size is never a hair under the floor on screen
  const floor = shown > 0 ? Math.ceil(((css * canvas.width) / shown) * 10) / 10 : css;
  floors.set(canvas, floor);
  return floor;
}

/** The smallest font size (canvas px) `ctx` may use. */
export function textFloor(ctx) {
  const canvas = ctx.canvas;
  if (!(canvas instanceof HTMLCanvasElement)) return 0;
  return floors.get(canvas) ?? measureTextFloor(canvas);
}

export function clear(ctx, width, height) {
  measureTextFloor(ctx.canvas);
  ctx.save();
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.fillStyle = COLOURS.surface;
  ctx.fillRect(0, 0, ctx.canvas.width, ctx.canvas.height);
  ctx.restore();
  return { width, height };
}

/** Draw `text`, never smaller than the canvas's text floor (see textFloor). */
export function label(ctx, text, x, y, { size = 15, weight = 600, colour = COLOURS.ink, align = 'left', font = FONT, baseline = 'alphabetic', maxWidth } = {}) {
  ctx.font = `${weight} ${Math.max(size, textFloor(ctx))}px ${font}`;
  ctx.fillStyle = colour;
  ctx.textAlign = align;
  ctx.textBaseline = baseline;
  if (maxWidth) ctx.fillText(text, x, y, maxWidth); // squeezed rather than spilling over its neighbour
  else ctx.fillText(text, x, y);
}

/**
 * Draw an H×W map (values(r, c) → number) inside box {x, y, w, h}, with `pad` {top, bottom, left, right}
 * rows/columns of padding drawn hatched around it. `visible(r, c)` hides cells (not yet computed).
 * Returns the geometry: {x0, y0, cell, rows, cols, pad} — x0/y0 is input cell (0, 0)'s corner.
 */
export function drawMap(ctx, box, { rows, cols, values, scale, pad = { top: 0, bottom: 0, left: 0, right: 0 }, visible = null, numbers = 'auto', grid = 'auto' }) {
  const totalR = rows + pad.top + pad.bottom;
  const totalC = cols + pad.left + pad.right;
  const cell = Math.max(0.5, Math.min(box.w / totalC, box.h / totalR));
  const ox = box.x + (box.w - cell * totalC) / 2;
  const oy = box.y + (box.h - cell * totalR) / 2;
  const x0 = ox + pad.left * cell;
  const y0 = oy + pad.top * cell;
  if (pad.top || pad.bottom || pad.left || pad.right) {
    ctx.fillStyle = COLOURS.padding;
    ctx.fillRect(ox, oy, cell * totalC, cell * totalR);
    hatch(ctx, ox, oy, cell * totalC, cell * totalR, Math.max(4, cell / 2));
  }
  const image = ctx.createImageData(cols, rows);
  for (let r = 0; r < rows; r += 1) {
    for (let c = 0; c < cols; c += 1) {
      const i = (r * cols + c) * 4;
      if (visible && !visible(r, c)) {
        image.data.set([241, 245, 249, 255], i);
        continue;
      }
      const [cr, cg, cb] = scale.rgb(values(r, c));
      image.data.set([cr, cg, cb, 255], i);
    }
  }
  // draw through a scratch canvas so the map scales with crisp cells
  const scratch = document.createElement('canvas');
  scratch.width = cols;
  scratch.height = rows;
  scratch.getContext('2d').putImageData(image, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(scratch, x0, y0, cols * cell, rows * cell);
  const showGrid = grid === 'auto' ? cell >= 6 : grid;
  if (showGrid) {
    ctx.strokeStyle = 'rgba(15, 23, 42, 0.18)';
    ctx.lineWidth = 1;
    ctx.beginPath();
    for (let r = -pad.top; r <= rows + pad.bottom; r += 1) {
      ctx.moveTo(ox, y0 + r * cell);
      ctx.lineTo(ox + totalC * cell, y0 + r * cell);
    }
    for (let c = -pad.left; c <= cols + pad.right; c += 1) {
      ctx.moveTo(x0 + c * cell, oy);
      ctx.lineTo(x0 + c * cell, oy + totalR * cell);
    }
    ctx.stroke();
  }
  const showNumbers = numbers === 'auto' ? cell >= 44 : numbers;
  if (showNumbers) {
    // one font for the map: the largest (≤ 24 px, ≤ half a cell) at which every number fits its cell
    const all = [];
    for (let r = 0; r < rows; r += 1) for (let c = 0; c < cols; c += 1) all.push(values(r, c));
    const fit = fitNumbers(ctx, all, cell, { digits: 2, maxFont: Math.min(24, Math.floor(cell / 2)), minFont: 9 });
    ctx.font = `${fit.size || 9}px ${MONO}`;
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    for (let r = 0; r < rows; r += 1) {
      for (let c = 0; c < cols; c += 1) {
        if (visible && !visible(r, c)) continue;
        const v = values(r, c);
        ctx.fillStyle = scale.ink(v);
        if (fit.size) ctx.fillText(fit.text(v), x0 + (c + 0.5) * cell, y0 + (r + 0.5) * cell);
      }
    }
    if (pad.top || pad.bottom || pad.left || pad.right) {
      ctx.fillStyle = COLOURS.paddingLine;
      for (let r = -pad.top; r < rows + pad.bottom; r += 1) {
        for (let c = -pad.left; c < cols + pad.right; c += 1) {
          if (r >= 0 && r < rows && c >= 0 && c < cols) continue;
          ctx.fillText('0', x0 + (c + 0.5) * cell, y0 + (r + 0.5) * cell);
        }
      }
    }
  }
  ctx.strokeStyle = COLOURS.ink2;
  ctx.lineWidth = 1.5;
  ctx.strokeRect(x0, y0, cols * cell, rows * cell);
  return { x0, y0, cell, rows, cols, pad, box };
}

function hatch(ctx, x, y, w, h, step) {
  ctx.save();
  ctx.beginPath();
  ctx.rect(x, y, w, h);
  ctx.clip();
  ctx.strokeStyle = 'rgba(100, 116, 139, 0.35)';
  ctx.lineWidth = 1;
  ctx.beginPath();
  for (let d = -h; d < w; d += step) {
    ctx.moveTo(x + d, y + h);
    ctx.lineTo(x + d + h, y);
  }
  ctx.stroke();
  ctx.restore();
}

/** Hatch a border band of a drawn map: cells another layer (e.g. a ZeroPad2d) added as padding. */
export function shadeBorder(ctx, geom, band) {
  const { x0, y0, cell, rows, cols } = geom;
  ctx.save();
  ctx.beginPath();
  ctx.rect(x0, y0, cols * cell, rows * cell);
  ctx.rect(x0 + band.left * cell, y0 + band.top * cell, (cols - band.left - band.right) * cell, (rows - band.top - band.bottom) * cell);
  ctx.clip('evenodd');
  ctx.fillStyle = 'rgba(226, 232, 240, 0.75)';
  ctx.fillRect(x0, y0, cols * cell, rows * cell);
  hatch(ctx, x0, y0, cols * cell, rows * cell, 6);
  ctx.restore();
}

/** Outline each tap cell [{iy, ix, pad}] on a map drawn by drawMap, and the window's span, dashed. */
export function drawTaps(ctx, geom, taps, { colour = COLOURS.window, highlight = -1 } = {}) {
  if (!taps.length) return;
  const { x0, y0, cell } = geom;
  const ys = taps.map((t) => t.iy);
  const xs = taps.map((t) => t.ix);
  const top = Math.min(...ys);
  const left = Math.min(...xs);
  const bottom = Math.max(...ys) + 1;
  const right = Math.max(...xs) + 1;
  ctx.save();
  ctx.setLineDash([5, 4]);
  ctx.strokeStyle = colour;
  ctx.lineWidth = 2;
  ctx.strokeRect(x0 + left * cell - 2, y0 + top * cell - 2, (right - left) * cell + 4, (bottom - top) * cell + 4);
  ctx.setLineDash([]);
  ctx.fillStyle = 'rgba(245, 158, 11, 0.28)';
  ctx.lineWidth = Math.max(1.5, Math.min(3, cell / 8));
  taps.forEach((t, i) => {
    ctx.fillRect(x0 + t.ix * cell, y0 + t.iy * cell, cell, cell);
    ctx.strokeStyle = i === highlight ? COLOURS.current : colour;
    ctx.strokeRect(x0 + t.ix * cell, y0 + t.iy * cell, cell, cell);
  });
  ctx.restore();
}

/** Outline one cell (the current output) of a map. */
export function markCell(ctx, geom, r, c, colour = COLOURS.current) {
  const { x0, y0, cell } = geom;
  ctx.save();
  ctx.strokeStyle = colour;
  ctx.lineWidth = Math.max(2, Math.min(4, cell / 5));
  ctx.strokeRect(x0 + c * cell - 1, y0 + r * cell - 1, cell + 2, cell + 2);
  ctx.restore();
}

/** `fmt` without the leading zero ("−.17"): what a table does when a column is narrow. */
export function compact(text) {
  return text.replace(/^(−?)0\./, '$1.');
}

/** The texts `v` may be shown as, most precise first: `digits` decimals, then shorter forms. */
export function numberForms(v, digits = 2) {
  const forms = [formatCell(v, digits), compact(formatCell(v, digits))];
  if (digits > 1) forms.push(formatCell(v, digits - 1), compact(formatCell(v, digits - 1)));
  return forms;
}

/**
 * How to write all `values` in cells `width` px wide: the most precise form (see numberForms) that fits
 * every value at ≥ minFont canvas px, at the largest font ≤ maxFont where it does. Returns
 * {form, size, text(v)}; size 0 when nothing fits (draw no numbers rather than overflowing ones).
 */
export function fitNumbers(ctx, values, width, { digits = 2, maxFont = 22, minFont = 12 } = {}) {
  minFont = Math.max(minFont, Math.ceil(textFloor(ctx)));
  maxFont = Math.max(maxFont, minFont);
  const room = width - 4;
  const real = values.filter((v) => typeof v === 'number');
  const forms = numberForms(0, digits).length;
  const widest = (form, size) => {
    ctx.font = `${size}px ${MONO}`;
    return Math.max(0, ...real.map((v) => ctx.measureText(numberForms(v, digits)[form]).width));
  };
  for (let form = 0; form < forms; form += 1) {
    if (widest(form, minFont) > room) continue;
    let size = maxFont;
    while (size > minFont && widest(form, size) > room) size -= 1;
    return { form, size, text: (v) => numberForms(v, digits)[form] };
  }
  return { form: -1, size: 0, text: () => '' };
}

/**
 * A small grid of numbers (row-major `values`), each cell tinted by `scale`; `mask[i]` true draws the
 * cell as padding. Every number is sized to fit inside its cell (one font for the whole grid, so the
 * grid reads evenly). Returns its box and the font used.
 */
export function drawNumberGrid(ctx, x, y, cellSize, rows, cols, values, { scale, mask = null, highlight = -1, title = '', digits = 2, numbers = true, maxFont = 22, minFont = 12, titleSize = 16 } = {}) {
  // cells may be wider than tall ({w, h}): numbers need width, the grid's height is what is scarce
  const cw = typeof cellSize === 'number' ? cellSize : cellSize.w;
  const chh = typeof cellSize === 'number' ? cellSize : cellSize.h;
  if (title) label(ctx, title, x + (cols * cw) / 2, y - 8, { size: titleSize, weight: 600, colour: COLOURS.ink2, align: 'center' });
  // one font and one number form for the whole grid: the most precise that fits every cell
  const fit = numbers && chh >= Math.max(minFont, textFloor(ctx)) + 4 ? fitNumbers(ctx, values, cw, { digits, maxFont, minFont }) : { size: 0 };
  const show = fit.size > 0;
  ctx.textAlign = 'center';
  ctx.textBaseline = 'middle';
  for (let r = 0; r < rows; r += 1) {
    for (let c = 0; c < cols; c += 1) {
      const i = r * cols + c;
      const v = values[i];
      const isPad = mask && mask[i];
      ctx.fillStyle = isPad ? COLOURS.padding : v === null || v === undefined ? COLOURS.muted : scale.colour(v);
      ctx.fillRect(x + c * cw, y + r * chh, cw, chh);
      if (isPad) hatch(ctx, x + c * cw, y + r * chh, cw, chh, 6);
      if (!show) continue;
      const text = v === null || v === undefined ? (isPad ? 'pad' : '·') : fit.text(v);
      ctx.font = `${fit.size}px ${MONO}`;
      ctx.fillStyle = isPad || v === null || v === undefined ? COLOURS.ink2 : scale.ink(v);
      ctx.fillText(text, x + (c + 0.5) * cw, y + (r + 0.5) * chh, cw - 2);
    }
  }
  ctx.strokeStyle = 'rgba(15, 23, 42, 0.25)';
  ctx.lineWidth = 1;
  for (let r = 0; r <= rows; r += 1) {
    ctx.beginPath();
    ctx.moveTo(x, y + r * chh);
    ctx.lineTo(x + cols * cw, y + r * chh);
    ctx.stroke();
  }
  for (let c = 0; c <= cols; c += 1) {
    ctx.beginPath();
    ctx.moveTo(x + c * cw, y);
    ctx.lineTo(x + c * cw, y + rows * chh);
    ctx.stroke();
  }
  if (highlight >= 0) {
    ctx.strokeStyle = COLOURS.current;
    ctx.lineWidth = 3;
    ctx.strokeRect(x + (highlight % cols) * cw, y + Math.floor(highlight / cols) * chh, cw, chh);
  }
  return { x, y, w: cols * cw, h: rows * chh, cell: cw, cellH: chh, font: fit.size, form: fit.form };
}

/** A legend bar for `scale` with its end values, at (x, y), `w` wide. */
export function drawLegend(ctx, scale, x, y, w, caption = '', size = 12) {
  size = Math.max(size, textFloor(ctx));
  const gradient = ctx.createLinearGradient(x, 0, x + w, 0);
  scale.stops.forEach((c, i) => gradient.addColorStop(i / (scale.stops.length - 1), c));
  ctx.fillStyle = gradient;
  ctx.fillRect(x, y, w, 10);
  ctx.strokeStyle = COLOURS.line;
  ctx.strokeRect(x, y, w, 10);
  const below = y + 12 + size;
  label(ctx, formatCell(scale.lo), x, below, { size, weight: 400, colour: COLOURS.ink2 });
  label(ctx, formatCell(scale.hi), x + w, below, { size, weight: 400, colour: COLOURS.ink2, align: 'right' });
  // the 0 of a diverging scale, when there is room for it between the two ends
  const ends = Math.max(ctx.measureText(formatCell(scale.lo)).width, ctx.measureText(formatCell(scale.hi)).width);
  if (scale.diverging && w / 2 - ends > size) label(ctx, '0', x + w / 2, below, { size, weight: 400, colour: COLOURS.ink2, align: 'center' });
  if (caption) label(ctx, caption, x + w / 2, y - 5, { size, weight: 500, colour: COLOURS.ink2, align: 'center' });
}

/** The map cell under canvas point (px, py), or null. */
export function cellAt(geom, px, py) {
  if (!geom) return null;
  const c = Math.floor((px - geom.x0) / geom.cell);
  const r = Math.floor((py - geom.y0) / geom.cell);
  if (r < 0 || c < 0 || r >= geom.rows || c >= geom.cols) return null;
  return { r, c };
}

/** Canvas coordinates of a pointer event (the canvas may be scaled by CSS). */
export function canvasPoint(canvas, event) {
  const rect = canvas.getBoundingClientRect();
  return {
    x: ((event.clientX - rect.left) * canvas.width) / rect.width,
    y: ((event.clientY - rect.top) * canvas.height) / rect.height,
  };
}
