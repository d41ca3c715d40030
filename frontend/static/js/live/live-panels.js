// What the Live view draws for each answer: the predictions, the layer's feature maps (the atlas the
// server sent, with its legend) and the saliency overlay. Swapping pictures never blanks them: the
// previous frame's stays until the next has decoded, so nothing flickers at 20 frames/s.

import { el } from '../dom.js';
import { createPredictionsChart } from '../common/predictions-chart.js';
import { createLegend } from '../feature-maps/legend.js';
import { formatPercent } from '../common/format.js';

/** Set `img`'s source once the new picture has decoded (data: URLs decode fast, but not instantly). */
function swapPicture(img, url) {
  if (!url || img.dataset.url === url) return;
  const next = new Image();
  next.src = url;
  next
    .decode()
    .catch(() => {})
    .then(() => {
      img.src = url;
      img.dataset.url = url;
    });
}

export function createPredictionsPanel(parent) {
  const chart = createPredictionsChart(parent);
  chart.empty('Waiting for the first frame…');
  return {
    show(answer, key) {
      chart.show(answer.predictions, key);
    },
    empty: (text) => chart.empty(text),
  };
}

/** The chosen layer's channels as one grid picture, with the colour legend of its values. */
export function createAtlasPanel(parent) {
  const img = el('img', { className: 'live-atlas pixelated', alt: 'Feature maps of the layer' });
  const caption = el('p', { className: 'hint live-atlas-caption' });
  const frame = el('div', { className: 'live-atlas-frame' }, [img]);
  parent.append(frame);
  const legend = createLegend(parent, { label: 'Activation' });
  parent.append(caption);
  let legendKey = '';
  return {
    show(layer) {
      if (!layer || !layer.atlas) {
        caption.textContent = (layer && layer.note) || 'This layer has no output for this frame.';
        return;
      }
      swapPicture(img, layer.atlas);
      img.dataset.grid = `${layer.grid.columns}x${layer.grid.rows}`;
      const [low, high] = [layer.tiles.low[0], layer.tiles.high[0]];
      const key = `${layer.colormap}|${low}|${high}`;
      if (key !== legendKey) {
        legendKey = key;
        legend.show({ stops: layer.stops, low, high, note: layer.diverging ? 'white = 0' : '' });
      }
      const shape = layer.shape.join(' × ');
      const averaged = layer.downsampled > 1 ? ` · each tile averaged ${layer.downsampled}×${layer.downsampled} to fit` : '';
      caption.textContent = `${layer.channels} channels of ${layer.name} (output ${shape}), one tile each, ` +
        `left to right, top to bottom; one colour scale for the layer${averaged}.`;
      caption.title = caption.textContent;
    },
    clear() {
      img.removeAttribute('src');
      delete img.dataset.url;
      caption.textContent = '';
    },
  };
}

/** The top-1 class's saliency map over what the model sees. */
export function createSaliencyPanel(parent) {
  const img = el('img', { className: 'live-saliency pixelated', alt: 'Saliency of the top class' });
  const caption = el('p', { className: 'hint live-saliency-caption' });
  const side = el('div', { className: 'live-saliency-side' });
  parent.append(el('div', { className: 'live-saliency-row' }, [el('div', { className: 'live-saliency-frame' }, [img]), side]));
  const legend = createLegend(side, { label: 'Saliency' });
  side.append(caption);
  let legendKey = '';
  return {
    show(saliency) {
      swapPicture(img, saliency.overlay);
      if (saliency.colormap !== legendKey) {
        legendKey = saliency.colormap;
        legend.show({ stops: saliency.stops, low: 0, high: 1, note: 'scaled per frame' });
      }
      caption.textContent = `${saliency.method} at ${saliency.layer} for “${saliency.label}” ` +
        `(${formatPercent(saliency.probability)}), over what the model sees.`;
    },
    clear() {
      img.removeAttribute('src');
      delete img.dataset.url;
      caption.textContent = '';
    },
  };
}

/** What the model sees (sent for small inputs only: 28×28, 64×64). */
export function createInputPicture(parent) {
  const img = el('img', { className: 'live-model-input pixelated', alt: 'The frame as the model sees it' });
  const figure = el('figure', { className: 'live-model-figure', hidden: true }, [
    img,
    el('figcaption', { text: 'What the model sees' }),
  ]);
  parent.append(figure);
  return {
    img,
    show(url) {
      figure.hidden = !url;
      if (url) swapPicture(img, url);
    },
  };
}
