// The REST API client of the UI. Requests carry the session cookie (same
// origin) and, on unsafe methods, the session's CSRF token.

export class APIError extends Error {
  constructor(status, message, field) {
    super(message);
    this.status = status;
    this.field = field || '';
  }
}

const GET_TIMEOUT_MS = 6000;

let csrf = '';
let onUnauthorized = () => {};

export function setCSRF(token) { csrf = token || ''; }
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

export async function call(method, path, body) {
  const headers = {Accept: 'application/json'};
  const init = {method, headers, credentials: 'same-origin', cache: 'no-store'};
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
  }
  if (method !== 'GET' && method !== 'HEAD') headers['X-CSRF-Token'] = csrf;
  // A host that lost power never answers: give up on it after a while
  // (the page then says so and offers the other hosts).
  if (method === 'GET') init.signal = AbortSignal.timeout(GET_TIMEOUT_MS);
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    const why = e.name === 'TimeoutError' ? `no answer in ${GET_TIMEOUT_MS / 1000} s` : e.message;
    throw new APIError(0, `cannot reach the agent (${why}); is it running?`);
  }
  const text = await resp.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!resp.ok) {
    const msg = (data && data.error) || `${method} ${path}: HTTP ${resp.status}`;
    const err = new APIError(resp.status, msg, data && data.field);
    if (resp.status === 401 && path !== '/api/v1/login') onUnauthorized(err);
    throw err;
  }
  if (resp.status === 202 && data) data._accepted = true;
  return data;
}

export const get = (p) => call('GET', p);
export const post = (p, b) => call('POST', p, b === undefined ? {} : b);
export const put = (p, b) => call('PUT', p, b);
export const del = (p) => call('DELETE', p);
export const enc = encodeURIComponent;
