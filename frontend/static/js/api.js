// The HTTP API as functions: one place that builds URLs, sends requests and turns the server's
// {"error": {"code", "message"}} bodies into ApiError objects with a sentence a person can read.

export class ApiError extends Error {
  /** @param {number} status HTTP status (0 when the server could not be reached) */
  constructor(status, code, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
}

const enc = encodeURIComponent;

/** Read an error body; fall back to the status line when the body is not our JSON shape. */
async function errorFrom(response) {
  let code = 'http_' + response.status;
  let message = `The server answered ${response.status} ${response.statusText}.`.replace(' .', '.');
  try {
    const body = await response.json();
    if (body && body.error && typeof body.error.message === 'string') {
      code = body.error.code || code;
      message = body.error.message;
    }
  } catch {
    // not JSON: keep the status-line message
  }
  const retry = response.headers.get('Retry-After');
  if (retry && (response.status === 429 || response.status === 503)) {
    message += ` Try again in ${retry} s.`;
  }
  return new ApiError(response.status, code, message);
}

/** This tab's id, sent with every request so the server can share its heavy work fairly between the
 * people behind one address (a classroom behind one router). Random, kept for the tab's life. */
const CLIENT_ID = (() => {
  const key = 'convscope-client';
  try {
    const known = sessionStorage.getItem(key);
    if (known) return known;
  } catch {
    // storage refused: a fresh id for this page load
  }
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  const id = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  try {
    sessionStorage.setItem(key, id);
  } catch {
    // as above
  }
  return id;
})();

/** The class session this tab follows as a student, and its student id: sent with every request so that
 * students behind one school address each get a share of the heavy work of their own (bounded together by
 * the session, see server/services/work/clients.py). */
let classMember = null;

export function setClassMember(code, studentId) {
  classMember = code && studentId ? { code, studentId } : null;
}

/** fetch() that throws ApiError for network failures and non-2xx answers; aborts pass through. */
export async function request(url, options = {}) {
  let response;
  const headers = new Headers(options.headers || {});
  headers.set('X-ConvScope-Client', CLIENT_ID);
  if (classMember) {
    headers.set('X-ConvScope-Session', classMember.code);
    headers.set('X-ConvScope-Student', classMember.studentId);
  }
  try {
    response = await fetch(url, { ...options, headers });
  } catch (err) {
    if (err && err.name === 'AbortError') throw err;
    throw new ApiError(0, 'network_error', 'The ConvScope server could not be reached. Is it still running?');
  }
  if (!response.ok) throw await errorFrom(response);
  return response;
}

export async function getJson(url, options = {}) {
  const response = await request(url, options);
  return response.json();
}

function withQuery(path, params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') query.set(key, String(value));
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

/** URL helpers for things the page shows with <img> (the browser fetches and caches them). */
export const urls = {
  image: (imageId) => `/api/images/${enc(imageId)}`,
  modelInput: (modelId, imageId, weights) =>
    withQuery(`/api/models/${enc(modelId)}/images/${enc(imageId)}/input.png`, { weights }),
  modelPath: (modelId, rest, params = {}) => withQuery(`/api/models/${enc(modelId)}${rest}`, params),
  withQuery,
};

export const api = {
  urls,
  request,
  getJson,

  health: () => getJson('/api/health'),

  /** All models with their weights state: {models: [...]}. */
  models: () => getJson('/api/models'),

  /** One model with its layers, as run with the given weights choice (auto|trained|untrained). */
  model: (modelId, weights, options) => getJson(withQuery(`/api/models/${enc(modelId)}`, { weights }), options),

  /** Add a model from an .onnx/.keras file (FormData: file, optional labels); resolves to its summary. */
  uploadModel: (form) => getJson('/api/models', { method: 'POST', body: form }),

  /** Upload a Blob/File; resolves to {image_id, width, height}. */
  async uploadImage(blob, filename = 'image.png', options = {}) {
    const form = new FormData();
    form.append('file', blob, filename);
    const response = await request('/api/images', { method: 'POST', body: form, ...options });
    return response.json();
  },

  predictions: (modelId, imageId, weights, { topK = 5, signal } = {}) =>
    getJson(
      withQuery(`/api/models/${enc(modelId)}/images/${enc(imageId)}/predictions`, { top_k: topK, weights }),
      { signal },
    ),

  samples: (dataset, count, options) => getJson(withQuery('/api/samples', { dataset, count }), options),

  async blob(url, options) {
    const response = await request(url, options);
    return response.blob();
  },

  startDownload: (modelId) =>
    getJson(`/api/models/${enc(modelId)}/weights/download`, { method: 'POST' }),

  downloadStatus: (modelId, options) => getJson(`/api/models/${enc(modelId)}/weights/download`, options),
};
