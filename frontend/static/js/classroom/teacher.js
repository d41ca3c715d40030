// The teacher's side of a class session: the join panel (code, URL, QR, live follower count), the page's
// view state published to followers as it changes, and the class wall.

import { el, listen, disposer } from '../dom.js';
import { formatInt } from '../common/format.js';
import { sessionApi } from './session-api.js';
import { sharedState } from './follow-state.js';
import { createWall } from './wall.js';

const PUBLISH_DELAY_MS = 120; // strokes of a drawing come fast: send the latest, a little later
const POLL_MS = 2500;

/**
 * @param {object} opts
 * @param {HTMLElement} opts.body      the class card's body
 * @param {HTMLElement} opts.wallRoot  the wall's section in the main area
 * @param {{code: string, token: string, joinUrl: string, warning?: string}} opts.session
 * @param {object} opts.state  js/state.js store
 * @param {(message: string|null) => void} opts.onProblem  show / clear a page notice
 * @param {() => void} opts.onEnd  the session is over (closed here, or gone on the server)
 */
export function createTeacherPanel({ body, wallRoot, session, state, onProblem, onEnd }) {
  const bag = disposer();
  const { code, token } = session;
  let publishTimer = null;
  let pollTimer = null;
  let published = null; // JSON of the last state the server accepted
  let counts = { followers: 0, submissions: 0 };

  const followers = el('strong', { className: 'class-followers', text: '0' });
  const wallButton = el('button', { type: 'button', className: 'button button-small', text: 'Show wall (0)' });
  const projectButton = el('button', { type: 'button', className: 'button button-small', text: 'Enlarge' });
  const endButton = el('button', { type: 'button', className: 'button button-small button-danger', text: 'End session' });
  const qr = el('img', { className: 'class-qr pixelated', src: sessionApi.qrUrl(code), alt: `QR code of ${session.joinUrl}` });
  const link = el('a', { className: 'class-url', href: session.joinUrl, text: session.joinUrl, target: '_blank', rel: 'noopener' });
  const dialog = el('dialog', { className: 'class-dialog', attrs: { 'aria-label': 'Join the class' } }, [
    el('p', { className: 'class-dialog-code' }, ['Join with code ', el('strong', { text: code })]),
    el('img', { className: 'class-dialog-qr pixelated', src: sessionApi.qrUrl(code), alt: `QR code of ${session.joinUrl}` }),
    el('p', { className: 'class-dialog-url', text: session.joinUrl }),
    el('form', { method: 'dialog' }, [el('button', { className: 'button', text: 'Close' })]),
  ]);

  body.replaceChildren(
    el('p', { className: 'class-code', attrs: { 'aria-label': `Join code ${code.split('').join(' ')}` } }, [code]),
    el('div', { className: 'class-join' }, [
      qr,
      el('div', { className: 'class-join-text' }, [
        el('span', { className: 'hint', text: 'Students open' }),
        link,
        el('p', { className: 'class-count' }, [followers, ' following']),
      ]),
    ]),
    ...(session.warning ? [el('p', { className: 'error-text class-warning', text: session.warning })] : []),
    el('div', { className: 'class-actions' }, [wallButton, projectButton, endButton]),
  );
  // the dialog lives outside the sidebar: projector mode hides the sidebar, and the badge opens it there
  document.body.append(dialog);
  bag.add(() => dialog.remove());
  document.body.classList.add('is-teaching');
  // projector mode hides the sidebar: a compact badge in the top bar keeps the code and the count in view,
  // and opens Enlarge (the code and QR big enough for the room)
  const badgeCount = el('span', { className: 'class-badge-count', text: '0' });
  const badge = el('button', { type: 'button', id: 'class-badge', className: 'class-badge',
    title: 'The class code and how many follow; click for the code and QR code, big', attrs: { 'aria-label': `Class ${code}: show the code and QR code big` } },
  [el('span', { className: 'class-badge-code', text: code }), badgeCount, el('span', { className: 'class-badge-unit', text: ' following' })]);
  document.getElementById('presenter-controls').before(badge);
  bag.add(listen(badge, 'click', () => dialog.showModal()));
  bag.add(() => badge.remove());

  const wall = createWall({
    root: wallRoot, code, token,
    onPick: (imageId) => state.set({ image: imageId }),
    onCount: (count) => {
      counts = { ...counts, submissions: count };
      renderCounts();
    },
  });

  function wallContext(force = false) {
    const current = state.read();
    return { count: counts.submissions, model: current.model, weights: current.weights, current: current.image, force };
  }

  function renderCounts() {
    followers.textContent = formatInt(counts.followers);
    badgeCount.textContent = formatInt(counts.followers);
    wallButton.textContent = `${wallRoot.hidden ? 'Show' : 'Hide'} wall (${formatInt(counts.submissions)})`;
  }

  async function publish() {
    const shared = sharedState(state.read());
    const text = JSON.stringify(shared);
    if (text === published) return;
    try {
      await sessionApi.putState(code, token, shared);
      published = text;
      onProblem(null);
    } catch (err) {
      if (err.status === 404) onEnd('The class session has ended on the server.');
      else onProblem(`Students may not see this view: ${err.message}`);
    }
  }

  function schedulePublish() {
    clearTimeout(publishTimer);
    publishTimer = setTimeout(publish, PUBLISH_DELAY_MS);
  }

  async function poll() {
    try {
      const info = await sessionApi.info(code, token);
      counts = { followers: info.followers, submissions: info.submissions };
      renderCounts();
      if (!wallRoot.hidden) wall.refresh(wallContext());
      pollTimer = setTimeout(poll, POLL_MS);
    } catch (err) {
      if (err.status === 404 || err.status === 403) onEnd('The class session has ended.');
      else pollTimer = setTimeout(poll, POLL_MS * 2);
    }
  }

  bag.add(state.subscribe(() => {
    schedulePublish();
    if (!wallRoot.hidden) wall.refresh(wallContext());
  }));
  bag.add(listen(wallButton, 'click', () => {
    wallRoot.hidden = !wallRoot.hidden;
    if (!wallRoot.hidden) wall.refresh(wallContext(true));
    renderCounts();
  }));
  bag.add(listen(wallRoot, 'wall-hidden', renderCounts));
  bag.add(listen(projectButton, 'click', () => dialog.showModal()));
  bag.add(listen(endButton, 'click', async () => {
    endButton.disabled = true;
    try {
      await sessionApi.close(code, token);
    } catch (err) {
      if (err.status !== 404) {
        onProblem(`The session could not be ended: ${err.message}`);
        endButton.disabled = false;
        return;
      }
    }
    onEnd(null);
  }));
  bag.add(() => {
    clearTimeout(publishTimer);
    clearTimeout(pollTimer);
    wall.dispose();
    if (dialog.open) dialog.close();
    document.body.classList.remove('is-teaching');
  });

  publish();
  poll();
  return { dispose: () => bag.run() };
}
