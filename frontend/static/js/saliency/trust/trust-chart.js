// A small SVG line chart drawn at its on-screen size (no viewBox scaling), so its text has the page's
// real font size (0.8 rem: 12.8 px normally, 16 px in projector mode) and tests can measure it.

const NS = 'http://www.w3.org/2000/svg';

function svg(tag, attrs = {}, text = null) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== null) node.textContent = text;
  return node;
}

/**
 * Draw into `host` (emptied): series [{name, colour, values, dash}] over x positions `xs`.
 * Options: {width, height, yMin, yMax, xLabel, yLabel, xTicks: [{x, text}], hLines: [{y, text}],
 * vLines: [{x, text}], cursor: x | null}. Returns {setCursor(x)}.
 */
export function lineChart(host, { series, xs, width, height, yMin = 0, yMax = 1, xLabel, yLabel, xTicks = [],
  hLines = [], vLines = [], cursor = null, fontPx = 13 }) {
  const pad = { left: fontPx * 3.4, right: fontPx * 1.8, top: fontPx * 0.8, bottom: fontPx * 3.2 };
  const w = width - pad.left - pad.right;
  const h = height - pad.top - pad.bottom;
  const xMin = Math.min(...xs);
  const xMax = Math.max(...xs);
  const px = (x) => pad.left + ((x - xMin) / Math.max(xMax - xMin, 1e-12)) * w;
  const py = (y) => pad.top + (1 - (y - yMin) / Math.max(yMax - yMin, 1e-12)) * h;
  const root = svg('svg', { width, height, class: 'trust-chart', role: 'img', 'aria-label': `${yLabel} against ${xLabel}` });
  root.append(svg('rect', { x: pad.left, y: pad.top, width: w, height: h, class: 'trust-chart-frame' }));
  for (const y of [yMin, (yMin + yMax) / 2, yMax]) {
    root.append(svg('text', { x: pad.left - 6, y: py(y) + fontPx * 0.35, 'text-anchor': 'end', class: 'trust-chart-text' }, y.toFixed(1)));
  }
  for (const t of xTicks) root.append(svg('text', { x: px(t.x), y: pad.top + h + fontPx * 1.2, 'text-anchor': 'middle', class: 'trust-chart-text' }, t.text));
  root.append(svg('text', { x: pad.left + w / 2, y: height - 4, 'text-anchor': 'middle', class: 'trust-chart-text' }, xLabel));
  root.append(svg('text', { x: fontPx, y: pad.top + h / 2, 'text-anchor': 'middle', class: 'trust-chart-text',
    transform: `rotate(-90 ${fontPx} ${pad.top + h / 2})` }, yLabel));
  for (const line of hLines) {
    root.append(svg('line', { x1: pad.left, x2: pad.left + w, y1: py(line.y), y2: py(line.y), class: 'trust-chart-rule' }));
    if (line.text) root.append(svg('text', { x: pad.left + w - 4, y: py(line.y) - 4, 'text-anchor': 'end', class: 'trust-chart-text' }, line.text));
  }
  for (const line of vLines) {
    root.append(svg('line', { x1: px(line.x), x2: px(line.x), y1: pad.top, y2: pad.top + h, class: 'trust-chart-rule' }));
    if (line.text) root.append(svg('text', { x: px(line.x) + 4, y: pad.top + fontPx, class: 'trust-chart-text' }, line.text));
  }
  for (const s of series) {
    const points = s.values.map((v, i) => `${px(xs[i]).toFixed(1)},${py(v).toFixed(1)}`).join(' ');
    root.append(svg('polyline', { points, fill: 'none', stroke: s.colour, 'stroke-width': s.width || 2.5,
      'stroke-dasharray': s.dash || 'none', 'data-name': s.name }));
  }
  const mark = svg('line', { y1: pad.top, y2: pad.top + h, class: 'trust-chart-cursor' });
  root.append(mark);
  function setCursor(x) {
    mark.setAttribute('visibility', x === null ? 'hidden' : 'visible');
    if (x !== null) {
      mark.setAttribute('x1', px(x));
      mark.setAttribute('x2', px(x));
    }
  }
  setCursor(cursor);
  host.replaceChildren(root);
  return { setCursor };
}

/** The root font size × 0.8: what 0.8 rem is on this page right now (projector mode: 16 px). */
export function chartFontPx() {
  return 0.8 * parseFloat(getComputedStyle(document.documentElement).fontSize);
}
