// Hover numbers and click targets on a drawn scene: which map cell or grid cell is under the pointer.

import { listen, disposer } from '../dom.js';
import { formatCell } from './format.js';
import { canvasPoint, cellAt } from './canvas.js';

/** The map or grid cell under a pointer event: {map: 'input'|'output'|grid name, r, c, value} or null. */
export function pick(canvas, hits, event) {
  if (!hits) return null;
  const p = canvasPoint(canvas, event);
  for (const map of ['output', 'input']) {
    const geom = hits[map];
    const cell = cellAt(geom, p.x, p.y);
    if (cell) return { map, ...cell, value: geom.values.values[cell.r * geom.cols + cell.c] };
  }
  for (const grid of hits.grids || []) {
    const { box, rows, cols } = grid;
    const c = Math.floor(((p.x - box.x) / box.w) * cols);
    const r = Math.floor(((p.y - box.y) / box.h) * rows);
    if (r >= 0 && c >= 0 && r < rows && c < cols) return { map: grid.name, r, c, value: grid.values[r * cols + c] };
  }
  return null;
}

/** Show the number under the pointer in `tooltip`; returns the cleanup. */
export function setupHover(canvas, tooltip, getHits, describe = defaultText) {
  const bag = disposer();
  bag.add(listen(canvas, 'pointermove', (event) => {
    const hit = pick(canvas, getHits(), event);
    if (!hit) {
      tooltip.hidden = true;
      canvas.classList.remove('is-pickable');
      return;
    }
    canvas.classList.toggle('is-pickable', hit.map === 'output');
    tooltip.textContent = describe(hit);
    tooltip.hidden = false;
    const rect = canvas.getBoundingClientRect();
    tooltip.style.left = `${event.clientX - rect.left + 14}px`;
    tooltip.style.top = `${event.clientY - rect.top + 14}px`;
  }));
  bag.add(listen(canvas, 'pointerleave', () => {
    tooltip.hidden = true;
  }));
  return () => bag.run();
}

function defaultText(hit) {
  const where = `(y ${hit.r}, x ${hit.c})`;
  const value = hit.value === null || hit.value === undefined ? 'padding' : formatCell(hit.value, 4);
  if (hit.map === 'output') return `output ${where} = ${value} · click to jump here`;
  if (hit.map === 'input') return `input ${where} = ${value}`;
  return `${hit.map} [${hit.r}, ${hit.c}] = ${value}`;
}
