// Which source live mode uses, shared by the sidebar's Live card (where the user picks it) and the
// Live view (which runs it): {kind: 'camera', deviceId} or {kind: 'drawing'}. Kept for this tab only;
// a camera's id means nothing on another machine, so it is not part of the URL.

const listeners = new Set();
let choice = { kind: 'camera', deviceId: '' };

export function getChoice() {
  return choice;
}

/** Change the source; listeners hear it only when it differs. */
export function setChoice(next) {
  if (next.kind === choice.kind && (next.deviceId || '') === (choice.deviceId || '')) return;
  choice = { kind: next.kind, deviceId: next.deviceId || '' };
  for (const fn of [...listeners]) fn(choice);
}

/** Listen for changes; returns the function that stops listening. */
export function onChoice(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

/** The source encoded as a <select> value and back. */
export const choiceValue = (c) => (c.kind === 'drawing' ? 'drawing' : `camera:${c.deviceId || ''}`);
export function parseChoice(value) {
  if (value === 'drawing') return { kind: 'drawing' };
  return { kind: 'camera', deviceId: String(value || '').replace(/^camera:/, '') };
}

// The camera list changes when the user first grants the camera (labels appear): the view that
// started the camera announces it, and the sidebar card lists the cameras again.
const cameraListeners = new Set();

export function onCamerasChanged(fn) {
  cameraListeners.add(fn);
  return () => cameraListeners.delete(fn);
}

export function announceCamerasChanged() {
  for (const fn of [...cameraListeners]) fn();
}
