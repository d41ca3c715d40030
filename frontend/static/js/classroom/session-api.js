// The classroom-session endpoints as functions (see API.md "Classroom sessions").

import { getJson, request } from '../api.js';

const enc = encodeURIComponent;
const base = (code) => `/api/sessions/${enc(code)}`;
const bearer = (token) => ({ Authorization: `Bearer ${token}` });
const jsonBody = (body) => ({ headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });

/** A random id for this browser tab, so per-student caps tell students behind one address apart. */
export function studentId() {
  const key = 'convscope.student';
  let id = sessionStorage.getItem(key);
  if (!id) {
    const bytes = crypto.getRandomValues(new Uint8Array(12));
    id = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
    sessionStorage.setItem(key, id);
  }
  return id;
}

export const sessionApi = {
  /** Start a session with the page's state: {code, teacher_token, join_url, warning?}. */
  create: (state) => getJson('/api/sessions', { method: 'POST', ...jsonBody({ state }) }),

  /** {code, state, followers, submissions, join_url}; with the token it also keeps the session alive. */
  info: (code, token, options = {}) =>
    getJson(base(code), { ...options, headers: token ? bearer(token) : {} }),

  putState: (code, token, state, options = {}) => {
    const body = jsonBody({ state });
    return getJson(`${base(code)}/state`, {
      method: 'PUT', ...options, body: body.body, headers: { ...body.headers, ...bearer(token) },
    });
  },

  close: (code, token) => getJson(base(code), { method: 'DELETE', headers: bearer(token) }),

  submit: (code, imageId, name) => {
    const body = jsonBody({ image_id: imageId, name: name || null });
    return getJson(`${base(code)}/submissions`, {
      method: 'POST', body: body.body, headers: { ...body.headers, 'X-ConvScope-Student': studentId() },
    });
  },

  /** The wall: {model, weights_used, submissions: [{id, image_id, name, prediction, predictions}]}. */
  wall: (code, token, options = {}) => getJson(`${base(code)}/submissions`, { ...options, headers: bearer(token) }),

  clearWall: (code, token) => request(`${base(code)}/submissions`, { method: 'DELETE', headers: bearer(token) }),

  eventsUrl: (code) => `${base(code)}/events`,
  qrUrl: (code) => `${base(code)}/qr.png`,
};
