// A run as the page keeps it, from its event stream: pure functions (no DOM), so the numbers the page
// shows can be checked without a browser.

import { formatInt } from '../common/format.js';

const ENDED = { done: 'done', stopped: 'stopped', failed: 'failed' };
const MAX_POINTS = 4000;

/** The page's copy of a run after `type` with `data` (the previous copy is not changed). */
export function applyEvent(run, type, data) {
  if (type === 'snapshot') {
    return { ...data, points: [...(data.points || [])], history: [...(data.history || [])], snapshots: [...(data.snapshots || [])] };
  }
  if (!run) return run;
  const next = { ...run };
  if (type === 'started') {
    next.info = data;
    next.state = 'running';
    next.latest = { filters: data.filters, top5: data.top5, maps: data.maps };
  } else if (type === 'point') {
    next.latest = data;
    next.points = [...run.points, data].slice(-MAX_POINTS);
  } else if (type === 'epoch') {
    next.history = [...run.history, data];
  } else if (type === 'checkpoint') {
    next.snapshots = [...run.snapshots, data];
    next.checkpoints = [...(run.checkpoints || []), { epoch: data.epoch, step: data.step, weights: data.weights }];
  } else if (type === 'state') {
    next.state = data.state;
  } else if (ENDED[type]) {
    next.state = ENDED[type];
    next.message = data.message || '';
  }
  return next;
}

/** Facts for "What am I looking at?", from the run's own numbers (null where not known yet). */
export function runFacts(run) {
  if (!run) return null;
  // an epoch-0 row (the untrained network, measured before the first step) is where training starts from,
  // not an epoch of training
  const trained = run.history.filter((row) => row.epoch > 0);
  const untrained = run.history.find((row) => row.epoch === 0) || null;
  const last = trained.length ? trained[trained.length - 1] : null;
  const best = trained.reduce((b, row) => (b === null || row.val_accuracy > b.val_accuracy ? row : b), null);
  const gap = last ? last.accuracy - last.val_accuracy : null;
  return {
    epochs: last ? last.epoch : 0,
    of: run.config.epochs,
    accuracy: last ? last.accuracy : null,
    valAccuracy: last ? last.val_accuracy : null,
    untrainedVal: untrained ? untrained.val_accuracy : null,
    gap,
    overfitting: gap !== null && gap > 0.05,
    bestEpoch: best ? best.epoch : null,
    bestVal: best ? best.val_accuracy : null,
    valRising: trained.length >= 3 && trained.slice(-3).every((row, i, rows) => i === 0 || row.val_loss > rows[i - 1].val_loss),
    trainSize: run.info && run.info.train_size,
    heldout: run.info && run.info.heldout_size,
    augment: run.config.augment,
    dropout: run.config.dropout,
    lr: run.latest && run.latest.lr,
  };
}

/** The scrubber's words for a checkpoint: the initial weights (epoch-0) are "untrained, epoch 0". */
export function checkpointLabel(snap) {
  if (!snap) return '';
  if (snap.epoch === 0 && snap.step === 0) return 'untrained, epoch 0';
  return `${snap.weights} (step ${formatInt(snap.step)})`;
}

const pct = (v) => `${(100 * v).toFixed(1)}%`;

/** Sentences that say what the curves show, with this run's numbers. */
export function explainRun(run) {
  const f = runFacts(run);
  if (!f) return [];
  const lines = [['The two curves', `Training (solid) is measured on the ${f.trainSize ?? '…'} images the network learns `
    + `from; held-out (dashed) on ${f.heldout ?? '…'} images it never sees. Only the held-out curve says how well it `
    + 'will do on new pictures.']];
  if (f.untrainedVal !== null) {
    const classes = run.info && run.info.classes ? run.info.classes.length : null;
    lines.push(['Before training', `With its random initial weights (epoch 0) the network got ${pct(f.untrainedVal)} of the `
      + `held-out images right${classes ? `; guessing among ${classes} classes gets ${pct(1 / classes)}` : ''}.`]);
  }
  if (f.accuracy === null) {
    lines.push(['So far', 'No epoch has ended yet: the points are running averages over the last steps.']);
    return lines;
  }
  lines.push(['After epoch ' + f.epochs, `Training accuracy ${pct(f.accuracy)}, held-out ${pct(f.valAccuracy)}: a gap of `
    + `${(100 * f.gap).toFixed(1)} points.`]);
  if (f.overfitting) {
    lines.push(['Overfitting', `Training accuracy is far above held-out accuracy: the network is memorising its `
      + `${f.trainSize} training images rather than learning what makes a class. More data, augmentation `
      + `(now: ${f.augment.length ? f.augment.join(', ') : 'none'}) or dropout (now: ${f.dropout}) narrow the gap.`]);
  } else {
    lines.push(['No overfitting yet', 'Held-out accuracy keeps up with training accuracy: what the network learns '
      + 'carries over to images it has not seen.']);
  }
  if (f.valRising) lines.push(['Held-out loss rising', 'The held-out loss has risen for the last epochs while training '
    + `goes on: the best checkpoint so far is epoch ${f.bestEpoch} (${pct(f.bestVal)} held-out).`]);
  if (f.lr !== null && f.lr !== undefined) lines.push(['Learning rate', `Now ${f.lr.toPrecision(2)}: the size of each step `
    + `down the loss. The ${run.config.schedule} schedule changes it as training goes.`]);
  return lines;
}
