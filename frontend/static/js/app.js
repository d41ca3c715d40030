// Page bootstrap and the one render loop: URL state → model JSON → shell widgets → the active view.

import { api } from './api.js';
import { createUrlState } from './state.js';
import { DEFAULT_VIEW, canonicalViewId } from './views/registry.js';
import { createModelPicker } from './shell/model-picker.js';
import { createWeightsDownload } from './shell/weights-download.js';
import { createImageInput } from './shell/image-input.js';
import { createDrawingCanvas, wantsDrawing } from './shell/drawing-canvas.js';
import { createGallery, PHOTO_MODEL } from './shell/gallery.js';
import { createViewHost } from './shell/view-host.js';
import { createNotices } from './shell/notices.js';
import { createModelUpload, isModelFile } from './shell/model-upload.js';
import { createPresenter } from './common/presenter.js';
import { createClassroom } from './classroom/classroom.js';
import { createLiveCard } from './live/live-card.js';
import { createTopPrediction } from './shell/top-prediction.js';
import { createShortcuts } from './shell/shortcuts.js';

const MODEL_CACHE_SIZE = 8;

const defaultModel = document.body.dataset.defaultModel || 'lenet5';
const state = createUrlState({ model: defaultModel, weights: 'auto', view: DEFAULT_VIEW });
const modelCache = new Map(); // "id|weights" → model JSON, most recent last
let renderSequence = 0; // only the latest render touches the page
const modelTitles = new Map(); // id → title, from the model list

const notices = createNotices();
// an .onnx/.keras file opened or dropped here becomes a model: listed, then shown
const modelUpload = createModelUpload({
  api,
  notices,
  onUploaded: async (summary) => {
    await loadModelList();
    state.set({ model: summary.id, weights: 'auto', pos: null });
  },
});
const picker = createModelPicker({
  onOpen: () => modelUpload.open(),
  // a new model starts from its best weights; the image stays, so models can be compared on it
  onModel: (id) => state.set({ model: id, weights: 'auto', pos: null }),
  onWeights: (weights) => state.set({ weights }),
});
const download = createWeightsDownload({
  api,
  notices,
  onDone: async () => {
    modelCache.clear();
    await loadModelList();
    state.set({ weights: 'auto' }, { replace: true });
    render();
  },
});
const switchModel = (id) => state.set({ model: id, weights: 'auto' });
const imageInput = createImageInput({
  api,
  onImage: (imageId, { replace }) => state.set({ image: imageId, pos: null }, { replace }),
  onModelFiles: (files) => files.some(isModelFile) && (modelUpload.upload(files), true),
});
const drawing = createDrawingCanvas({
  onDrawing: (blob, { replace }) => imageInput.upload(blob, 'drawing.png', { replace }),
  onClear: () => state.set({ image: null }),
});
const gallery = createGallery({
  api,
  upload: (blob, name) => imageInput.upload(blob, name),
  switchModel,
});
// a step-through cell (pos) belongs to the view, image and model it was picked on: drop it when they change
const views = createViewHost({ onSelect: (view) => state.set({ view, pos: null, phase: null, play: null }) });
const presenter = createPresenter(document.getElementById('presenter-controls'), state);
const liveCard = createLiveCard({ onStart: () => state.set({ view: 'live' }) });
const topPrediction = createTopPrediction({ api });
createShortcuts(document.getElementById('presenter-controls'));

/** `convscope serve` serves this page before PyTorch and the models are loaded: say so while the API waits. */
async function sayWhileStarting() {
  // health answers 503 "starting" until the app runs (so that a load balancer sends it no traffic yet)
  const starting = await api.health().then(() => false, (err) => err.code === 'starting');
  if (starting && !modelTitles.size) {
    notices.show('starting', 'The server is still loading PyTorch and the models; the views appear in a moment.', 'info');
  }
}

async function loadModelList() {
  try {
    const { models } = await api.models();
    picker.setModels(models);
    for (const m of models) modelTitles.set(m.id, m.title);
    notices.clear('starting');
    notices.clear('models');
  } catch (err) {
    notices.show('models', `The list of models could not be loaded: ${err.message}`);
  }
}

/** The model JSON for the URL's model and weights, or null when the URL was corrected instead. */
async function loadModel({ model: id, weights }) {
  const key = `${id}|${weights}`;
  if (modelCache.has(key)) {
    const hit = modelCache.get(key);
    modelCache.delete(key);
    modelCache.set(key, hit);
    return hit;
  }
  try {
    const model = await api.model(id, weights);
    modelCache.set(key, model);
    if (modelCache.size > MODEL_CACHE_SIZE) modelCache.delete(modelCache.keys().next().value);
    notices.clear('model');
    return model;
  } catch (err) {
    // A shared link may name a model or weights this server lacks: say so, and show what it has.
    if (err.status === 404 && id !== defaultModel) {
      notices.show('model', `${err.message} Showing ${defaultModel} instead.`);
      state.set({ model: defaultModel, weights: 'auto' }, { replace: true });
      return null;
    }
    if (err.status === 409 && weights !== 'auto') {
      notices.show('model', `${err.message} Showing the weights this server has instead.`);
      state.set({ weights: 'auto' }, { replace: true });
      return null;
    }
    throw err;
  }
}

const busy = document.getElementById('model-busy');
let busyTimer = null;

/** Say "Loading …" when a model takes a moment (big torchvision models on a CPU take seconds). */
function setBusy(modelId) {
  clearTimeout(busyTimer);
  document.body.classList.toggle('is-loading', Boolean(modelId));
  if (!modelId) {
    busy.hidden = true;
    return;
  }
  busyTimer = setTimeout(() => {
    busy.textContent = `Loading ${modelTitles.get(modelId) || modelId}…`;
    busy.hidden = false;
  }, 150);
}

async function render() {
  const mine = ++renderSequence;
  const current = state.read();
  presenter.render(current);
  setBusy(current.model);
  let model;
  try {
    model = await loadModel(current);
  } catch (err) {
    if (mine === renderSequence) notices.show('model', `Model ${current.model} could not be loaded: ${err.message}`);
    return;
  } finally {
    if (mine === renderSequence) setBusy(null);
  }
  if (!model || mine !== renderSequence) return;

  const imageId = current.image || null;
  const weights = model.weights_used;
  document.title = `${model.title} · ConvScope`;
  picker.render(model);
  download.render(model);
  imageInput.render({ imageId, model, weights });
  suggestPhotoModel(model, imageId);
  drawing.setVisible(wantsDrawing(model));
  gallery.render({ model, imageId });
  liveCard.render({ model, view: current.view });
  topPrediction.render({ model, imageId, weights });
  views.show(current.view, { model, imageId, weights, state, api });
}

let photoNote = null; // the image and model the photo notice was last decided for

/** A photo the user uploaded, on a model of digits or shapes: its answer means little. Say so once per image
 * and model, and offer the photo model (when this server has it). */
function suggestPhotoModel(model, imageId) {
  const key = `${imageId}|${model.id}`;
  if (key === photoNote) return; // shown (or dismissed) already
  photoNote = key;
  notices.clear('photo');
  const other = modelTitles.get(PHOTO_MODEL);
  if (!imageId || !imageInput.isPhoto(imageId) || !other || model.id === PHOTO_MODEL || /imagenet/i.test(model.dataset)) return;
  const grey = model.input.channels === 1 ? ' and sees it in grey' : '';
  notices.show('photo', `This looks like a photo; ${model.title} was trained only on ${model.dataset}${grey}.`, 'info',
    { label: `Show it on ${other}`, run: () => switchModel(PHOTO_MODEL) });
}

async function start() {
  // Write the defaults into the URL so that a copied link names its model and view explicitly
  // (an old view id such as `stepper` is written back as the view's current id).
  const initial = state.read();
  state.set({ model: initial.model, weights: initial.weights, view: canonicalViewId(initial.view) }, { replace: true });
  state.subscribe(render);
  createClassroom({ state, notices }); // after the defaults are in the URL: a teacher publishes them
  sayWhileStarting();
  await loadModelList();
  render();
  gallery.load().then(() => render());
}

start();
