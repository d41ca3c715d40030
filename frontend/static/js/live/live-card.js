// The sidebar's "Live" card: pick a source (a camera, or the drawing pad for 28×28 models) and go
// live, which opens the Live view. Nothing is uploaded from here: the view's Capture button does that.

import { el, listen, disposer } from '../dom.js';
import { cameraUnavailableReason, listCameras } from './camera-source.js';
import { choiceValue, getChoice, onCamerasChanged, onChoice, parseChoice, setChoice } from './live-choice.js';

/**
 * @param {object} opts
 * @param {() => void} opts.onStart  the user pressed "Go live"
 */
export function createLiveCard({ onStart }) {
  const select = document.getElementById('live-source');
  const start = document.getElementById('live-start');
  const hint = document.getElementById('live-hint');
  const bag = disposer();
  let cameras = [];
  let drawing = false; // the model takes 28×28 drawings

  function options() {
    const list = [];
    if (drawing) list.push(el('option', { value: 'drawing', text: 'Drawing pad (live)' }));
    if (!cameras.length) list.push(el('option', { value: 'camera:', text: 'Default camera' }));
    for (const cam of cameras) list.push(el('option', { value: `camera:${cam.deviceId}`, text: cam.label }));
    select.replaceChildren(...list);
    let value = choiceValue(getChoice());
    if (![...select.options].some((o) => o.value === value)) {
      value = select.options[0].value;
      setChoice(parseChoice(value));
    }
    select.value = value;
  }

  async function refreshCameras() {
    try {
      cameras = await listCameras();
    } catch {
      cameras = [];
    }
    options();
  }

  bag.add(listen(select, 'change', () => setChoice(parseChoice(select.value))));
  bag.add(listen(start, 'click', () => onStart()));
  bag.add(onChoice(() => options()));
  bag.add(onCamerasChanged(() => refreshCameras()));
  if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
    const changed = () => refreshCameras();
    navigator.mediaDevices.addEventListener('devicechange', changed);
    bag.add(() => navigator.mediaDevices.removeEventListener('devicechange', changed));
  }
  refreshCameras();

  /** Show the sources that suit `model`; `view` is the open view's id. */
  function render({ model, view }) {
    const wantsPad = model.input.height === 28 && model.input.width === 28 && model.input.channels === 1;
    if (wantsPad !== drawing) {
      drawing = wantsPad;
      // a digit model starts on the pad, even when a camera was chosen (or allowed, which lists it by name)
      // for the model before: a webcam photo means little to it; the user may still pick the camera
      if (drawing && getChoice().kind === 'camera') setChoice({ kind: 'drawing' });
      options();
    }
    const live = view === 'live';
    start.textContent = live ? 'Live ●' : 'Go live';
    start.disabled = live;
    const reason = cameraUnavailableReason();
    hint.textContent = reason && !drawing
      ? reason
      : 'Frames run through the network as they come; nothing is stored unless you press Capture.';
  }

  return { render, refreshCameras, dispose: bag.run };
}
