// The HTTP API, as the console uses it. The key lives in this tab's sessionStorage only and
// goes out as the `x-api-key` header: never in a URL, never in a cookie.

const KEY = 'meterbase.apiKey';

export const getKey = () => sessionStorage.getItem(KEY);
export const setKey = (key) => sessionStorage.setItem(KEY, key);
export const clearKey = () => sessionStorage.removeItem(KEY);

let unauthorized = () => {};
/** Called when a request with the stored key is answered 401 (the key was revoked). */
export function onUnauthorized(fn) {
  unauthorized = fn;
}

/** A non-2xx answer, with the RFC 9457 problem it carried (or one made up from the status). */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

/** `{a: 1, b: null, c: ['x', 'y']}` → `a=1&c=x&c=y`; empty and null values are left out. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v === undefined || v === null || v === '') continue;
    for (const one of Array.isArray(v) ? v : [v]) q.append(k, String(one));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

async function problemOf(resp) {
  const text = await resp.text().catch(() => '');
  try {
    const p = JSON.parse(text);
    if (p && typeof p === 'object') return p;
  } catch (_) { /* not JSON */ }
  return { title: resp.statusText || `HTTP ${resp.status}`, status: resp.status, detail: text.slice(0, 2000) };
}

/**
 * One API call. `body` is sent as JSON unless it is a Blob or a string; `raw` returns the
 * Response itself (downloads). Throws ApiError for any non-2xx answer.
 */
export async function api(method, path, { body, params, headers = {}, raw = false, signal, key } = {}) {
  const h = { 'x-api-key': key ?? getKey() ?? '', ...headers };
  let payload = body;
  if (body !== undefined && !(body instanceof Blob) && typeof body !== 'string') {
    h['content-type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  const resp = await fetch(path + query(params), {
    method, headers: h, body: payload, signal, credentials: 'omit', cache: 'no-store',
  });
  if (!resp.ok) {
    const problem = await problemOf(resp);
    if (resp.status === 401 && key === undefined) unauthorized();
    throw new ApiError(resp.status, problem);
  }
  if (raw) return resp;
  if (resp.status === 204) return null;
  const text = await resp.text();
  return text ? JSON.parse(text) : null;
}

export const get = (path, params, opts) => api('GET', path, { ...opts, params });

/** `POST /sql`. */
export function sql(text, params, { asOf, accept, signal } = {}) {
  const body = { sql: text };
  if (params && Object.keys(params).length) body.params = params;
  if (asOf) body.as_of = asOf;
  return api('POST', '/sql', {
    body, signal, raw: !!accept, headers: accept ? { accept } : {},
  });
}

/** A slug (or any name) as a quoted SQL identifier. */
export const ident = (name) => `"${String(name).replaceAll('"', '""')}"`;

/**
 * `POST /usage/{slug}/csv` with the File itself as the body, so the browser streams it from
 * disk (several GiB are fine) and XMLHttpRequest reports upload progress. Resolves to the
 * JSON answer; rejects with ApiError. `abort()` cancels.
 */
export function uploadCsv(slug, file, params, onProgress) {
  const xhr = new XMLHttpRequest();
  const promise = new Promise((resolve, reject) => {
    xhr.open('POST', `/usage/${encodeURIComponent(slug)}/csv${query(params)}`);
    xhr.setRequestHeader('x-api-key', getKey() ?? '');
    xhr.setRequestHeader('content-type', 'text/csv');
    if (/\.gz$/i.test(file.name)) xhr.setRequestHeader('content-encoding', 'gzip');
    else if (/\.zst$/i.test(file.name)) xhr.setRequestHeader('content-encoding', 'zstd');
    xhr.upload.onprogress = (e) => onProgress?.(e.loaded, e.lengthComputable ? e.total : file.size);
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else {
        if (xhr.status === 401) unauthorized();
        reject(new ApiError(xhr.status, body && typeof body === 'object' ? body
          : { title: `HTTP ${xhr.status}`, status: xhr.status, detail: xhr.responseText.slice(0, 2000) }));
      }
    };
    xhr.onerror = () => reject(new ApiError(0, { title: 'Network error', detail: 'the upload did not reach the server (connection lost?)' }));
    xhr.onabort = () => reject(new ApiError(0, { title: 'Cancelled', detail: 'the upload was cancelled; nothing was stored' }));
    xhr.send(file);
  });
  return { promise, abort: () => xhr.abort() };
}
