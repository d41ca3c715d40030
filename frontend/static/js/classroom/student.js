// A student's side of a class session: follow the teacher's view live (Server-Sent Events), explore on
// one's own and snap back, and send the current image to the class wall.

import { el, listen, disposer } from '../dom.js';
import { VIEWS } from '../views/registry.js';
import { setClassMember } from '../api.js';
import { sessionApi, studentId } from './session-api.js';
import { changesToFollow, describeView, EXPLORING_KEYS, sharedState, showsSameView } from './follow-state.js';

const VIEW_TITLES = new Map(VIEWS.flatMap((view) => [view.id, ...(view.aliases || [])].map((id) => [id, view.title])));
const NAME_MAX = 40;
const FULL_RETRY_MS = 10_000;
const NEW_IMAGE_NOTICE = 'class-teacher-image';

/**
 * @param {object} opts
 * @param {HTMLElement} opts.body  the class card's body, owned by this panel until `dispose()`
 * @param {string} opts.code       the session code (from the URL's `session` key)
 * @param {object} opts.state      js/state.js store
 * @param {() => void} opts.onLeave the student leaves the session
 * @param {object} opts.notices     shell/notices.js (where an exploring student hears of the teacher's new image)
 */
export function createStudentPanel({ body, code, state, onLeave, notices }) {
  const bag = disposer();
  const followKey = `convscope.follow.${code}`;
  let following = sessionStorage.getItem(followKey) !== 'no';
  let teacher = null; // the teacher's latest state
  let source = null;
  let retryTimer = null;
  let applying = false;
  let ended = false;
  setClassMember(code, studentId());

  const followButton = el('button', { type: 'button', text: 'Follow the teacher', attrs: { role: 'radio' } });
  const exploreButton = el('button', { type: 'button', text: 'Explore on my own', attrs: { role: 'radio' } });
  const status = el('p', { className: 'class-status', attrs: { role: 'status', 'aria-live': 'polite' } });
  const snapButton = el('button', { type: 'button', className: 'button button-small', text: 'Snap back' });
  const where = el('span', { className: 'class-where' });
  const away = el('p', { className: 'class-away', hidden: true }, [where, snapButton]);
  const nameInput = el('input', {
    type: 'text', className: 'class-name', maxLength: NAME_MAX, placeholder: 'Your name (optional)',
    attrs: { 'aria-label': 'Your name on the class wall', autocomplete: 'nickname' },
  });
  const submitButton = el('button', { type: 'button', className: 'button button-accent', text: 'Send my image to the wall' });
  const submitStatus = el('p', { className: 'hint class-submit-status', attrs: { role: 'status' } });
  const followHint = el('p', { className: 'hint', text: 'Drawing or picking your own image lets you explore on your own.' });
  const leaveButton = el('button', { type: 'button', className: 'button button-small', text: 'Leave' });

  body.replaceChildren(
    el('div', { className: 'class-row' }, [
      el('span', { className: 'class-code-small' }, ['Class ', el('strong', { text: code })]),
      leaveButton,
    ]),
    el('div', { className: 'segmented class-follow', attrs: { role: 'radiogroup', 'aria-label': 'Follow mode' } },
      [followButton, exploreButton]),
    status,
    away,
    followHint,
    el('div', { className: 'class-submit' }, [nameInput, submitButton]),
    submitStatus,
  );

  function render() {
    followButton.setAttribute('aria-checked', String(following));
    exploreButton.setAttribute('aria-checked', String(!following));
    document.body.classList.toggle('is-following', following && !ended);
    followHint.hidden = !following || ended;
    body.closest('.card')?.classList.toggle('class-card-following', following && !ended);
    if (ended) {
      status.textContent = 'The class session has ended. Everything here is yours to explore.';
      away.hidden = true;
      submitButton.disabled = true;
      return;
    }
    if (!teacher) {
      status.textContent = 'Connecting to the class…';
      away.hidden = true;
    } else if (following) {
      status.textContent = 'Following the teacher.';
      away.hidden = true;
    } else {
      status.textContent = 'Exploring on your own.';
      const mine = state.read();
      away.hidden = showsSameView(mine, teacher);
      const other = teacher.image && teacher.image !== mine.image ? ', with another image' : '';
      where.textContent = `The teacher is on ${describeView(teacher, VIEW_TITLES)}${other}. `;
    }
    submitButton.disabled = !state.read().image;
  }

  function apply() {
    if (!teacher || !following || ended) return;
    const changes = changesToFollow(state.read(), teacher);
    if (!Object.keys(changes).length) return;
    applying = true;
    try {
      state.set(changes, { replace: true });
    } finally {
      applying = false;
    }
  }

  /** An exploring student hears that the teacher shows another image (a new one, or one from the wall). */
  function tellNewImage() {
    if (teacher.image === state.read().image) return;
    notices.show(NEW_IMAGE_NOTICE, `The teacher changed the image (on ${describeView(teacher, VIEW_TITLES)}).`, 'info',
      { label: 'Follow the teacher', run: () => setFollowing(true) });
  }

  function setFollowing(value) {
    following = value;
    if (value) notices.clear(NEW_IMAGE_NOTICE);
    sessionStorage.setItem(followKey, value ? 'yes' : 'no');
    apply();
    render();
  }

  function connect() {
    clearTimeout(retryTimer);
    source?.close();
    source = new EventSource(sessionApi.eventsUrl(code));
    source.addEventListener('state', (event) => {
      const before = teacher;
      teacher = sharedState(JSON.parse(event.data).state || {});
      if (!following && before && teacher.image && teacher.image !== before.image) tellNewImage();
      apply();
      render();
    });
    source.addEventListener('closed', () => {
      ended = true;
      source.close();
      render();
    });
    // EventSource reconnects by itself after a dropped connection (sending Last-Event-ID); it gives up
    // only when the server refused the stream: find out why.
    source.addEventListener('error', () => {
      if (source.readyState === EventSource.CLOSED && !ended) diagnose();
    });
  }

  async function diagnose() {
    try {
      await sessionApi.info(code);
      status.textContent = 'The class is full or the server is busy; trying again shortly…';
      retryTimer = setTimeout(connect, FULL_RETRY_MS);
    } catch (err) {
      if (err.status === 404) {
        ended = true;
        render();
      } else {
        status.textContent = `Lost the class: ${err.message} Trying again…`;
        retryTimer = setTimeout(connect, FULL_RETRY_MS);
      }
    }
  }

  async function submit() {
    const imageId = state.read().image;
    if (!imageId) return;
    submitButton.disabled = true;
    submitStatus.textContent = 'Sending…';
    try {
      await sessionApi.submit(code, imageId, nameInput.value.trim());
      submitStatus.textContent = 'Sent: it is on the class wall.';
    } catch (err) {
      submitStatus.textContent = err.message;
    } finally {
      render();
    }
  }

  bag.add(listen(followButton, 'click', () => setFollowing(true)));
  bag.add(listen(exploreButton, 'click', () => setFollowing(false)));
  bag.add(listen(snapButton, 'click', () => setFollowing(true)));
  bag.add(listen(submitButton, 'click', submit));
  bag.add(listen(leaveButton, 'click', () => onLeave()));
  // A student who picks another image, model or tab while following has wandered off: say so, rather
  // than pull them back at the teacher's next change.
  bag.add(state.subscribe((now, before) => {
    if (!applying && following && teacher && EXPLORING_KEYS.some((key) => now[key] !== before[key])) {
      setFollowing(false);
      return;
    }
    render();
  }));
  bag.add(() => {
    setClassMember(null);
    clearTimeout(retryTimer);
    source?.close();
    notices.clear(NEW_IMAGE_NOTICE);
    document.body.classList.remove('is-following');
    body.closest('.card')?.classList.remove('class-card-following');
  });

  connect();
  render();
  return { dispose: () => bag.run() };
}
