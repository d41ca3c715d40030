// "What does this channel look for?": the dataset images that excite it most (cropped to the receptive
// field around each one's maximum) beside an image optimised to excite it (feature visualisation).

import { el, listen, disposer, isAbort } from '../dom.js';
import { formatInt, formatShort } from '../common/format.js';
import { ensureStylesheet } from '../common/stylesheet.js';
import { cropUrl, defaultDataset, featureVis, featureVisPng, fetchExamples, imageFolders, pause } from './channel-api.js';

const K = 9;
const POLL_MS = 700;
const DATASETS = [['mnist', 'MNIST test (10,000)'], ['shapes', 'Shapes test'], ['photos', 'Photos']];

export function createChannelPanel(host) {
  ensureStylesheet('/static/js/channel/channel.css');
  const bag = disposer();
  const title = el('h3', { className: 'chan-title' });
  const select = el('select', { className: 'chan-dataset', attrs: { 'aria-label': 'Dataset searched' } },
    DATASETS.map(([value, text]) => el('option', { value, text })));
  const examplesNote = el('p', { className: 'hint chan-note', attrs: { role: 'status' } });
  const progress = el('progress', { className: 'chan-progress', max: 1, value: 0, hidden: true });
  const grid = el('div', { className: 'chan-examples' });
  const visImg = el('img', { className: 'chan-vis-image', alt: '', hidden: true });
  const visButton = el('button', { type: 'button', className: 'button button-small', text: 'Generate' });
  const visCancel = el('button', { type: 'button', className: 'button button-small', text: 'Cancel', hidden: true });
  const visSeed = el('input', { type: 'number', className: 'chan-seed', min: 0, max: 9999, value: 0, attrs: { 'aria-label': 'Random seed' } });
  const visProgress = el('progress', { className: 'chan-progress', max: 1, value: 0, hidden: true });
  const visNote = el('p', { className: 'hint chan-note', attrs: { role: 'status' } });
  const root = el('section', { className: 'card chan', hidden: true }, [
    el('div', { className: 'card-head' }, [title, el('label', { className: 'chan-field' }, ['Dataset ', select])]),
    el('div', { className: 'chan-body' }, [
      el('div', { className: 'chan-part' }, [
        el('h4', { text: `The ${K} images that excite it most` }),
        el('p', { className: 'hint', text: 'The orange box in each crop is the part of the input this channel sees (its receptive field) at the place of its largest value; the number is that value and #n the image\'s index in the dataset.' }),
        progress, examplesNote, grid]),
      el('div', { className: 'chan-part chan-vis' }, [
        el('h4', { text: 'An image made to excite it' }),
        el('p', { className: 'hint', text: 'Starting from noise, the picture is changed step by step (gradient ascent) to raise this channel\'s average value; random shifts and rescaling each step keep it from exploiting single pixels.' }),
        el('div', { className: 'chan-vis-controls' }, [visButton, visCancel, el('label', { className: 'chan-field' }, ['seed ', visSeed])]),
        visProgress, visNote, visImg]),
    ]),
  ]);
  host.append(root);
  let current = null; // {ctx, layer, channel, key}
  let examplesAbort = null;
  let visAbort = null;

  let foldersShown = false;
  async function addFolders(api) {  // the server's named image folders join the built-in datasets
    if (foldersShown) return;
    foldersShown = true;
    const folders = (await imageFolders(api)).filter((f) => !f.error);
    const wanted = current ? select.value : null;
    for (const f of folders) {
      const text = `Folder ${f.name} (${formatInt(f.images)})`;
      const option = [...select.options].find((o) => o.value === f.dataset);
      if (option) option.textContent = text;
      else select.append(el('option', { value: f.dataset, text }));
    }
    if (wanted) select.value = wanted;
  }

  bag.add(listen(select, 'change', () => current && current.ctx.state.set({ dataset: select.value })));
  bag.add(listen(visButton, 'click', () => runVis('POST')));
  bag.add(listen(visCancel, 'click', () => runVis('DELETE')));
  bag.add(listen(visSeed, 'change', () => current && (visImg.hidden = true, runVis('GET'))));

  function spec() {
    const { ctx, layer, channel } = current;
    return { model: ctx.model.id, layer: layer.name, channel, weights: ctx.weights, dataset: select.value, k: K, seed: Number(visSeed.value) || 0 };
  }

  async function loadExamples() {
    if (examplesAbort) examplesAbort.abort();
    examplesAbort = new AbortController();
    const { signal } = examplesAbort;
    const s = spec();
    grid.replaceChildren();
    examplesNote.textContent = 'Asking the server…';
    try {
      for (;;) {
        const { state, body } = await fetchExamples(current.ctx.api, s, signal);
        if (state === 'done') {
          progress.hidden = true;
          showExamples(s, body);
          return;
        }
        const p = body.progress || { done: 0, total: 0 };
        progress.hidden = false;
        progress.max = Math.max(1, p.total);
        progress.value = p.done;
        examplesNote.textContent = `${body.state === 'queued' ? 'Waiting for the worker' : 'Scanning'}: ${formatInt(p.done)} of ${formatInt(p.total)} images (computed once per model and dataset, then kept).`;
        await pause(POLL_MS, signal);
      }
    } catch (err) {
      if (!isAbort(err)) { progress.hidden = true; examplesNote.textContent = err.message; }
    }
  }

  function showExamples(s, body) {
    const source = body.source ? body.source.description : `${formatInt(body.images)} images`;
    const few = body.images < 100 && s.dataset === 'photos'
      ? ` Only ${formatInt(body.images)} images: start the server with --image-folder NAME=PATH (a folder of your own photos) for examples that mean more.`
      : '';
    examplesNote.textContent = body.examples.length
      ? `Largest value of channel ${s.channel} over ${source}, largest first.${few}` : 'No images.';
    grid.replaceChildren(...body.examples.map((e) => el('figure', { className: 'chan-example' }, [
      el('img', { className: 'pixelated', src: cropUrl(current.ctx.api, s, e.index), alt: `${s.dataset} image ${e.index}, cropped`, title: `${s.dataset} #${e.index}: max ${e.value} at (y ${e.y}, x ${e.x})` }),
      el('figcaption', {}, [el('span', { className: 'chan-value', text: formatShort(e.value) }), el('span', { className: 'chan-index', text: `#${e.index}` })]),
    ])));
    grid.dataset.values = body.examples.map((e) => e.value).join(',');
  }

  async function runVis(method) {
    if (!current) return;
    if (visAbort) visAbort.abort();
    visAbort = new AbortController();
    const { signal } = visAbort;
    const s = spec();
    try {
      let job = await featureVis(current.ctx.api, s, method, signal);
      for (;;) {
        showVis(s, job);
        if (!['queued', 'running'].includes(job.state)) return;
        await pause(POLL_MS, signal);
        job = await featureVis(current.ctx.api, s, 'GET', signal);
      }
    } catch (err) {
      if (!isAbort(err)) visNote.textContent = err.message;
    }
  }

  function showVis(s, job) {
    const busy = ['queued', 'running'].includes(job.state);
    visButton.hidden = busy || job.state === 'done';
    visCancel.hidden = !busy;
    visProgress.hidden = !busy;
    visProgress.max = Math.max(1, job.progress.total);
    visProgress.value = job.progress.done;
    const notes = {
      missing: 'Not made yet for this seed.', queued: 'Waiting for the worker…', cancelled: 'Cancelled.',
      running: `Step ${job.progress.done} of ${job.progress.total} · channel mean ${formatShort(job.objective)}`,
      done: `After ${job.progress.total} steps the channel's mean value is ${formatShort(job.objective)} (seed ${s.seed}${job.parameterisation ? `, ${job.parameterisation}` : ''}).`,
      failed: `Failed: ${job.error || ''}`,
    };
    visNote.textContent = notes[job.state] || job.state;
    if (job.state === 'done') {
      const url = featureVisPng(current.ctx.api, s);
      if (visImg.getAttribute('src') !== url) visImg.src = url;
      visImg.alt = `An image optimised to excite ${s.layer} channel ${s.channel}`;
      visImg.hidden = false;
    }
  }

  return {
    show(ctx, layer, channel) {
      if (!layer) { this.hide(); return; }
      const dataset = ctx.state.get('dataset') || defaultDataset(ctx.model);
      const key = `${ctx.model.id}|${ctx.weights}|${layer.name}|${channel}|${dataset}`;
      root.hidden = false;
      const unitWord = layer.output_shape.length === 1 ? 'unit' : 'channel';
      title.textContent = `What ${unitWord} ${channel} of ${layer.name} looks for`;
      if (current && current.key === key) { current.ctx = ctx; return; }
      const sameUnit = current && current.key.split('|').slice(0, 4).join('|') === key.split('|').slice(0, 4).join('|');
      current = { ctx, layer, channel, key };
      if (![...select.options].some((o) => o.value === dataset)) select.append(el('option', { value: dataset, text: dataset }));
      select.value = dataset;
      addFolders(ctx.api);
      loadExamples();
      if (!sameUnit) { visImg.hidden = true; runVis('GET'); }
    },
    hide() {
      root.hidden = true;
      current = null;
      if (examplesAbort) examplesAbort.abort();
      if (visAbort) visAbort.abort();
    },
    dispose() {
      this.hide();
      bag.run();
    },
  };
}
