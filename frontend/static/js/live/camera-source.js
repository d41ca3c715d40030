// Webcam frames: getUserMedia with the camera the user picked, a <video> showing it, and the current
// picture encoded as JPEG bytes on demand (never larger than FRAME_MAX_SIDE: the models see 224 pixels
// at most, and a smaller frame is faster to send and to decode).

const FRAME_MAX_SIDE = 640;
const JPEG_QUALITY = 0.85;

/** Why the camera cannot be used, in words for a person, or '' when it can be tried. */
export function cameraUnavailableReason(win = window) {
  if (!win.isSecureContext) {
    return `The browser only lends the camera to pages served over https or from localhost; this page comes from ${win.location.host} over http.`;
  }
  if (!win.navigator.mediaDevices || !win.navigator.mediaDevices.getUserMedia) {
    return 'This browser offers no camera access (getUserMedia).';
  }
  return '';
}

/** A sentence for a getUserMedia failure. */
export function describeCameraError(err) {
  switch (err && err.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return 'Camera access was refused. Allow the camera for this page in the browser (the icon in the address bar), then try again.';
    case 'NotFoundError':
    case 'OverconstrainedError':
      return 'No camera was found (or the chosen one is gone). Plug one in, or pick another source.';
    case 'NotReadableError':
    case 'AbortError':
      return 'The camera is busy: another program or tab is using it.';
    default:
      return `The camera could not be started: ${(err && err.message) || err}`;
  }
}

/** The cameras the browser lists: [{deviceId, label}] (labels stay empty until permission is given). */
export async function listCameras(win = window) {
  if (cameraUnavailableReason(win)) return [];
  const devices = await win.navigator.mediaDevices.enumerateDevices();
  return devices
    .filter((d) => d.kind === 'videoinput')
    .map((d, i) => ({ deviceId: d.deviceId, label: d.label || `Camera ${i + 1}` }));
}

/** Size of a frame whose longer side is at most `maxSide`. */
export function frameSize(width, height, maxSide = FRAME_MAX_SIDE) {
  const scale = Math.min(1, maxSide / Math.max(width, height, 1));
  return { width: Math.max(1, Math.round(width * scale)), height: Math.max(1, Math.round(height * scale)) };
}

/** Bytes of a canvas as an image, encoded synchronously (Chromium's toBlob waits for idle time). */
export function canvasBytes(canvas, type = 'image/jpeg', quality = JPEG_QUALITY) {
  const url = canvas.toDataURL(type, quality);
  const binary = atob(url.slice(url.indexOf(',') + 1));
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/**
 * Start the camera `deviceId` ('' for the browser's default) inside `video`.
 * Resolves to {grab(): Uint8Array|null, fresh(): boolean, freeze(bool), stop()}.
 */
export async function startCamera(video, deviceId) {
  const reason = cameraUnavailableReason();
  if (reason) throw new Error(reason);
  const constraints = {
    audio: false,
    video: deviceId ? { deviceId: { exact: deviceId } } : { width: { ideal: 640 }, height: { ideal: 480 } },
  };
  const stream = await navigator.mediaDevices.getUserMedia(constraints);
  video.srcObject = stream;
  video.muted = true;
  video.playsInline = true;
  await video.play();
  const canvas = document.createElement('canvas');
  const ctx2d = canvas.getContext('2d');
  let lastTime = -1;
  return {
    /** The picture on screen now, as JPEG bytes (null until the video has a frame). */
    grab() {
      if (!video.videoWidth) return null;
      const { width, height } = frameSize(video.videoWidth, video.videoHeight);
      if (canvas.width !== width || canvas.height !== height) {
        canvas.width = width;
        canvas.height = height;
      }
      ctx2d.drawImage(video, 0, 0, width, height);
      lastTime = video.currentTime;
      return canvasBytes(canvas);
    },
    /** Whether the video shows a picture not grabbed yet. */
    fresh() {
      return video.videoWidth > 0 && video.currentTime !== lastTime;
    },
    /** Pause (true) or resume the picture on screen. */
    freeze(frozen) {
      if (frozen) video.pause();
      else video.play().catch(() => {});
    },
    stop() {
      for (const track of stream.getTracks()) track.stop();
      video.srcObject = null;
    },
    label: stream.getVideoTracks()[0] ? stream.getVideoTracks()[0].label : '',
  };
}
