// The selected channel at full resolution, laid over the picture the model sees, with an opacity
// slider; reports the cell under the pointer so the view can show its value.

import { el, listen, disposer } from '../dom.js';
import { cellAt } from './channel-math.js';
import { mapPlacement, placementNote } from '../common/rf-placement.js';

/**
 * @param {HTMLElement} parent
 * @param {{onHover: (hit: {channel:number,y:number,x:number}|null) => void, onOpacity: (v:number) => void}} opts
 */
export function createChannelDetail(parent, { onHover, onOpacity }) {
  const base = el('img', { className: 'detail-input pixelated', alt: 'The image as the model sees it' });
  const overlay = el('img', { className: 'detail-map pixelated', alt: '' });
  const stage = el('div', { className: 'detail-stage' }, [base, overlay]);
  const title = el('h3', { className: 'detail-title', text: 'Channel' });
  const slider = el('input', {
    type: 'range',
    min: '0',
    max: '100',
    step: '5',
    value: '70',
    id: 'overlay-opacity',
    className: 'detail-opacity',
  });
  const sliderLabel = el('label', { className: 'detail-opacity-label', attrs: { for: 'overlay-opacity' } }, [
    'Map over image',
  ]);
  const note = el('p', { className: 'hint detail-note' });
  const controls = el('div', { className: 'detail-controls' }, [sliderLabel, slider]);
  const root = el('div', { className: 'channel-detail' }, [
    title,
    stage,
    controls,
    note,
  ]);
  parent.append(root);
  const bag = disposer();
  let shape = null; // [H, W] of the shown channel
  let channel = null;

  bag.add(
    listen(slider, 'input', () => {
      overlay.style.opacity = String(Number(slider.value) / 100);
      onOpacity(Number(slider.value));
    }),
  );
  bag.add(
    listen(stage, 'pointermove', (event) => {
      if (!shape || channel === null) return;
      const rect = overlay.getBoundingClientRect();
      const cell = cellAt(event.clientX - rect.left, event.clientY - rect.top, rect.width, rect.height, shape[0], shape[1]);
      onHover(cell ? { channel, ...cell } : null);
    }),
  );
  bag.add(listen(stage, 'pointerleave', () => onHover(null)));

  /** Show channel `c` of a layer whose maps are `H`×`W`. */
  function show({ c, layerName, mapUrl, inputUrl, H, W, inputSize, opacity, field = null, vector = false, label = null }) {
    channel = c;
    shape = [H, W];
    stage.hidden = vector;
    controls.hidden = vector;
    if (vector && label !== null) {
      title.textContent = `${layerName} · class ${c} “${label}”`;
      note.textContent = 'This layer gives one score (logit) per class, listed on the left; the softmax turns them into the probabilities. Point at a row to read its value.';
      return;
    }
    if (vector) {
      title.textContent = `${layerName} · feature ${c}`;
      note.textContent = 'This layer outputs a vector: one number per feature, no map to lay over the image. Point at the mosaic to read each value.';
      return;
    }
    title.textContent = `${layerName} · channel ${c}`;
    if (base.getAttribute('src') !== inputUrl) base.src = inputUrl;
    overlay.src = mapUrl;
    overlay.alt = `Channel ${c} of ${layerName}, ${H}×${W}`;
    slider.value = String(opacity);
    overlay.style.opacity = String(opacity / 100);
    stage.dataset.channel = String(c);
    // each value on its receptive field's centre (the geometry the saliency maps use), not stretched
    const box = mapPlacement(field, [H, W], inputSize);
    const pct = (v) => `${(v * 100).toFixed(4)}%`;
    Object.assign(overlay.style, { top: pct(box.fraction.top), left: pct(box.fraction.left), height: pct(box.fraction.height), width: pct(box.fraction.width) });
    overlay.dataset.placement = JSON.stringify({ top: box.top, left: box.left, height: box.height, width: box.width });
    note.textContent = placementNote(box, [H, W], inputSize);
  }

  return { show, root, dispose: () => bag.run() };
}
