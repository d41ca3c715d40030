// A unit's detail, opened in place from the network overview: the step-through (conv / pool / activation
// leaves, and the softmax at the output — the Step-through view's own module, mounted here), the dense
// view for linear units, or the channel's map for norms and whole blocks; under it what the channel looks
// for (dataset examples and feature visualisation) and the layer's top channels, each a link.

import { el, listen, disposer } from '../dom.js';
import { createDenseView } from './dense-detail.js';
import { createChannelPanel } from '../channel/channel-panel.js';
import { createTopChannels } from '../channel/top-channels.js';
import { isTraceable } from '../common/traceable.js';

export function createUnitDetail(host, { onBack }) {
  const bag = disposer();
  const back = el('button', { type: 'button', className: 'button net-back', text: '← Back to the network' });
  const title = el('h2', { className: 'net-detail-title' });
  const body = el('div', { className: 'net-detail-body' });
  const extras = el('div', { className: 'net-detail-extras' });
  const toLayers = el('button', { type: 'button', className: 'button button-small net-to-layers', text: 'Open in the Layers view',
    title: 'The same layer and channel in the Layers view: every channel, values under the pointer, the filters' });
  host.append(el('div', { className: 'net-detail-head' }, [back, title, toLayers]), body, extras);
  bag.add(listen(back, 'click', () => onBack()));
  let lastCtx = null;
  // the Layers view reads the same layer / channel keys; the detail's own keys are dropped
  bag.add(listen(toLayers, 'click', () => lastCtx && lastCtx.state.set({ view: 'layers', open: null, pos: null })));
  let mode = null; // {kind: 'step-through'|'dense'|'map', module?, view?}
  let modeKey = null;
  let loadSeq = 0;
  const channelPanel = createChannelPanel(extras);
  const topChannels = createTopChannels(extras);

  function clearMode() {
    if (mode && mode.module) mode.module.unmount();
    if (mode && mode.view) mode.view.dispose();
    mode = null;
    modeKey = null;
    body.replaceChildren();
  }

  function modeFor(ctx, layerName) {
    if (layerName === '@softmax') return 'step-through';
    const layer = ctx.model.layers.find((l) => l.name === layerName);
    if (!layer) return null;
    if (isTraceable(layer)) return 'step-through';
    if (layer.kind === 'linear') return 'dense';
    return 'map';
  }

  async function show(ctx, cols) {
    lastCtx = ctx;
    const layerName = ctx.state.get('layer');
    toLayers.hidden = layerName === '@softmax';
    const kind = modeFor(ctx, layerName);
    const column = cols.find((c) => c.name === layerName);
    const layer = ctx.model.layers.find((l) => l.name === layerName);
    const channel = Math.max(0, Number(ctx.state.get('channel')) || 0);
    title.textContent = layerName === '@softmax' ? 'Softmax: logits → probabilities'
      : layer ? `${layerName} · ${layer.type} · ${layer.output_shape.length === 1 ? 'unit' : 'channel'} ${channel}` : layerName;
    if (!kind) {
      clearMode();
      body.append(el('p', { className: 'error-text', text: `${ctx.model.id} has no layer ${layerName}.` }));
      return;
    }
    const key = `${kind}|${ctx.model.id}|${ctx.weights}|${ctx.imageId}`;
    if (key !== modeKey) {
      clearMode();
      modeKey = key;
      const mine = ++loadSeq;
      if (kind === 'step-through') {
        const module = await import('../step-through/step-through-view.js');
        if (mine !== loadSeq) return;
        mode = { kind, module };
        module.mount(body, ctx);
      } else if (kind === 'dense') {
        mode = { kind, view: createDenseView(body) };
      } else {
        mode = { kind, view: createMapView(body) };
      }
    }
    if (!mode) return;
    if (mode.module) mode.module.update(ctx);
    else mode.view.show(ctx, { layer, channel, column, cols });
    const unitLayer = layerName === '@softmax' ? null : layer;
    channelPanel.show(ctx, unitLayer, channel);
    topChannels.show(ctx, unitLayer, column, channel);
  }

  function hide() {
    loadSeq += 1;
    clearMode();
    channelPanel.hide();
    topChannels.hide();
  }

  return {
    show,
    hide,
    dispose() {
      hide();
      channelPanel.dispose();
      topChannels.dispose();
      bag.run();
    },
  };
}

/** Norms and whole blocks have no step-through: show the channel's map at full size, with its range. */
function createMapView(host) {
  const img = el('img', { className: 'net-map pixelated', alt: '' });
  const caption = el('p', { className: 'hint' });
  host.append(el('figure', { className: 'net-map-figure' }, [img, caption]));
  return {
    show(ctx, { layer, channel }) {
      const url = ctx.api.urls.modelPath(ctx.model.id,
        `/images/${encodeURIComponent(ctx.imageId)}/layers/${encodeURIComponent(layer.name)}/channels/${channel}.png`, { weights: ctx.weights, scale: 'layer' });
      if (img.getAttribute('src') !== url) img.src = url;
      img.alt = `${layer.name} channel ${channel}`;
      caption.textContent = layer.leaf
        ? `${layer.type} acts on each value separately; its map is shown on the layer's colour scale. The Layers view has its legend and values.`
        : `${layer.name} is a whole ${layer.type} block (several layers and, for residual blocks, a skip connection): this is its output channel ${channel}. Open the Layers or Step-through view for the layers inside.`;
    },
    dispose() {
      img.removeAttribute('src');
    },
  };
}
