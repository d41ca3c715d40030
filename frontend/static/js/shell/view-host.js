// The tab bar and the one mounted view: loads a view module on first use, mounts it, passes every
// later ctx to update(), and unmounts it (which must stop its timers and listeners) on a switch.

import { el, listen, disposer } from '../dom.js';
import { VIEWS, DEFAULT_VIEW, findView } from '../views/registry.js';

/**
 * @param {object} opts
 * @param {(viewId: string) => void} opts.onSelect  the user clicked a tab
 */
export function createViewHost({ onSelect }) {
  const tabs = document.getElementById('view-tabs');
  const host = document.getElementById('view');
  const bag = disposer();
  let current = null; // {id, module}
  let sequence = 0; // the latest show() wins when module loads overlap

  tabs.replaceChildren(
    ...VIEWS.map((view) =>
      el('button', {
        type: 'button',
        id: `tab-${view.id}`,
        text: view.title,
        dataset: { view: view.id },
        attrs: { role: 'tab', 'aria-controls': 'view' },
      }),
    ),
  );
  bag.add(
    listen(tabs, 'click', (event) => {
      const button = event.target.closest('button[data-view]');
      if (button && !button.disabled) onSelect(button.dataset.view);
    }),
  );

  // Arrow keys move between tabs, as in any tab list.
  bag.add(
    listen(tabs, 'keydown', (event) => {
      if (event.key !== 'ArrowRight' && event.key !== 'ArrowLeft') return;
      const buttons = [...tabs.querySelectorAll('button:not(:disabled)')];
      const at = buttons.indexOf(document.activeElement);
      if (at < 0) return;
      const next = buttons[(at + (event.key === 'ArrowRight' ? 1 : -1) + buttons.length) % buttons.length];
      next.focus();
      onSelect(next.dataset.view);
      event.preventDefault();
    }),
  );

  function markTabs(activeId, model) {
    for (const button of tabs.querySelectorAll('button')) {
      const spec = findView(button.dataset.view);
      const available = !spec.available || spec.available(model);
      button.disabled = !available;
      button.title = available ? '' : spec.unavailableReason || 'Not available for this model';
      button.setAttribute('aria-selected', String(button.dataset.view === activeId));
      button.tabIndex = button.dataset.view === activeId ? 0 : -1;
    }
    host.setAttribute('aria-labelledby', `tab-${activeId}`);
  }

  function unmountCurrent() {
    if (!current) return;
    try {
      current.module.unmount();
    } finally {
      current = null;
      host.replaceChildren();
    }
  }

  function showFailure(message) {
    host.replaceChildren(el('p', { className: 'error-text', attrs: { role: 'alert' }, text: message }));
  }

  /** Show view `viewId` (unknown ids and unavailable views fall back to the default) with `ctx`. */
  async function show(viewId, ctx) {
    let spec = findView(viewId) || findView(DEFAULT_VIEW);
    if (spec.available && !spec.available(ctx.model)) spec = findView(DEFAULT_VIEW);
    markTabs(spec.id, ctx.model);
    const mine = ++sequence;
    if (current && current.id === spec.id) {
      current.module.update(ctx);
      return;
    }
    let module;
    try {
      module = await spec.load();
    } catch (err) {
      if (mine === sequence) showFailure(`The ${spec.title} view could not be loaded: ${err.message}`);
      return;
    }
    if (mine !== sequence) return;
    unmountCurrent();
    const container = el('div', { className: `view-body view-${spec.id}` });
    host.append(container);
    current = { id: spec.id, module };
    try {
      module.mount(container, ctx);
    } catch (err) {
      console.error(err);
      showFailure(`The ${spec.title} view failed: ${err.message}`);
    }
  }

  return {
    show,
    dispose() {
      unmountCurrent();
      bag.run();
    },
  };
}
