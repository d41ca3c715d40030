// The output-size formula under the step-through's picture, with the layer's own numbers
// (window: common/window-math.js's window2d answer; null for layers without a window).

import { el } from '../dom.js';

const GENERAL_FORMULA = 'Output size = ⌊(input + padding before + padding after − dilation·(kernel−1) − 1) / stride⌋ + 1 — ';

/** The output-size formula with this layer's numbers, shown under the canvas. */
export function geometryText(window) {
  return window ? GENERAL_FORMULA + geometryNumbers(window) : 'Output size: one input cell per output cell (the output has the input\'s size).';
}

/** This layer's numbers in the formula: "H: ⌊(…)⌋ + 1 = 28 · W: …". */
function geometryNumbers(window) {
  const { rows, cols } = window;
  const line = (name, a) => `${name}: ⌊(${a.size} + ${a.padBefore} + ${a.padAfter} − ${a.dilation}·(${a.kernel}−1) − 1) / ${a.stride}⌋ + 1 = ${a.outSize}`;
  const tail = window.tilingMessage() ? ' (not tiled: the last rows/columns are never read)' : '';
  return `${line('H', rows)} · ${line('W', cols)}${tail}`;
}

/** The formula as page nodes: projector mode shows only the layer's numbers (one line under the picture,
 *  above the fold); the general form stays in the text and in "What am I looking at?". */
export function geometryNodes(window) {
  if (!window) return [geometryText(null)];
  return [el('span', { className: 'geometry-general', text: GENERAL_FORMULA }), geometryNumbers(window)];
}
