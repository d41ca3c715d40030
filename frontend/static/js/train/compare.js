// Two runs on one chart, in words: each run's training / held-out gap at the last epoch both have reached,
// and the knobs in which their configs differ. Pure functions (no DOM), checked under Node
// (tests/test_train_js.py) against numbers computed there.

const KNOBS = [
  ['architecture', 'architecture'], ['dataset', 'data'], ['train_size', 'training images'],
  ['augment', 'augmentation'], ['dropout', 'dropout p'], ['batch_norm', 'batch norm'], ['optimizer', 'optimiser'],
  ['lr', 'learning rate'], ['schedule', 'LR schedule'], ['weight_decay', 'weight decay'],
  ['batch_size', 'batch size'], ['epochs', 'epochs'], ['init', 'start'], ['seed', 'seed'],
];

const COUNT = ['', 'One', 'Two', 'Three', 'Four', 'Five'];
const pct = (v) => `${(100 * v).toFixed(1)}%`;
const points = (v) => `${(100 * v).toFixed(1)} points`;

/** A knob's value as the page words it (`info` gives the number of training images "all" came to). */
function knobText(run, key) {
  const value = run.config[key];
  if (key === 'augment') return value && value.length ? value.join(', ') : 'none';
  if (key === 'batch_norm') return value ? 'on' : 'off';
  if (key === 'train_size') return String((run.info && run.info.train_size) || value || 'all');
  if (key === 'init') return value === 'current' ? 'trained weights' : 'random weights';
  return String(value);
}

/** [[label, this run's value, the other's]] for every knob that differs. */
export function configDifferences(run, other) {
  return KNOBS.map(([key, label]) => [label, knobText(run, key), knobText(other, key)]).filter(([, a, b]) => a !== b);
}

/** The row of `run` at `epoch`, or null. */
const rowAt = (run, epoch) => run.history.find((row) => row.epoch === epoch) || null;
const lastEpoch = (run) => (run.history.length ? run.history[run.history.length - 1].epoch : null);

/**
 * Facts comparing `run` with `other` at the last epoch (≥ 1) both have finished: {epoch, mine, theirs}
 * ({accuracy, valAccuracy, gap} each), or null when either has not finished an epoch yet.
 */
export function compareFacts(run, other) {
  const a = lastEpoch(run);
  const b = lastEpoch(other);
  if (!a || !b) return null;
  const epoch = Math.min(a, b);
  const at = (r) => {
    const row = rowAt(r, epoch);
    return row && { accuracy: row.accuracy, valAccuracy: row.val_accuracy, gap: row.accuracy - row.val_accuracy };
  };
  const mine = at(run);
  const theirs = at(other);
  return mine && theirs ? { epoch, mine, theirs } : null;
}

/** Sentences for "What am I looking at?" about the two runs, with their own numbers. */
export function explainComparison(run, other) {
  if (!run || !other) return [];
  const me = `“${run.name}”`;
  const them = `“${other.name}”`;
  const lines = [['Two runs', `Solid and dashed lines with filled dots: ${me}. Thin dotted lines with hollow rings: `
    + `${them}. Blue is training, orange held-out, for both; the x axis counts epochs, so runs of different sizes line up.`]];
  const diffs = configDifferences(run, other);
  lines.push(['What differs', diffs.length
    ? `${diffs.map(([label, a, b]) => `${label}: ${a} in ${me}, ${b} in ${them}`).join('; ')}.`
    : 'Nothing: the same knobs and seed, so the two runs should draw the same curves.']);
  const f = compareFacts(run, other);
  if (!f) {
    lines.push(['So far', `${lastEpoch(run) ? them : me} has not finished an epoch yet: the comparison comes after its first.`]);
    return lines;
  }
  const { mine, theirs } = f;
  lines.push([`At epoch ${f.epoch}`, `${me}: training ${pct(mine.accuracy)}, held-out ${pct(mine.valAccuracy)}, a gap of `
    + `${points(mine.gap)}. ${them}: training ${pct(theirs.accuracy)}, held-out ${pct(theirs.valAccuracy)}, a gap of `
    + `${points(theirs.gap)}.`]);
  const narrower = mine.gap <= theirs.gap ? [me, mine, theirs] : [them, theirs, mine];
  const better = mine.valAccuracy >= theirs.valAccuracy ? me : them;
  let what = Math.abs(mine.gap - theirs.gap) < 0.005
    ? `The gaps are about the same (${points(mine.gap)} and ${points(theirs.gap)}).`
    : `${narrower[0]} overfits less: its gap is ${points(narrower[2].gap - narrower[1].gap)} narrower.`;
  what += ` ${better} does better on images neither has seen (held-out ${pct(Math.max(mine.valAccuracy, theirs.valAccuracy))}`
    + ` against ${pct(Math.min(mine.valAccuracy, theirs.valAccuracy))}).`;
  if (diffs.length === 1 && diffs[0][0] === 'seed') {
    what += ' Only the seed differs: this is how much two runs vary by chance (initial weights, the order of the images).';
  } else if (diffs.length === 1) what += ` Only the ${diffs[0][0]} differs, so that is what made the difference (for this seed).`;
  else if (diffs.length > 1) {
    what += ` ${COUNT[diffs.length] || diffs.length} knobs differ (${diffs.map(([label]) => label).join(', ')}), so this comparison cannot say `
      + 'which of them made the difference: change one at a time to find out.';
  }
  lines.push(['What it did', what]);
  return lines;
}
