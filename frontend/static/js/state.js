// The page's state lives in the URL query (model, image, weights, view, plus view-specific keys such
// as layer or channel), so a reload or a shared link reproduces the view and back/forward just work.
// Everything else (fetched JSON, pixels) is derived from it.

/**
 * Create the URL-state store.
 * @param {Record<string, string>} defaults values used for keys missing from the URL
 */
export function createUrlState(defaults) {
  const listeners = new Set();
  let last = read();

  /** The current state: defaults overlaid with the URL query. */
  function read() {
    const out = { ...defaults };
    for (const [key, value] of new URLSearchParams(window.location.search)) out[key] = value;
    return out;
  }

  function get(key) {
    return read()[key];
  }

  /**
   * Change some keys. null/undefined/'' removes a key. A new history entry is made unless
   * `replace` is set (use replace for in-between states such as a drawing being updated).
   */
  function set(changes, { replace = false } = {}) {
    const query = new URLSearchParams(window.location.search);
    for (const [key, value] of Object.entries(changes)) {
      if (value === null || value === undefined || value === '') query.delete(key);
      else query.set(key, String(value));
    }
    const text = query.toString();
    const url = window.location.pathname + (text ? `?${text}` : '') + window.location.hash;
    if (url === window.location.pathname + window.location.search + window.location.hash) return;
    window.history[replace ? 'replaceState' : 'pushState'](null, '', url);
    notify();
  }

  /** Listen for any state change (ours or back/forward); returns the function that stops it. */
  function subscribe(listener) {
    listeners.add(listener);
    return () => listeners.delete(listener);
  }

  function notify() {
    const previous = last;
    last = read();
    for (const listener of [...listeners]) listener(last, previous);
  }

  window.addEventListener('popstate', notify);

  return { read, get, set, subscribe };
}
