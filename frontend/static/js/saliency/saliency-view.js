// The Saliency view: which pixels speak for a class. A toolbar (method, layer, colours, opacity, class
// search), the top-5 classes' maps side by side from one request, and the open class in detail with a
// legend in raw values; below, "Which map should we trust?" (trust/). URL keys: method, cam_layer, target,
// opacity, cmap, and the trust panel's trust, trust_baseline, trust_method.

import { el, isAbort } from '../dom.js';
import { ensureStylesheet } from '../common/stylesheet.js';
import { createControls } from './controls.js';
import { createTopClasses } from './top-classes.js';
import { createFocus } from './focus.js';
import { loadMethods, loadValues, pollProgress, saliencyUrls } from './saliency-data.js';
import { TOP_K, readSaliencyState } from './saliency-math.js';
import { createGradcamSteps } from './gradcam-steps.js';
import { createBorderWarning } from './border-warning.js';
import { createExplainPanel } from '../common/explanation-panel.js';
import { createTrustPanel } from './trust/trust-panel.js';

const STYLESHEET = '/static/js/saliency/saliency.css';
const TRUST_STYLESHEET = '/static/js/saliency/trust/trust.css';

let view = null;

export function mount(container, ctx) {
  ensureStylesheet(STYLESHEET);
  ensureStylesheet(TRUST_STYLESHEET);
  const set = (changes, replace = false) => view.ctx.state.set(changes, { replace });
  const untrained = el('p', { className: 'sal-untrained', attrs: { role: 'note' } });
  const controlsCard = el('section', { className: 'card sal-controls', attrs: { 'aria-label': 'Saliency settings' } });
  const searchHost = el('div', { className: 'sal-top-tools' });
  const topCard = el('section', { className: 'card sal-top-card', attrs: { 'aria-labelledby': 'sal-top-heading' } }, [
    el('div', { className: 'card-head' }, [
      el('div', {}, [el('h2', { id: 'sal-top-heading', text: 'Top 5 classes' }), el('span', { className: 'card-note', text: 'click a map to open it below' })]),
      searchHost,
    ]),
  ]);
  const focusCard = el('section', { className: 'card sal-focus-card', attrs: { 'aria-label': 'Open class' } });
  const explain = createExplainPanel('saliency', ['gradcam', 'map-over-image', 'receptive-field']);
  const stepsHost = el('div');
  const borderHost = el('div', { className: 'sal-border-host' });
  const trustHost = el('div');
  container.append(explain.element, controlsCard, topCard, focusCard, trustHost, stepsHost);
  view = {
    ctx, untrained, keys: {}, top: null, abort: null, focusAbort: null, stopPoll: null, methods: null, st: null,
    controls: createControls(controlsCard, searchHost, {
      onChange: (changes) => set(changes, 'opacity' in changes),
      onOpacity: (opacity) => {
        view.topClasses.setOpacity(opacity);
        view.focus.setOpacity(opacity);
        set({ opacity: opacity.toFixed(2) }, true);
      },
    }),
    topClasses: createTopClasses(topCard, { onSelect: (index) => set({ target: String(index) }) }),
    focus: createFocus(focusCard),
    steps: createGradcamSteps(stepsHost),
    border: createBorderWarning(borderHost, { onDeeper: (layer) => set({ cam_layer: layer }) }),
    trust: createTrustPanel(trustHost, { setState: (changes) => set(changes) }),
    explain,
  };
  controlsCard.append(untrained, borderHost);  // the warning sits by the layer picker, in view
  start(ctx);
}

async function start(ctx) {
  try {
    const [methods, labels] = await Promise.all([
      loadMethods(ctx.api),
      ctx.api.getJson(ctx.api.urls.modelPath(ctx.model.id, '/classes')),
    ]);
    if (!view) return;
    view.methods = methods;
    view.labels = { model: ctx.model.id, list: labels.classes };
    update(view.ctx);
  } catch (err) {
    if (view && !isAbort(err)) view.topClasses.message(`The saliency methods could not be loaded: ${err.message}`);
  }
}

export function update(ctx) {
  if (!view) return;
  view.ctx = ctx;
  if (!view.methods) return;
  const { model, imageId, weights, api } = ctx;
  if (view.labels.model !== model.id) {
    view.labels = { model: model.id, list: [] };
    api.getJson(api.urls.modelPath(model.id, '/classes')).then((body) => {
      if (view && view.labels.model === model.id) {
        view.labels.list = body.classes;
        view.controls.setLabels(body.classes);
      }
    }).catch(() => {});
  }
  const modelKey = `${model.id}|${weights}`;
  if (view.keys.model !== modelKey) {
    view.keys.model = modelKey;
    view.controls.render({ model, methodList: view.methods.methods, colormaps: view.methods.colormaps });
    view.controls.setLabels(view.labels.list);
  }
  const st = readSaliencyState(ctx.state.read(), model, view.methods.methods, view.methods.colormaps);
  view.st = st;
  view.controls.show(st);
  const spec = view.methods.methods.find((m) => m.name === st.method);
  view.untrained.hidden = weights !== 'untrained';
  view.untrained.textContent = 'Untrained weights: these maps show what random filters respond to, '
    + 'not learned evidence for a class.';
  if (!imageId) {
    view.keys.top = null;
    view.topClasses.message(`Upload, draw or pick a sample image to see which pixels speak for each class.`);
    view.focus.clear('No image yet');
    view.trust.update({ api, model, imageId: null, weights, target: null, state: ctx.state.read() });
    return;
  }
  view.trust.update({ api, model, imageId, weights, target: st.target, state: ctx.state.read() });
  const urls = saliencyUrls(api, { modelId: model.id, imageId, weights, method: st.method, layer: spec.uses_layer ? st.layer : null });
  const topKey = `${modelKey}|${imageId}|${st.method}|${spec.uses_layer ? st.layer : ''}`;
  if (view.keys.top !== topKey) {
    view.keys.top = topKey;
    view.keys.focus = null;
    loadTop(urls, spec, st);
  } else if (view.top) {
    view.topClasses.mark(selectedIndex(st));
    view.topClasses.setOpacity(st.opacity);
    view.focus.setOpacity(st.opacity);
    if (view.keys.cmap !== st.cmap) view.topClasses.show({ classes: view.top.classes, urls, cmap: st.cmap, opacity: st.opacity, selected: selectedIndex(st) });
    view.keys.cmap = st.cmap;
    showFocus(urls, spec, st);
  }
}

function selectedIndex(st) {
  return st.target !== null ? st.target : view.top && view.top.classes.length ? view.top.classes[0].index : null;
}

async function loadTop(urls, spec, st) {
  stopRequests();
  const abort = new AbortController();
  view.abort = abort;
  view.top = null;
  view.border.hide();
  view.topClasses.message(`Computing ${spec.title} for the top ${TOP_K} classes…`, { busy: true });
  view.focus.clear(`Computing ${spec.title}…`);
  view.stopPoll = pollProgress(view.ctx.api, urls.progress(), (p) => view && view.topClasses.setProgress(p));
  try {
    const top = await view.ctx.api.getJson(urls.topk(TOP_K), { signal: abort.signal });
    if (!view || view.abort !== abort) return;
    view.top = top;
    view.keys.cmap = view.st.cmap;
    view.topClasses.show({ classes: top.classes, urls, cmap: view.st.cmap, opacity: view.st.opacity, selected: selectedIndex(view.st) });
    showFocus(urls, spec, view.st);
  } catch (err) {
    if (!view || view.abort !== abort || isAbort(err)) return;
    view.keys.top = null;
    view.topClasses.message(`${spec.title} could not be computed: ${err.message}`);
    view.focus.clear('No map');
  } finally {
    if (view && view.abort === abort) {
      view.stopPoll();
      view.stopPoll = null;
      view.topClasses.loaded();
    }
  }
}

async function showFocus(urls, spec, st) {
  const target = selectedIndex(st);
  const focusKey = `${view.keys.top}|${target}|${st.cmap}`;
  if (view.keys.focus === focusKey) return;
  view.keys.focus = focusKey;
  if (view.focusAbort) view.focusAbort.abort();
  const abort = new AbortController();
  view.focusAbort = abort;
  const stops = view.methods.colormaps[st.cmap];
  const method = { title: spec.title, display: spec.display };
  const layer = spec.uses_layer ? st.layer : null;
  try {
    let info = view.top.classes.find((c) => c.index === target);
    if (!info) info = (await view.ctx.api.getJson(urls.json(target), { signal: abort.signal })).map;
    if (!view || view.focusAbort !== abort) return;
    view.border.show(info.border, info.label);
    view.focus.show({ info, urls, method, layer, cmap: st.cmap, stops, opacity: st.opacity });
    showSteps(spec, st, target);
    const values = await loadValues(view.ctx.api, urls.npy(target), abort.signal);
    if (view && view.focusAbort === abort) view.focus.setValues(values);
  } catch (err) {
    if (!view || view.focusAbort !== abort || isAbort(err)) return;
    view.keys.focus = null;
    view.focus.clear(`The map for class ${target} could not be computed: ${err.message}`);
  }
}

/** Grad-CAM's steps for the open class (other methods: a line saying where to find them). */
function showSteps(spec, st, target) {
  const { api, model, imageId, weights } = view.ctx;
  view.explain.update({ model, layer: model.layers.find((l) => l.name === st.layer) });
  if (spec.name !== 'gradcam') {
    view.steps.hide(`Choose the method Grad-CAM to see its weights α_k, the channel maps and the sum step by step.`);
    return;
  }
  view.steps.show({ api, modelId: model.id, imageId, weights, layer: st.layer, target });
}

function stopRequests() {
  if (view.abort) view.abort.abort();
  if (view.focusAbort) view.focusAbort.abort();
  if (view.stopPoll) view.stopPoll();
  view.abort = null;
  view.focusAbort = null;
  view.stopPoll = null;
}

export function unmount() {
  if (!view) return;
  stopRequests();
  view.controls.dispose();
  view.topClasses.dispose();
  view.focus.dispose();
  view.steps.dispose();
  view.border.dispose();
  view.trust.dispose();
  view = null;
}
