// "Switch channels off" inside a view (Layers, Network, Step-through): a card whose button turns channel
// selection on (URL key ablate=1). While it is on, clicks on the view's channels pick channels of their
// layer (shift-click adds or removes one) and the card shows the experiment for the view's layer: the
// ablation editor of the Experiments view, on the same URL keys, so a classroom follows it.

import { el } from '../dom.js';
import { ensureStylesheet } from '../common/stylesheet.js';
import { createExplainPanel } from '../common/explanation-panel.js';
import { channelLayers, createAblationEditor } from './ablation-editor.js';

const STYLESHEET = '/static/js/experiments/experiments.css';

/**
 * @param {HTMLElement} parent  where the card goes
 * @param {{layerOf: (ctx) => string, where: string}} opts  the view's open layer; where its channels are
 *   clicked ("in the feature maps above or in the list below", …), for the card's hint
 */
export function createAblationCard(parent, { layerOf, where }) {
  ensureStylesheet(STYLESHEET);
  const toggle = el('button', { type: 'button', className: 'xp-ablate-toggle', attrs: { 'aria-pressed': 'false' } });
  const hint = el('p', { className: 'card-note xp-ablate-hint' });
  const body = el('div', { className: 'xp-ablate-body xp-body' });
  const explain = createExplainPanel('experiments', []);
  const card = el('section', { className: 'card xp-card xp-ablate-card', attrs: { 'aria-label': 'Switch channels off' } }, [
    el('div', { className: 'card-head' }, [el('h2', { text: 'Switch channels off' }), toggle]), hint, body, explain.element,
  ]);
  parent.append(card);
  const s = { ctx: null, editor: null };
  toggle.onclick = () => s.ctx.state.set({ ablate: active() ? null : '1' });
  const active = () => Boolean(s.ctx) && s.ctx.state.get('ablate') === '1';

  function update(ctx) {
    s.ctx = ctx;
    const on = active();
    toggle.setAttribute('aria-pressed', String(on));
    toggle.textContent = on ? 'Done' : 'Pick channels to switch off';
    card.classList.toggle('is-active', on);
    body.hidden = !on;
    explain.element.hidden = !on;
    const layer = layerOf(ctx);
    const fits = channelLayers(ctx.model).some((l) => l.name === layer);
    hint.textContent = !on ? 'What if some channels of this layer were switched off? Turn it on, then click channels.'
      : fits ? `Click a channel ${where} to switch it off; shift-click adds or removes one.`
        : `${layer || 'This layer'} has no channel maps: the experiment uses ${ctx.model.default_layer}. Open a layer with channels to pick its own.`;
    if (!on) {
      if (s.editor) { s.editor.unmount(); s.editor = null; body.replaceChildren(); }
      return;
    }
    if (!s.editor) s.editor = createAblationEditor(body, { explain: (facts) => explain.update({}, facts), layerOf });
    s.editor.update(ctx);
  }

  return {
    element: card,
    update,
    active,
    /** A click on channel `c` of `layer` in the view (true when the card took it). */
    pick(layer, c, additive) {
      if (!active() || !s.editor) return false;
      s.editor.pick(layer, c, additive);
      return true;
    },
    /** {layer, channels: Set} the experiment edits, or null when selection is off. */
    edited: () => (active() && s.editor ? s.editor.edited() : null),
    unmount() {
      if (s.editor) s.editor.unmount();
      s.editor = null;
    },
  };
}
