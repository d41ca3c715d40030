// Deletion and insertion played back: the model's input losing its pixels in the map's order (left) and
// the baseline getting them back (right), frame i = step i of deletion.json. The frames are composed in
// the browser from three things the server gives: the input picture, the baseline picture and the pixel
// order (order.npy) — so nothing but those is downloaded, and every frame is exactly what the model saw.

import { el } from '../../dom.js';
import { parseNpy } from '../../common/npy.js';
import { createAnimator } from '../../common/animator.js';
import { formatPercent } from '../../common/format.js';

function loadPixels(url, signal) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => {
      const c = document.createElement('canvas');
      c.width = img.naturalWidth;
      c.height = img.naturalHeight;
      const g = c.getContext('2d');
      g.drawImage(img, 0, 0);
      resolve(g.getImageData(0, 0, c.width, c.height));
    };
    img.onerror = () => reject(new Error(`${url} could not be loaded`));
    signal.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')), { once: true });
    img.src = url;
  });
}

/** n_i = round(i·N/k), as the server counts (Python's round: halves to even). */
export function changedCount(i, size, steps) {
  const exact = (i * size) / steps;
  const down = Math.floor(exact);
  const frac = exact - down;
  if (Math.abs(frac - 0.5) < 1e-9) return down % 2 === 0 ? down : down + 1;
  return Math.round(exact);
}

/** The deletion (or insertion) frame: pixels order[0..n) from `from`, the rest from `rest`. */
export function composeFrame(target, from, rest, order, n) {
  target.data.set(rest.data);
  for (let j = 0; j < n; j += 1) {
    const p = order[j] * 4;
    target.data[p] = from.data[p];
    target.data[p + 1] = from.data[p + 1];
    target.data[p + 2] = from.data[p + 2];
  }
}

export function createPlayback(parent, { onFrame = () => {} } = {}) {
  const left = el('canvas', { className: 'trust-frame', attrs: { 'aria-label': 'deletion: the image losing its most important pixels' } });
  const right = el('canvas', { className: 'trust-frame', attrs: { 'aria-label': 'insertion: the pixels coming back' } });
  const caption = el('p', { className: 'trust-play-caption', attrs: { 'aria-live': 'polite' } });
  const play = el('button', { type: 'button', className: 'trust-button', text: 'Play' });
  const slider = el('input', { type: 'range', min: 0, max: 20, value: 0, className: 'trust-slider', attrs: { 'aria-label': 'step' } });
  const root = el('div', { className: 'trust-playback' }, [
    el('div', { className: 'trust-frames' }, [
      el('figure', {}, [left, el('figcaption', { text: 'Deletion: most important pixels go first' })]),
      el('figure', {}, [right, el('figcaption', { text: 'Insertion: they come back first' })]),
    ]),
    el('div', { className: 'trust-play-controls' }, [play, slider]), caption,
  ]);
  parent.append(root);
  let data = null;
  let animator = null;
  let abort = null;

  function draw(i) {
    if (!data) return;
    const { input, base, order, answer } = data;
    const n = changedCount(i, order.length, answer.steps);
    const frame = new ImageData(input.width, input.height);
    composeFrame(frame, base, input, order, n);
    left.getContext('2d').putImageData(frame, 0, 0);
    composeFrame(frame, input, base, order, n);
    right.getContext('2d').putImageData(frame, 0, 0);
    slider.value = String(i);
    root.dataset.step = String(i);
    caption.textContent = `Step ${i} of ${answer.steps}: ${formatPercent(n / order.length, 0)} of the pixels changed · `
      + `p(“${answer.target.label}”) ${formatPercent(answer.deletion[i])} after deletion, ${formatPercent(answer.insertion[i])} after insertion`;
    onFrame(answer.fractions[i]);
  }

  /** Load the pictures and order of one deletion.json answer, then show step 0. */
  async function show(api, answer) {
    if (abort) abort.abort();
    abort = new AbortController();
    const mine = abort;
    if (animator) animator.dispose();
    data = null;
    root.dataset.ready = 'false';
    const [input, base, orderFile] = await Promise.all([
      loadPixels(answer.urls.input, mine.signal),
      loadPixels(answer.urls.baseline, mine.signal),
      api.request(answer.urls.order, { signal: mine.signal }).then((r) => r.arrayBuffer()),
    ]);
    if (abort !== mine) return;
    const order = Int32Array.from(parseNpy(orderFile).data);
    for (const c of [left, right]) {
      c.width = input.width;
      c.height = input.height;
    }
    data = { input, base, order, answer };
    slider.max = String(answer.steps);
    animator = createAnimator({ count: answer.steps + 1, onFrame: draw, fps: 4,
      onPlayState: (playing) => { play.textContent = playing ? 'Pause' : 'Play'; } });
    animator.seek(0);
    root.dataset.ready = 'true';
  }

  play.addEventListener('click', () => animator && animator.toggle());
  slider.addEventListener('input', () => animator && (animator.pause(), animator.seek(Number(slider.value))));

  return {
    show,
    dispose() {
      if (abort) abort.abort();
      if (animator) animator.dispose();
    },
  };
}
