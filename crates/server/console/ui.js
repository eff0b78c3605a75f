// Shared pieces: the `html` template tag, hooks, tables, errors, dialogs, formatting.
// Everything user data touches is rendered by Preact as text (htm never parses values as
// markup), so a customer id like `<img src=x onerror=…>` shows up literally.

import { h } from './vendor/preact.mjs';
import { useCallback, useEffect, useMemo, useRef, useState } from './vendor/preact-hooks.mjs';
import htm from './vendor/htm.mjs';

export const html = htm.bind(h);

// ---------------------------------------------------------------- hooks

/**
 * Runs `fn` when `deps` change; `{data, error, loading, reload}`. Stale answers are dropped,
 * and from the very render in which `deps` change (not one render later, when the effect has
 * started the new run) `loading` is true and the previous answer is gone, so "ready" never
 * means an answer to the previous question.
 */
export function useAsync(fn, deps) {
  const token = useMemo(() => ({}), deps); // eslint-disable-line react-hooks/exhaustive-deps
  const [state, setState] = useState({ data: undefined, error: null, loading: true, for: null });
  const seq = useRef(0);
  const run = useCallback(() => {
    const mine = ++seq.current;
    // A reload keeps showing the last answer meanwhile; a new question starts blank.
    setState((s) => (s.for === token ? { ...s, loading: true, error: null } : { data: undefined, error: null, loading: true, for: token }));
    return Promise.resolve()
      .then(fn)
      .then(
        (data) => { if (mine === seq.current) setState({ data, error: null, loading: false, for: token }); },
        (error) => { if (mine === seq.current) setState({ data: undefined, error, loading: false, for: token }); },
      );
  }, [token]); // eslint-disable-line react-hooks/exhaustive-deps
  useEffect(() => { run(); }, [run]);
  // An answer for other deps is never shown as this one's; a reload keeps the last answer.
  const current = state.for === token;
  return { data: current ? state.data : undefined, error: current ? state.error : null, loading: state.loading || !current, reload: run };
}

/**
 * Marks a page's data as rendered: `document.body.dataset.ready` names the page and
 * `window.__consoleTimings[name]` holds the milliseconds since the navigation started
 * (the test reads both). Only the first time per navigation counts.
 */
export function useReady(name, ready) {
  useEffect(() => {
    if (ready) markReady(name);
  }, [name, ready]);
}

export function markReady(name) {
  window.__consoleTimings = window.__consoleTimings || {};
  if (window.__navPending) {
    window.__consoleTimings[name] = Math.round(performance.now() - (window.__navStart || 0));
    window.__navPending = false;
  }
  document.body.dataset.ready = name;
}

/** Records how long an action took (e.g. a query from its button to its rendered rows). */
export function markTiming(name, since) {
  window.__consoleTimings = window.__consoleTimings || {};
  window.__consoleTimings[name] = Math.round(performance.now() - since);
}

let ids = 0;
/** A stable unique id for label/for pairs. */
export function useId(prefix = 'id') {
  const ref = useRef(null);
  if (ref.current === null) ref.current = `${prefix}-${++ids}`;
  return ref.current;
}

/** The value, once it has stopped changing for `ms`. */
export function useDebounced(value, ms) {
  const [v, setV] = useState(value);
  useEffect(() => {
    const t = setTimeout(() => setV(value), ms);
    return () => clearTimeout(t);
  }, [value, ms]);
  return v;
}

// ---------------------------------------------------------------- formatting

const nf = new Intl.NumberFormat('en-US');
export const fmtInt = (n) => (n === null || n === undefined ? '—' : nf.format(n));

export function fmtBytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${i === 0 ? v : v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

/** Any JSON value as display text. */
export function cellText(v) {
  if (v === null || v === undefined) return '';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

/** `2025-06-17`, `2025-06-17 14:03`, `2025-06-17T14:03:12.5Z`, `…+02:00` → RFC 3339 UTC, or null. */
export function parseInstant(text) {
  const t = text.trim();
  if (!t) return null;
  const m = /^(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)(Z|[+-]\d{2}:?\d{2})?)?$/i.exec(t);
  if (!m) return undefined;
  const [, date, time = '00:00:00', zone = 'Z'] = m;
  const full = time.length === 5 ? `${time}:00` : time;
  // Date keeps milliseconds only: keep the written fraction ourselves.
  const frac = /\.(\d+)$/.exec(full);
  const d = new Date(`${date}T${full.replace(/\.\d+$/, '')}${zone.length === 5 ? `${zone.slice(0, 3)}:${zone.slice(3)}` : zone.toUpperCase()}`);
  if (Number.isNaN(d.getTime())) return undefined;
  const iso = d.toISOString().replace(/\.000Z$/, 'Z');
  return frac ? iso.replace(/(\.\d+)?Z$/, `.${frac[1]}Z`) : iso;
}

/** Instant as `YYYY-MM-DDTHH:MM:SSZ` (what the API sends back) for `Date`s. */
export const isoSeconds = (d) => d.toISOString().replace(/\.\d{3}Z$/, 'Z');

/** Same slug rule as the server: lower-case, runs of other characters become one `_`. */
export function deriveSlug(name) {
  let out = '';
  let pending = false;
  for (const ch of (name || '').toLowerCase()) {
    if (/[a-z0-9_-]/.test(ch)) {
      if (pending && out) out += '_';
      pending = false;
      out += ch;
    } else pending = true;
  }
  return out.replace(/^_+|_+$/g, '');
}

export const isNumericType = (t) => /^(nullable\(|lowcardinality\()*(u?int\d+|float\d+|decimal)/i.test(t || '');
export const isTimeType = (t) => /^(timestamp|date)/i.test(t || '');

// ---------------------------------------------------------------- components

/** An error where it happened: title, detail and the problem's `errors` list. */
export function ErrorBox({ error, title }) {
  if (!error) return null;
  const p = error.problem || { title: error.name || 'Error', detail: String(error.message || error) };
  const errs = Array.isArray(p.errors) ? p.errors : [];
  return html`<div class="error-box" role="alert">
    <strong>${title || p.title || 'Error'}${error.status ? html` <span class="muted">(${error.status})</span>` : ''}</strong>
    ${p.detail ? html`<p class="detail">${p.detail}</p>` : null}
    ${errs.length ? html`<ul class="error-list">${errs.slice(0, 20).map((e) => html`<li>
        ${e.line !== undefined ? `line ${e.line}: ` : ''}${e.index !== undefined ? `event ${e.index}: ` : ''}${e.pointer ? html`<code>${e.pointer}</code> ` : ''}${e.message}</li>`)}
        ${errs.length > 20 ? html`<li>… and ${errs.length - 20} more</li>` : null}</ul>` : null}
  </div>`;
}

/** A data table in a scrollable, focusable region. `columns`: [{key, label, render?, cls?}]. */
export function DataTable({ columns, rows, label, empty = 'No rows.', rowClass, id }) {
  if (!rows || rows.length === 0) return html`<p class="muted empty" id=${id}>${empty}</p>`;
  return html`<div class="table-wrap" tabindex="0" role="region" aria-label=${label} id=${id}>
    <table>
      <caption class="sr-only">${label}</caption>
      <thead><tr>${columns.map((c) => html`<th scope="col" class=${c.cls?.includes('num') ? 'num' : undefined}>${c.label ?? c.key}</th>`)}</tr></thead>
      <tbody>${rows.map((r, i) => html`<tr class=${rowClass ? rowClass(r, i) : undefined}>
        ${columns.map((c) => {
          const v = c.render ? c.render(r, i) : cellText(r[c.key]);
          const isNull = !c.render && (r[c.key] === null || r[c.key] === undefined);
          return html`<td class=${[c.cls, isNull ? 'null' : ''].filter(Boolean).join(' ') || undefined} data-col=${c.key}>${isNull ? 'null' : v}</td>`;
        })}</tr>`)}</tbody>
    </table></div>`;
}

/** A modal confirmation with the native <dialog> (focus trap, Esc closes). */
export function Dialog({ open, title, children, onClose, id }) {
  const ref = useRef(null);
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (open && !d.open) d.showModal();
    if (!open && d.open) d.close();
  }, [open]);
  return html`<dialog ref=${ref} id=${id} aria-labelledby=${`${id}-title`}
      onCancel=${(e) => { e.preventDefault(); onClose(); }}>
    ${open ? html`<h2 id=${`${id}-title`}>${title}</h2>${children}` : null}
  </dialog>`;
}

/** A labelled control: `<label for>` + the control + a hint or an inline error. */
export function Field({ id, label, hint, error, children, cls }) {
  return html`<div class=${`field ${cls || ''}`}>
    <label for=${id}>${label}</label>
    ${children}
    ${error ? html`<p class="field-error" id=${`${id}-err`} role="alert">${error}</p>`
      : hint ? html`<p class="hint" id=${`${id}-hint`}>${hint}</p>` : null}
  </div>`;
}

export function Spinner({ label = 'Loading…' }) {
  return html`<p class="loading" role="status"><span class="spinner" aria-hidden="true"></span>${label}</p>`;
}

export function PageHeader({ title, children }) {
  return html`<div class="page-header"><h1>${title}</h1><div class="actions">${children}</div></div>`;
}
