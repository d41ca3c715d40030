// Exports for slides: the current frame as PNG, the animation as an animated GIF (our own encoder) or as
// WebM (the browser's MediaRecorder on the canvas stream). Frames are drawn by the caller's draw(i).

import { createGifEncoder } from './gif-encoder.js';

export const MAX_EXPORT_FRAMES = 120;

/** Save a Blob under `filename` through a temporary link. */
export function downloadBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = document.createElement('a');
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** The canvas as it is now, as a PNG download. */
export function exportPng(canvas, filename) {
  return new Promise((resolve, reject) => {
    canvas.toBlob((blob) => {
      if (!blob) {
        reject(new Error('the canvas could not be encoded'));
        return;
      }
      downloadBlob(blob, filename);
      resolve(blob);
    }, 'image/png');
  });
}

/** Let the page breathe between frames (encoding is synchronous work). */
const yieldToPage = () => new Promise((resolve) => setTimeout(resolve, 0));

/**
 * Draw frames first..first+count−1 on `canvas` with draw(i) and encode them as a looping GIF.
 * @param {{canvas: HTMLCanvasElement, frames: number[], draw: (i: number) => void, delayMs: number,
 *          filename: string, onProgress?: (done: number, total: number) => void, signal?: AbortSignal}} opts
 */
export async function exportGif({ canvas, frames, draw, delayMs, filename, onProgress = () => {}, signal }) {
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  const encoder = createGifEncoder(canvas.width, canvas.height);
  for (let n = 0; n < frames.length; n += 1) {
    if (signal && signal.aborted) throw new DOMException('export cancelled', 'AbortError');
    draw(frames[n]);
    encoder.addFrame(ctx.getImageData(0, 0, canvas.width, canvas.height).data, delayMs);
    onProgress(n + 1, frames.length);
    await yieldToPage();
  }
  const blob = new Blob([encoder.finish()], { type: 'image/gif' });
  downloadBlob(blob, filename);
  return blob;
}

/** True when this browser can record a canvas as WebM. */
export function canRecordWebm() {
  return typeof MediaRecorder !== 'undefined' && MediaRecorder.isTypeSupported && MediaRecorder.isTypeSupported('video/webm');
}

/** Record the frames played at `fps` as WebM (real time: count/fps seconds). */
export function exportWebm({ canvas, frames, draw, fps, filename, signal }) {
  return new Promise((resolve, reject) => {
    const stream = canvas.captureStream(fps); // a new video frame whenever the canvas is painted, up to fps
    const track = stream.getVideoTracks()[0];
    const recorder = new MediaRecorder(stream, { mimeType: 'video/webm' });
    const parts = [];
    let n = 0;
    let timer = null;
    recorder.ondataavailable = (event) => {
      if (event.data && event.data.size) parts.push(event.data);
    };
    recorder.onstop = () => {
      track.stop();
      if (signal && signal.aborted) {
        reject(new DOMException('export cancelled', 'AbortError'));
        return;
      }
      const blob = new Blob(parts, { type: 'video/webm' });
      downloadBlob(blob, filename);
      resolve(blob);
    };
    const next = () => {
      timer = null;
      if (n >= frames.length || (signal && signal.aborted)) {
        recorder.stop();
        return;
      }
      draw(frames[n]);
      n += 1;
      timer = setTimeout(next, 1000 / fps);
    };
    if (signal) signal.addEventListener('abort', () => {
      if (timer !== null) clearTimeout(timer);
      if (recorder.state !== 'inactive') recorder.stop();
    }, { once: true });
    recorder.start();
    next();
  });
}
