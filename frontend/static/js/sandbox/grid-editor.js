// An editable grid of numbers (a table of number inputs): the sandbox's input and kernel editors.

import { el, listen, disposer } from '../dom.js';

/**
 * @param {HTMLElement} parent
 * @param {{label: string, onChange: (grid: number[][]) => void, step?: string}} opts
 */
export function createGridEditor(parent, { label, onChange, step = 'any' }) {
  const bag = disposer();
  const table = el('table', { className: 'grid-editor', attrs: { 'aria-label': label } });
  parent.append(table);
  let grid = [[0]];

  bag.add(listen(table, 'change', (event) => {
    const input = event.target.closest('input');
    if (!input) return;
    const value = Number(input.value);
    const r = Number(input.dataset.r);
    const c = Number(input.dataset.c);
    if (!Number.isFinite(value) || input.value.trim() === '') {
      input.value = String(grid[r][c]);
      return;
    }
    grid = grid.map((row) => [...row]);
    grid[r][c] = value;
    onChange(grid);
  }));

  return {
    /** Show `next` (rebuilds only when the size changed, so focus survives edits). */
    show(next, { small = false } = {}) {
      const sameSize = next.length === grid.length && next[0].length === grid[0].length && table.rows.length === next.length;
      grid = next.map((row) => [...row]);
      table.classList.toggle('is-small', small);
      if (!sameSize) {
        table.replaceChildren(...grid.map((row, r) => el('tr', {}, row.map((v, c) => el('td', {}, [
          el('input', { type: 'number', step, value: String(v), dataset: { r, c }, attrs: { 'aria-label': `${label} row ${r + 1} column ${c + 1}` } }),
        ])))));
        return;
      }
      grid.forEach((row, r) => row.forEach((v, c) => {
        const input = table.rows[r].cells[c].firstChild;
        if (document.activeElement !== input && Number(input.value) !== v) input.value = String(v);
      }));
    },
    dispose: () => bag.run(),
  };
}
