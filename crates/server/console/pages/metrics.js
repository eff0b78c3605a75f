// Billable metrics: the list; creating one in builder or SQL form with a live preview of the
// last full month; a metric's usage per customer (window, time zone) as a table and a chart;
// drilling into one customer.

import { useEffect, useMemo, useState } from '../vendor/preact-hooks.mjs';
import { api, get } from '../api.js';
import { TimeChart, pivot, toSeconds } from '../chart.js';
import { useEventTypes } from '../data.js';
import { link, navigate } from '../nav.js';
import { DataTable, Dialog, ErrorBox, Field, PageHeader, Spinner, cellText, deriveSlug, html, isNumericType, markTiming, useAsync, useDebounced, useId, useReady } from '../ui.js';

const AGGREGATIONS = ['count', 'sum', 'min', 'max', 'avg', 'unique_count', 'latest', 'earliest', 'time_weighted_sum'];
const NUMERIC_ONLY = ['sum', 'avg', 'time_weighted_sum'];
const OPS = [['eq', '='], ['ne', '≠'], ['in', 'in'], ['not_in', 'not in'], ['gt', '>'], ['gte', '≥'], ['lt', '<'], ['lte', '≤']];

const ymd = (d) => d.toISOString().slice(0, 10);

/** [first day of last month, first day of this month), UTC. */
export function lastFullMonth(now = new Date()) {
  const end = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
  const start = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - 1, 1));
  return { start_date: ymd(start), end_date: ymd(end) };
}

function thisMonth(now = new Date()) {
  return {
    start: ymd(new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1))),
    end: ymd(new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1))),
  };
}

/** A filter's text as the JSON value(s) the field's type wants. */
function filterValue(text, op, type) {
  const one = (s) => {
    const t = s.trim();
    if (isNumericType(type) && t !== '' && !Number.isNaN(Number(t)) && !/decimal/i.test(type)) return Number(t);
    if (/bool/i.test(type) && (t === 'true' || t === 'false')) return t === 'true';
    return t;
  };
  return op === 'in' || op === 'not_in' ? text.split(',').map(one) : one(text);
}

let previewMissing = false; // the server has no preview endpoint: stop asking

function Preview({ definition, ready }) {
  const period = lastFullMonth();
  const body = useDebounced(ready ? JSON.stringify(definition) : null, 500);
  const [state, setState] = useState({});
  useEffect(() => {
    if (!body || previewMissing) return undefined;
    const ctl = new AbortController();
    setState({ loading: true });
    api('POST', '/billable_metrics/preview', { body: { definition: JSON.parse(body), periods: [period] }, signal: ctl.signal })
      .then((r) => setState({ rows: r.rows || [] }), (err) => {
        if (err.name === 'AbortError') return;
        if (err.status === 404 || err.status === 405) { previewMissing = true; setState({ missing: true }); } else setState({ error: err });
      });
    return () => ctl.abort();
  }, [body]); // eslint-disable-line react-hooks/exhaustive-deps
  return html`<div class="preview" id="metric-preview" aria-live="polite">
    <h3>Preview: last full month <span class="muted">(${period.start_date} to ${period.end_date})</span></h3>
    ${previewMissing || state.missing ? html`<p class="notice" id="preview-missing">Live preview needs <code>POST /billable_metrics/preview</code>, which this server
        does not have yet. Create the metric to see its usage; a metric can be deleted again.</p>`
      : !ready ? html`<p class="muted">Complete the definition to preview it.</p>`
        : state.loading ? html`<${Spinner} label="Evaluating…" />`
          : state.error ? html`<${ErrorBox} error=${state.error} title="This definition would be refused" />`
            : state.rows ? html`<${DataTable} id="preview-table" label="Preview of the metric" rows=${state.rows} empty="No usage in that month."
                columns=${[{ key: 'customer_id' }, { key: 'candidate', label: 'value', cls: 'num' }]} />` : null}
  </div>`;
}

function CreateMetric({ types, onCreated }) {
  const id = useId('bm');
  const [mode, setMode] = useState('builder');
  const [name, setName] = useState('');
  const [slug, setSlug] = useState('');
  const [event, setEvent] = useState('');
  const [agg, setAgg] = useState('sum');
  const [field, setField] = useState('');
  const [filters, setFilters] = useState([]);
  const [groupBy, setGroupBy] = useState([]);
  const [sqlText, setSqlText] = useState('');
  const [allTime, setAllTime] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const [touched, setTouched] = useState(false);

  const type = types.find((t) => t.api_slug === event) || types[0];
  const dataFields = Object.entries(type?.dataschema?.data || {});
  const fieldChoices = dataFields.filter(([, t]) => !NUMERIC_ONLY.includes(agg) || isNumericType(t));
  const chosenField = fieldChoices.some(([n]) => n === field) ? field : fieldChoices[0]?.[0] || '';
  const typeOf = (f) => (f === 'customer_id' ? 'String' : f === 'timestamp' ? 'DateTime64' : type?.dataschema?.data?.[f] || 'String');
  const defaultSql = type ? `SELECT customer_id, count(*) AS value\nFROM "${type.api_slug}"\nWHERE timestamp >= {{start_date}} AND timestamp < {{end_date}}\nGROUP BY customer_id` : '';
  const sqlValue = sqlText || defaultSql;

  const definition = useMemo(() => {
    const d = { name: name.trim() };
    if (slug.trim()) d.slug = slug.trim();
    if (mode === 'sql') {
      d.sql = sqlValue;
      if (allTime) d.period = 'all_time';
      return d;
    }
    d.usage_event = type?.api_slug;
    d.aggregation = agg;
    if (agg !== 'count') d.field = chosenField;
    const fs = filters.filter((f) => f.field && f.value !== '').map((f) => ({ field: f.field, op: f.op, value: filterValue(f.value, f.op, typeOf(f.field)) }));
    if (fs.length) d.filters = fs;
    if (groupBy.length) d.group_by = groupBy;
    return d;
  }, [mode, name, slug, type, agg, chosenField, filters, groupBy, sqlValue, allTime]); // eslint-disable-line react-hooks/exhaustive-deps

  const problems = {};
  if (!name.trim()) problems.name = 'Enter a name';
  if (mode === 'builder' && !type) problems.event = 'Create an event type first';
  if (mode === 'builder' && agg !== 'count' && !chosenField) problems.field = NUMERIC_ONLY.includes(agg) ? `${agg} needs a numeric field` : 'Choose a field';
  if (mode === 'sql' && !sqlValue.trim()) problems.sql = 'Enter the query';
  const valid = Object.keys(problems).length === 0;
  const show = (k) => (touched ? problems[k] : null);

  const submit = async (e) => {
    e.preventDefault();
    setTouched(true);
    if (!valid) return;
    setBusy(true);
    setError(null);
    try {
      const m = await api('POST', '/billable_metrics', { body: definition });
      onCreated(m);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  return html`<form class="card" id="create-metric" onSubmit=${submit} aria-labelledby=${`${id}-title`} novalidate>
    <h2 id=${`${id}-title`}>New billable metric</h2>
    <fieldset class="tabs">
      <legend>Define it with</legend>
      <label class="check"><input type="radio" name=${`${id}-mode`} id="metric-mode-builder" checked=${mode === 'builder'} onChange=${() => setMode('builder')} /> the builder</label>
      <label class="check"><input type="radio" name=${`${id}-mode`} id="metric-mode-sql" checked=${mode === 'sql'} onChange=${() => setMode('sql')} /> SQL</label>
    </fieldset>
    <div class="form-grid">
      <${Field} id=${`${id}-name`} label="Name" error=${show('name')}>
        <input id=${`${id}-name`} value=${name} onInput=${(e) => setName(e.currentTarget.value)} placeholder="CPU hours" />
      <//>
      <${Field} id=${`${id}-slug`} label="Slug (optional)" hint=${`Derived from the name when empty: ${deriveSlug(name) || '…'}`}>
        <input id=${`${id}-slug`} value=${slug} onInput=${(e) => setSlug(e.currentTarget.value)} spellcheck=${false} placeholder=${deriveSlug(name)} />
      <//>
    </div>
    ${mode === 'builder' ? html`
      <div class="form-grid">
        <${Field} id=${`${id}-event`} label="Event type" error=${show('event')}>
          <select id=${`${id}-event`} value=${type?.api_slug || ''} onChange=${(e) => { setEvent(e.currentTarget.value); setFilters([]); setGroupBy([]); }}>
            ${types.map((t) => html`<option value=${t.api_slug}>${t.name} (${t.api_slug})</option>`)}
          </select>
        <//>
        <${Field} id=${`${id}-agg`} label="Aggregation">
          <select id=${`${id}-agg`} value=${agg} onChange=${(e) => setAgg(e.currentTarget.value)}>
            ${AGGREGATIONS.map((a) => html`<option value=${a}>${a}</option>`)}
          </select>
        <//>
        ${agg !== 'count' ? html`<${Field} id=${`${id}-field`} label="Field" error=${show('field')}
            hint=${NUMERIC_ONLY.includes(agg) ? `${agg} takes numeric fields` : null}>
          <select id=${`${id}-field`} value=${chosenField} onChange=${(e) => setField(e.currentTarget.value)}>
            ${fieldChoices.map(([n, t]) => html`<option value=${n}>${n} (${t})</option>`)}
          </select>
        <//>` : null}
      </div>
      <fieldset>
        <legend>Filters</legend>
        ${filters.map((f, i) => html`<div class="filter-row" key=${f.key}>
          <${Field} id=${`${id}-ff${f.key}`} label=${`Filter ${i + 1} field`}>
            <select id=${`${id}-ff${f.key}`} value=${f.field} onChange=${(e) => setFilters(filters.map((o) => (o.key === f.key ? { ...o, field: e.currentTarget.value } : o)))}>
              ${['customer_id', ...dataFields.map(([n]) => n)].map((n) => html`<option value=${n}>${n}</option>`)}
            </select>
          <//>
          <${Field} id=${`${id}-fo${f.key}`} label="Operator">
            <select id=${`${id}-fo${f.key}`} value=${f.op} onChange=${(e) => setFilters(filters.map((o) => (o.key === f.key ? { ...o, op: e.currentTarget.value } : o)))}>
              ${OPS.map(([v, l]) => html`<option value=${v}>${l} (${v})</option>`)}
            </select>
          <//>
          <${Field} id=${`${id}-fv${f.key}`} label=${f.op === 'in' || f.op === 'not_in' ? 'Values (comma-separated)' : 'Value'}>
            <input id=${`${id}-fv${f.key}`} value=${f.value} onInput=${(e) => setFilters(filters.map((o) => (o.key === f.key ? { ...o, value: e.currentTarget.value } : o)))} />
          <//>
          <button class="btn btn-small" type="button" aria-label=${`Remove filter ${i + 1}`} onClick=${() => setFilters(filters.filter((o) => o.key !== f.key))}>Remove</button>
        </div>`)}
        <button class="btn" type="button" onClick=${() => setFilters([...filters, { key: Date.now() + Math.random(), field: dataFields[0]?.[0] || 'customer_id', op: 'eq', value: '' }])}>Add filter</button>
      </fieldset>
      ${dataFields.length ? html`<fieldset>
        <legend>Group by (dimensions, priced separately)</legend>
        ${dataFields.map(([n]) => html`<label class="check"><input type="checkbox" checked=${groupBy.includes(n)}
          onChange=${(e) => setGroupBy(e.currentTarget.checked ? [...groupBy, n] : groupBy.filter((g) => g !== n))} /> ${n}</label>`)}
      </fieldset>` : null}`
    : html`
      <${Field} id=${`${id}-sql`} label="SQL (must return customer_id and value; {{start_date}}, {{end_date}}, {{customer_id}} are bound as parameters)" error=${show('sql')}>
        <textarea id=${`${id}-sql`} class="editor" rows="6" spellcheck=${false} value=${sqlValue} onInput=${(e) => setSqlText(e.currentTarget.value)}></textarea>
      <//>
      <label class="check"><input type="checkbox" checked=${allTime} onChange=${(e) => setAllTime(e.currentTarget.checked)} />
        All-time total (the query uses neither {{start_date}} nor {{end_date}})</label>`}
    <details class="json-preview"><summary>Definition (JSON)</summary><pre id="metric-json" tabindex="0">${JSON.stringify(definition, null, 2)}</pre></details>
    <${Preview} definition=${definition} ready=${valid} />
    <div class="form-actions">
      <button class="btn btn-primary" type="submit" id="create-metric-submit" disabled=${busy}>${busy ? 'Creating…' : 'Create metric'}</button>
    </div>
    <${ErrorBox} error=${error} title="The server refused the metric" />
  </form>`;
}

function MetricList({ route }) {
  const types = useEventTypes();
  const metrics = useAsync(() => get('/billable_metrics').then((r) => r.items || []), []);
  useReady('metrics', !metrics.loading && !types.loading);
  return html`
    <${PageHeader} title="Billable metrics" />
    <div class="two-col">
      <section class="card list-col" aria-labelledby="metrics-title">
        <h2 id="metrics-title">Defined</h2>
        <${ErrorBox} error=${metrics.error} />
        ${metrics.loading && !metrics.data ? html`<${Spinner} />` : html`<${DataTable} id="metrics-table" label="Billable metrics"
          rows=${metrics.data || []} empty="No metrics yet."
          columns=${[
            { key: 'name', label: 'Metric', render: (m) => html`<a href=${link('metrics', [m.slug])}>${m.name}</a> <code class="muted">${m.slug}</code>` },
            { key: 'kind', label: 'Definition', render: (m) => (m.builder ? `${m.builder.aggregation}${m.builder.field ? `(${m.builder.field})` : ''} of ${m.builder.usage_event}` : 'SQL') },
            { key: 'reads', label: 'Reads', render: (m) => (m.reads || []).join(', ') },
            { key: 'period', label: 'Period', render: (m) => m.period || '' },
          ]} />`}
      </section>
      ${types.data ? html`<${CreateMetric} types=${types.data} onCreated=${(m) => navigate('metrics', [m.slug])} />` : null}
    </div>`;
}

let usageClick = null; // when "Show usage" was pressed, for the timing

function Usage({ metric, route }) {
  const id = useId('use');
  const p = route.params;
  const def = thisMonth();
  const applied = {
    // All customers: one total each by default (a day per customer is 300k rows on the
    // 20M-event benchmark, 22 MB of JSON); one customer: by day.
    start: p.get('start') || def.start, end: p.get('end') || def.end,
    window: p.has('window') ? p.get('window') : (p.get('customer') ? 'day' : 'none'),
    tz: p.get('tz') || 'UTC', customer: p.get('customer') || '', as_of: p.get('as_of') || '',
  };
  const [form, setForm] = useState(applied);
  useEffect(() => setForm(applied), [route]); // eslint-disable-line react-hooks/exhaustive-deps
  const key = JSON.stringify(applied);
  const usage = useAsync(() => get(`/billable_metrics/${encodeURIComponent(metric.slug)}/usage`, {
    start_date: applied.start, end_date: applied.end, window: metric.period === 'all_time' || applied.window === 'none' ? '' : applied.window,
    tz: applied.tz, customer_id: applied.customer, as_of: applied.as_of,
  }), [key]);
  useReady('metrics', !usage.loading);
  useEffect(() => {
    if (!usage.loading && usageClick !== null) {
      const t0 = usageClick;
      usageClick = null;
      requestAnimationFrame(() => markTiming('metric_usage', t0));
    }
  }, [usage.loading]);
  const go = (over) => navigate('metrics', [metric.slug], { ...applied, ...over, window: (over && 'window' in over ? over.window : applied.window) || 'none' });
  const submit = (e) => {
    e.preventDefault();
    usageClick = performance.now();
    go(form);
  };
  const rows = usage.data?.rows || [];
  const dims = [...new Set(rows.flatMap((r) => Object.keys(r)))].filter((k) => !['customer_id', 'value', 'window_start'].includes(k));
  const windowed = rows.some((r) => 'window_start' in r);
  const chart = useMemo(() => (windowed ? pivot(rows, 'window_start', 'value', applied.customer ? (dims.length ? dims : null) : ['customer_id', ...dims]) : null), [usage.data]); // eslint-disable-line react-hooks/exhaustive-deps
  const totals = useMemo(() => {
    const m = new Map();
    for (const r of rows) m.set(r.customer_id, (m.get(r.customer_id) || 0) + Number(r.value || 0));
    return m;
  }, [usage.data]); // eslint-disable-line react-hooks/exhaustive-deps
  const max = Math.max(0, ...totals.values());
  const period = useMemo(() => (usage.data ? [toSeconds(usage.data.start_date), toSeconds(usage.data.end_date)] : null), [usage.data]);
  const eventType = metric.builder?.usage_event || metric.reads?.[0];
  const zones = useMemo(() => (Intl.supportedValuesOf ? Intl.supportedValuesOf('timeZone') : []), []);

  return html`<section class="card" aria-labelledby="usage-title" id="usage">
    <h2 id="usage-title">Usage ${applied.customer ? html`<span class="muted">of customer</span> <span class="pill" id="drill-customer">${applied.customer}</span>` : html`<span class="muted">per customer</span>`}</h2>
    ${applied.customer ? html`<p><a href=${link('metrics', [metric.slug], { ...applied, customer: '', window: 'none' })} id="all-customers">← All customers</a>
      ${eventType ? html` · <a href=${link('events', [], { slug: eventType, customer: applied.customer })}>This customer's events</a>` : null}</p>` : null}
    <form class="form-grid usage-form" id="usage-form" onSubmit=${submit} aria-label="Usage period">
      <${Field} id=${`${id}-start`} label="Start (inclusive)" hint="A date (midnight in the time zone) or an instant">
        <input id=${`${id}-start`} value=${form.start} spellcheck=${false} onInput=${(e) => setForm({ ...form, start: e.currentTarget.value })} />
      <//>
      <${Field} id=${`${id}-end`} label="End (exclusive)">
        <input id=${`${id}-end`} value=${form.end} spellcheck=${false} onInput=${(e) => setForm({ ...form, end: e.currentTarget.value })} />
      <//>
      <${Field} id=${`${id}-window`} label="Window">
        <select id=${`${id}-window`} value=${form.window === 'none' ? '' : form.window} disabled=${metric.period === 'all_time'}
          onChange=${(e) => setForm({ ...form, window: e.currentTarget.value })}>
          <option value="">none (whole period)</option><option value="hour">hour</option><option value="day">day</option><option value="month">month</option>
        </select>
      <//>
      <${Field} id=${`${id}-tz`} label="Time zone">
        <input id=${`${id}-tz`} value=${form.tz} list=${`${id}-zones`} spellcheck=${false} onInput=${(e) => setForm({ ...form, tz: e.currentTarget.value })} />
        <datalist id=${`${id}-zones`}>${zones.map((z) => html`<option value=${z}></option>`)}</datalist>
      <//>
      <${Field} id=${`${id}-customer`} label="Customer (optional)">
        <input id=${`${id}-customer`} value=${form.customer} spellcheck=${false} onInput=${(e) => setForm({ ...form, customer: e.currentTarget.value })} />
      <//>
      <${Field} id=${`${id}-asof`} label="as_of (optional)">
        <input id=${`${id}-asof`} value=${form.as_of} spellcheck=${false} placeholder="2025-12-01T00:00:00Z" onInput=${(e) => setForm({ ...form, as_of: e.currentTarget.value })} />
      <//>
      <div class="form-actions"><button class="btn btn-primary" type="submit" id="show-usage">Show usage</button></div>
    </form>
    <${ErrorBox} error=${usage.error} />
    ${usage.loading ? html`<${Spinner} />` : null}
    ${usage.data ? html`<div id="usage-result">
      <p class="muted">${usage.data.start_date} to ${usage.data.end_date}${usage.data.period === 'all_time' ? ' (all-time total)' : ''}${usage.data.version ? ` · version ${usage.data.version}` : ''}</p>
      ${chart && chart.x.length ? html`<${TimeChart} id="usage-chart" x=${chart.x} series=${chart.series} tz=${applied.tz} yLabel=${metric.slug}
          xRange=${period} label=${`${metric.name} per ${applied.window}, ${applied.tz}`} />
        ${chart.dropped ? html`<p class="hint">${chart.dropped} more series are not drawn (the largest 8 are).</p>` : null}` : null}
      <${DataTable} id="usage-table" label="Usage" rows=${rows} empty="No usage in this period (customers without usage are absent)."
        columns=${[
          { key: 'customer_id', label: 'Customer', render: (r) => (applied.customer ? cellText(r.customer_id)
            : html`<a href=${link('metrics', [metric.slug], { ...applied, customer: r.customer_id, window: applied.window === 'none' ? 'day' : applied.window })} class="drill">${cellText(r.customer_id)}</a>`) },
          ...dims.map((d) => ({ key: d })),
          ...(windowed ? [{ key: 'window_start', label: `window start (${applied.tz === 'UTC' ? 'UTC' : 'UTC; windows follow the zone'})`, cls: 'mono' }] : []),
          { key: 'value', label: 'Value', cls: 'num' },
          ...(!windowed && max > 0 ? [{ key: 'share', label: 'Share', render: (r) => html`<meter min="0" max=${max} value=${Number(r.value) || 0} aria-label=${`${cellText(r.customer_id)}: ${r.value}`}></meter>` }] : []),
        ]} />
    </div>` : null}
  </section>`;
}

function MetricDetail({ slug, route }) {
  const metric = useAsync(() => get(`/billable_metrics/${encodeURIComponent(slug)}`), [slug]);
  const [del, setDel] = useState(null);
  if (metric.loading && !metric.data) return html`<${Spinner} />`;
  if (metric.error) {
    return html`<${PageHeader} title="Billable metric" /><${ErrorBox} error=${metric.error} /><p><a href=${link('metrics')}>All metrics</a></p>`;
  }
  const m = metric.data;
  const remove = async () => {
    setDel({ busy: true });
    try {
      await api('DELETE', `/billable_metrics/${encodeURIComponent(m.slug)}`);
      navigate('metrics');
    } catch (err) {
      setDel({ error: err });
    }
  };
  return html`
    <${PageHeader} title=${m.name}>
      <a class="btn" href=${link('metrics')}>All metrics</a>
      <button class="btn btn-danger" type="button" onClick=${() => setDel({})}>Delete…</button>
    <//>
    <section class="card" aria-labelledby="def-title">
      <h2 id="def-title">Definition <code class="muted">${m.slug}</code></h2>
      ${m.builder ? html`<p>${m.builder.aggregation}${m.builder.field ? html` of <code>${m.builder.field}</code>` : ''} over <code>${m.builder.usage_event}</code>
        ${m.builder.filters?.length ? html` where ${m.builder.filters.map((f) => html`<code>${f.field} ${f.op} ${JSON.stringify(f.value)}</code> `)}` : ''}
        ${m.builder.group_by?.length ? html` by ${m.builder.group_by.join(', ')}` : ''}</p>` : null}
      <details open=${!m.builder}><summary>SQL it runs</summary><pre tabindex="0">${m.sql}</pre></details>
    </section>
    <${Usage} metric=${m} route=${route} />
    <${Dialog} id="delete-metric-dialog" open=${!!del} onClose=${() => setDel(null)} title=${`Delete metric “${m.name}”?`}>
      <p>Usage of <code>${m.slug}</code> can no longer be asked for. Events are not touched.</p>
      <${ErrorBox} error=${del?.error} />
      <div class="form-actions">
        <button class="btn" type="button" onClick=${() => setDel(null)}>Cancel</button>
        <button class="btn btn-danger" type="button" disabled=${del?.busy} onClick=${remove}>Delete</button>
      </div>
    <//>`;
}

export function Metrics({ route }) {
  const slug = route.rest[0];
  return slug ? html`<${MetricDetail} key=${slug} slug=${slug} route=${route} />` : html`<${MetricList} route=${route} />`;
}
