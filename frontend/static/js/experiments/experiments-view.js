// The Experiments view: "what if" on the current image. Four experiments, one at a time (URL key `xp`):
// switch channels off (ablation), cover part of the image (occlusion probe), fool it (adversarial), and
// compare two networks. Every setting is a URL key, so a link (and a classroom) reproduces the view.

import { el } from '../dom.js';
import { ensureStylesheet } from '../common/stylesheet.js';
import { createExplainPanel } from '../common/explanation-panel.js';

const STYLESHEET = '/static/js/experiments/experiments.css';
export const EXPERIMENTS = [
  { id: 'ablation', title: 'Switch channels off', load: () => import('./ablation-panel.js') },
  { id: 'probe', title: 'Cover the image', load: () => import('./probe-panel.js') },
  { id: 'adversarial', title: 'Fool it', load: () => import('./adversarial-panel.js') },
  { id: 'compare', title: 'Compare two networks', load: () => import('./compare-panel.js') },
];

let view = null;

export function mount(container, ctx) {
  ensureStylesheet(STYLESHEET);
  const tabs = el('div', { className: 'xp-tabs', attrs: { role: 'tablist', 'aria-label': 'Experiment' } });
  const body = el('div', { className: 'xp-body' });
  const explain = createExplainPanel('experiments', []);
  container.append(el('section', { className: 'card xp-card' }, [tabs, body]), explain.element);
  view = { ctx, tabs, body, explain, current: null, panel: null, loading: 0 };
  for (const xp of EXPERIMENTS) {
    tabs.append(el('button', {
      type: 'button', className: 'xp-tab', text: xp.title, dataset: { xp: xp.id },
      attrs: { role: 'tab' }, onclick: () => view.ctx.state.set({ xp: xp.id }),
    }));
  }
  update(ctx);
}

export function update(ctx) {
  if (!view) return;
  view.ctx = ctx;
  const id = EXPERIMENTS.some((x) => x.id === ctx.state.get('xp')) ? ctx.state.get('xp') : 'ablation';
  for (const tab of view.tabs.children) tab.setAttribute('aria-selected', String(tab.dataset.xp === id));
  if (id === view.current) {
    if (view.panel) view.panel.update(ctx);
    return;
  }
  view.current = id;
  if (view.panel) view.panel.unmount();
  view.panel = null;
  view.body.replaceChildren(el('p', { className: 'placeholder', text: 'Loading…' }));
  // the previous experiment's markers go with it (a page waiting for the new one's answer must not see them)
  for (const key of ['xp', 'state', 'for']) delete view.body.dataset[key];
  const ticket = ++view.loading;
  EXPERIMENTS.find((x) => x.id === id).load().then((module) => {
    if (!view || ticket !== view.loading) return;
    view.body.replaceChildren();
    view.panel = module.create(view.body, (facts) => view.explain.update({}, facts));
    view.body.dataset.xp = id;
    view.panel.update(view.ctx);
  });
}

export function unmount() {
  if (!view) return;
  if (view.panel) view.panel.unmount();
  view = null;
}
