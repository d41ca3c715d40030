// Cover part of the live image (issue 22 §2): the occlusion probe's patch (grey, blurred or noise; size in
// model-input pixels) dragged over "what the model sees". The server pastes it on every frame as the probe
// pastes it on an upload (a {"patch": …} text message on the live socket) and the predictions follow.
// URL keys: live_cover=1, and the probe's fill, size, py, px (the patch's top-left corner).

import { el, listen, disposer } from '../dom.js';

const FILLS = ['grey', 'blur', 'noise'];

/** The patch the URL describes for a model input of `side` pixels, or null when covering is off. */
export function readPatch(state, side) {
  if (state.get('live_cover') !== '1') return null;
  const size = Math.min(side, Math.max(1, Math.round(Number(state.get('size'))) || Math.max(2, Math.round(side / 5))));
  const at = (key) => (/^-?\d+$/.test(state.get(key) || '') ? Number(state.get(key)) : Math.round((side - size) / 2));
  return { y: at('py'), x: at('px'), size, fill: FILLS.includes(state.get('fill')) ? state.get('fill') : 'grey' };
}

/**
 * @param {HTMLElement} bar  where the controls go
 * @param {HTMLImageElement} picture  "what the model sees" (dragged over)
 * @param {(text: string) => void} send  sends a text message on the live socket
 */
export function createLivePatch(bar, picture, send) {
  const bag = disposer();
  const toggle = el('button', { type: 'button', className: 'button button-small live-cover-toggle', attrs: { 'aria-pressed': 'false' }, text: 'Cover part of the image' });
  const fill = el('select', { className: 'live-cover-fill', attrs: { 'aria-label': 'Patch fill' } }, FILLS.map((f) => el('option', { value: f, text: f })));
  const size = el('input', { type: 'range', min: '1', className: 'live-cover-size', attrs: { 'aria-label': 'Patch size' } });
  const sizeText = el('output', { className: 'live-cover-size-text' });
  const controls = el('span', { className: 'live-cover-controls', hidden: true }, [fill, el('label', {}, ['size ', size, sizeText])]);
  const note = el('span', { className: 'card-note live-cover-note', hidden: true, text: 'Drag over what the model sees.' });
  bar.append(el('div', { className: 'live-cover' }, [toggle, controls, note]));
  const s = { ctx: null, sent: null, dragging: false };
  const side = () => Math.max(s.ctx.model.input.height, s.ctx.model.input.width);
  const set = (changes, replace = true) => s.ctx.state.set(changes, { replace });

  bag.add(listen(toggle, 'click', () => set({ live_cover: readPatch(s.ctx.state, side()) ? null : '1' }, false)));
  bag.add(listen(fill, 'change', () => set({ fill: fill.value })));
  bag.add(listen(size, 'input', () => { sizeText.textContent = `${size.value} px`; }));
  bag.add(listen(size, 'change', () => set({ size: size.value })));
  const move = (event) => {
    const patch = readPatch(s.ctx.state, side());
    if (!patch) return;
    const rect = picture.getBoundingClientRect();
    const { height, width } = s.ctx.model.input;
    const x = Math.round(((event.clientX - rect.left) / rect.width) * width - patch.size / 2);
    const y = Math.round(((event.clientY - rect.top) / rect.height) * height - patch.size / 2);
    set({ py: String(Math.max(1 - patch.size, Math.min(height - 1, y))), px: String(Math.max(1 - patch.size, Math.min(width - 1, x))) });
  };
  bag.add(listen(picture, 'pointerdown', (event) => {
    if (!readPatch(s.ctx.state, side())) return;
    s.dragging = true;
    picture.setPointerCapture(event.pointerId);
    event.preventDefault();
    move(event);
  }));
  bag.add(listen(picture, 'pointermove', (event) => s.dragging && move(event)));
  bag.add(listen(picture, 'pointerup', () => { s.dragging = false; }));
  bag.add(listen(picture, 'pointercancel', () => { s.dragging = false; }));

  /** Tell the server the patch the URL describes, unless it knows it already (`force`: a new socket). */
  function sync(force = false) {
    const patch = readPatch(s.ctx.state, side());
    const text = JSON.stringify({ patch });
    if (!force && text === s.sent) return;
    if (!force && s.sent === null && patch === null) return; // a fresh socket has no patch
    s.sent = send(text) ? text : null;
  }

  return {
    update(ctx) {
      s.ctx = ctx;
      const patch = readPatch(ctx.state, side());
      toggle.setAttribute('aria-pressed', String(Boolean(patch)));
      toggle.textContent = patch ? 'Uncover' : 'Cover part of the image';
      controls.hidden = !patch;
      note.hidden = !patch;
      picture.classList.toggle('is-coverable', Boolean(patch));
      bar.closest('.view-live').classList.toggle('is-covering', Boolean(patch));
      size.max = String(side());
      if (patch) {
        fill.value = patch.fill;
        size.value = String(patch.size);
        sizeText.textContent = `${patch.size} px`;
      }
      sync();
    },
    /** A new socket knows no patch: send it again once the socket is ready. */
    resend() { s.sent = null; if (s.ctx) sync(true); },
    /** The patch an answer was computed with (for the page's data attributes). */
    answered(patch) {
      picture.dataset.patch = patch ? `${patch.y},${patch.x},${patch.height},${patch.width},${patch.fill}` : '';
    },
    dispose: () => bag.run(),
  };
}
