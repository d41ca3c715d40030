// The Train view: choose an architecture, data and the course's knobs, start a run, and watch it learn —
// loss and accuracy (training against held-out), the learning rate, the first layer's filters, a probe
// image's top-5 and feature maps, images per second — then scrub through its checkpoints and open any of
// them in the other views (a run is the model run-<id>, a checkpoint its weights epoch-<n>; epoch-0, where a
// run has it, is the untrained network). A second run can be overlaid on the charts, and "What am I looking
// at?" then compares the two. The run, the scrubber position and the overlaid run are URL keys (`run`, `ckpt`,
// `overlay`): a refresh re-attaches, a link shares them, and a classroom follows the teacher.

import { el } from '../dom.js';
import { ensureStylesheet } from '../common/stylesheet.js';
import { createExplainPanel } from '../common/explanation-panel.js';
import { redrawWhenResized } from '../common/fit-canvas.js';
import { formatInt } from '../common/format.js';
import { trainingApi, runFollower } from './train-api.js';
import { checkpointLabel, explainRun } from './run-state.js';
import { explainComparison } from './compare.js';
import { createTrainForm } from './train-form.js';
import { drawCurves, TRAIN_COLOUR, HELD_OUT_COLOUR } from './curves.js';
import { drawTiles } from './pictures.js';

const STYLESHEET = '/static/js/train/train.css';
const LOSS = [
  { key: 'loss', epochKey: 'loss', colour: TRAIN_COLOUR, dashed: false, label: 'training' },
  { key: 'val_loss', epochKey: 'val_loss', colour: HELD_OUT_COLOUR, dashed: true, label: 'held-out' },
];
const ACCURACY = [
  { key: 'accuracy', epochKey: 'accuracy', colour: TRAIN_COLOUR, dashed: false, label: 'training' },
  { key: 'val_accuracy', epochKey: 'val_accuracy', colour: HELD_OUT_COLOUR, dashed: true, label: 'held-out' },
];
const LR = [{ key: 'lr', epochKey: 'lr', colour: '#7c3aed', dashed: false, label: 'learning rate' }];

let view = null;

function canvas(className, width, height, label) {
  return el('canvas', { className, width, height, attrs: { role: 'img', 'aria-label': label } });
}

/** One row of the charts' legend: a run's name (when two are drawn), then its line styles. */
function legendRow(kind, name) {
  return el('span', { className: `train-legend-row train-legend-${kind}` }, [
    el('span', { className: 'train-legend-name', text: name }),
    el('span', { className: 'train-legend-item' }, [el('span', { className: 'train-key train-key-train' }), 'training']),
    el('span', { className: 'train-legend-item' }, [el('span', { className: 'train-key train-key-held' }), 'held-out']),
  ]);
}

export function mount(container, ctx) {
  ensureStylesheet(STYLESHEET);
  const form = createTrainForm(start);
  const parts = {
    runSelect: el('select', { className: 'train-runs', attrs: { 'aria-label': 'Training run' } }),
    overlaySelect: el('select', { className: 'train-overlay', attrs: { 'aria-label': 'Overlay a second run on the charts' } }),
    status: el('span', { className: 'train-status', attrs: { 'aria-live': 'polite' } }),
    speed: el('span', { className: 'train-speed' }),
    pause: el('button', { type: 'button', className: 'button button-small train-pause', text: 'Pause', disabled: true }),
    stop: el('button', { type: 'button', className: 'button button-small train-stop', text: 'Stop', disabled: true }),
    error: el('p', { className: 'train-error', attrs: { role: 'alert' } }),
    legend: el('p', { className: 'train-legend' }),
    loss: canvas('train-chart train-loss', 640, 220, 'Loss per step, training and held-out'),
    accuracy: canvas('train-chart train-accuracy', 640, 220, 'Accuracy per step, training and held-out'),
    lr: canvas('train-chart train-lr', 1280, 240, 'Learning rate per step'),
    filters: canvas('train-tiles train-filters', 360, 120, 'First-layer filters'),
    probe: canvas('train-tiles train-probe', 84, 84, 'The probe image'),
    maps: canvas('train-tiles train-maps', 360, 120, "The probe image's first-layer feature maps"),
    top5: el('ol', { className: 'train-top5' }),
    scrub: el('input', { type: 'range', className: 'train-scrub', min: '0', max: '0', value: '0', disabled: true,
      attrs: { 'aria-label': 'Checkpoint' } }),
    scrubLabel: el('span', { className: 'train-scrub-label', text: 'live' }),
    open: el('button', { type: 'button', className: 'button button-small train-open', text: 'Open in Layers', disabled: true }),
  };
  const explain = createExplainPanel('train', []);
  const bar = el('div', { className: 'train-bar' }, [parts.runSelect, parts.status, parts.speed, parts.pause, parts.stop]);
  const overlayRow = el('label', { className: 'train-overlay-row' }, ['Overlay', parts.overlaySelect]);
  const pictures = el('div', { className: 'train-pictures' }, [
    el('figure', { className: 'train-tiles-box' }, [parts.filters, el('figcaption', { className: 'train-filters-caption', text: 'First-layer filters, each on its own grey scale' })]),
    el('figure', {}, [parts.probe, el('figcaption', { text: 'Probe image' })]),
    el('figure', { className: 'train-top5-box' }, [parts.top5, el('figcaption', { text: 'Its top 5' })]),
    el('figure', { className: 'train-tiles-box' }, [parts.maps, el('figcaption', { text: 'Its feature maps' })]),
  ]);
  const scrubRow = el('div', { className: 'train-scrub-row' }, [el('span', { text: 'Checkpoint' }), parts.scrub, parts.scrubLabel, parts.open]);
  const main = el('div', { className: 'train-main' }, [bar, overlayRow, parts.error, parts.legend,
    el('div', { className: 'train-charts' }, [parts.loss, parts.accuracy, parts.lr]), scrubRow, pictures]);
  container.append(el('section', { className: 'card train-card' }, [el('div', { className: 'train-layout' }, [form.element, main])]),
    explain.element);
  view = { ctx, form, parts, explain, runs: [], frame: 0, abort: new AbortController(), cleanups: [] };
  view.main = runFollower((run, type) => {
    if (type === 'end' || type === 'checkpoint') refreshRuns();
    schedule();
  }, (id) => {
    if (view) view.parts.error.textContent = `Run ${id} is not on this server any more.`;
  });
  view.other = runFollower((run, type) => {
    if (type === 'end') refreshRuns(); // its state in the lists
    schedule();
  }, (id) => {
    if (view) view.parts.error.textContent = `The overlaid run ${id} is not on this server any more.`;
  });

  parts.runSelect.addEventListener('change', () => view.ctx.state.set({ run: parts.runSelect.value || null, ckpt: null }));
  parts.overlaySelect.addEventListener('change', () => view.ctx.state.set({ overlay: parts.overlaySelect.value || null }));
  parts.pause.addEventListener('click', () => control(view.main.run && view.main.run.state === 'paused' ? 'resume' : 'pause'));
  parts.stop.addEventListener('click', () => control('stop'));
  parts.scrub.addEventListener('input', () => {
    // checkpoints 0…n−1; while the run goes on, one more position at the end: live
    const live = isLive() && Number(parts.scrub.value) >= view.main.run.snapshots.length;
    view.ctx.state.set({ ckpt: live ? null : parts.scrub.value }, { replace: true });
  });
  parts.open.addEventListener('click', () => {
    const snap = scrubbed();
    if (view.main.run && snap) view.ctx.state.set({ model: view.main.run.model, weights: snap.weights, view: 'layers' });
  });
  for (const chart of [parts.loss, parts.accuracy, parts.lr]) view.cleanups.push(redrawWhenResized(chart, schedule));
  refreshRuns();
  update(ctx);
}

function isLive() {
  return Boolean(view.main.run) && ['queued', 'running', 'paused'].includes(view.main.run.state);
}

function fillRunChoices() {
  const { runs, parts } = view;
  const mine = view.main.id;
  const other = view.other.id;
  const option = (r, selected) => el('option', { value: r.id, text: `${r.name} · ${r.state}`, selected });
  parts.runSelect.replaceChildren(el('option', { value: '', text: runs.length ? 'Choose a run…' : 'No runs yet' }),
    ...runs.map((r) => option(r, r.id === mine)));
  const others = runs.filter((r) => r.id !== mine);
  parts.overlaySelect.replaceChildren(el('option', { value: '', text: others.length ? 'none' : 'no other run yet' }),
    ...others.map((r) => option(r, r.id === other)));
  parts.overlaySelect.disabled = !mine || !others.length;
}

async function refreshRuns() {
  try {
    const answer = await trainingApi.list({ signal: view.abort.signal });
    if (!view) return;
    view.form.setChoices(answer.choices);
    view.form.setRecipes(answer.recipes);
    view.runs = answer.runs;
    fillRunChoices();
  } catch (err) {
    if (err.name !== 'AbortError' && view) view.parts.error.textContent = err.message;
  }
}

async function start(body) {
  view.parts.error.textContent = '';
  view.form.setBusy(true);
  try {
    const run = await trainingApi.start(body);
    view.ctx.state.set({ run: run.id, ckpt: null });
    refreshRuns();
  } catch (err) {
    view.parts.error.textContent = err.message;
  } finally {
    if (view) view.form.setBusy(false);
  }
}

async function control(action) {
  if (!view.main.run) return;
  view.parts.error.textContent = '';
  try {
    await trainingApi.control(view.main.run.id, action);
  } catch (err) {
    view.parts.error.textContent = err.message;
  }
}

function scrubbed() {
  const run = view.main.run;
  if (!run || !run.snapshots.length) return null;
  const key = view.ctx.state.get('ckpt');
  const index = key === undefined || key === null || key === '' ? run.snapshots.length - 1 : Number(key);
  return run.snapshots[Math.min(Math.max(index, 0), run.snapshots.length - 1)];
}

function schedule() {
  if (!view) return;
  cancelAnimationFrame(view.frame);
  view.frame = requestAnimationFrame(render);
}

function renderLegend(run, other) {
  const rows = [legendRow('main', run && other ? run.name : '')];
  if (other) rows.push(legendRow('overlay', other.name));
  rows.push(el('span', { className: 'train-legend-note', text: other ? 'dots and rings: each epoch\'s measurement'
    : 'held-out: images it never trains on · dots: each epoch\'s measurement' }));
  view.parts.legend.replaceChildren(...rows);
  view.parts.legend.dataset.overlay = other ? other.id : '';
}

function render() {
  if (!view) return;
  const { parts } = view;
  const run = view.main.run;
  const other = run && view.other.id !== run.id ? view.other.run : null;
  const key = view.ctx.state.get('ckpt');
  const live = key === undefined || key === null || key === '';
  const snap = live && isLive() ? null : scrubbed();
  parts.status.textContent = run ? `${run.state}${run.message ? `: ${run.message}` : ''}` : 'Start a run, or choose one.';
  parts.status.dataset.state = run ? run.state : '';
  const latest = run ? run.latest || {} : {};
  parts.speed.textContent = latest.images_per_s ? `${formatInt(Math.round(latest.images_per_s))} images/s · step ${formatInt(latest.step)}` : '';
  parts.pause.disabled = !run || !['running', 'paused'].includes(run.state);
  parts.pause.textContent = run && run.state === 'paused' ? 'Resume' : 'Pause';
  parts.stop.disabled = !run || !isLive();
  const count = run ? run.snapshots.length : 0;
  parts.scrub.disabled = count === 0;
  parts.scrub.max = String(Math.max(0, isLive() ? count : count - 1));
  if (count) parts.scrub.value = String(snap ? run.snapshots.indexOf(snap) : Number(parts.scrub.max));
  parts.scrubLabel.textContent = snap ? checkpointLabel(snap) : count ? 'live' : 'no checkpoint yet';
  parts.scrubLabel.dataset.weights = snap ? snap.weights : '';
  parts.open.disabled = !(snap || (count && !isLive()));
  renderLegend(run, other);
  const marker = snap ? snap.step : null;
  const per = other ? `per epoch, with “${other.name}” dotted` : 'per step';
  parts.loss.setAttribute('aria-label', `Loss ${per}, training and held-out`);
  parts.accuracy.setAttribute('aria-label', `Accuracy ${per}, training and held-out`);
  parts.lr.setAttribute('aria-label', `Learning rate ${per}`);
  drawCurves(parts.loss, run, LOSS, { title: 'Loss', marker, overlay: other });
  drawCurves(parts.accuracy, run, ACCURACY, { title: 'Accuracy', yMax: 1, marker, overlay: other });
  drawCurves(parts.lr, run, LR, { title: 'Learning rate', marker, overlay: other });
  const shown = snap || latest;
  drawTiles(parts.filters, shown.filters, { columns: 10, perTile: true });
  const probe = run && run.info && run.info.probe ? run.info.probe : null;
  drawTiles(parts.probe, probe ? probe.image : null, { single: true });
  drawTiles(parts.maps, shown.maps || latest.maps, { columns: 10 });
  parts.top5.replaceChildren(...(shown.top5 || []).map((row) => el('li', {
    text: `${row.label} ${(100 * row.probability).toFixed(1)}%`,
    className: probe && row.index === probe.label ? 'is-truth' : '',
  })));
  parts.top5.title = probe ? `The probe image is a ${run.info.classes[probe.label]} (in bold when it is listed)` : '';
  view.explain.update({}, other ? [...explainRun(run), ...explainComparison(run, other)] : explainRun(run));
}

export function update(ctx) {
  if (!view) return;
  view.ctx = ctx;
  const runId = ctx.state.get('run') || null;
  const overlayId = ctx.state.get('overlay') || null;
  const changed = runId !== view.main.id || overlayId !== view.other.id;
  if (changed) view.parts.error.textContent = '';
  view.main.follow(runId);
  view.other.follow(overlayId && overlayId !== runId ? overlayId : null);
  if (changed) fillRunChoices();
  schedule();
}

export function unmount() {
  if (!view) return;
  view.main.close();
  view.other.close();
  cancelAnimationFrame(view.frame);
  view.abort.abort();
  for (const cleanup of view.cleanups) cleanup();
  view = null;
}
