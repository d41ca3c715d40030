// Page-level messages (a model that could not be loaded, a link to an unknown model…), each with a
// key so a newer message of the same kind replaces the older one, and a dismiss button.

import { el, listen } from '../dom.js';

export function createNotices() {
  const root = document.getElementById('notices');
  const byKey = new Map();

  listen(root, 'click', (event) => {
    const button = event.target.closest('button[data-dismiss]');
    if (button) clear(button.dataset.dismiss);
  });

  /**
   * Show `message` ('error' notices are announced as alerts); `action` adds a button that runs it (and
   * dismisses the notice).
   * @param {{label: string, run: () => void}} [action]
   */
  function show(key, message, kind = 'error', action = null) {
    clear(key);
    const button = action && el('button', { type: 'button', className: 'button button-small notice-action', text: action.label });
    if (button) listen(button, 'click', () => { clear(key); action.run(); });
    const node = el('div', { className: `notice notice-${kind}`, attrs: { role: kind === 'error' ? 'alert' : 'status' }, dataset: { notice: key } }, [
      el('span', { className: 'notice-text', text: message }),
      ...(button ? [button] : []),
      el('button', { type: 'button', className: 'notice-close', text: '×', dataset: { dismiss: key }, attrs: { 'aria-label': 'Dismiss' } }),
    ]);
    byKey.set(key, node);
    root.append(node);
  }

  function clear(key) {
    const node = byKey.get(key);
    if (node) node.remove();
    byKey.delete(key);
  }

  return { show, clear };
}
