// The "Download weights" control for torchvision models whose trained weights are not cached:
// POST starts the server-side download, then we poll its status for progress. Offline the download
// fails, and the server's message is shown as it is.

import { listen, disposer } from '../dom.js';
import { formatBytes } from '../common/format.js';

const POLL_MS = 500;

/**
 * @param {object} opts
 * @param {object} opts.api  js/api.js
 * @param {(modelId: string) => void} opts.onDone  called once the weights are in the cache
 * @param {{show: Function, clear: Function}} opts.notices  where a failure's full message goes
 */
export function createWeightsDownload({ api, onDone, notices }) {
  const root = document.getElementById('weights-download');
  const button = document.getElementById('download-button');
  const progress = document.getElementById('download-progress');
  const text = document.getElementById('download-text');
  const bag = disposer();
  let modelId = null;
  let timer = null;
  let generation = 0; // bumps when the model changes so late answers for the old one are ignored

  bag.add(listen(button, 'click', () => start()));
  bag.add(() => stopPolling());

  function stopPolling() {
    if (timer !== null) clearTimeout(timer);
    timer = null;
  }

  function showStatus(status) {
    const { state, downloaded, total, error } = status;
    root.dataset.state = state;
    if (state === 'running') {
      button.disabled = true;
      button.textContent = 'Downloading…';
      progress.hidden = false;
      if (total) {
        progress.max = total;
        progress.value = downloaded;
        text.textContent = `${formatBytes(downloaded)} of ${formatBytes(total)}`;
      } else {
        progress.removeAttribute('value'); // indeterminate
        text.textContent = `${formatBytes(downloaded)}`;
      }
    } else if (state === 'failed') {
      showError(error || 'The download failed.');
    } else if (state === 'done') {
      progress.hidden = true;
      button.disabled = true;
      button.textContent = 'Downloaded';
      text.textContent = '';
    }
  }

  function showError(message) {
    root.dataset.state = 'failed';
    progress.hidden = true;
    button.disabled = false;
    button.textContent = 'Retry download';
    text.textContent = 'Download failed';
    text.classList.add('error-text');
    // the full sentence goes below the bar, where there is room for it
    notices.show('download', `Downloading the trained weights failed: ${message} The model keeps running untrained.`);
  }

  async function start() {
    const mine = generation;
    const id = modelId;
    text.classList.remove('error-text');
    notices.clear('download');
    showStatus({ state: 'running', downloaded: 0, total: null });
    try {
      const status = await api.startDownload(id);
      if (mine === generation) follow(status, mine, id);
    } catch (err) {
      if (mine === generation) showError(err.message);
    }
  }

  function follow(status, mine, id) {
    showStatus(status);
    if (status.state === 'done') {
      onDone(id);
    } else if (status.state === 'running') {
      timer = setTimeout(async () => {
        timer = null;
        try {
          const next = await api.downloadStatus(id);
          if (mine === generation) follow(next, mine, id);
        } catch (err) {
          if (mine === generation) showError(err.message);
        }
      }, POLL_MS);
    }
  }

  /** Show the control for models whose weights can be downloaded; hide it otherwise. */
  function render(model) {
    if (model.id !== modelId) {
      generation += 1;
      stopPolling();
      modelId = model.id;
      button.disabled = false;
      button.textContent = 'Download weights';
      progress.hidden = true;
      text.textContent = '';
      text.classList.remove('error-text');
      notices.clear('download');
      delete root.dataset.state;
    }
    root.hidden = model.weights.state !== 'downloadable';
  }

  return { render, dispose: bag.run };
}
