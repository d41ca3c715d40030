// Channel selections as the URL writes them ("3,5,7") and the top k channels by mean activation.

/** "3,5,x,7" -> [3, 5, 7] (numbers only, no repeats). */
export function parseChannels(text) {
  return [...new Set(String(text || '').split(',').map((t) => t.trim()).filter((t) => /^\d+$/.test(t)).map(Number))];
}

/** Indices of the k largest means, largest first. */
export function topChannels(means, k) {
  return means.map((m, i) => [m, i]).sort((a, b) => b[0] - a[0]).slice(0, Math.max(1, k)).map(([, i]) => i);
}

/** The selection after a click on channel `c`: only it, or (additive: shift-click) `c` added or removed.
 * '' when nothing would be left (the caller keeps the selection it had). */
export function pickChannel(text, c, additive) {
  const picked = new Set(additive ? parseChannels(text) : []);
  if (picked.has(c)) picked.delete(c); else picked.add(c);
  return [...picked].sort((a, b) => a - b).join(',');
}

/** The channels an ablation edits: the selection, or with `invert` every other one of the layer's `count`. */
export function editedChannels(text, invert, count) {
  const picked = new Set(parseChannels(text));
  if (!invert) return picked;
  const out = new Set();
  for (let c = 0; c < count; c += 1) if (!picked.has(c)) out.add(c);
  return out;
}
