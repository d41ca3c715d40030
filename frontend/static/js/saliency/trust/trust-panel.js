// "Which map should we trust?" in the Saliency view: the model-randomisation strip and chart, the
// deletion/insertion ranking with a playback, and one paragraph with this image's numbers.
// URL keys (the class follows them): trust=1 runs the checks, trust_baseline=blur|mean (default: see
// defaultBaseline),
// trust_method=<method> picks the curves and playback shown.

import { el, isAbort } from '../../dom.js';
import { formatPercent } from '../../common/format.js';
import { chartFontPx, lineChart } from './trust-chart.js';
import { createPlayback } from './trust-playback.js';
import { explain, randomAucs, rankMethods } from './trust-summary.js';
import { TRUST_METHODS, cancelSanity, loadDeletions, trustUrls, waitForSanity } from './trust-data.js';

const COLOURS = { gradcam: '#b2182b', 'guided-backprop': '#1d4ed8', gradient: '#059669', 'integrated-gradients': '#7c3aed', scorecam: '#c2410c' };
const TITLES = { gradcam: 'Grad-CAM', 'guided-backprop': 'Guided Backprop', gradient: 'Plain gradient', 'integrated-gradients': 'Integrated Gradients', scorecam: 'Score-CAM' };

/**
 * Blur for colour photos (RISE's baseline); the mean colour for grey digit-style inputs, where a blurred
 * digit is still the same digit: on MNIST test images 0 and 1 with LeNet-5, every method's blur-deletion
 * AUC equalled the random order's (0.98–1.00), while the mean baseline separated them (0.08–0.85).
 */
export function defaultBaseline(model) {
  return model && model.input && model.input.channels === 1 ? 'mean' : 'blur';
}

export function createTrustPanel(parent, { setState }) {
  const run = el('button', { type: 'button', className: 'trust-button trust-run', text: 'Run the checks on this image' });
  const stop = el('button', { type: 'button', className: 'trust-button', text: 'Stop', hidden: true });
  const status = el('p', { className: 'trust-status', attrs: { role: 'status' } });
  const summary = el('p', { className: 'trust-summary' });
  const strips = el('div', { className: 'trust-strips' });
  const charts = el('div', { className: 'trust-charts' });
  const baseline = el('select', { className: 'trust-select', attrs: { 'aria-label': 'Deleted pixels become' } },
    [el('option', { value: 'blur', text: 'the image blurred' }), el('option', { value: 'mean', text: 'the dataset’s mean colour' })]);
  const table = el('table', { className: 'trust-table' });
  const curves = el('div', { className: 'trust-curve' });
  const playHost = el('div');
  const body = el('div', { className: 'trust-body', hidden: true }, [
    el('h3', { text: '1 · Randomise the model, from the output back, and watch the maps' }), strips, charts,
    el('h3', { text: '2 · Delete the pixels each map ranks highest, and watch the class probability' }),
    el('label', { className: 'trust-field' }, ['Deleted pixels become ', baseline]),
    table, el('div', { className: 'trust-deletion' }, [curves, playHost]),
  ]);
  const card = el('section', { className: 'card trust-card', attrs: { 'aria-labelledby': 'trust-heading' } }, [
    el('div', { className: 'card-head' }, [el('h2', { id: 'trust-heading', text: 'Which map should we trust?' }), el('div', {}, [run, stop])]),
    el('p', { className: 'trust-intro', text: 'Two checks of Grad-CAM, Guided Backprop, plain gradients, Integrated Gradients and Score-CAM on this image: '
      + 'does the map change when the model forgets what it learned (Adebayo et al., 2018), and does deleting the pixels it ranks highest make the class disappear fastest (Petsiuk et al., 2018)?' }),
    status, summary, body,
  ]);
  parent.append(card);
  const playback = createPlayback(playHost, { onFrame: (x) => chart && chart.setCursor(x) });
  let ctx = null;
  let key = null;
  let abort = null;
  let sanityUrl = null;
  let sanity = null;
  let deletions = {};
  let chart = null;
  let playKey = null;

  run.addEventListener('click', () => setState({ trust: '1' }));
  stop.addEventListener('click', () => {
    if (sanityUrl) cancelSanity(ctx.api, sanityUrl);
    setState({ trust: null });
  });
  baseline.addEventListener('change', () => setState({ trust_baseline: baseline.value }));

  /** ({api, model, imageId, weights, target, state, label}): run or show the checks for this image. */
  function update(next) {
    ctx = next;
    const on = next.state.trust === '1' && next.imageId;
    const base = ['blur', 'mean'].includes(next.state.trust_baseline) ? next.state.trust_baseline : defaultBaseline(next.model);
    baseline.value = base;
    run.hidden = Boolean(on);
    const newKey = on ? JSON.stringify([next.model.id, next.imageId, next.weights, next.target, base]) : null;
    if (newKey !== key) {
      key = newKey;
      restart(on, base);
    } else if (on) {
      renderDeletion();
    }
  }

  function restart(on, base) {
    if (abort) abort.abort();
    abort = null;
    sanity = null;
    deletions = {};
    playKey = null;
    body.hidden = !on;
    summary.textContent = '';
    stop.hidden = true;
    card.dataset.state = on ? 'running' : 'idle';
    if (!on) {
      status.textContent = ctx.imageId ? 'The checks recompute each map many times; they take from seconds (LeNet-5) to minutes (large models on a CPU).' : 'Choose an image first.';
      return;
    }
    const urls = trustUrls(ctx.api, { modelId: ctx.model.id, imageId: ctx.imageId, weights: ctx.weights, target: ctx.target, baseline: base });
    sanityUrl = urls.sanity();
    abort = new AbortController();
    const mine = abort;
    strips.replaceChildren(el('p', { className: 'hint', text: 'Randomising the model…' }));
    charts.replaceChildren();
    renderTable();
    stop.hidden = false;
    status.textContent = 'Starting…';
    const sanityDone = waitForSanity(ctx.api, sanityUrl, { signal: mine.signal, onProgress: (job) => {
      if (abort !== mine) return;
      const p = job.progress || {};
      status.textContent = job.state === 'queued' ? 'Randomisation: waiting for the background worker…'
        : `Randomisation: ${p.done} of ${p.total} maps computed${job.step ? ` (now: ${TITLES[job.method] || job.method} after randomising ${job.step})` : ''}.`;
      if (job.state === 'cancelled') status.textContent = 'Randomisation stopped.';
    } }).then((answer) => {
      if (abort !== mine) return;
      sanity = answer;
      renderSanity();
    });
    const deletionDone = loadDeletions(ctx.api, urls, TRUST_METHODS, { signal: mine.signal,
      onResult: (method, answer) => {
        if (abort !== mine) return;
        deletions[method] = answer;
        renderTable();
        renderDeletion();
      },
      onError: (method, err) => { if (abort === mine) status.textContent = `${TITLES[method]}: ${err.message}`; } });
    Promise.all([sanityDone, deletionDone]).then(() => {
      if (abort !== mine) return;
      stop.hidden = true;
      status.textContent = '';
      card.dataset.state = 'done';
      renderSummary();
    }).catch((err) => {
      if (abort !== mine || isAbort(err)) return;
      stop.hidden = true;
      card.dataset.state = 'failed';
      status.textContent = `The checks could not be completed: ${err.message}`;
    });
  }

  function renderSanity() {
    const n = sanity.steps.length;
    strips.replaceChildren(...sanity.methods.map((m) => {
      const check = sanity.checks[m.name];
      const ticks = el('div', { className: 'trust-ticks' },
        [el('span', { text: 'original' }), ...sanity.steps.map((s) => el('span', { text: String(s.step), title: `randomised: ${s.label}` }))]);
      ticks.style.gridTemplateColumns = `repeat(${n + 1}, 1fr)`;
      return el('div', { className: 'trust-strip-row', dataset: { method: m.name, passes: String(check.passes) } }, [
        el('div', { className: 'trust-strip-head' }, [
          el('strong', { text: m.title }),
          el('span', { className: `trust-badge ${check.passes ? 'is-pass' : 'is-fail'}`, text: check.passes ? 'passes' : 'fails', title: check.explanation }),
        ]),
        el('div', { className: 'trust-strip' }, [
          el('img', { className: 'trust-strip-img', src: sanity.strips[m.name], alt: `${m.title}: the map before and after each randomisation step` }), ticks]),
      ]);
    }));
    const xs = [0, ...sanity.steps.map((s) => s.step)];
    const half = sanity.checks[sanity.methods[0].name].half_step;
    const fontPx = chartFontPx();
    const width = Math.max(260, Math.min(520, (charts.clientWidth || 800) / 2 - 12));
    const height = Math.round(width * 0.55);
    const legend = el('p', { className: 'trust-legend' }, sanity.methods.map((m) => {
      const swatch = el('i');
      swatch.style.background = COLOURS[m.name] || '#333';
      return el('span', { className: 'trust-key' }, [swatch, m.title]);
    }));
    const hosts = ['spearman', 'ssim'].map((metric) => {
      const host = el('div', { className: 'trust-chart-host', dataset: { metric } });
      lineChart(host, {
        xs, width, height, fontPx, yMin: metric === 'ssim' ? -0.2 : 0, yMax: 1,
        series: sanity.methods.map((m) => ({ name: m.name, colour: COLOURS[m.name] || '#333', values: [1, ...sanity.steps.map((s) => s.scores[m.name][metric])] })),
        xLabel: 'randomisation steps (from the output)', yLabel: metric === 'ssim' ? 'SSIM' : '|Spearman ρ|',
        xTicks: xs.length <= 13 ? xs.map((x) => ({ x, text: String(x) })) : [],
        hLines: metric === 'spearman' ? [{ y: 0.5, text: 'fails above 0.5' }] : [],
        vLines: [{ x: half, text: 'top half' }],
      });
      return host;
    });
    charts.replaceChildren(legend, ...hosts);
    renderTable();
  }

  function renderTable() {
    const rows = rankMethods(deletions);
    const random = randomAucs(deletions);
    const chosen = chosenMethod();
    const head = el('tr', {}, ['Method', 'Deletion AUC (lower is better)', 'Insertion AUC (higher is better)', 'Randomisation check']
      .map((t) => el('th', { text: t, attrs: { scope: 'col' } })));
    const body = rows.map((r) => {
      const check = sanity && sanity.checks[r.name];
      return el('tr', { className: r.name === chosen ? 'is-chosen' : '', dataset: { method: r.name } }, [
        el('th', { attrs: { scope: 'row' } }, [el('button', { type: 'button', className: 'trust-pick', text: r.title,
          onclick: () => setState({ trust_method: r.name }) })]),
        el('td', { text: `${r.deletion.toFixed(3)} (#${r.deletionRank})` }),
        el('td', { text: `${r.insertion.toFixed(3)} (#${r.insertionRank})` }),
        el('td', { text: check ? `${check.passes ? 'passes' : 'fails'} (ρ ${check.spearman_at_half.toFixed(2)})` : '…' }),
      ]);
    });
    const pending = TRUST_METHODS.filter((m) => !deletions[m]).map((m) => el('tr', { className: 'is-pending' }, [
      el('th', { text: TITLES[m], attrs: { scope: 'row' } }), el('td', { text: 'computing…', attrs: { colspan: 3 } })]));
    const randomRow = random ? [el('tr', { className: 'trust-random', dataset: { method: 'random' } }, [
      el('th', { text: 'Random pixel order', attrs: { scope: 'row' } }), el('td', { text: random.deletion.toFixed(3) }),
      el('td', { text: random.insertion.toFixed(3) }), el('td', { text: '—' })])] : [];
    table.replaceChildren(el('thead', {}, head), el('tbody', {}, [...body, ...randomRow, ...pending]));
  }

  function chosenMethod() {
    const wanted = ctx && ctx.state.trust_method;
    return TRUST_METHODS.includes(wanted) ? wanted : 'gradcam';
  }

  function renderDeletion() {
    const method = chosenMethod();
    const answer = deletions[method];
    if (!answer) return;
    const k = `${key}|${method}`;
    if (k === playKey) return;
    playKey = k;
    renderTable();
    const fontPx = chartFontPx();
    const colour = COLOURS[method];
    chart = lineChart(curves, {
      xs: answer.fractions, width: 420, height: 240, fontPx, yMin: 0, yMax: 1,
      series: [
        { name: 'deletion', colour, values: answer.deletion },
        { name: 'insertion', colour, values: answer.insertion, dash: '7 5' },
        { name: 'random-deletion', colour: '#8a96a8', values: answer.random.deletion, width: 1.5 },
        { name: 'random-insertion', colour: '#8a96a8', values: answer.random.insertion, dash: '7 5', width: 1.5 },
      ],
      xLabel: 'fraction of pixels changed', yLabel: `p(“${answer.target.label}”)`,
      xTicks: [0, 0.5, 1].map((x) => ({ x, text: formatPercent(x, 0) })),
    });
    curves.append(el('p', { className: 'trust-legend', text: `${answer.method.title}: solid = deletion (AUC ${answer.deletion_auc.toFixed(3)}), dashed = insertion `
      + `(AUC ${answer.insertion_auc.toFixed(3)}); grey = a random order (${answer.random.deletion_auc.toFixed(3)} / ${answer.random.insertion_auc.toFixed(3)}). `
      + `Deleted pixels become ${answer.baseline_description}.` }));
    playback.show(ctx.api, answer).catch((err) => { if (!isAbort(err)) status.textContent = err.message; });
  }

  function renderSummary() {
    const first = Object.values(deletions)[0];
    summary.textContent = explain(sanity, deletions, { label: first ? first.target.label : sanity.target.label });
  }

  return {
    update,
    dispose() {
      if (abort) abort.abort();
      playback.dispose();
    },
  };
}
