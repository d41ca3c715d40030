// Every number the page prints for people, in one place, so one rule reads the same in every view.
// Pure functions: no DOM, testable anywhere (tests/browser/test_format_js.py runs them under node).

const MINUS = '−'; // U+2212: a real minus sign, as wide as the plus, for numbers drawn on canvases

/** "12,345" for 12345. */
export const formatInt = (n) => Number(n).toLocaleString('en-US');

/** "6 × 28 × 28" for [6, 28, 28]; "—" for anything else. */
export const formatShape = (shape) => (Array.isArray(shape) ? shape.join(' × ') : '—');

/** "512 B", "12.3 KB", "45.6 MB"; "?" when unknown. */
export function formatBytes(bytes) {
  if (!Number.isFinite(bytes)) return '?';
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

/**
 * A measured value for a readout: `digits` significant digits without trailing zeros; exponent form
 * (two decimals) when the magnitude is below 1e-3 or at least 1e4; "0" for zero; "—" when missing.
 */
export function formatValue(v, digits = 4) {
  if (v === null || v === undefined || !Number.isFinite(v)) return '—';
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-3) return v.toExponential(2);
  return Number(v.toPrecision(digits)).toString();
}

/** A tile caption: 3 significant digits, exponent form with one decimal outside [1e-3, 1e4); "" when missing. */
export function formatShort(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return '';
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-3) return v.toExponential(1);
  return Number(v.toPrecision(3)).toString();
}

/**
 * A number drawn in a canvas cell: integers stay integers; others keep `digits` decimals (fewer when
 * large), exponent form outside [1e-3, 1e5), one significant digit rather than a misleading 0.00, a real
 * minus sign; "·" when missing.
 */
export function formatCell(v, digits = 3) {
  if (v === null || v === undefined) return '·';
  if (Number.isInteger(v) && Math.abs(v) < 1e5) return String(v).replace('-', MINUS);
  const a = Math.abs(v);
  let text;
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) text = v.toExponential(1);
  else if (a >= 1000) text = v.toFixed(0);
  else if (a >= 100) text = v.toFixed(1);
  else if (a !== 0 && a < 0.5 * 10 ** -digits) text = v.toPrecision(1); // never a misleading 0.00
  else text = v.toFixed(digits);
  return text.replace('-', MINUS);
}

/**
 * A fraction as a percentage with `decimals` decimals: 0.973 → "97.3%"; "—" when not a number.
 * With `markTiny`, values too small to show (below 1 in the last decimal) read "<0.1%" rather than "0.0%".
 */
export function formatPercent(p, decimals = 1, { markTiny = false } = {}) {
  if (p === null || p === undefined || !Number.isFinite(p)) return '—';
  const smallest = 10 ** -decimals;
  if (markTiny && p * 100 < smallest) return `<${smallest.toFixed(decimals)}%`;
  return `${(p * 100).toFixed(decimals)}%`;
}
