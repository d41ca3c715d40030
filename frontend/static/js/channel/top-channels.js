// The layer's strongest channels on the current image (by their largest value, from stats.json), each a
// link to that channel's own detail: its step-through, its dataset examples and its feature visualisation.

import { el, listen, disposer, isAbort } from '../dom.js';
import { formatShort } from '../common/format.js';

const SHOWN = 16;

/** Channel indices sorted by `max`, largest first (ties by index), the first `n`. */
export function strongest(max, n) {
  return max.map((v, i) => [v, i]).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, n).map(([, i]) => i);
}

export function createTopChannels(host) {
  const bag = disposer();
  const list = el('div', { className: 'top-channels-list', attrs: { role: 'list' } });
  const note = el('p', { className: 'hint' });
  const root = el('section', { className: 'card top-channels', hidden: true }, [
    el('div', { className: 'card-head' }, [el('h3', { text: 'Top channels of this layer' }), note]), list]);
  host.append(root);
  let ctx = null;
  let key = null;
  let abort = null;
  bag.add(listen(list, 'click', (event) => {
    const chip = event.target.closest('[data-channel]');
    if (chip && ctx) ctx.state.set({ channel: chip.dataset.channel, pos: null });
  }));

  async function load(layer, channel, k) {
    if (abort) abort.abort();
    abort = new AbortController();
    const url = ctx.api.urls.modelPath(ctx.model.id, `/images/${encodeURIComponent(ctx.imageId)}/layers/${encodeURIComponent(layer.name)}/stats.json`, { weights: ctx.weights });
    try {
      const stats = await ctx.api.getJson(url, { signal: abort.signal });
      if (k !== key) return;
      const top = strongest(stats.max, SHOWN);
      note.textContent = `${top.length} of ${stats.channels} by their largest value on this image · click one to open it`;
      list.replaceChildren(...top.map((c) => el('button', {
        type: 'button', className: `top-channel${c === channel ? ' is-current' : ''}`, dataset: { channel: String(c) },
        attrs: { role: 'listitem', 'aria-current': c === channel ? 'true' : 'false' },
        title: `channel ${c}: max ${stats.max[c]}, mean ${stats.mean[c]}`,
      }, [el('span', { className: 'top-channel-index', text: `${layer.output_shape.length === 1 ? 'unit' : 'ch'} ${c}` }), el('span', { className: 'top-channel-value', text: formatShort(stats.max[c]) })])));
    } catch (err) {
      if (!isAbort(err) && k === key) note.textContent = err.message;
    }
  }

  return {
    show(nextCtx, layer, _column, channel) {
      ctx = nextCtx;
      if (!layer || !ctx.imageId) { this.hide(); return; }
      root.hidden = false;
      const k = `${ctx.model.id}|${ctx.weights}|${ctx.imageId}|${layer.name}|${channel}`;
      if (k === key) return;
      key = k;
      load(layer, channel, k);
    },
    hide() {
      root.hidden = true;
      key = null;
      if (abort) abort.abort();
    },
    dispose() {
      this.hide();
      bag.run();
    },
  };
}
