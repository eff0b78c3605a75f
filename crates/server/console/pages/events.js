// Events: one event type's events with filters (customer, time range), cursor paging and
// each row's arrival time; deleting a range after seeing how many events it matches.

import { useEffect, useMemo, useState } from '../vendor/preact-hooks.mjs';
import { ApiError, api, get } from '../api.js';
import { useEventTypes } from '../data.js';
import { link, navigate } from '../nav.js';
import { DataTable, Dialog, ErrorBox, Field, PageHeader, Spinner, cellText, fmtInt, html, isoSeconds, parseInstant, useAsync, useId, useReady } from '../ui.js';

const deletion = (slug) => `/usage/${encodeURIComponent(slug)}/events`;
const deletionParams = (f) => ({ customer_id: f.customer, from: f.from, to: f.to });

/**
 * How many events a deletion with these filters would remove now: the deletion itself with
 * `dry_run=true`, which changes nothing and answers `{"would_delete": N}` (the same rule and
 * the same count as the real deletion's `{"deleted": N}`).
 */
export async function countMatching(slug, f) {
  const r = await api('DELETE', deletion(slug), { params: { ...deletionParams(f), dry_run: 'true' } });
  if (typeof r?.would_delete !== 'number') {
    // A server that ignored dry_run would have deleted: say so rather than show a count.
    throw new ApiError(0, {
      title: 'Unexpected answer to the dry run',
      detail: `expected {"would_delete": N}, got ${JSON.stringify(r)}`,
    });
  }
  return r.would_delete;
}

function DeleteRange({ slug, filters, open, onClose, onDeleted }) {
  const [count, setCount] = useState({ loading: true });
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  useEffect(() => {
    if (!open) return;
    setCount({ loading: true });
    setError(null);
    countMatching(slug, filters).then((n) => setCount({ n }), (e) => setCount({ error: e }));
  }, [open, slug, filters]);
  const confirm = async () => {
    setBusy(true);
    setError(null);
    try {
      const r = await api('DELETE', deletion(slug), { params: deletionParams(filters) });
      onDeleted(r, count.n);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return html`<${Dialog} id="delete-range-dialog" open=${open} onClose=${onClose} title="Delete events?">
    <dl class="kv">
      <dt>Event type</dt><dd><code>${slug}</code></dd>
      <dt>Customer</dt><dd>${filters.customer || html`<span class="muted">any</span>`}</dd>
      <dt>From (inclusive)</dt><dd>${filters.from || html`<span class="muted">the beginning</span>`}</dd>
      <dt>To (exclusive)</dt><dd>${filters.to || html`<span class="muted">now</span>`}</dd>
    </dl>
    ${count.loading ? html`<${Spinner} label="Counting the events that match…" />` : null}
    <${ErrorBox} error=${count.error} title="Could not count the matching events" />
    ${count.n !== undefined ? html`<p class="would-delete" role="status">
        <strong id="would-delete-count">${fmtInt(count.n)}</strong> ${count.n === 1 ? 'event matches' : 'events match'} and would be deleted.
        ${count.n === 0 ? ' Nothing to delete.' : ''}</p>
      <p class="hint">Counted by the deletion itself as a dry run (nothing is deleted yet). Events that arrive
        in the range before you confirm are deleted too. A deletion is logged like a write: queries with an
        earlier <code>as_of</code> still see these events.</p>` : null}
    <${ErrorBox} error=${error} />
    <div class="form-actions">
      <button class="btn" type="button" onClick=${onClose} disabled=${busy}>Cancel</button>
      <button class="btn btn-danger" type="button" id="confirm-delete-range" disabled=${busy || count.n === undefined || count.n === 0}
        onClick=${confirm}>${busy ? 'Deleting…' : `Delete ${count.n === undefined ? '' : fmtInt(count.n)} events`}</button>
    </div>
  <//>`;
}

export function Events({ route }) {
  const id = useId('ev');
  const types = useEventTypes();
  const p = route.params;
  const slug = p.get('slug') || types.data?.[0]?.api_slug || '';
  const type = types.data?.find((t) => t.api_slug === slug);
  // The form's text; the applied filters live in the URL (shareable, back button works).
  const [form, setForm] = useState({ customer: p.get('customer') || '', from: p.get('from') || '', to: p.get('to') || '', limit: p.get('limit') || '100' });
  useEffect(() => {
    setForm({ customer: p.get('customer') || '', from: p.get('from') || '', to: p.get('to') || '', limit: p.get('limit') || '100' });
  }, [route]); // eslint-disable-line react-hooks/exhaustive-deps
  const applied = useMemo(() => ({
    customer: p.get('customer') || '', from: p.get('from') || '', to: p.get('to') || '', limit: p.get('limit') || '100',
  }), [route]); // eslint-disable-line react-hooks/exhaustive-deps
  // The cursor of each page seen (last = current), for these filters only.
  const fkey = JSON.stringify([slug, applied]);
  const [pg, setPg] = useState({ fkey, cursors: [null] });
  const cursors = pg.fkey === fkey ? pg.cursors : [null];
  const setCursors = (c) => setPg({ fkey, cursors: c });
  const [delOpen, setDelOpen] = useState(false);
  const [notice, setNotice] = useState(null);
  const cursor = cursors[cursors.length - 1];

  const page = useAsync(async () => {
    if (!slug) return null;
    return get(`/usage/${encodeURIComponent(slug)}/events`, {
      customer_id: applied.customer, from: applied.from, to: applied.to, limit: applied.limit, cursor,
    });
  }, [slug, applied, cursor]);
  useReady('events', !types.loading && (!slug || !page.loading));

  const parsedFrom = parseInstant(form.from);
  const parsedTo = parseInstant(form.to);
  const fromErr = parsedFrom === undefined ? 'Not a time: use 2025-06-17, 2025-06-17 14:00 or RFC 3339' : null;
  const toErr = parsedTo === undefined ? 'Not a time: use 2025-06-17, 2025-06-17 14:00 or RFC 3339' : parsedFrom && parsedTo && parsedFrom >= parsedTo ? 'Must be after From' : null;

  const apply = (e, over = {}) => {
    e?.preventDefault();
    const f = { ...form, ...over };
    const from = parseInstant(f.from);
    const to = parseInstant(f.to);
    if (from === undefined || to === undefined) return;
    setNotice(null);
    navigate('events', [], { slug, customer: f.customer, from: from || '', to: to || '', limit: f.limit !== '100' ? f.limit : '' });
  };
  const quick = (hours) => {
    const now = new Date();
    const from = isoSeconds(new Date(now.getTime() - hours * 3600e3));
    const to = isoSeconds(new Date(now.getTime() + 60e3));
    setForm({ ...form, from, to });
    apply(null, { from, to });
  };
  const fields = Object.keys(type?.dataschema?.data || {});
  const columns = [
    { key: 'customer_id', label: 'customer_id', cls: 'mono' },
    { key: 'timestamp', label: 'timestamp', cls: 'mono' },
    ...fields.map((f) => ({ key: f, label: f, render: (r) => (r.data?.[f] === null || r.data?.[f] === undefined ? html`<span class="null">null</span>` : cellText(r.data[f])) })),
    { key: 'ingested_at', label: 'ingested_at', cls: 'mono muted' },
  ];
  const canDelete = !!applied.customer || (!!applied.from && !!applied.to);
  const items = page.data?.items || [];
  const first = (cursors.length - 1) * Number(applied.limit) + 1;

  return html`
    <${PageHeader} title="Events">
      ${slug ? html`<a class="btn" href=${link('upload', [], { slug })}>Upload CSV</a>` : null}
    <//>
    ${types.data && types.data.length === 0 ? html`<p class="muted">No event types yet. <a href=${link('event-types')}>Create one</a>.</p>` : null}
    <form class="card filters" id="events-filters" onSubmit=${apply} aria-label="Filter events">
      <div class="form-grid filters-grid">
        <${Field} id=${`${id}-type`} label="Event type">
          <select id=${`${id}-type`} value=${slug} onChange=${(e) => navigate('events', [], { slug: e.currentTarget.value })}>
            ${(types.data || []).map((t) => html`<option value=${t.api_slug}>${t.name} (${t.api_slug})</option>`)}
          </select>
        <//>
        <${Field} id=${`${id}-customer`} label="Customer id">
          <input id=${`${id}-customer`} value=${form.customer} spellcheck=${false} placeholder="any"
            onInput=${(e) => setForm({ ...form, customer: e.currentTarget.value })} />
        <//>
        <${Field} id=${`${id}-from`} label="From (UTC, inclusive)" error=${fromErr}>
          <input id=${`${id}-from`} value=${form.from} spellcheck=${false} placeholder="2025-06-17 or 2025-06-17T14:00:00Z"
            onInput=${(e) => setForm({ ...form, from: e.currentTarget.value })} aria-invalid=${fromErr ? 'true' : undefined} />
        <//>
        <${Field} id=${`${id}-to`} label="To (UTC, exclusive)" error=${toErr}>
          <input id=${`${id}-to`} value=${form.to} spellcheck=${false} placeholder="2025-06-18"
            onInput=${(e) => setForm({ ...form, to: e.currentTarget.value })} aria-invalid=${toErr ? 'true' : undefined} />
        <//>
        <${Field} id=${`${id}-limit`} label="Rows per page">
          <select id=${`${id}-limit`} value=${form.limit} onChange=${(e) => { setForm({ ...form, limit: e.currentTarget.value }); apply(null, { limit: e.currentTarget.value }); }}>
            ${['5', '10', '50', '100', '500', '1000'].map((n) => html`<option value=${n}>${n}</option>`)}
          </select>
        <//>
      </div>
      <div class="form-actions">
        <button class="btn btn-primary" type="submit" id="apply-filters">Apply filters</button>
        <button class="btn" type="button" onClick=${() => quick(1)}>Last hour</button>
        <button class="btn" type="button" onClick=${() => quick(24)}>Last 24 h</button>
        <button class="btn" type="button" onClick=${() => quick(24 * 7)}>Last 7 days</button>
        <button class="btn" type="button" onClick=${() => { setForm({ customer: '', from: '', to: '', limit: form.limit }); navigate('events', [], { slug }); }}>Clear</button>
        <span class="spacer"></span>
        <button class="btn btn-danger" type="button" id="delete-range" disabled=${!canDelete || !slug}
          title=${canDelete ? 'Delete the events these filters match' : 'Apply a customer, or both From and To, first'}
          onClick=${() => setDelOpen(true)}>Delete matching events…</button>
      </div>
      ${!canDelete ? html`<p class="hint">To delete, apply a customer id, or both From and To.</p>` : null}
    </form>
    ${notice ? html`<p class="notice" role="status" id="events-notice">${notice}</p>` : null}
    <section class="card" aria-labelledby="events-title">
      <h2 id="events-title">${type ? type.name : 'Events'} ${applied.customer ? html`<span class="muted">· customer </span><span class="pill">${applied.customer}</span>` : null}</h2>
      <${ErrorBox} error=${page.error} />
      ${page.loading ? html`<${Spinner} />` : null}
      ${page.data ? html`
        <p class="muted" id="events-range" aria-live="polite" data-cursor=${cursor || ''}>${items.length ? `Rows ${fmtInt(first)}–${fmtInt(first + items.length - 1)}${page.data.next_cursor ? ', more follow' : ''}` : 'No events match.'}</p>
        <${DataTable} id="events-table" label="Events" rows=${items} columns=${columns} empty="No events match these filters." />
        <nav class="pager" aria-label="Pages of events">
          <button class="btn" type="button" id="prev-page" disabled=${cursors.length <= 1} onClick=${() => setCursors(cursors.slice(0, -1))}>← Previous</button>
          <span class="muted">Page ${cursors.length}</span>
          <button class="btn" type="button" id="next-page" disabled=${!page.data.next_cursor} onClick=${() => setCursors([...cursors, page.data.next_cursor])}>Next →</button>
        </nav>` : null}
    </section>
    ${delOpen ? html`<${DeleteRange} slug=${slug} filters=${applied} open=${delOpen} onClose=${() => setDelOpen(false)}
      onDeleted=${(r, counted) => {
        setDelOpen(false);
        setNotice(r.deleted === null || r.deleted === undefined ? `Deleted (the count failed: ${r.count_error}).`
          : `Deleted ${fmtInt(r.deleted)} ${r.deleted === 1 ? 'event' : 'events'}.${r.deleted !== counted
            ? ` (${fmtInt(counted)} matched when counted: events arrived or were removed meanwhile.)` : ''}`);
        setCursors([null]);
        page.reload();
      }} />` : null}`;
}
