// An animation's place in the page's URL: where it is (view-specific keys, e.g. the step-through's cell and
// sub-step), whether it plays (`play=1`) and how fast (`speed`, frames per second). The URL is what a link
// reproduces and what a class session shares, so students animate in step with the teacher: while playing,
// the URL keeps the frame the animation started from (one write per frame would flood history and the class);
// a pause writes where it stopped. Used by the step-through and the sandbox.

import { SPEEDS } from './animator.js';

export const DEFAULT_SPEED = 2;
export const PLAY_KEYS = ['play', 'speed'];

/** The speed a URL asks for, or null (absent or not one of SPEEDS). */
export function speedFrom(text) {
  const fps = Number(text);
  return text && SPEEDS.includes(fps) ? fps : null;
}

/**
 * @param {object} opts
 * @param {() => object} opts.animator   the current animator
 * @param {object} opts.player           common/player.js (its speed select follows the URL)
 * @param {(frame: number) => Record<string, string|null>} opts.toKeys   the URL keys that name `frame`
 * @param {(get: (key: string) => string) => number|null} opts.toFrame  the frame the URL names, or null
 * @param {string[]} opts.keys           the keys toKeys writes
 */
export function createAnimationUrl({ animator, player, toKeys, toFrame, keys }) {
  let written = null; // the URL values last written or applied (a change from outside differs from it)
  let applying = false;
  const all = [...keys, ...PLAY_KEYS];
  const snapshot = (get) => all.map((k) => get(k) || '').join('|');

  return {
    /** Write the animation's place (call on pause, on play, after a step, on a speed change); `playing`
     *  when the animator is about to change it (its play-state callback runs before the change). */
    write(state, playing = animator().playing) {
      if (applying) return;
      const a = animator();
      const changes = { ...toKeys(a.frame), play: playing ? '1' : null, speed: a.speed === DEFAULT_SPEED ? null : String(a.speed) };
      const text = all.map((k) => changes[k] ?? '').join('|');
      if (text === written) return;
      written = text;
      state.set(changes, { replace: true });
    },
    /** Follow the URL when it changed from outside (a link, back/forward, the teacher); true if it did. */
    apply(state) {
      const text = snapshot(state.get);
      if (text === written) return false;
      written = text;
      const a = animator();
      applying = true;
      try {
        const fps = speedFrom(state.get('speed')) ?? DEFAULT_SPEED;
        a.setSpeed(fps);
        player.setSpeed(fps);
        const frame = toFrame(state.get);
        a.pause();
        if (frame !== null) a.seek(frame);
        if (state.get('play') === '1') a.play();
      } finally {
        applying = false;
      }
      return true;
    },
    /** Forget what was written (a new animation: its first apply takes the URL as it is). */
    reset() {
      written = null;
    },
  };
}
