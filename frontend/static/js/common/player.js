// The player bar shared by the step-through and the sandbox: play/pause, step back/forward, a scrub
// bar, speed, and the keyboard (space, ←/→; Shift+←/→ jumps a whole cell). Drives an animator.

import { el, listen, disposer } from '../dom.js';
import { SPEEDS } from './animator.js';

/**
 * @param {HTMLElement} parent
 * @param {object} opts
 * @param {() => object} opts.animator   the current animator (it is replaced when the settings change)
 * @param {(frame: number) => string} opts.describe   text for the position readout
 * @param {() => number} [opts.phasesPerCell]         frames per output cell (Shift+arrows jump that many)
 * @param {HTMLElement} [opts.extra]                   shown after the readout, on its line (a link)
 * @param {(fps: number) => void} [opts.onSpeed]       the user chose another speed
 */
export function createPlayer(parent, { animator, describe, phasesPerCell = () => 1, extra = null, onSpeed = () => {} }) {
  const bag = disposer();
  const back = el('button', { type: 'button', className: 'button button-small', text: '◀ Step', title: 'Step back (←)', dataset: { action: 'back' } });
  const play = el('button', { type: 'button', className: 'button button-small button-accent player-play', text: '▶ Play', title: 'Play / pause (space)', dataset: { action: 'play' } });
  const fwd = el('button', { type: 'button', className: 'button button-small', text: 'Step ▶', title: 'Step forward (→)', dataset: { action: 'forward' } });
  const scrub = el('input', { type: 'range', className: 'player-scrub', min: 0, max: 0, value: 0, attrs: { 'aria-label': 'Animation position' } });
  const speed = el('select', { className: 'player-speed', attrs: { 'aria-label': 'Speed' } },
    SPEEDS.map((s) => el('option', { value: String(s), text: `${s} steps/s` })));
  speed.value = '2';
  const readout = el('span', { className: 'player-readout', attrs: { 'aria-live': 'off' } });
  const root = el('div', { className: 'player', attrs: { role: 'group', 'aria-label': 'Animation controls' } },
    [back, play, fwd, scrub, speed, readout, ...(extra ? [extra] : [])]);
  parent.append(root);

  bag.add(listen(back, 'click', () => animator().step(-1)));
  bag.add(listen(fwd, 'click', () => animator().step(1)));
  bag.add(listen(play, 'click', () => animator().toggle()));
  bag.add(listen(scrub, 'input', () => {
    animator().pause();
    animator().seek(Number(scrub.value));
  }));
  bag.add(listen(speed, 'change', () => {
    animator().setSpeed(Number(speed.value));
    onSpeed(Number(speed.value));
  }));
  bag.add(listen(window, 'keydown', (event) => {
    if (!root.isConnected || event.defaultPrevented || event.altKey || event.ctrlKey || event.metaKey) return;
    const tag = (event.target && event.target.tagName) || '';
    if (['INPUT', 'SELECT', 'TEXTAREA'].includes(tag) || (event.target && event.target.isContentEditable)) return;
    if (event.key === ' ' || event.key === 'Spacebar') {
      if (tag === 'BUTTON') return; // the button's own click handles it
      event.preventDefault();
      animator().toggle();
    } else if (event.key === 'ArrowRight' || event.key === 'ArrowLeft') {
      event.preventDefault();
      const sign = event.key === 'ArrowRight' ? 1 : -1;
      animator().step(sign * (event.shiftKey ? phasesPerCell() : 1));
    }
  }));

  return {
    /** Reflect the animator's frame and state. */
    sync(frame, count) {
      scrub.max = String(Math.max(0, count - 1));
      scrub.value = String(frame);
      readout.textContent = describe(frame);
    },
    setPlaying(playing) {
      play.textContent = playing ? '❚❚ Pause' : '▶ Play';
      play.setAttribute('aria-pressed', String(playing));
    },
    speed: () => Number(speed.value),
    /** Show `fps` as the chosen speed (set from outside: a link, the teacher). */
    setSpeed(fps) {
      if (SPEEDS.includes(fps)) speed.value = String(fps);
    },
    dispose: () => bag.run(),
  };
}
