// Fool it: FGSM or PGD (L∞) on the model input in pixel space, untargeted or towards a class. Shows the
// perturbation amplified (with its scale), the perturbed picture, the prediction before and after, the
// smallest ε that flips the top-1 (asked for after the answer), and per layer how far it moved.
// URL keys: attack, epsilon, steps, step_size, target.

import { el } from '../dom.js';
import { createLatestRequest } from '../common/latest-request.js';
import { createPredictionsChart } from '../common/predictions-chart.js';
import { formatPercent } from '../common/format.js';
import { createLayerChart } from './layer-chart.js';

export function create(host, explain) {
  const attack = el('select', { className: 'xp-attack', attrs: { 'aria-label': 'Attack' } },
    [['fgsm', 'FGSM (one step)'], ['pgd', 'PGD (several steps)']].map(([v, t]) => el('option', { value: v, text: t })));
  const epsilon = el('input', { type: 'range', min: '0', max: '16', step: '1', className: 'xp-epsilon', attrs: { 'aria-label': 'epsilon' } });
  const epsText = el('output', { className: 'xp-eps-text' });
  const steps = el('input', { type: 'number', min: '1', max: '50', className: 'xp-steps', attrs: { 'aria-label': 'PGD steps' } });
  const stepSize = el('input', { type: 'number', min: '1', max: '16', className: 'xp-step-size', attrs: { 'aria-label': 'PGD step size' } });
  const target = el('select', { className: 'xp-target', attrs: { 'aria-label': 'Target class' } });
  const original = el('img', { className: 'xp-picture', alt: 'Model input' });
  const perturbation = el('img', { className: 'xp-picture', alt: 'Perturbation, amplified' });
  const perturbed = el('img', { className: 'xp-picture', alt: 'Perturbed input' });
  const pertNote = el('p', { className: 'card-note xp-pert-note' });
  const minFlip = el('p', { className: 'xp-min-flip', attrs: { 'aria-live': 'polite' } });
  const beforeHost = el('div');
  const afterHost = el('div');
  const chartHost = el('div');
  const pgdOnly = el('span', { className: 'xp-pgd-only' }, [el('label', {}, ['steps ', steps]), el('label', {}, ['step ', stepSize, '/255'])]);
  host.append(
    el('div', { className: 'xp-controls' }, [el('label', {}, ['Attack ', attack]), el('label', {}, ['ε ', epsilon, epsText]), pgdOnly,
      el('label', {}, ['Towards ', target])]),
    el('div', { className: 'xp-grid' }, [
      el('div', { className: 'xp-pane xp-pictures' }, [
        el('figure', {}, [original, el('figcaption', { text: 'input' })]),
        el('figure', {}, [perturbation, el('figcaption', { text: 'perturbation, amplified' })]),
        el('figure', {}, [perturbed, el('figcaption', { text: 'input + perturbation' })]),
        pertNote, minFlip]),
      el('div', { className: 'xp-pane' }, [el('h3', { text: 'Before' }), beforeHost, el('h3', { text: 'After' }), afterHost]),
      el('div', { className: 'xp-pane' }, [chartHost]),
    ]),
  );
  const before = createPredictionsChart(beforeHost);
  const after = createPredictionsChart(afterHost);
  const chart = createLayerChart(chartHost);
  const s = { ctx: null, classesKey: null };
  const request = createLatestRequest();
  const flipRequest = createLatestRequest();
  const set = (changes, replace = false) => s.ctx.state.set(changes, { replace });
  const q = () => {
    const st = s.ctx.state;
    const int = (key, dflt, lo, hi) => Math.max(lo, Math.min(hi, Number.isFinite(Number(st.get(key))) && st.get(key) !== undefined ? Math.round(Number(st.get(key))) : dflt));
    return { attack: st.get('attack') === 'pgd' ? 'pgd' : 'fgsm', epsilon: int('epsilon', 4, 0, 16), steps: int('steps', 10, 1, 50),
      step_size: int('step_size', 1, 1, 16), target: st.get('target') === undefined ? null : Number(st.get('target')) };
  };
  attack.onchange = () => set({ attack: attack.value });
  epsilon.oninput = () => { epsText.textContent = `${epsilon.value}/255`; };
  epsilon.onchange = () => set({ epsilon: epsilon.value });
  steps.onchange = () => set({ steps: steps.value });
  stepSize.onchange = () => set({ step_size: stepSize.value });
  target.onchange = () => set({ target: target.value === '' ? null : target.value });

  async function loadClasses() {
    const { model, imageId, weights, api } = s.ctx;
    const key = `${model.id}|${weights}|${imageId}`;
    if (key === s.classesKey) return;
    s.classesKey = key;
    const answer = await api.predictions(model.id, imageId, weights, { topK: 5 });
    const wanted = q().target;
    const options = [el('option', { value: '', text: 'any other class (untargeted)' }),
      ...answer.predictions.slice(1).map((p) => el('option', { value: String(p.index), text: p.label }))];
    if (wanted !== null && !answer.predictions.slice(1).some((p) => p.index === wanted)) options.push(el('option', { value: String(wanted), text: `class ${wanted}` }));
    target.replaceChildren(...options);
    target.value = wanted === null ? '' : String(wanted);
  }

  async function load() {
    const { model, imageId, weights, api } = s.ctx;
    const v = q();
    const params = { attack: v.attack, epsilon: v.epsilon, weights, min_flip: 'false' };
    if (v.attack === 'pgd') Object.assign(params, { steps: v.steps, step_size: v.step_size });
    if (v.target !== null) params.target = v.target;
    const key = JSON.stringify([model.id, imageId, params]);
    if (request.isCurrent(key)) return;
    before.loading(); after.loading();
    host.dataset.state = 'loading';
    try {
      const got = await request.run(key, (signal) => api.getJson(api.urls.modelPath(model.id, `/images/${imageId}/adversarial.json`, params), { signal }));
      if (!got) return;
      show(got.value);
      host.dataset.state = 'ready';
      host.dataset.for = key;
      loadMinFlip(got.value);
    } catch (err) {
      host.dataset.state = 'error';
      pertNote.textContent = err.message;
    }
  }

  function show(answer) {
    const { model, imageId, weights, api } = s.ctx;
    original.src = api.urls.modelPath(model.id, `/images/${imageId}/input.png`, { weights });
    perturbation.src = answer.urls.perturbation;
    perturbed.src = answer.urls.image;
    before.show(answer.before, 'before');
    after.show(answer.after, 'after');
    const gain = (0.5 * 255) / Math.max(1, answer.epsilon);
    pertNote.textContent = `Perturbation amplified ×${gain.toFixed(1)}: grey is no change, white +${Math.max(1, answer.epsilon)}/255, black −${Math.max(1, answer.epsilon)}/255. `
      + `Largest change ${answer.perturbation.max_abs.toFixed(2)}/255 of the pixel range, mean ${answer.perturbation.mean_abs.toFixed(2)}/255.`;
    chart.show(answer.layers, 'How far each layer moved: relative L2 = ‖perturbed − original‖ / ‖original‖');
    const b = answer.before[0]; const a = answer.after[0];
    const layers = answer.layers;
    explain([
      ['This experiment', `${answer.attack.toUpperCase()} with ε = ${answer.epsilon}/255 changed every input pixel by at most ${answer.epsilon}/255 (${(answer.epsilon / 2.55).toFixed(1)} % of the range). `
        + `Top-1 before: “${b.label}” ${formatPercent(b.probability)}; after: “${a.label}” ${formatPercent(a.probability)}${answer.flipped ? ' — fooled.' : '.'}`],
      ['How', answer.attack === 'fgsm' ? 'FGSM takes one step of ε along the sign of the gradient of the loss with respect to the pixels (before normalisation), then clips to [0, 1].'
        : `PGD takes ${answer.steps} steps of ${answer.step_size}/255 along the gradient's sign, each time pulled back into the ε-box around the picture and clipped to [0, 1].`],
      ['Layers', layers.length ? `The first layer ${layers[0].name} moved by ${layers[0].relative_l2.toPrecision(3)} (relative L2), the last ${layers[layers.length - 1].name} by ${layers[layers.length - 1].relative_l2.toPrecision(3)}: a small change at the input grows on its way up.` : ''],
    ]);
  }

  async function loadMinFlip(answer) {
    const { api } = s.ctx;
    minFlip.textContent = 'Searching the smallest ε that flips the top class…';
    delete minFlip.dataset.epsilon;
    try {
      const got = await flipRequest.run(answer.urls.min_flip, (signal) => api.getJson(answer.urls.min_flip, { signal }));
      if (!got) return;
      const e = got.value.min_flip_epsilon;
      minFlip.dataset.epsilon = e === null ? 'none' : String(e);
      minFlip.textContent = e === null ? 'No ε up to 16/255 flips the top class with this attack.'
        : `The smallest ε that flips the top class: ${e}/255.`;
    } catch (err) {
      minFlip.textContent = err.message;
    }
  }

  return {
    update(ctx) {
      s.ctx = ctx;
      const v = q();
      attack.value = v.attack;
      epsilon.value = String(v.epsilon); epsText.textContent = `${v.epsilon}/255`;
      steps.value = String(v.steps); stepSize.value = String(v.step_size);
      pgdOnly.hidden = v.attack !== 'pgd';
      if (!ctx.imageId) { before.empty('Pick or draw an image first.'); return; }
      loadClasses().catch(() => {});
      load();
    },
    unmount() {
      request.abort();
      flipRequest.abort();
    },
  };
}
