// "Open a model…": an .onnx or .keras file (and, optionally, a .txt file of labels, one per line) from the
// file dialog or dropped onto the page goes to POST /api/models; the new model is listed and opened. The
// server's refusals are shown as they come: uploads off on a network address (with how to turn them on),
// an operator it cannot convert, a TorchScript file…

import { el, listen, disposer } from '../dom.js';

const MODEL_FILE = /\.(onnx|keras)$/i;
const LABELS_FILE = /\.(txt|labels)$/i;

/** Whether a File is a model file this page can open. */
export const isModelFile = (file) => Boolean(file && MODEL_FILE.test(file.name || ''));

/**
 * @param {object} opts
 * @param {object} opts.api  js/api.js
 * @param {object} opts.notices  shell/notices.js
 * @param {(summary: object) => Promise<void>|void} opts.onUploaded  the model as GET /api/models lists it
 */
export function createModelUpload({ api, notices, onUploaded }) {
  const bag = disposer();
  const input = el('input', {
    type: 'file',
    id: 'model-file-input',
    hidden: true,
    attrs: { accept: '.onnx,.keras,.txt', multiple: '', 'aria-label': 'Open a model file (.onnx or .keras) and a labels file' },
  });
  document.body.append(input);
  bag.add(() => input.remove());
  bag.add(
    listen(input, 'change', () => {
      const files = [...input.files];
      input.value = '';
      upload(files);
    }),
  );

  /** Upload the first model file among `files` (with the first .txt as its labels); the summary, or null. */
  async function upload(files) {
    const model = files.find(isModelFile);
    const labels = files.find((file) => LABELS_FILE.test(file.name || ''));
    if (!model) {
      notices.show('model-upload', 'Choose an .onnx or .keras model file (and, if you like, a .txt file of labels, one per line).');
      return null;
    }
    const form = new FormData();
    form.append('file', model, model.name);
    if (labels) form.append('labels', labels, labels.name);
    notices.show('model-upload', `Converting ${model.name}… this takes a few seconds.`, 'info');
    try {
      const summary = await api.uploadModel(form);
      notices.clear('model-upload');
      await onUploaded(summary);
      return summary;
    } catch (err) {
      if (err && err.name === 'AbortError') return null;
      notices.show('model-upload', `${model.name} could not be opened: ${err.message}`);
      return null;
    }
  }

  return { open: () => input.click(), upload, dispose: bag.run };
}
