// Channel selections as the URL writes them ("3,5,7") and the top k channels by mean activation.

/** "3,5,x,7" -> [3, 5, 7] (numbers only, no repeats). */
export function parseChannels(text) {
  return [...new Set(String(text || '').split(',').map((t) => t.trim()).filter((t) => /^\d+$/.test(t)).map(Number))];
}

/** Indices of the k largest means, largest first. */
export function topChannels(means, k) {
  return means.map((m, i) => [m, i]).sort((a, b) => b[0] - a[0]).slice(0, Math.max(1, k)).map(([, i]) => i);
}
