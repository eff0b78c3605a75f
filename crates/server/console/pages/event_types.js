// Event types: the list, a create form with a live JSON preview, adding Nullable fields
// (PATCH) and deleting (with the 409 "it holds events" explained and a force option).

import { useMemo, useState } from '../vendor/preact-hooks.mjs';
import { api } from '../api.js';
import { useEventTypes } from '../data.js';
import { link } from '../nav.js';
import { Dialog, ErrorBox, Field, PageHeader, Spinner, deriveSlug, html, useId, useReady } from '../ui.js';
import { TypePicker, newType, typeProblem, typeText } from './types.js';

const FIELD_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;
const RESERVED_SLUGS = ['bulk', 'csv', 'events', 'reconcile'];

function fieldNameProblem(name, taken) {
  if (!name) return 'Enter a field name';
  if (!FIELD_NAME.test(name)) return 'Letters, digits and _, not starting with a digit (at most 128)';
  if (name.startsWith('_') || ['customer_id', 'timestamp', 'data'].includes(name)) return 'Reserved: customer_id, timestamp, data and names starting with _';
  if (taken.includes(name)) return 'Already a field of this type';
  return null;
}

const splitNames = (text) => text.split(',').map((s) => s.trim()).filter(Boolean);

let rowKeys = 0;
const newRow = (name = '', base = 'String') => ({ key: ++rowKeys, name, type: newType(base) });

function CreateForm({ onCreated }) {
  const id = useId('et');
  const [name, setName] = useState('');
  const [slug, setSlug] = useState('');
  const [tsPrecision, setTsPrecision] = useState('');
  const [rows, setRows] = useState(() => [newRow()]);
  const [columnOrder, setColumnOrder] = useState('timestamp');
  const [uniqueKey, setUniqueKey] = useState('customer_id, timestamp');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const [touched, setTouched] = useState(false);

  const effectiveSlug = slug.trim() ? slug.trim().toLowerCase() : deriveSlug(name);
  const problems = useMemo(() => {
    const p = { rows: {} };
    if (!name.trim()) p.name = 'Enter a name';
    if (slug.trim() && !/^[A-Za-z0-9_-]{1,64}$/.test(slug.trim())) p.slug = '1–64 letters, digits, _ or -';
    else if (RESERVED_SLUGS.includes(effectiveSlug)) p.slug = `"${effectiveSlug}" is reserved (bulk, csv, events, reconcile)`;
    else if (name.trim() && !effectiveSlug) p.slug = 'The name has no letters or digits to make a slug from: enter one';
    rows.forEach((r, i) => {
      const prob = fieldNameProblem(r.name, rows.slice(0, i).map((o) => o.name)) || typeProblem(r.type);
      if (prob) p.rows[r.key] = prob;
    });
    const known = ['customer_id', 'timestamp', ...rows.map((r) => r.name)];
    const bad = (text) => splitNames(text).filter((n) => !known.includes(n));
    if (bad(columnOrder).length) p.columnOrder = `Not a column: ${bad(columnOrder).join(', ')}`;
    if (bad(uniqueKey).length) p.uniqueKey = `Not a column: ${bad(uniqueKey).join(', ')}`;
    else if (!splitNames(uniqueKey).length) p.uniqueKey = 'Name at least one column';
    p.any = !!(p.name || p.slug || Object.keys(p.rows).length || p.columnOrder || p.uniqueKey);
    return p;
  }, [name, slug, rows, columnOrder, uniqueKey, effectiveSlug]);

  const spec = useMemo(() => {
    const data = {};
    for (const r of rows) if (r.name) data[r.name] = typeText(r.type);
    const s = { name: name.trim() };
    if (slug.trim()) s.api_slug = slug.trim();
    s.dataschema = { customer_id: 'String', timestamp: tsPrecision === '' ? 'DateTime64' : `DateTime64(${tsPrecision})`, data };
    s.column_order = splitNames(columnOrder);
    s.unique_key = splitNames(uniqueKey);
    return s;
  }, [name, slug, tsPrecision, rows, columnOrder, uniqueKey]);

  const setRow = (key, patch) => setRows((rs) => rs.map((r) => (r.key === key ? { ...r, ...patch } : r)));
  const submit = async (e) => {
    e.preventDefault();
    setTouched(true);
    if (problems.any) return;
    setBusy(true);
    setError(null);
    try {
      const created = await api('POST', '/rawmetrics', { body: spec });
      setName(''); setSlug(''); setRows([newRow()]); setTouched(false);
      onCreated(created);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  const show = (msg) => (touched ? msg : null);
  const columns = ['customer_id', 'timestamp', ...rows.map((r) => r.name).filter(Boolean)];
  const addTo = (setter, text, col) => setter(splitNames(text).includes(col) ? text : [...splitNames(text), col].join(', '));

  return html`<form class="card" id="create-event-type" onSubmit=${submit} aria-labelledby=${`${id}-title`} novalidate>
    <h2 id=${`${id}-title`}>New event type</h2>
    <div class="form-grid">
      <${Field} id=${`${id}-name`} label="Name" error=${show(problems.name)}>
        <input id=${`${id}-name`} value=${name} onInput=${(e) => setName(e.currentTarget.value)} placeholder="Compute events" />
      <//>
      <${Field} id=${`${id}-slug`} label="API slug (optional)" error=${show(problems.slug)} hint=${`Derived from the name when empty: ${deriveSlug(name) || '…'}`}>
        <input id=${`${id}-slug`} value=${slug} onInput=${(e) => setSlug(e.currentTarget.value)} placeholder=${deriveSlug(name) || 'compute_events'} spellcheck=${false} />
      <//>
    </div>
    <fieldset>
      <legend>Root fields</legend>
      <div class="form-grid">
        <div class="field"><label for=${`${id}-cid`}>customer_id</label>
          <input id=${`${id}-cid`} value="String" disabled /></div>
        <div class="field"><label for=${`${id}-ts`}>timestamp</label>
          <select id=${`${id}-ts`} value=${tsPrecision} onChange=${(e) => setTsPrecision(e.currentTarget.value)}>
            <option value="">DateTime64</option>
            ${[0, 1, 2, 3, 4, 5, 6, 7, 8, 9].map((n) => html`<option value=${String(n)}>DateTime64(${n})</option>`)}
          </select></div>
      </div>
    </fieldset>
    <fieldset>
      <legend>Data fields</legend>
      ${rows.map((r, i) => html`<div class="field-row" key=${r.key} data-row=${i}>
        <${Field} id=${`${id}-f${r.key}`} label=${`Field ${i + 1} name`} error=${show(problems.rows[r.key])}>
          <input id=${`${id}-f${r.key}`} class="field-name" value=${r.name} spellcheck=${false} placeholder="cpu_hours_consumed"
            onInput=${(e) => setRow(r.key, { name: e.currentTarget.value })} />
        <//>
        <${TypePicker} id=${`${id}-t${r.key}`} label=${`Field ${i + 1} type`} value=${r.type} onChange=${(t) => setRow(r.key, { type: t })} />
        <button class="btn btn-small remove-field" type="button" aria-label=${`Remove field ${i + 1}${r.name ? ` (${r.name})` : ''}`}
          onClick=${() => setRows((rs) => rs.filter((o) => o.key !== r.key))}>Remove</button>
      </div>`)}
      <button class="btn" type="button" id="add-field" onClick=${() => setRows((rs) => [...rs, newRow()])}>Add field</button>
    </fieldset>
    <div class="form-grid">
      <${Field} id=${`${id}-order`} label="column_order (sort order of stored files)" error=${show(problems.columnOrder)}>
        <input id=${`${id}-order`} value=${columnOrder} onInput=${(e) => setColumnOrder(e.currentTarget.value)} spellcheck=${false} />
        <div class="chips" aria-label="Add a column to column_order">${columns.map((c) => html`<button type="button" class="chip"
          onClick=${() => addTo(setColumnOrder, columnOrder, c)}>+ ${c}</button>`)}</div>
      <//>
      <${Field} id=${`${id}-key`} label="unique_key (a later event with the same key replaces the earlier)" error=${show(problems.uniqueKey)}>
        <input id=${`${id}-key`} value=${uniqueKey} onInput=${(e) => setUniqueKey(e.currentTarget.value)} spellcheck=${false} />
        <div class="chips" aria-label="Add a column to unique_key">${columns.map((c) => html`<button type="button" class="chip"
          onClick=${() => addTo(setUniqueKey, uniqueKey, c)}>+ ${c}</button>`)}</div>
      <//>
    </div>
    <div class="preview">
      <h3>Request</h3>
      <p>Endpoint for events: <code id="endpoint-preview">POST /usage/${effectiveSlug || '…'}</code></p>
      <pre id="schema-preview" aria-label="JSON that will be sent" tabindex="0">${JSON.stringify(spec, null, 2)}</pre>
    </div>
    <div class="form-actions">
      <button class="btn btn-primary" type="submit" id="create-type" disabled=${busy}>${busy ? 'Creating…' : 'Create event type'}</button>
      ${touched && problems.any ? html`<span class="field-error" role="alert">Fix the fields marked above.</span>` : null}
    </div>
    <${ErrorBox} error=${error} title="The server refused the event type" />
  </form>`;
}

function AddField({ type, onDone }) {
  const id = useId('add');
  const [name, setName] = useState('');
  const [ft, setFt] = useState(() => ({ ...newType(), nullable: true }));
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const existing = Object.keys(type.dataschema.data || {});
  const problem = fieldNameProblem(name, existing) || typeProblem(ft);
  const submit = async (e) => {
    e.preventDefault();
    if (problem) { setError({ problem: { title: problem } }); return; }
    setBusy(true);
    setError(null);
    try {
      // The whole data schema goes back, existing types exactly as stored, plus the new one.
      const data = { ...type.dataschema.data, [name]: typeText({ ...ft, nullable: true }) };
      await api('PATCH', `/rawmetrics/${encodeURIComponent(type.api_slug)}`, { body: { dataschema: { data } } });
      onDone();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return html`<form class="add-field" onSubmit=${submit} aria-label=${`Add a field to ${type.name}`}>
    <${Field} id=${`${id}-name`} label="New field name" hint="New fields are Nullable: events already stored have no value for them.">
      <input id=${`${id}-name`} value=${name} onInput=${(e) => setName(e.currentTarget.value)} spellcheck=${false} />
    <//>
    <${TypePicker} id=${`${id}-type`} label="New field type" value=${ft} forceNullable onChange=${setFt} />
    <p class="muted">Will add <code>${name || '…'}: ${typeText({ ...ft, nullable: true })}</code></p>
    <button class="btn btn-primary" type="submit" disabled=${busy}>${busy ? 'Adding…' : 'Add field'}</button>
    <${ErrorBox} error=${error} />
  </form>`;
}

function TypeCard({ t, onChanged, onDelete }) {
  const [adding, setAdding] = useState(false);
  const data = Object.entries(t.dataschema.data || {});
  return html`<article class="card type-card" data-slug=${t.api_slug} aria-labelledby=${`type-${t.api_slug}`}>
    <header class="type-head">
      <h3 id=${`type-${t.api_slug}`}>${t.name} <code class="muted">${t.api_slug}</code></h3>
      <div class="actions">
        <a class="btn btn-small" href=${link('events', [], { slug: t.api_slug })}>Events</a>
        <a class="btn btn-small" href=${link('upload', [], { slug: t.api_slug })}>Upload CSV</a>
        <button class="btn btn-small" type="button" aria-expanded=${adding ? 'true' : 'false'} onClick=${() => setAdding(!adding)}>Add field</button>
        <button class="btn btn-small btn-danger" type="button" onClick=${() => onDelete(t)}>Delete…</button>
      </div>
    </header>
    <p>Send events to <code>POST ${t.endpoint}</code> · created ${t.created_at}</p>
    <table class="compact">
      <caption class="sr-only">Fields of ${t.name}</caption>
      <thead><tr><th scope="col">Field</th><th scope="col">Type</th></tr></thead>
      <tbody>
        <tr><td>customer_id</td><td><code>${t.dataschema.customer_id}</code></td></tr>
        <tr><td>timestamp</td><td><code>${t.dataschema.timestamp}</code></td></tr>
        ${data.map(([n, ty]) => html`<tr><td>data.${n}</td><td><code>${ty}</code></td></tr>`)}
      </tbody>
    </table>
    <p class="muted">column_order: <code>${(t.column_order || []).join(', ')}</code> · unique_key: <code>${(t.unique_key || []).join(', ')}</code></p>
    ${adding ? html`<${AddField} type=${t} onDone=${() => { setAdding(false); onChanged(); }} />` : null}
  </article>`;
}

function DeleteDialog({ state, setState, onDeleted }) {
  const t = state?.type;
  const run = async (force) => {
    setState({ ...state, busy: true, error: null });
    try {
      await api('DELETE', `/rawmetrics/${encodeURIComponent(t.api_slug)}`, { params: { force: force ? 'true' : undefined } });
      setState(null);
      onDeleted(t);
    } catch (err) {
      if (err.status === 409 && !force && !state.conflict) setState({ ...state, busy: false, conflict: err });
      else setState({ ...state, busy: false, error: err });
    }
  };
  return html`<${Dialog} id="delete-type-dialog" open=${!!state} onClose=${() => setState(null)}
      title=${t ? `Delete event type “${t.name}”?` : ''}>
    ${t && !state.conflict ? html`<p>This removes <code>${t.api_slug}</code> and its endpoint. It cannot be undone.</p>` : null}
    ${t && state.conflict ? html`<div class="warning" role="alert">
        <p><strong>The server refused (409):</strong> ${state.conflict.message}</p>
        <p>The event type still holds events. Deleting it anyway also deletes <strong>every event</strong> stored for it, from
          memory and from its Parquet files, and they cannot be queried afterwards (not even with <code>as_of</code>).</p>
      </div>` : null}
    <${ErrorBox} error=${state?.error} />
    <div class="form-actions">
      <button class="btn" type="button" onClick=${() => setState(null)} disabled=${state?.busy}>Cancel</button>
      ${state && !state.conflict ? html`<button class="btn btn-danger" type="button" id="confirm-delete-type" disabled=${state.busy} onClick=${() => run(false)}>Delete</button>`
        : html`<button class="btn btn-danger" type="button" id="force-delete-type" disabled=${state?.busy} onClick=${() => run(true)}>Delete it and all its events</button>`}
    </div>
  <//>`;
}

export function EventTypes() {
  const types = useEventTypes();
  const [del, setDel] = useState(null);
  const [notice, setNotice] = useState(null);
  useReady('event-types', !types.loading);
  return html`
    <${PageHeader} title="Event types" />
    ${notice ? html`<p class="notice" role="status" id="types-notice">${notice}</p>` : html`<p class="sr-only" role="status"></p>`}
    <div class="two-col">
      <section aria-labelledby="types-list-title" class="list-col">
        <h2 id="types-list-title">Defined</h2>
        ${types.error ? html`<${ErrorBox} error=${types.error} />` : null}
        ${types.loading && !types.data ? html`<${Spinner} />` : null}
        ${types.data && types.data.length === 0 ? html`<p class="muted" id="no-types">None yet: create the first one.</p>` : null}
        <div id="type-list">${(types.data || []).map((t) => html`<${TypeCard} key=${t.api_slug} t=${t}
          onChanged=${() => { setNotice(`Added a field to ${t.api_slug}.`); types.reload(); }} onDelete=${(x) => setDel({ type: x })} />`)}</div>
      </section>
      <${CreateForm} onCreated=${(c) => { setNotice(`Created ${c.api_slug}: send events to POST ${c.endpoint}.`); types.reload(); }} />
    </div>
    <${DeleteDialog} state=${del} setState=${setDel} onDeleted=${(t) => { setNotice(`Deleted ${t.api_slug}.`); types.reload(); }} />`;
}
