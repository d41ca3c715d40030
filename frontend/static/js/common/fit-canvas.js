// Keep a canvas's whole picture above the fold: its CSS width is the smaller of its container's width
// and what the viewport's height leaves below its top edge (aspect kept). Refits on resize and when the
// page layout changes (projector mode, sidebar, full screen: the 'convscope:layout' event).

import { listen, disposer } from '../dom.js';

const MIN_WIDTH = 720; // below this the numbers get too small to read: let the page scroll instead

/**
 * @param {HTMLCanvasElement} canvas
 * @param {object} [opts]
 * @param {number} [opts.margin]  px to leave under the canvas
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
      const byHeight = ((window.innerHeight - top - margin) * canvas.width) / canvas.height;
      const width = Math.floor(Math.min(room, Math.max(MIN_WIDTH, byHeight)));
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
