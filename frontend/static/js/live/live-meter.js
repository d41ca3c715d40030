// Frames per second and latency of a live stream, measured where the user sees them (in the page):
// frames/s counts answers over the last few seconds; latency is send → answer per frame (p50 and p95
// over the last answers). Pure: no DOM, so it is tested without a browser.

const WINDOW_MS = 3000;
const LATENCY_SAMPLES = 60;

/** A quantile (0..1) of a list of numbers; NaN for an empty list. */
export function quantile(values, q) {
  if (!values.length) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const at = Math.min(sorted.length - 1, Math.max(0, Math.round(q * (sorted.length - 1))));
  return sorted[at];
}

export function createMeter({ windowMs = WINDOW_MS, samples = LATENCY_SAMPLES } = {}) {
  let answers = []; // times (ms) of recent answers
  let latencies = []; // send → answer, ms
  let serverMs = [];
  let dropped = 0;
  let answered = 0;

  function trim(now) {
    while (answers.length && now - answers[0] > windowMs) answers.shift();
  }

  return {
    /** One answer arrived at `now` for a frame sent at `sentAt`; `server` the server's own time. */
    answer(now, sentAt, server = NaN, droppedFrames = 0) {
      answers.push(now);
      trim(now);
      latencies.push(now - sentAt);
      if (latencies.length > samples) latencies.shift();
      if (Number.isFinite(server)) {
        serverMs.push(server);
        if (serverMs.length > samples) serverMs.shift();
      }
      dropped += droppedFrames;
      answered += 1;
    },

    /** {fps, p50, p95, server, answered, dropped} at time `now` (fps 0 when nothing came lately). */
    read(now) {
      trim(now);
      let fps = 0;
      if (answers.length >= 2) {
        const span = Math.max(now, answers[answers.length - 1]) - answers[0];
        fps = span > 0 ? (answers.length - 1) / (span / 1000) : 0;
      }
      return {
        fps,
        p50: quantile(latencies, 0.5),
        p95: quantile(latencies, 0.95),
        server: quantile(serverMs, 0.5),
        answered,
        dropped,
      };
    },

    reset() {
      answers = [];
      latencies = [];
      serverMs = [];
      dropped = 0;
      answered = 0;
    },
  };
}

/** "12.3 frames/s · 45 ms latency (p95 80 ms)" style pieces for the readout. */
export function formatReadout({ fps, p50, p95 }) {
  const rate = `${fps >= 10 ? fps.toFixed(0) : fps.toFixed(1)} frames/s`;
  if (!Number.isFinite(p50)) return { rate, latency: 'latency —' };
  return { rate, latency: `latency ${Math.round(p50)} ms (p95 ${Math.round(p95)} ms)` };
}
