// Filters of the open layer, beside its feature maps: the kernels as a picture (colour images for an
// RGB first layer, diverging per-input slices otherwise, a page at a time for big layers), the kernel
// of the selected channel outlined, a histogram of the weights, and a trained/untrained toggle.

import { el, listen, disposer, isAbort } from '../dom.js';
import { filterUrls } from './layer-data.js';
import { createLegend } from './legend.js';
import { drawHistogram } from './weight-histogram.js';
import { kernelPageStart } from './channel-math.js';
import { formatInt } from '../common/format.js';

const PER_PAGE = 32; // kernels per axis on one picture: large enough to see each 3×3 slice

/** Whether the model has trained weights the server can load (so a comparison makes sense). */
export function hasTrainedWeights(model) {
  return ['bundled', 'cached'].includes(model.weights.state);
}

/**
 * @param {HTMLElement} parent
 * @param {{onVariant: (w: string) => void, onInPage: (start: number) => void}} opts
 */
export function createFiltersPanel(parent, { onVariant, onInPage }) {
  const toggle = el('div', { className: 'segmented filters-toggle', attrs: { role: 'radiogroup', 'aria-label': 'Filter weights' } }, [
    el('button', { type: 'button', text: 'Trained', dataset: { variant: 'trained' }, attrs: { role: 'radio' } }),
    el('button', { type: 'button', text: 'Untrained', dataset: { variant: 'untrained' }, attrs: { role: 'radio' } }),
  ]);
  const heading = el('h3', { className: 'filters-title', text: 'Filters' });
  const picture = el('img', { className: 'filters-picture pixelated', alt: '' });
  const outline = el('span', { className: 'kernel-outline', attrs: { 'aria-hidden': 'true' } });
  const frame = el('div', { className: 'filters-frame' }, [picture, outline]);
  const info = el('p', { className: 'hint filters-info' });
  const pager = el('div', { className: 'filters-pager' });
  const legendHost = el('div');
  const legend = createLegend(legendHost, { label: 'Weight' });
  const histHost = el('div', { className: 'histogram-host' });
  const histInfo = el('p', { className: 'hint' });
  const body = el('div', { className: 'filters-body' }, [frame, pager, info, legendHost]);
  const root = el('section', { className: 'filters-panel', attrs: { 'aria-label': 'Learned filters' } }, [
    el('div', { className: 'filters-head' }, [heading, toggle]),
    body,
    el('h4', { className: 'histogram-title', text: 'Weight histogram' }),
    histHost,
    histInfo,
  ]);
  parent.append(root);
  const bag = disposer();
  let abort = null;
  let lastKey = null;

  bag.add(
    listen(toggle, 'click', (event) => {
      const button = event.target.closest('button[data-variant]');
      if (button && !button.disabled) onVariant(button.dataset.variant);
    }),
  );
  bag.add(
    listen(pager, 'click', (event) => {
      const button = event.target.closest('button[data-in-start]');
      if (button) onInPage(Number(button.dataset.inStart));
    }),
  );

  function placeOutline(meta, channel) {
    const i = channel - meta.out.start;
    if (channel === null || i < 0 || i >= meta.out.count) {
      outline.hidden = true;
      return;
    }
    const { height: kh, width: kw } = meta.kernel;
    const gap = meta.gap;
    const [row, col, w, h] =
      meta.mode === 'rgb'
        ? [Math.floor(i / meta.grid.columns), i % meta.grid.columns, kw, kh]
        : [i, 0, meta.image.width, kh];
    const x = meta.mode === 'rgb' ? col * (kw + gap) : 0;
    const y = row * (kh + gap);
    outline.hidden = false;
    outline.style.left = `${(x / meta.image.width) * 100}%`;
    outline.style.top = `${(y / meta.image.height) * 100}%`;
    outline.style.width = `${(w / meta.image.width) * 100}%`;
    outline.style.height = `${(h / meta.image.height) * 100}%`;
  }

  function renderPager(meta) {
    pager.replaceChildren();
    if (meta.mode !== 'slices' || meta.in.total <= meta.in.count) return;
    const prev = meta.in.start - PER_PAGE;
    const next = meta.in.start + PER_PAGE;
    pager.append(
      el('button', { type: 'button', className: 'button button-small', text: '◀', disabled: prev < 0, title: 'Previous input channels', dataset: { inStart: String(Math.max(0, prev)) } }),
      el('span', { className: 'pager-text', text: `input channels ${meta.in.start}–${meta.in.start + meta.in.count - 1} of ${meta.in.total}` }),
      el('button', { type: 'button', className: 'button button-small', text: '▶', disabled: next >= meta.in.total, title: 'Next input channels', dataset: { inStart: String(next) } }),
    );
  }

  /**
   * Show the filters of `layer` (an architecture row) for weights `variant`; `channel` is outlined.
   */
  async function show({ api, model, layer, variant, channel, inStart }) {
    const trainedAvailable = hasTrainedWeights(model);
    for (const button of toggle.querySelectorAll('button')) {
      button.setAttribute('aria-checked', String(button.dataset.variant === variant));
      button.disabled = button.dataset.variant === 'trained' && !trainedAvailable;
    }
    toggle.title = trainedAvailable ? '' : 'No trained weights are on this server for this model';
    heading.textContent = `Filters · ${variant}`;
    root.dataset.variant = variant;
    const isConv = layer.kind === 'conv' && layer.type === 'Conv2d';
    body.hidden = !isConv;
    const urls = filterUrls(api, model.id, layer.name, variant);
    const rgb = isConv && layer.in_channels / layer.groups === 3;
    let page = null;
    if (rgb) page = { out_start: kernelPageStart(channel ?? 0, 256) };
    else if (isConv) {
      const inPerGroup = layer.in_channels / layer.groups;
      const inStartPage = Math.min(inStart || 0, Math.max(0, inPerGroup - 1));
      page = {
        out_start: kernelPageStart(channel ?? 0, PER_PAGE),
        out_count: Math.min(PER_PAGE, layer.out_channels - kernelPageStart(channel ?? 0, PER_PAGE)),
        in_start: kernelPageStart(inStartPage, PER_PAGE),
        in_count: Math.min(PER_PAGE, inPerGroup - kernelPageStart(inStartPage, PER_PAGE)),
      };
    }
    const key = `${model.id}|${layer.name}|${variant}|${JSON.stringify(page)}`;
    if (key === lastKey) {
      if (root.meta) placeOutline(root.meta, channel);
      return;
    }
    lastKey = key;
    if (abort) abort.abort();
    abort = new AbortController();
    const { signal } = abort;
    root.classList.add('is-loading');
    try {
      if (isConv) {
        const meta = await api.getJson(urls.json(page), { signal });
        root.meta = meta;
        picture.src = urls.png(page);
        picture.alt = `Kernels of ${layer.name} (${variant})`;
        frame.dataset.mode = meta.mode;
        frame.style.setProperty('--aspect', `${meta.image.width} / ${meta.image.height}`);
        placeOutline(meta, channel);
        renderPager(meta);
        if (meta.mode === 'rgb') {
          info.textContent = `${meta.out.count} kernels, ${meta.kernel.height}×${meta.kernel.width}×3, each shown as a colour image scaled to its own range.`;
          legendHost.hidden = true;
        } else {
          info.textContent = `Rows: output channels ${meta.out.start}–${meta.out.start + meta.out.count - 1} of ${meta.out.total}; columns: input channels. Each ${meta.kernel.height}×${meta.kernel.width} slice on one scale for the layer.`;
          legendHost.hidden = false;
          legend.show({ stops: meta.stops, low: meta.range[0], high: meta.range[1] });
        }
      }
      const hasWeights = layer.params > 0 && ['conv', 'linear', 'norm'].includes(layer.kind);
      if (hasWeights) {
        const hist = await api.getJson(urls.histogram(), { signal });
        drawHistogram(histHost, hist);
        histInfo.textContent = `${formatInt(hist.count)} weights · mean ${hist.mean.toExponential(2)} · std ${hist.std.toExponential(2)}`;
      } else {
        histHost.replaceChildren(el('p', { className: 'placeholder', text: `${layer.type} has no learned weights.` }));
        histInfo.textContent = '';
      }
    } catch (err) {
      if (isAbort(err)) return;
      lastKey = null;
      histHost.replaceChildren(el('p', { className: 'error-text', text: `Filters could not be loaded: ${err.message}` }));
    } finally {
      if (!signal.aborted) root.classList.remove('is-loading');
    }
  }

  return {
    show,
    root,
    dispose() {
      if (abort) abort.abort();
      bag.run();
    },
  };
}
