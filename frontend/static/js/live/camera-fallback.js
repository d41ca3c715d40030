// When the camera gives no picture (none plugged in, permission refused or never answered, another app
// holding it), the Live view says why, in words, and offers what works without one: the drawing pad (for
// a 28×28 model) or a file. Without it the view showed a black box and "0.0 frames/s".

import { el, listen, disposer } from '../dom.js';

export const CAMERA_WAIT_MS = 6000; // a camera that gives no picture by then is not coming

/**
 * @param {HTMLElement} host   where the message goes (the camera card)
 * @param {object} opts
 * @param {() => void} opts.onPad   use the drawing pad instead
 * @param {() => void} opts.onFile  a file was chosen instead (the page shows it)
 */
export function createCameraFallback(host, { onPad, onFile }) {
  const bag = disposer();
  const text = el('span', { className: 'live-fallback-text' });
  const pad = el('button', { type: 'button', className: 'button button-small', text: 'Use the drawing pad' });
  const file = el('button', { type: 'button', className: 'button button-small', text: 'Choose a file…' });
  const root = el('div', { className: 'live-fallback', hidden: true, attrs: { role: 'alert' } }, [text, pad, file]);
  host.append(root);
  let timer = null;
  bag.add(listen(pad, 'click', () => onPad()));
  bag.add(listen(file, 'click', () => {
    const input = document.getElementById('file-input');
    const chosen = () => onFile();
    input.addEventListener('change', chosen, { once: true });
    bag.add(() => input.removeEventListener('change', chosen));
    input.click();
  }));

  function show(reason, { padOffered }) {
    text.textContent = `${reason} `;
    pad.hidden = !padOffered;
    root.hidden = false;
  }

  function hide() {
    clearTimeout(timer);
    timer = null;
    root.hidden = true;
  }

  return {
    show,
    hide,
    /** After CAMERA_WAIT_MS, say so unless `hasPicture()` (the video has a frame). */
    watch(hasPicture, { padOffered }) {
      clearTimeout(timer);
      timer = setTimeout(() => {
        timer = null;
        if (!hasPicture()) {
          show('No picture from the camera: there may be none, or the browser is still waiting for your permission '
            + '(look for a camera icon by the address bar).', { padOffered });
        }
      }, CAMERA_WAIT_MS);
    },
    dispose() {
      hide();
      root.remove();
      bag.run();
    },
  };
}
