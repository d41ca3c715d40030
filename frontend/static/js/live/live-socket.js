// The WebSocket side of live mode: connects to /api/models/{id}/live, sends frames with at most
// MAX_IN_FLIGHT unanswered (the server keeps only the newest waiting frame anyway, so more would be
// wasted work), and matches each answer to the frame it is for. See server/routers/live.py for the protocol.

const MAX_IN_FLIGHT = 2; // one computing, one waiting: the server never idles for a network round trip
const RETRY_MS = [1000, 2000, 5000, 10000];
const CLOSE_POLICY = 1008;

/** ws:// or wss:// URL of the live endpoint for this page's server. */
export function liveUrl(location, modelId, params) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value) query.set(key, value);
  const text = query.toString();
  return `${scheme}//${location.host}/api/models/${encodeURIComponent(modelId)}/live${text ? `?${text}` : ''}`;
}

/**
 * @param {object} opts
 * @param {string} opts.url  from liveUrl()
 * @param {(ready: object) => void} opts.onReady  the server accepted the query
 * @param {(answer: object, frame: {bytes: Uint8Array, sentAt: number}) => void} opts.onAnswer
 * @param {(error: {code, message, status}, frameNumber: number|null) => void} opts.onError
 * @param {(state: 'connecting'|'open'|'closed'|'failed', why?: string) => void} opts.onState
 */
export function createLiveSocket({ url, onReady, onAnswer, onError, onState }) {
  let socket = null;
  let sent = 0; // frames sent on the current socket (the server numbers them the same way)
  let pending = new Map(); // frame number → {bytes, sentAt}
  let retryTimer = null;
  let retries = 0;
  let stopped = false;
  let ready = false;

  function connect() {
    ready = false;
    sent = 0;
    pending = new Map();
    onState('connecting');
    socket = new WebSocket(url);
    socket.binaryType = 'arraybuffer';
    socket.addEventListener('message', (event) => receive(event.data));
    socket.addEventListener('close', (event) => closed(event));
  }

  function receive(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    if (message.ready) {
      ready = true;
      retries = 0;
      onState('open');
      onReady(message.ready);
      return;
    }
    const number = Number.isInteger(message.frame) ? message.frame : null;
    let frame = null;
    if (number !== null) {
      frame = pending.get(number) || null;
      for (const key of [...pending.keys()]) if (key <= number) pending.delete(key); // answered or replaced
    }
    if (message.error) onError(message.error, number);
    else if (frame) onAnswer(message, frame);
  }

  function closed(event) {
    socket = null;
    ready = false;
    if (stopped) return;
    if (event.code === CLOSE_POLICY) {
      onState('failed', event.reason);
      return;
    }
    const wait = RETRY_MS[Math.min(retries, RETRY_MS.length - 1)];
    retries += 1;
    onState('closed', `reconnecting in ${Math.round(wait / 1000)} s`);
    retryTimer = setTimeout(() => {
      retryTimer = null;
      if (!stopped) connect();
    }, wait);
  }

  connect();

  return {
    /** Whether a frame may be sent now (connected and fewer than MAX_IN_FLIGHT unanswered). */
    canSend() {
      return ready && socket !== null && socket.readyState === WebSocket.OPEN && pending.size < MAX_IN_FLIGHT;
    },

    /** Send one frame (JPEG/PNG bytes); returns false when it was not sent. */
    send(bytes) {
      if (!this.canSend()) return false;
      sent += 1;
      pending.set(sent, { bytes, sentAt: performance.now() });
      socket.send(bytes);
      return true;
    },

    /** Send a text (control) message, such as the occlusion patch; returns false when not connected. */
    sendText(text) {
      if (!ready || socket === null || socket.readyState !== WebSocket.OPEN) return false;
      socket.send(text);
      return true;
    },

    /** How many frames are sent and not yet answered. */
    inFlight() {
      return pending.size;
    },

    close() {
      stopped = true;
      if (retryTimer !== null) clearTimeout(retryTimer);
      retryTimer = null;
      if (socket) socket.close(1000);
      socket = null;
    },
  };
}
