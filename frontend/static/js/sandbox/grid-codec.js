// Grids in the URL: rows joined by ';', numbers by ',' ("1,0,-1;2,0,-2;1,0,-1"), so a link reproduces
// the sandbox exactly. Pure functions.

/** Text for a grid (numbers rounded to 4 decimals to keep links short). */
export function encodeGrid(grid) {
  return grid.map((row) => row.map((v) => String(Math.round(v * 1e4) / 1e4)).join(',')).join(';');
}

/** The grid in `text`, or null when it is not a rectangle of finite numbers within maxSide×maxSide. */
export function decodeGrid(text, maxSide) {
  if (!text) return null;
  const rows = text.split(';').map((row) => row.split(',').map(Number));
  const width = rows[0].length;
  if (!rows.length || rows.length > maxSide || width > maxSide) return null;
  if (rows.some((row) => row.length !== width || row.some((v) => !Number.isFinite(v)))) return null;
  return rows;
}

/** A rows×cols grid keeping the old values where they overlap (new cells are 0). */
export function resizeGrid(grid, rows, cols) {
  return Array.from({ length: rows }, (_, r) => Array.from({ length: cols }, (_, c) => (grid[r] && grid[r][c] !== undefined ? grid[r][c] : 0)));
}
