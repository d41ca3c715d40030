// "The latest request wins": one request per panel at a time, keyed by what it asks for. A new key aborts
// the request in flight; an answer that arrives after a newer request started is dropped; asking again for
// the key in flight (or already answered) does nothing.

import { isAbort } from '../dom.js';

export function createLatestRequest() {
  let key = null;
  let controller = null;
  return {
    /** Whether `k` is the key asked for last (in flight or answered). */
    isCurrent: (k) => k === key,
    /**
     * Start `request(signal)` for `k`. Resolves to `{ value }` when it is still the latest once answered,
     * or to null (the same key again, superseded, aborted). Errors of the latest request are thrown.
     */
    async run(k, request) {
      if (k === key) return null;
      key = k;
      if (controller) controller.abort();
      const mine = (controller = new AbortController());
      try {
        const value = await request(mine.signal);
        return mine === controller ? { value } : null;
      } catch (err) {
        if (isAbort(err) || mine !== controller) return null;
        throw err;
      }
    },
    /** Abort what is in flight and forget the key (the next run asks again). */
    abort() {
      if (controller) controller.abort();
      controller = null;
      key = null;
    },
  };
}
