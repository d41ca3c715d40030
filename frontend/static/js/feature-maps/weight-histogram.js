// A histogram of a layer's weights as SVG bars, with the range and zero marked.

import { formatValue } from '../common/format.js';

const SVG = 'http://www.w3.org/2000/svg';
const WIDTH = 320;
const HEIGHT = 90;

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Draw `hist` ({counts, edges, min, max, mean, std, count}) into `parent`, replacing what was there. */
export function drawHistogram(parent, hist) {
  const peak = Math.max(1, ...hist.counts);
  const lo = hist.edges[0];
  const hi = hist.edges[hist.edges.length - 1];
  const x = (v) => ((v - lo) / (hi - lo || 1)) * WIDTH;
  const root = svg('svg', {
    class: 'histogram',
    viewBox: `0 0 ${WIDTH} ${HEIGHT + 1}`,
    role: 'img',
    'aria-label': `Histogram of ${hist.count} weights from ${formatValue(hist.min)} to ${formatValue(hist.max)}`,
  });
  hist.counts.forEach((count, i) => {
    const h = (count / peak) * HEIGHT;
    const x0 = x(hist.edges[i]);
    const bar = svg('rect', {
      class: 'histogram-bar',
      x: x0.toFixed(2),
      y: (HEIGHT - h).toFixed(2),
      width: Math.max(0.5, x(hist.edges[i + 1]) - x0 - 0.5).toFixed(2),
      height: h.toFixed(2),
    });
    bar.append(svg('title', {}, `${formatValue(hist.edges[i])} to ${formatValue(hist.edges[i + 1])}: ${count}`));
    root.append(bar);
  });
  root.append(svg('line', { class: 'histogram-axis', x1: 0, x2: WIDTH, y1: HEIGHT, y2: HEIGHT }));
  // the range and zero as page text under the picture (SVG text would shrink with the picture)
  const labels = document.createElement('div');
  labels.className = 'histogram-labels';
  const mark = (text, left, align) => {
    const span = document.createElement('span');
    span.className = `histogram-label is-${align}`;
    span.style.left = `${left}%`;
    span.textContent = text;
    labels.append(span);
  };
  if (lo < 0 && hi > 0) {
    root.append(svg('line', { class: 'histogram-zero', x1: x(0), x2: x(0), y1: 0, y2: HEIGHT }));
    mark('0', (x(0) / WIDTH) * 100, 'middle');
  }
  mark(formatValue(lo), 0, 'start');
  mark(formatValue(hi), 100, 'end');
  parent.replaceChildren(root, labels);
  return root;
}
