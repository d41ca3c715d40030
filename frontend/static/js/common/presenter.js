// Presenter controls in the top bar: projector mode (P), the inputs sidebar shown or hidden (S) and full
// screen (F). Projector mode hides the sidebar and the model line and enlarges type, so the view fills a
// 1280×720 (or 1024×640) projector. Both modes live in the URL (present=1, inputs=hidden) so a link
// opens the way the teacher left it.

import { el, listen, disposer } from '../dom.js';

/** The classes the page carries for the URL's state (kept in one place so tests and CSS agree). */
export function presenterClasses(query) {
  return { 'is-projector': query.present === '1', 'is-sidebar-hidden': query.inputs === 'hidden' || query.present === '1' };
}

/**
 * @param {HTMLElement} host  where the buttons go (in the top bar)
 * @param {object} state      the URL state (js/state.js)
 */
export function createPresenter(host, state) {
  const bag = disposer();
  const projector = el('button', { type: 'button', id: 'projector-toggle', className: 'button button-small presenter-button',
    text: 'Projector', title: 'Projector mode: large type, no sidebar (P)', attrs: { 'aria-pressed': 'false', 'aria-keyshortcuts': 'P' } });
  const sidebar = el('button', { type: 'button', id: 'sidebar-toggle', className: 'button button-small presenter-button',
    text: 'Hide inputs', title: 'Show or hide the image inputs on the left (S)', attrs: { 'aria-pressed': 'false', 'aria-keyshortcuts': 'S', 'aria-controls': 'sidebar' } });
  const full = el('button', { type: 'button', id: 'fullscreen-toggle', className: 'button button-small presenter-button',
    text: 'Full screen', title: 'Full screen (F); Esc leaves it', attrs: { 'aria-pressed': 'false', 'aria-keyshortcuts': 'F' } });
  if (!document.fullscreenEnabled) full.hidden = true;
  host.append(sidebar, projector, full);

  const toggleProjector = () => state.set({ present: state.get('present') === '1' ? null : '1' }, { replace: true });
  const toggleSidebar = () => {
    if (state.get('present') === '1') {
      state.set({ present: null, inputs: null }, { replace: true }); // leaving projector mode brings the inputs back
      return;
    }
    state.set({ inputs: state.get('inputs') === 'hidden' ? null : 'hidden' }, { replace: true });
  };
  const toggleFull = () => {
    if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
    else document.documentElement.requestFullscreen().catch(() => {});
  };
  bag.add(listen(projector, 'click', toggleProjector));
  bag.add(listen(sidebar, 'click', toggleSidebar));
  bag.add(listen(full, 'click', toggleFull));
  bag.add(listen(document, 'fullscreenchange', () => {
    full.setAttribute('aria-pressed', String(Boolean(document.fullscreenElement)));
    full.textContent = document.fullscreenElement ? 'Exit full screen' : 'Full screen';
    window.dispatchEvent(new Event('convscope:layout'));
  }));
  bag.add(listen(window, 'keydown', (event) => {
    if (event.defaultPrevented || event.altKey || event.ctrlKey || event.metaKey) return;
    const target = event.target;
    const tag = (target && target.tagName) || '';
    if (['INPUT', 'SELECT', 'TEXTAREA'].includes(tag) || (target && target.isContentEditable)) return;
    const key = event.key.toLowerCase();
    if (key === 'p') toggleProjector();
    else if (key === 's') toggleSidebar();
    else if (key === 'f' && document.fullscreenEnabled) toggleFull();
    else return;
    event.preventDefault();
  }));

  /** Reflect the URL's state on the page (call on every render). */
  function render(query) {
    const classes = presenterClasses(query);
    let changed = false;
    for (const [name, on] of Object.entries(classes)) {
      if (document.documentElement.classList.contains(name) !== on) changed = true;
      document.documentElement.classList.toggle(name, on);
    }
    projector.setAttribute('aria-pressed', String(classes['is-projector']));
    projector.textContent = classes['is-projector'] ? 'Leave projector' : 'Projector';
    sidebar.setAttribute('aria-pressed', String(classes['is-sidebar-hidden']));
    sidebar.textContent = classes['is-sidebar-hidden'] ? 'Show inputs' : 'Hide inputs';
    if (changed) window.dispatchEvent(new Event('convscope:layout'));
  }

  return { render, dispose: () => bag.run() };
}
