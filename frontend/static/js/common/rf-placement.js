// Where a layer's map belongs on the input picture. Unit (i, j) of a layer is centred on input pixel
// (start + i·jump) per axis (the model's receptive_field.start / .jump, traced by the server — the same
// geometry server/services/saliency/geometry.py uses to place saliency maps). Drawn as cells of jump×jump
// pixels around those centres, a map without padding (62×62 over 64×64) sits inside the picture instead
// of being stretched over all of it.

/**
 * The box the H×W map covers, in input pixels and as fractions of the input (for CSS percentages).
 * Pixel p spans [p, p + 1), so unit 0's cell starts at start + 0.5 − jump/2.
 * @param {{start: number[], jump: number[], whole_image?: boolean}|null} field
 * @param {[number, number]} mapHW
 * @param {[number, number]} inputHW
 * @returns {{top, left, height, width, fraction: {top, left, height, width}, byField: boolean}}
 */
export function mapPlacement(field, [H, W], [inH, inW]) {
  let box;
  if (!field || field.whole_image || !Array.isArray(field.start)) {
    box = { top: 0, left: 0, height: inH, width: inW, byField: false }; // no field: stretched, and said so
  } else {
    const [sy, sx] = field.start;
    const [jy, jx] = field.jump;
    box = { top: sy + 0.5 - jy / 2, left: sx + 0.5 - jx / 2, height: H * jy, width: W * jx, byField: true };
  }
  box.fraction = { top: box.top / inH, left: box.left / inW, height: box.height / inH, width: box.width / inW };
  return box;
}

/** A sentence saying how the map was placed (for the note under the picture). */
export function placementNote(box, [H, W], [inH, inW]) {
  if (!box.byField) {
    return H === inH && W === inW ? `${H}×${W}, the input's own size.` : `${H}×${W} map stretched over the ${inH}×${inW} input (this layer has no receptive-field geometry).`;
  }
  const f = (v) => String(Math.round(v * 100) / 100);
  if (H === inH && W === inW && box.top === 0 && box.left === 0) return `${H}×${W}, the input's own size: each value on its own pixel.`;
  return `${H}×${W} map placed by receptive field: each value drawn on the ${f(box.height / H)}×${f(box.width / W)} px around its centre; `
    + `it covers input rows ${f(box.top)}–${f(box.top + box.height)} and columns ${f(box.left)}–${f(box.left + box.width)} of ${inH}×${inW}.`;
}
