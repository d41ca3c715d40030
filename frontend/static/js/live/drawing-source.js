// Drawing-pad frames for 28×28 models: the sidebar's pad (#draw-canvas) sent as PNG while the pen
// moves, so the chosen layer's feature maps and the predictions follow every stroke. The pad itself
// (js/shell/drawing-canvas.js) keeps doing its own job; this only watches it.

import { listen, disposer } from '../dom.js';
import { canvasBytes } from './camera-source.js';

/** Start watching the pad; returns {grab(), fresh(), freeze(), stop(), canvas} like the camera source. */
export function startDrawing(canvas = document.getElementById('draw-canvas')) {
  if (!canvas) throw new Error('There is no drawing pad on this page.');
  const bag = disposer();
  let changed = true; // send the pad as it is at the start, too
  // Pointer events reach the pad's own listeners first (they were added first), so by the next grab
  // the stroke is painted; the clear button wipes the pad without pointer events on it.
  const mark = (event) => {
    if (event.type !== 'pointermove' || event.buttons) changed = true; // hovering changes nothing
  };
  for (const type of ['pointerdown', 'pointermove', 'pointerup']) bag.add(listen(canvas, type, mark));
  const clear = document.getElementById('draw-clear');
  if (clear) bag.add(listen(clear, 'click', mark));
  return {
    canvas,
    grab() {
      changed = false;
      return canvasBytes(canvas, 'image/png');
    },
    fresh() {
      return changed;
    },
    freeze() {},
    stop() {
      bag.run();
    },
    label: 'Drawing pad',
  };
}
