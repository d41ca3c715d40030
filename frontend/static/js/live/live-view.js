// The Live view: the camera (or the drawing pad) streamed through the model over a WebSocket, with the
// predictions, the chosen layer's feature maps and a saliency overlay updating as answers arrive, the
// measured frames/s and latency, Pause, and Capture (which uploads the frame on screen and opens the
// normal, shareable view of it). URL keys: layer (shared with the Layers view), live_saliency.

import { messageWithPlace } from '../common/inputs-place.js';
import { createExplainPanel } from '../common/explanation-panel.js';
import { el, listen, disposer } from '../dom.js';
import { ensureStylesheet } from '../common/stylesheet.js';
import { createLiveSocket, liveUrl } from './live-socket.js';
import { createMeter, formatReadout } from './live-meter.js';
import { describeCameraError, startCamera } from './camera-source.js';
import { createCameraFallback } from './camera-fallback.js';
import { startDrawing } from './drawing-source.js';
import { announceCamerasChanged, getChoice, onChoice, setChoice } from './live-choice.js';
import { createAtlasPanel, createInputPicture, createPredictionsPanel, createSaliencyPanel } from './live-panels.js';
import { createLivePatch } from './live-patch.js';

const STYLESHEET = '/static/js/live/live.css';
const LAYERS_STYLESHEET = '/static/js/feature-maps/feature-maps.css'; // the colour legend's styles (js/feature-maps/legend.js)
const READOUT_MS = 500;

let view = null; // everything mount() made

/** Layers whose output the atlas can show: feature maps (C×H×W) and vectors. */
const mapLayers = (model) => model.layers.filter((l) => Array.isArray(l.output_shape) && [1, 3].includes(l.output_shape.length));
const takesDrawings = (model) => model.input.height === 28 && model.input.width === 28 && model.input.channels === 1;

function readState(ctx) {
  const s = ctx.state.read();
  const layers = mapLayers(ctx.model);
  const fallback = layers.some((l) => l.name === ctx.model.default_layer) ? ctx.model.default_layer : layers.at(-1)?.name;
  const layer = layers.some((l) => l.name === s.layer) ? s.layer : fallback;
  const method = /^[a-z+-]+$/.test(s.live_saliency || '') ? s.live_saliency : '';
  return { layer, method };
}

function select(label, id) {
  const node = el('select', { id, className: 'live-select' });
  return { node, field: el('label', { className: 'live-field', attrs: { for: id } }, [label, node]) };
}

/** @param {HTMLElement} container  @param {object} ctx  see views/registry.js */
export function mount(container, ctx) {
  ensureStylesheet(LAYERS_STYLESHEET);
  ensureStylesheet(STYLESHEET);
  const bag = disposer();
  const layerSelect = select('Layer', 'live-layer');
  const methodSelect = select('Method', 'live-method');
  const pause = el('button', { type: 'button', className: 'button button-small', id: 'live-pause', text: 'Pause' });
  const capture = el('button', { type: 'button', className: 'button button-small button-accent', id: 'live-capture', text: 'Capture', disabled: true, title: 'Upload the frame on screen and open its shareable view' });
  const rate = el('span', { className: 'live-rate', id: 'live-fps', text: '— frames/s' });
  const latency = el('span', { className: 'live-latency', id: 'live-latency', text: 'latency —' });
  const status = el('p', { className: 'live-status', id: 'live-status', attrs: { role: 'status' } });
  const video = el('video', { className: 'live-video', muted: true, playsInline: true, attrs: { 'aria-label': 'The camera' } });
  const padNote = el('p', { className: 'hint live-pad-note', hidden: true },
    messageWithPlace('Draw on the pad', ' at the left', ' (press S to show it)', ': every stroke goes through the network.'));
  const stage = el('div', { className: 'live-source' }, [video, padNote]);
  const predictionsBody = el('div', { className: 'live-predictions-body' });
  const predictionsNote = el('span', { className: 'card-note' });
  const atlasBody = el('div', { className: 'live-atlas-body' });
  const saliencyBody = el('div', { className: 'live-saliency-body' });
  const saliencyOff = el('p', { className: 'placeholder live-saliency-off', text: 'Pick a method to see where the network looks for its top class.' });
  const head = (title, ...extra) => el('div', { className: 'card-head live-head' }, [el('h2', { text: title }), ...extra]);
  const explain = createExplainPanel('live', ['softmax', 'gradcam']);
  explain.update({});
  container.append(
    explain.element,
    el('section', { className: 'card live-camera-card', attrs: { 'aria-label': 'Live source' } }, [
      head('Camera', el('span', { className: 'live-buttons' }, [pause, capture])),
      status,
      stage,
      el('p', { className: 'live-readout' }, [rate, latency]),
    ]),
    el('section', { className: 'card live-atlas-card', attrs: { 'aria-label': 'Feature maps' } }, [
      head('Feature maps', layerSelect.field),
      atlasBody,
    ]),
    el('section', { className: 'card live-predictions-card', attrs: { 'aria-label': 'Predictions' } }, [
      head('Predictions', predictionsNote),
      predictionsBody,
    ]),
    el('section', { className: 'card live-saliency-card', attrs: { 'aria-label': 'Saliency' } }, [
      head('Saliency', methodSelect.field),
      saliencyOff,
      saliencyBody,
    ]),
  );
  const input = createInputPicture(stage);
  const fallback = createCameraFallback(container.querySelector('.live-camera-card'), {
    onPad: () => setChoice({ kind: 'drawing' }),
    onFile: () => view && view.ctx.state.set({ view: 'layers' }), // the chosen file, in the Layers view
  });
  bag.add(() => fallback.dispose());
  const cover = createLivePatch(container.querySelector('.live-camera-card'), input.img, (text) => Boolean(view && view.socket && view.socket.sendText(text)));
  bag.add(() => cover.dispose());
  view = {
    ctx, bag, container, video, padNote, status, rate, latency, pause, capture, layerSelect, methodSelect,
    saliencyOff, saliencyBody, predictionsNote,
    predictions: createPredictionsPanel(predictionsBody),
    atlas: createAtlasPanel(atlasBody),
    saliency: createSaliencyPanel(saliencyBody),
    input, fallback, cover,
    meter: createMeter(),
    socket: null, socketKey: '', source: null, sourceKey: '', sourceSeq: 0,
    paused: false, shown: null, raf: 0, methods: [], holdUntil: 0,
  };
  const set = (changes) => view.ctx.state.set(changes, { replace: true });
  bag.add(listen(layerSelect.node, 'change', () => set({ layer: layerSelect.node.value })));
  bag.add(listen(methodSelect.node, 'change', () => set({ live_saliency: methodSelect.node.value || null })));
  bag.add(listen(pause, 'click', () => setPaused(!view.paused)));
  bag.add(listen(capture, 'click', () => captureFrame()));
  bag.add(onChoice(() => view && startSource()));
  const timer = setInterval(showReadout, READOUT_MS);
  bag.add(() => clearInterval(timer));
  const tick = () => {
    view.raf = requestAnimationFrame(tick);
    pump();
  };
  view.raf = requestAnimationFrame(tick);
  bag.add(() => cancelAnimationFrame(view.raf));
  update(ctx);
}

export function update(ctx) {
  if (!view) return;
  view.ctx = ctx;
  const { model, weights } = ctx;
  const st = readState(ctx);
  const layers = mapLayers(model);
  if (view.layerSelect.node.dataset.model !== model.id) {
    view.layerSelect.node.dataset.model = model.id;
    view.layerSelect.node.replaceChildren(...layers.map((l) =>
      el('option', { value: l.name, text: `${l.name} (${l.type})`, title: `output ${l.output_shape.join(' × ')}` })));
  }
  view.layerSelect.node.value = st.layer || '';
  fillMethods(st.method);
  view.saliencyOff.hidden = Boolean(st.method);
  view.saliencyBody.hidden = !st.method;
  view.predictionsNote.textContent = weights === 'untrained' ? 'untrained: not learned' : `top 5 of ${model.num_classes}`;
  view.predictionsNote.title = weights === 'untrained' ? 'The model runs with random, untrained weights: these probabilities mean nothing yet.' : '';
  view.predictionsNote.classList.toggle('warn', weights === 'untrained');
  const socketKey = `${model.id}|${weights}|${st.layer}|${st.method}`;
  if (socketKey !== view.socketKey) connect(socketKey, { model, weights, ...st });
  view.cover.update(ctx);
  startSource();
}

function fillMethods(method) {
  const node = view.methodSelect.node;
  const known = [{ name: '', title: 'Off' }, ...view.methods];
  if (method && !known.some((m) => m.name === method)) known.push({ name: method, title: method });
  if (node.dataset.names !== known.map((m) => m.name).join(',')) {
    node.dataset.names = known.map((m) => m.name).join(',');
    node.replaceChildren(...known.map((m) => el('option', { value: m.name, text: m.title })));
  }
  node.value = method;
}

function connect(key, { model, weights, layer, method }) {
  if (view.socket) view.socket.close();
  view.socketKey = key;
  view.meter.reset();
  view.shown = null;
  view.capture.disabled = true;
  view.atlas.clear();
  view.saliency.clear();
  view.predictions.empty('Waiting for the first frame…');
  const url = liveUrl(window.location, model.id, { weights, layer, method });
  view.socket = createLiveSocket({
    url,
    onReady: (ready) => {
      view.methods = ready.live_methods || [];
      view.cover.resend();
      fillMethods(readState(view.ctx).method);
    },
    onAnswer: (answer, frame) => showAnswer(key, answer, frame),
    onError: (error) => {
      say(error.message, 'error');
      // a busy server says when to come back: no frames until then
      if (error.retry_after_s) view.holdUntil = performance.now() + error.retry_after_s * 1000;
    },
    onState: (state, why) => {
      view.container.dataset.socket = state;
      if (state === 'open') say('');
      else if (state === 'connecting') say('Connecting to the server…');
      else if (state === 'closed') say(`The connection to the server was lost; ${why}.`, 'error');
      else say(`The server refused live mode here${why ? ` (${why})` : ''}.`, 'error');
    },
  });
}

function say(text, kind = '') {
  view.status.textContent = text;
  view.status.hidden = !text;
  view.status.classList.toggle('error-text', kind === 'error');
}

/** Start (or switch to) the source the sidebar chose; the drawing pad only for 28×28 models. */
async function startSource() {
  const choice = getChoice();
  const drawing = choice.kind === 'drawing' && takesDrawings(view.ctx.model);
  const key = drawing ? 'drawing' : `camera:${choice.deviceId}`;
  if (key === view.sourceKey) return;
  if (view.source) view.source.stop();
  view.source = null;
  view.sourceKey = key;
  const mine = ++view.sourceSeq;
  view.video.hidden = drawing;
  view.padNote.hidden = !drawing;
  view.container.dataset.source = drawing ? 'drawing' : 'camera';
  view.container.querySelector('.live-camera-card h2').textContent = drawing ? 'Drawing pad' : 'Camera';
  view.fallback.hide();
  const padOffered = takesDrawings(view.ctx.model);
  if (!drawing) view.fallback.watch(() => view && view.video.videoWidth > 0, { padOffered });
  try {
    const source = drawing ? startDrawing() : await startCamera(view.video, choice.deviceId);
    if (!view || mine !== view.sourceSeq) {
      source.stop();
      return;
    }
    view.source = source;
    if (!drawing) announceCamerasChanged(); // the labels of the cameras are readable now
    source.freeze(view.paused);
  } catch (err) {
    if (!view || mine !== view.sourceSeq) return;
    if (drawing) say(err.message, 'error');
    else view.fallback.show(describeCameraError(err), { padOffered });
  }
}

/** Send a frame when the socket takes one and the source has a new picture. */
function pump() {
  const { source, socket } = view;
  if (view.paused || !source || !socket || !socket.canSend() || !source.fresh()) return;
  if (performance.now() < view.holdUntil) return;
  const bytes = source.grab();
  if (bytes) socket.send(bytes);
}

function showAnswer(key, answer, frame) {
  if (!view || key !== view.socketKey) return;
  const now = performance.now();
  view.meter.answer(now, frame.sentAt, answer.timing ? answer.timing.server_ms : NaN, answer.dropped || 0);
  view.shown = { bytes: frame.bytes, kind: view.container.dataset.source };
  view.capture.disabled = false;
  const { model, weights } = view.ctx;
  view.predictions.show(answer, `${model.id}|${weights}|live`);
  view.atlas.show(answer.layer);
  if (answer.saliency) view.saliency.show(answer.saliency);
  view.input.show(answer.input || null);
  view.cover.answered(answer.patch || null);
  view.container.dataset.frames = String(view.meter.read(now).answered);
  if (view.status.classList.contains('error-text') && view.container.dataset.socket === 'open') say('');
  showReadout();
}

function showReadout() {
  if (!view) return;
  const reading = view.meter.read(performance.now());
  const text = formatReadout(reading);
  view.rate.textContent = view.paused ? 'paused' : text.rate;
  view.rate.dataset.fps = reading.fps.toFixed(2);
  view.latency.textContent = text.latency;
  view.container.dataset.inFlight = String(view.socket ? view.socket.inFlight() : 0);
  view.latency.title = Number.isFinite(reading.server)
    ? `p50 of the last answers: ${Math.round(reading.server)} ms of it on the server; ${reading.dropped} frames replaced by newer ones`
    : '';
}

function setPaused(paused) {
  view.paused = paused;
  view.pause.textContent = paused ? 'Resume' : 'Pause';
  view.pause.setAttribute('aria-pressed', String(paused));
  if (view.source) view.source.freeze(paused);
  showReadout();
}

/** Upload the frame on screen as a normal image and open its shareable view (Layers, or Saliency). */
async function captureFrame() {
  if (!view || !view.shown) return;
  const { bytes, kind } = view.shown;
  const { api, state } = view.ctx;
  const st = readState(view.ctx);
  setPaused(true);
  view.capture.disabled = true;
  try {
    const type = kind === 'drawing' ? 'image/png' : 'image/jpeg';
    const { image_id: imageId } = await api.uploadImage(new Blob([bytes], { type }), kind === 'drawing' ? 'drawing.png' : 'live-frame.jpg');
    const changes = st.method ? { view: 'saliency', method: st.method } : { view: 'layers', channel: null };
    state.set({ image: imageId, layer: st.layer, ...changes });
  } catch (err) {
    if (view) {
      say(`The frame could not be captured: ${err.message}`, 'error');
      view.capture.disabled = false;
    }
  }
}

export function unmount() {
  if (!view) return;
  view.bag.run();
  if (view.socket) view.socket.close();
  if (view.source) view.source.stop();
  view.sourceSeq += 1;
  view = null;
}
