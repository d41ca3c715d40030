// The network's pictures a run streams (first-layer filters, the probe image and its feature maps): uint8
// tensors in base64 with their shape ({shape, min, max, data}), drawn as grids of small enlarged tiles.

import { COLOURS } from '../common/canvas.js';

/** The bytes of a streamed tensor. */
export function decodeU8(payload) {
  const text = atob(payload.data);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i += 1) bytes[i] = text.charCodeAt(i);
  return bytes;
}

/**
 * Draw tiles of a tensor: filters (O×I×k×k: one tile per output filter, RGB when I is 3, else the mean of its
 * inputs), feature maps (C×H×W) or one picture (C×H×W with C 1 or 3, as one tile with `single`).
 * Grey ramp: the tensor's minimum is black, its maximum white; with `perTile`, each tile's own minimum and
 * maximum (filters: a 5×5 filter's pattern shows even when its weights are small next to another filter's).
 */
export function drawTiles(canvas, payload, { columns = 8, gap = 4, single = false, perTile = false } = {}) {
  const ctx = canvas.getContext('2d');
  if (!payload) {
    ctx.fillStyle = COLOURS.surface;
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    return;
  }
  const bytes = decodeU8(payload);
  const shape = payload.shape;
  const [count, inputs, h, w] = shape.length === 4 ? shape : single ? [1, shape[0], shape[1], shape[2]] : [shape[0], 1, shape[1], shape[2]];
  const cols = Math.min(columns, count);
  const rows = Math.ceil(count / cols);
  // tiles as large as the width allows; the canvas is as tall as its rows (resizing clears it)
  const scale = Math.max(1, Math.floor((canvas.width - gap * (cols - 1)) / cols / w));
  const height = rows * h * scale + gap * (rows - 1);
  if (canvas.height !== height) canvas.height = height;
  ctx.fillStyle = COLOURS.surface;
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  const image = ctx.createImageData(w, h);
  const tile = document.createElement('canvas');
  tile.width = w;
  tile.height = h;
  const tileCtx = tile.getContext('2d');
  ctx.imageSmoothingEnabled = false;
  const plane = h * w;
  const values = new Float32Array(plane * 3);
  for (let n = 0; n < count; n += 1) {
    for (let p = 0; p < plane; p += 1) {
      for (let c = 0; c < 3; c += 1) {
        if (inputs === 3) values[p * 3 + c] = bytes[(n * 3 + c) * plane + p];
        else {
          let sum = 0;
          for (let i = 0; i < inputs; i += 1) sum += bytes[(n * inputs + i) * plane + p];
          values[p * 3 + c] = sum / inputs;
        }
      }
    }
    let lo = 0;
    let hi = 255;
    if (perTile) {
      lo = Math.min(...values);
      hi = Math.max(...values);
    }
    const span = hi > lo ? hi - lo : 1;
    for (let p = 0; p < plane; p += 1) {
      const rgb = [0, 1, 2].map((c) => Math.round(((values[p * 3 + c] - lo) / span) * 255));
      image.data.set([...rgb, 255], p * 4);
    }
    tileCtx.putImageData(image, 0, 0);
    const col = n % cols;
    const row = Math.floor(n / cols);
    ctx.drawImage(tile, col * (w * scale + gap), row * (h * scale + gap), w * scale, h * scale);
  }
}
