// Getting an image in: file picker, drag-and-drop (anywhere on the page), paste (Ctrl+V). Shows the
// uploaded image next to "what the model sees" (the preprocessed tensor as a picture).

import { listen, disposer } from '../dom.js';

const COLOURFUL = 24; // mean (max − min) of a pixel's R, G, B, out of 255: above it, a colour picture

/** Whether a picture is in colour (a photo) rather than grey (a digit, a scan): decoded small, here. */
async function isColourful(blob) {
  try {
    const bitmap = await createImageBitmap(blob, { resizeWidth: 32, resizeHeight: 32 });
    const canvas = new OffscreenCanvas(32, 32);
    const g = canvas.getContext('2d');
    g.drawImage(bitmap, 0, 0);
    bitmap.close();
    const { data } = g.getImageData(0, 0, 32, 32);
    let spread = 0;
    for (let i = 0; i < data.length; i += 4) {
      spread += Math.max(data[i], data[i + 1], data[i + 2]) - Math.min(data[i], data[i + 1], data[i + 2]);
    }
    return spread / (data.length / 4) > COLOURFUL;
  } catch {
    return false; // the server says what is wrong with a file it cannot read
  }
}

/**
 * @param {object} opts
 * @param {object} opts.api  js/api.js
 * @param {(imageId: string, options: {replace?: boolean}) => void} opts.onImage  an upload finished
 * @param {(files: File[]) => boolean} [opts.onModelFiles]  files dropped on the page; true when they were a model
 */
export function createImageInput({ api, onImage, onModelFiles = () => false }) {
  const dropzone = document.getElementById('dropzone');
  const fileInput = document.getElementById('file-input');
  const errorBox = document.getElementById('image-error');
  const pair = document.getElementById('image-pair');
  const original = document.getElementById('image-original');
  const modelInput = document.getElementById('image-model-input');
  const caption = document.getElementById('model-input-caption');
  const bag = disposer();
  let dragDepth = 0;
  let uploads = 0;
  let shown = { imageId: null, src: null };
  const photos = new Set(); // ids of the user's own uploads that are colour photos

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
  }

  function setBusy(busy) {
    uploads += busy ? 1 : -1;
    dropzone.classList.toggle('is-busy', uploads > 0);
  }

  /**
   * Upload a Blob and make it the current image. Resolves to the image id, or null after showing
   * the server's error message.
   */
  async function upload(blob, filename = 'image.png', { replace = false, ownPicture = false } = {}) {
    setBusy(true);
    try {
      const [{ image_id: imageId }, colourful] = await Promise.all([
        api.uploadImage(blob, filename), ownPicture ? isColourful(blob) : false]);
      if (colourful) photos.add(imageId);
      showError('');
      onImage(imageId, { replace });
      return imageId;
    } catch (err) {
      showError(`Could not use ${filename}: ${err.message}`);
      return null;
    } finally {
      setBusy(false);
    }
  }

  function firstImageFile(list) {
    for (const item of list || []) {
      const file = item instanceof File ? item : item.kind === 'file' ? item.getAsFile() : null;
      if (file) return file;
    }
    return null;
  }

  bag.add(
    listen(fileInput, 'change', () => {
      const file = fileInput.files && fileInput.files[0];
      if (file) upload(file, file.name, { ownPicture: true });
      fileInput.value = ''; // picking the same file again should upload again
    }),
  );

  // Dropping anywhere on the page uploads: on a projector the drop zone is a small target.
  bag.add(
    listen(document, 'dragenter', (event) => {
      if (!event.dataTransfer || ![...event.dataTransfer.types].includes('Files')) return;
      dragDepth += 1;
      dropzone.classList.add('is-dragover');
    }),
  );
  bag.add(
    listen(document, 'dragleave', () => {
      dragDepth = Math.max(0, dragDepth - 1);
      if (dragDepth === 0) dropzone.classList.remove('is-dragover');
    }),
  );
  bag.add(listen(document, 'dragover', (event) => event.preventDefault()));
  bag.add(
    listen(document, 'drop', (event) => {
      event.preventDefault();
      dragDepth = 0;
      dropzone.classList.remove('is-dragover');
      if (event.dataTransfer && onModelFiles([...event.dataTransfer.files])) return; // an .onnx/.keras file
      const file = firstImageFile(event.dataTransfer && event.dataTransfer.files);
      if (file) upload(file, file.name, { ownPicture: true });
      else showError('Drop an image file (PNG, JPEG, GIF, WebP, BMP, TIFF).');
    }),
  );
  bag.add(
    listen(document, 'paste', (event) => {
      const target = event.target;
      if (target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName))) return;
      const file = firstImageFile(event.clipboardData && event.clipboardData.items);
      if (!file) return;
      event.preventDefault();
      upload(file, file.name || 'pasted.png', { ownPicture: true });
    }),
  );
  // A link can name an image this server does not have (another server, or a restart with a new
  // store): show the server's reason instead of broken pictures. <img> does not expose the error
  // body, so ask once more with fetch to get it.
  const onMissing = async (event) => {
    const src = event.target.getAttribute('src');
    if (!src) return;
    pair.hidden = true;
    try {
      await api.request(src);
      showError('The image could not be displayed.');
    } catch (err) {
      if (event.target.getAttribute('src') === src) showError(err.message);
    }
  };
  bag.add(listen(original, 'error', onMissing));
  bag.add(listen(modelInput, 'error', onMissing));

  /** Show the current image and what `model` makes of it (nothing when imageId is null). */
  function render({ imageId, model, weights }) {
    pair.hidden = !imageId;
    if (!imageId) {
      original.removeAttribute('src');
      modelInput.removeAttribute('src');
      shown = { imageId: null, src: null };
      return;
    }
    const src = api.urls.modelInput(model.id, imageId, weights);
    if (shown.imageId !== imageId) {
      showError('');
      original.src = api.urls.image(imageId);
    }
    if (shown.src !== src) modelInput.src = src;
    shown = { imageId, src };
    const { channels, height, width } = model.input;
    caption.textContent = `What the model sees: ${width}×${height}${channels === 1 ? ' grey' : ' RGB'}`;
  }

  /** Whether `imageId` is a colour picture the user uploaded themselves (file, drop, paste): a photo. */
  const isPhoto = (imageId) => photos.has(imageId);

  return { upload, render, showError, isPhoto, dispose: bag.run };
}
