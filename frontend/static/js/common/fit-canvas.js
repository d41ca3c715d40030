// Keep a canvas's whole picture above the fold: its CSS width is the smaller of its container's width
// and what the viewport's height leaves below its top edge (aspect kept). Refits on resize and when the
// page layout changes (projector mode, sidebar, full screen: the 'convscope:layout' event).

import { listen, disposer } from '../dom.js';

const MIN_WIDTH = 720; // below this the numbers get too small to read: let the page scroll instead
const PROJECTOR_MIN_SCALE = 0.75;

/**
 * @param {HTMLCanvasElement} canvas
 * @param {object} [opts]
 * @param {number|(() => number)} [opts.margin]  px to leave under the canvas (a function: read at each fit,
 *   e.g. the height of a line that must stay above the fold with it)
 * @param {() => void} [opts.onFit]  called when the displayed width or the page's smallest text (--min-text,
 *   larger in projector mode) changed: redraw, so the type keeps its size on screen (common/canvas.js)
 * @returns {{fit: () => void, dispose: () => void}}
 */
export function fitCanvasToViewport(canvas, { margin = 12, onFit = null } = {}) {
  const bag = disposer();
  let frame = 0;
  let drawnFor = '';
  function fit() {
    cancelAnimationFrame(frame);
    frame = requestAnimationFrame(() => {
      if (!canvas.isConnected) return;
      const parent = canvas.parentElement;
      const room = parent.clientWidth;
      const top = canvas.getBoundingClientRect().top + window.scrollY;
      const below = typeof margin === 'function' ? margin() : margin;
      const byHeight = ((window.innerHeight - top - below) * canvas.width) / canvas.height;
      // projector mode keeps the picture at least 3/4 of its drawn size (its type is enlarged to ≥ 16 CSS px,
      // which a smaller picture has no room for): with the class wall open above it, it scrolls instead
      const projector = document.documentElement.classList.contains('is-projector');
      const least = projector ? Math.max(MIN_WIDTH, canvas.width * PROJECTOR_MIN_SCALE) : MIN_WIDTH;
      const width = Math.floor(Math.min(room, Math.max(least, byHeight)));
      canvas.style.width = `${width}px`;
      canvas.dataset.fitWidth = String(width);
      const key = `${width}|${getComputedStyle(document.documentElement).getPropertyValue('--min-text')}`;
      if (onFit && key !== drawnFor) {
        drawnFor = key;
        onFit();
      }
    });
  }
  bag.add(listen(window, 'resize', fit));
  bag.add(listen(window, 'convscope:layout', fit));
  if (typeof ResizeObserver === 'function') {
    const observer = new ResizeObserver(fit);
    observer.observe(canvas.parentElement);
    observer.observe(document.body); // anything above the canvas growing (a wrapped bar, a notice) moves it down
    bag.add(() => observer.disconnect());
  }
  bag.add(() => cancelAnimationFrame(frame));
  fit();
  return { fit, dispose: () => bag.run() };
}

/**
 * Redraw a canvas whose displayed width follows the page (width: 100%) when that width, or the page's
 * smallest text (--min-text, projector mode), changes: its type is sized for the width it is shown at
 * (common/canvas.js textFloor). Returns the function that stops watching.
 * @param {HTMLCanvasElement} canvas
 * @param {() => void} redraw
 */
export function redrawWhenResized(canvas, redraw) {
  if (typeof ResizeObserver !== 'function') return () => {};
  let drawnFor = '';
  const observer = new ResizeObserver(() => {
    const width = Math.round(canvas.getBoundingClientRect().width);
    if (!width) { // hidden: whatever is drawn meanwhile is drawn blind, so redraw once it shows again
      drawnFor = '';
      return;
    }
    const key = `${width}|${getComputedStyle(document.documentElement).getPropertyValue('--min-text')}`;
    if (key === drawnFor) return;
    drawnFor = key;
    redraw();
  });
  observer.observe(canvas);
  return () => observer.disconnect();
}
