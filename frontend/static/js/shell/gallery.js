// The sample gallery: Shapes test images, and MNIST test digits and photos when the server has them. Picking a
// sample fetches its PNG and uploads it like any image (ids are content hashes, so that is cheap).

import { el, listen, disposer } from '../dom.js';

const SETS = [
  { id: 'shapes', title: 'Shapes' },
  { id: 'mnist', title: 'Digits' },
  { id: 'photos', title: 'Photos' },
];
const COUNT = 12; // a 4 × 3 grid: every class once, then the first two again
export const PHOTO_MODEL = 'efficientnet_lite0'; // ImageNet-trained and bundled: photos mean something to it

/**
 * @param {object} opts
 * @param {object} opts.api  js/api.js
 * @param {(blob: Blob, filename: string) => Promise<string|null>} opts.upload  upload + select; the image id
 * @param {(id: string) => void} [opts.switchModel]  picking a photo on a non-ImageNet model switches to PHOTO_MODEL
 */
export function createGallery({ api, upload, switchModel }) {
  const tabs = document.getElementById('gallery-tabs');
  const list = document.getElementById('gallery');
  const note = document.getElementById('gallery-note');
  const bag = disposer();
  const samples = new Map(); // set id → [{id, dataset, label, url}]
  const imageIds = new Map(); // sample id → uploaded image id, to mark the current one
  let active = null;
  let userChose = false; // once the user picks a tab, model changes no longer switch it
  let currentImage = null;
  let preferred = 'shapes';
  let currentModel = null;

  bag.add(
    listen(tabs, 'click', (event) => {
      const button = event.target.closest('button[data-set]');
      if (!button) return;
      userChose = true;
      show(button.dataset.set);
    }),
  );
  bag.add(
    listen(list, 'click', async (event) => {
      const button = event.target.closest('button[data-sample]');
      if (!button) return;
      const sample = samples.get(active).find((s) => s.id === button.dataset.sample);
      if (sample.dataset === 'photos' && switchModel && currentModel && !/imagenet/i.test(currentModel.dataset)) {
        note.textContent = `Photos are shown on ${PHOTO_MODEL}, an ImageNet-trained model; ${currentModel.title} knows only ${currentModel.dataset}.`;
        switchModel(PHOTO_MODEL);
      }
      button.classList.add('is-loading');
      try {
        const blob = await api.blob(sample.url);
        const imageId = await upload(blob, `${sample.id}.png`);
        if (imageId) imageIds.set(sample.id, imageId);
        markCurrent();
      } catch (err) {
        note.textContent = `Could not load sample ${sample.id}: ${err.message}`;
      } finally {
        button.classList.remove('is-loading');
      }
    }),
  );

  /** Fetch the sample lists once; sets the server has no samples for get no tab. */
  async function load() {
    const answers = await Promise.allSettled(SETS.map((set) => api.samples(set.id, COUNT)));
    answers.forEach((answer, i) => {
      if (answer.status === 'fulfilled' && answer.value.samples.length) samples.set(SETS[i].id, answer.value.samples);
    });
    const failed = answers.find((a) => a.status === 'rejected');
    tabs.replaceChildren(
      ...SETS.filter((set) => samples.has(set.id)).map((set) =>
        el('button', { type: 'button', text: set.title, dataset: { set: set.id }, attrs: { role: 'tab' } }),
      ),
    );
    if (!samples.has('mnist')) note.textContent = 'MNIST digits appear here when the server finds the MNIST test files.';
    if (failed) note.textContent = `Samples could not be loaded: ${failed.reason.message}`;
    show(samples.has(preferred) ? preferred : [...samples.keys()][0] || null);
  }

  function show(setId) {
    active = setId;
    for (const button of tabs.querySelectorAll('button')) {
      button.setAttribute('aria-selected', String(button.dataset.set === setId));
    }
    const items = samples.get(setId) || [];
    list.dataset.set = setId || '';
    list.replaceChildren(
      ...items.map((s) =>
        el('div', { attrs: { role: 'listitem' } }, [
          el('button', { type: 'button', className: 'sample', dataset: { sample: s.id }, title: `${s.label} (${s.id})` }, [
            el('img', {
              src: s.url,
              alt: `${s.dataset} sample: ${s.label}`,
              className: s.dataset === 'photos' ? 'photo' : 'pixelated',
              loading: 'lazy',
            }),
            el('span', { className: 'sample-label', text: s.label }),
          ]),
        ]),
      ),
    );
    markCurrent();
  }

  function markCurrent() {
    for (const button of list.querySelectorAll('button[data-sample]')) {
      const id = imageIds.get(button.dataset.sample);
      button.setAttribute('aria-pressed', String(Boolean(id) && id === currentImage));
    }
  }

  /** Follow the page: prefer the set that matches the model, mark the current image. */
  function render({ model, imageId }) {
    currentImage = imageId;
    currentModel = model;
    preferred = /mnist/i.test(model.dataset) ? 'mnist' : /imagenet/i.test(model.dataset) ? 'photos' : 'shapes';
    if (!userChose && preferred !== active && samples.has(preferred)) show(preferred);
    else markCurrent();
  }

  return { load, render, dispose: bag.run };
}
