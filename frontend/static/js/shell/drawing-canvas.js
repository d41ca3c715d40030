// A drawing pad for 28×28 models: white ink on black (MNIST's convention), a thick round brush, and
// a debounced export so predictions follow the pen while the user draws.

import { listen, disposer } from '../dom.js';

const DEBOUNCE_MS = 200;
const MAX_WAIT_MS = 500;
// Relative to the 280-pixel canvas: a 20-px-tall digit in MNIST has strokes about 2–3 px wide.
const BRUSH_WIDTH = 22;

/**
 * @param {object} opts
 * @param {(blob: Blob, options: {replace: boolean}) => Promise<unknown>} opts.onDrawing  new pixels;
 *   `replace` is false for the first export after a clear (a new history entry), true afterwards
 * @param {() => void} opts.onClear  the user cleared the pad
 */
export function createDrawingCanvas({ onDrawing, onClear }) {
  const card = document.getElementById('draw-card');
  const canvas = document.getElementById('draw-canvas');
  const clearButton = document.getElementById('draw-clear');
  const ctx2d = canvas.getContext('2d');
  const bag = disposer();
  let last = null; // last pointer position while the pen is down
  let timer = null;
  let pendingSince = null; // when the oldest stroke not yet scheduled for export was drawn
  let exporting = false;
  let pendingExport = false;
  let dirty = false; // pixels changed since the last export
  let sessionStarted = false; // an export happened since the last clear

  function wipe() {
    ctx2d.fillStyle = '#000';
    ctx2d.fillRect(0, 0, canvas.width, canvas.height);
  }

  function toCanvas(event) {
    const rect = canvas.getBoundingClientRect();
    return {
      x: ((event.clientX - rect.left) / rect.width) * canvas.width,
      y: ((event.clientY - rect.top) / rect.height) * canvas.height,
    };
  }

  function stroke(from, to) {
    ctx2d.strokeStyle = '#fff';
    ctx2d.fillStyle = '#fff';
    ctx2d.lineWidth = BRUSH_WIDTH;
    ctx2d.lineCap = 'round';
    ctx2d.lineJoin = 'round';
    ctx2d.beginPath();
    ctx2d.moveTo(from.x, from.y);
    ctx2d.lineTo(to.x, to.y);
    ctx2d.stroke();
    dirty = true;
    schedule();
  }

  // Debounced, with a ceiling: a pause of DEBOUNCE_MS sends the drawing, and a long unbroken stroke
  // still sends it every MAX_WAIT_MS, so the bars follow the pen.
  function schedule() {
    canvas.dataset.pending = 'true'; // a drawing not yet sent (or being sent): tools and tests wait on it
    const now = performance.now();
    if (pendingSince === null) pendingSince = now;
    if (timer !== null) clearTimeout(timer);
    const wait = Math.max(0, Math.min(DEBOUNCE_MS, pendingSince + MAX_WAIT_MS - now));
    timer = setTimeout(() => {
      timer = null;
      pendingSince = null;
      exportNow();
    }, wait);
  }

  // Nothing waiting, nothing being sent: the URL names the drawing as it is on the pad.
  function settle() {
    if (timer === null && !exporting && !pendingExport && !dirty) delete canvas.dataset.pending;
  }

  // One upload at a time; strokes made meanwhile are sent when it finishes.
  async function exportNow() {
    if (!dirty) {
      settle();
      return;
    }
    if (exporting) {
      pendingExport = true;
      return;
    }
    exporting = true;
    dirty = false;
    try {
      const blob = canvasPng(canvas);
      if (blob) {
        const replace = sessionStarted;
        sessionStarted = true;
        await onDrawing(blob, { replace });
      }
    } finally {
      exporting = false;
      if (pendingExport) {
        pendingExport = false;
        exportNow();
      } else {
        settle();
      }
    }
  }

  bag.add(
    listen(canvas, 'pointerdown', (event) => {
      if (event.button !== 0) return;
      event.preventDefault();
      canvas.setPointerCapture(event.pointerId);
      last = toCanvas(event);
      stroke(last, last); // a dot for a tap
    }),
  );
  bag.add(
    listen(canvas, 'pointermove', (event) => {
      if (last === null) return;
      const next = toCanvas(event);
      stroke(last, next);
      last = next;
    }),
  );
  const penUp = () => {
    last = null;
  };
  bag.add(listen(canvas, 'pointerup', penUp));
  bag.add(listen(canvas, 'pointercancel', penUp));
  bag.add(
    listen(clearButton, 'click', () => {
      if (timer !== null) clearTimeout(timer);
      timer = null;
      pendingSince = null;
      dirty = false;
      pendingExport = false;
      sessionStarted = false;
      settle();
      wipe();
      onClear();
    }),
  );
  bag.add(() => {
    if (timer !== null) clearTimeout(timer);
  });

  wipe();

  /** Show the pad only for models with 28×28 single-channel input. */
  function setVisible(visible) {
    card.hidden = !visible;
    if (!visible && timer !== null) {
      // a model without a pad: a stroke still waiting must not replace the image afterwards
      clearTimeout(timer);
      timer = null;
      pendingSince = null;
      dirty = false;
      settle();
    }
  }

  return { setVisible, dispose: bag.run };
}

/**
 * The canvas as a PNG Blob, encoded synchronously: Chromium's toBlob() waits for an idle period
 * (up to a second when the page is busy), which would make "classify as you draw" lag; a 280×280
 * PNG encodes in a few milliseconds.
 */
function canvasPng(canvas) {
  const dataUrl = canvas.toDataURL('image/png');
  const binary = atob(dataUrl.slice(dataUrl.indexOf(',') + 1));
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  return new Blob([bytes], { type: 'image/png' });
}

/** Whether the drawing pad suits a model's input. */
export const wantsDrawing = (model) => model.input.height === 28 && model.input.width === 28;
