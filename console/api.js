// The one way the console reaches the backend: the public /v1 API on the same origin, with the
// signed-in key as a bearer token. The key lives in sessionStorage only (gone when the tab
// closes; never in the URL, never logged).

const KEY = 'wcrm.api_key';

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message || `request failed (${status})`);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export const session = {
  key: () => sessionStorage.getItem(KEY),
  set: (key) => sessionStorage.setItem(KEY, key),
  clear: () => sessionStorage.clear(),
};

let onSignedOut = () => {};
/** Called when the key stops working (revoked, expired, user disabled). */
export function whenSignedOut(callback) {
  onSignedOut = callback;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * `api('GET', '/v1/me')`, `api('POST', '/v1/messages', body)`. JSON in and out; a non-2xx
 * answer throws ApiError with the API's code and message. A 429 waits for Retry-After once.
 */
export async function api(method, path, body, { contentType = 'application/json', key } = {}) {
  const bearer = key ?? session.key();
  for (let attempt = 0; ; attempt += 1) {
    const headers = { Accept: 'application/json' };
    if (bearer) headers.Authorization = `Bearer ${bearer}`;
    if (body !== undefined) headers['Content-Type'] = contentType;
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'omit',
    });
    if (response.status === 429 && attempt === 0) {
      const wait = Number(response.headers.get('Retry-After')) || 1;
      await sleep(Math.min(wait, 10) * 1000);
      continue;
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (response.ok) return data;
    const error = (data && data.error) || {};
    if (response.status === 401 && !key) onSignedOut();
    throw new ApiError(response.status, error.code, error.message, error.details ?? error.fields);
  }
}

/** An export job (`POST …/export`'s answer) re-read each second while it is pending, a minute
 * at most; its last state. */
export async function untilExported(job) {
  for (let i = 0; i < 60 && job.status === 'pending'; i += 1) {
    await sleep(1000);
    job = await api('GET', `/v1/exports/${encodeURIComponent(job.export_id)}`);
  }
  return job;
}

/** Query string of the set values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') q.set(name, value);
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}
