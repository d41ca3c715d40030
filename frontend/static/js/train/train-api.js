// The training API as functions (see API.md "Training"), and a run's event stream as callbacks.

import { getJson } from '../api.js';
import { applyEvent } from './run-state.js';

const BASE = '/api/training/runs';
const json = (method, body) => ({ method, headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });

export const trainingApi = {
  /** {runs: [...], ready}: listing also readies a worker process for the next run. */
  list: (options) => getJson(BASE, options),
  get: (id, options) => getJson(`${BASE}/${encodeURIComponent(id)}`, options),
  start: (body) => getJson(BASE, json('POST', body)),
  control: (id, action) => getJson(`${BASE}/${encodeURIComponent(id)}/${action}`, { method: 'POST' }),
  rename: (id, name) => getJson(`${BASE}/${encodeURIComponent(id)}`, json('PATCH', { name })),
  remove: (id) => getJson(`${BASE}/${encodeURIComponent(id)}`, { method: 'DELETE' }),
};

const EVENTS = ['snapshot', 'started', 'point', 'epoch', 'checkpoint', 'state', 'done', 'stopped', 'failed', 'end'];

/**
 * Follow run `id`: `onEvent(type, data)` for the whole run first (`snapshot`), then each event. The browser's
 * EventSource reconnects by itself (with Last-Event-ID); `end` closes it. Returns the function that stops it.
 */
export function followRun(id, onEvent, onError) {
  const source = new EventSource(`${BASE}/${encodeURIComponent(id)}/events`);
  for (const type of EVENTS) {
    source.addEventListener(type, (message) => {
      onEvent(type, JSON.parse(message.data));
      if (type === 'end') source.close();
    });
  }
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED && onError) onError();
  };
  return () => source.close();
}

/**
 * The page's copy of one run at a time, kept up to date from its event stream (a finished run's stream sends
 * the whole run, then ends). `onChange(run, type)` after each event; `onGone(id)` when the run is no longer on
 * the server. `follow(id)` switches runs (null: none); `close()` stops.
 */
export function runFollower(onChange, onGone) {
  let stop = null;
  const state = { id: null, run: null };
  function close() {
    if (stop) stop();
    stop = null;
  }
  state.follow = (id) => {
    if (id === state.id) return;
    close();
    Object.assign(state, { id, run: null });
    if (!id) return;
    stop = followRun(id, (type, data) => {
      if (state.id !== id) return;
      state.run = applyEvent(state.run, type, data);
      onChange(state.run, type);
    }, () => {
      if (state.id === id) onGone(id);
    });
  };
  state.close = close;
  return state;
}
