// The keyboard shortcuts, listed in a dialog that "?" opens (the key, or the "?" button in the top bar).
// The list is the one place that names them; the handlers live with their controls (common/presenter.js,
// common/player.js, shell/view-host.js).

import { el, listen, disposer } from '../dom.js';

export const SHORTCUTS = [
  ['P', 'Projector mode on or off: large type, no sidebar'],
  ['S', 'Show or hide the image inputs'],
  ['F', 'Full screen (Esc leaves it)'],
  ['?', 'This list of shortcuts'],
  ['Space', 'Step-through and Sandbox: play or pause'],
  ['← / →', 'Step-through and Sandbox: one step back or forward'],
  ['Shift + ← / →', 'Step-through: a whole cell (every step of it) back or forward'],
  ['← / → on the tabs', 'The previous or next view'],
  ['Ctrl + V', 'Paste an image from the clipboard'],
];

const typing = (target) => target && (['INPUT', 'SELECT', 'TEXTAREA'].includes(target.tagName) || target.isContentEditable);

/**
 * @param {HTMLElement} buttonHost  where the "?" button goes (the top bar's presenter controls)
 */
export function createShortcuts(buttonHost) {
  const bag = disposer();
  const close = el('button', { type: 'button', className: 'button button-small', text: 'Close' });
  const dialog = el('dialog', { className: 'shortcuts-dialog', attrs: { 'aria-labelledby': 'shortcuts-title' } }, [
    el('h2', { id: 'shortcuts-title', text: 'Keyboard shortcuts' }),
    el('dl', { className: 'shortcuts-list' }, SHORTCUTS.flatMap(([keys, what]) => [
      el('dt', {}, [el('kbd', { text: keys })]), el('dd', { text: what }),
    ])),
    close,
  ]);
  document.body.append(dialog);
  const button = el('button', { type: 'button', id: 'shortcuts-button', className: 'button button-small presenter-button',
    text: '?', title: 'Keyboard shortcuts (?)', attrs: { 'aria-label': 'Keyboard shortcuts', 'aria-keyshortcuts': '?' } });
  buttonHost.append(button);
  const open = () => { if (!dialog.open) dialog.showModal(); };
  bag.add(listen(button, 'click', open));
  bag.add(listen(close, 'click', () => dialog.close()));
  bag.add(listen(window, 'keydown', (event) => {
    if (event.key !== '?' || event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    event.preventDefault();
    open();
  }));
  return { open, dispose: () => { bag.run(); dialog.remove(); button.remove(); } };
}
