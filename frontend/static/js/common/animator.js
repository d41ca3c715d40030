// Time for an animation: a frame index that plays, pauses, steps, seeks and changes speed. Knows nothing
// of what a frame shows; the view draws frame i in onFrame(i). One timer at most, always cleared by
// pause() and dispose(), so nothing runs after the view closes.

export const SPEEDS = [0.5, 1, 2, 4, 8, 16]; // frames per second

/**
 * @param {object} opts
 * @param {number} opts.count           number of frames
 * @param {(i: number) => void} opts.onFrame   draw frame i
 * @param {(playing: boolean) => void} [opts.onPlayState]
 * @param {number} [opts.fps]           initial frames per second
 * @param {boolean} [opts.loop]         start again after the last frame
 */
export function createAnimator({ count, onFrame, onPlayState = () => {}, fps = 2, loop = false }) {
  let frame = 0;
  let timer = null;
  let running = false; // playing, also while a frame is being drawn (the timer is null then)
  let rate = fps;
  let total = Math.max(1, count);
  let disposed = false;

  function show(i) {
    if (disposed) return;
    frame = Math.min(Math.max(0, i), total - 1);
    onFrame(frame);
  }

  function tick() {
    timer = null;
    if (frame >= total - 1) {
      if (!loop) {
        pause();
        return;
      }
      show(0);
    } else {
      show(frame + 1);
    }
    schedule();
  }

  function schedule() {
    if (!disposed) timer = setTimeout(tick, 1000 / rate);
  }

  function play() {
    if (running || disposed) return;
    if (frame >= total - 1 && !loop) show(0);
    running = true;
    onPlayState(true);
    schedule();
  }

  function pause() {
    const was = running;
    if (timer !== null) clearTimeout(timer);
    timer = null;
    running = false;
    if (was || !disposed) onPlayState(false);
  }

  return {
    play,
    pause,
    toggle: () => (running ? pause() : play()),
    step(delta) {
      pause();
      show(frame + delta);
    },
    seek(i) {
      show(i);
    },
    setSpeed(fpsValue) {
      rate = fpsValue;
      if (timer !== null) {
        clearTimeout(timer);
        schedule();
      }
    },
    /** A new frame count (e.g. new settings): keeps the frame when it still exists. */
    setCount(n) {
      total = Math.max(1, n);
      if (frame > total - 1) frame = total - 1;
    },
    get frame() {
      return frame;
    },
    get count() {
      return total;
    },
    get playing() {
      return running;
    },
    get speed() {
      return rate;
    },
    dispose() {
      if (timer !== null) clearTimeout(timer);
      timer = null;
      running = false;
      disposed = true;
    },
  };
}
