// Classroom sessions on the page: the "Class session" card in the sidebar. Idle, it offers to start a
// session (teacher) or to join one by code; then it hands the card to the teacher's or the student's panel.
// A student's URL carries `session=CODE` (so a reload rejoins); the teacher's token stays in this tab's
// sessionStorage, never in a URL that could be shared.

import { el, listen, disposer } from '../dom.js';
import { ensureStylesheet } from '../common/stylesheet.js';
import { sessionApi } from './session-api.js';
import { createTeacherPanel } from './teacher.js';
import { createStudentPanel } from './student.js';
import { sharedState } from './follow-state.js';

const TEACHER_KEY = 'convscope.teacher';
const CODE_PATTERN = /^[2-9A-HJKMNP-Z]{6}$/;

const STYLESHEET = '/static/js/classroom/classroom.css';

function savedTeacher() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(TEACHER_KEY) || 'null');
    return saved && typeof saved.code === 'string' && typeof saved.token === 'string' ? saved : null;
  } catch {
    return null;
  }
}

/**
 * @param {object} opts
 * @param {object} opts.state    js/state.js store
 * @param {object} opts.notices  shell/notices.js
 */
export function createClassroom({ state, notices }) {
  ensureStylesheet(STYLESHEET);
  const body = document.getElementById('class-body');
  const wallRoot = document.getElementById('class-wall');
  const heading = document.getElementById('class-heading');
  let panel = null;
  let idleBag = null;

  function problem(message) {
    if (message) notices.show('classroom', message);
    else notices.clear('classroom');
  }

  function dispose() {
    panel?.dispose();
    panel = null;
    idleBag?.run();
    idleBag = null;
  }

  function showIdle(message) {
    dispose();
    heading.textContent = 'Class session';
    idleBag = disposer();
    const startButton = el('button', { type: 'button', className: 'button button-accent', text: 'Start class session' });
    const codeInput = el('input', {
      type: 'text', className: 'class-code-input', maxLength: 6, placeholder: 'K7XQ2M',
      attrs: { 'aria-label': 'Session code', autocomplete: 'off', autocapitalize: 'characters', spellcheck: 'false' },
    });
    const joinButton = el('button', { type: 'submit', className: 'button', text: 'Join' });
    const error = el('p', { className: 'error-text', attrs: { role: 'alert' }, hidden: !message, text: message || '' });
    body.replaceChildren(
      el('p', { className: 'hint', text: 'Teaching? Start a session and the class follows your screen on their laptops.' }),
      startButton,
      el('form', { className: 'class-join-form' }, [codeInput, joinButton]),
      error,
    );
    idleBag.add(listen(startButton, 'click', async () => {
      startButton.disabled = true;
      try {
        const created = await sessionApi.create(sharedState(state.read()));
        const session = { code: created.code, token: created.teacher_token, joinUrl: created.join_url, warning: created.warning };
        sessionStorage.setItem(TEACHER_KEY, JSON.stringify(session));
        showTeacher(session);
      } catch (err) {
        error.textContent = `The session could not be started: ${err.message}`;
        error.hidden = false;
        startButton.disabled = false;
      }
    }));
    idleBag.add(listen(joinButton.form, 'submit', (event) => {
      event.preventDefault();
      const code = codeInput.value.trim().toUpperCase();
      if (!CODE_PATTERN.test(code)) {
        error.textContent = 'A session code is six letters and digits, as shown on the teacher\'s screen.';
        error.hidden = false;
        return;
      }
      state.set({ session: code });
    }));
  }

  function showTeacher(session) {
    dispose();
    heading.textContent = 'Class session';
    panel = createTeacherPanel({
      body, wallRoot, session, state, onProblem: problem,
      onEnd: (message) => {
        sessionStorage.removeItem(TEACHER_KEY);
        problem(null);
        showIdle(message);
      },
    });
  }

  function showStudent(code) {
    dispose();
    heading.textContent = 'Class session';
    panel = createStudentPanel({ body, code, state, notices, onLeave: () => state.set({ session: null }) });
  }

  /** Pick the mode from the URL (a student's `session`) and this tab's storage (a teacher's token). */
  function route() {
    const code = (state.read().session || '').toUpperCase();
    const teacher = savedTeacher();
    if (code && CODE_PATTERN.test(code) && !(teacher && teacher.code === code)) {
      if (!(panel && panel.code === code)) {
        showStudent(code);
        panel.code = code;
      }
      return;
    }
    if (code && !CODE_PATTERN.test(code)) notices.show('classroom', `"${code}" is not a session code.`);
    if (teacher) {
      if (!(panel && panel.teacher)) {
        showTeacher(teacher);
        panel.teacher = true;
      }
      return;
    }
    if (panel || !idleBag) showIdle();
  }

  state.subscribe((now, before) => {
    if ((now.session || '') !== (before.session || '')) route();
  });
  route();
}
