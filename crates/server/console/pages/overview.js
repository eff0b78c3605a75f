// Overview: per event type, events stored, last event, ingest rate over the last hour, where
// the rows are (buffered or persisted) and how many bytes; the server's health.

import { useMemo } from '../vendor/preact-hooks.mjs';
import { get, ident, sql } from '../api.js';
import { TimeChart } from '../chart.js';
import { useEventTypes } from '../data.js';
import { link } from '../nav.js';
import { DataTable, ErrorBox, PageHeader, Spinner, fmtBytes, fmtInt, html, isoSeconds, useAsync, useReady } from '../ui.js';

/** One query for every type: `SELECT 0 AS i, count(*) … FROM "a" UNION ALL SELECT 1 …`. */
function countQuery(types) {
  return types.map((t, i) => `SELECT ${i} AS i, count(*) AS n, max(timestamp) AS last_ts, max(_ingested_at) AS last_in FROM ${ident(t.api_slug)}`)
    .join('\nUNION ALL\n');
}

function rateQuery(types) {
  return `${types.map((t, i) => `SELECT ${i} AS i, date_trunc('minute', _ingested_at) AS t, count(*) AS n FROM ${ident(t.api_slug)} WHERE _ingested_at >= $since GROUP BY date_trunc('minute', _ingested_at)`)
    .join('\nUNION ALL\n')}\nORDER BY t`;
}

function Health({ tick }) {
  const h = useAsync(() => fetch('/healthz', { cache: 'no-store' }).then(async (r) => ({ ok: r.ok, body: await r.json().catch(() => null) })), [tick]);
  if (h.loading && !h.data) return html`<${Spinner} label="Checking server health…" />`;
  if (h.error) return html`<${ErrorBox} error=${h.error} title="Health check failed" />`;
  const q = h.data.body?.queries || {};
  return html`<section class="card" aria-labelledby="health-title" id="health">
    <h2 id="health-title">Server</h2>
    <dl class="stats">
      <div><dt>Status</dt><dd class=${h.data.ok ? 'ok' : 'bad'} id="health-status">${h.data.body?.status ?? 'unreachable'}</dd></div>
      <div><dt>Queries running</dt><dd>${fmtInt(q.running)}</dd></div>
      <div><dt>Queued</dt><dd>${fmtInt(q.queued)}</dd></div>
      <div><dt>Refused</dt><dd>${fmtInt(q.refused)}</dd></div>
      <div><dt>Cancelled</dt><dd>${fmtInt(q.cancelled)}</dd></div>
    </dl>
  </section>`;
}

export function Overview() {
  const types = useEventTypes();
  const list = types.data || [];
  const counts = useAsync(async () => {
    if (!types.data?.length) return [];
    const r = await sql(countQuery(types.data));
    const out = [];
    for (const row of r.rows) out[row.i] = row;
    return out;
  }, [types.data]);
  const stats = useAsync(() => Promise.all((types.data || []).map((t) => get(`/rawmetrics/${encodeURIComponent(t.api_slug)}/stats`).catch((e) => ({ error: e })))), [types.data]);
  const rate = useAsync(async () => {
    if (!types.data?.length) return null;
    const now = Math.floor(Date.now() / 60000) * 60;
    const since = now - 59 * 60;
    const r = await sql(rateQuery(types.data), { since: isoSeconds(new Date(since * 1000)) });
    const x = Array.from({ length: 60 }, (_, k) => since + k * 60);
    const series = types.data.map((t) => ({ label: t.api_slug, values: x.map(() => 0) }));
    for (const row of r.rows) {
      const k = Math.round((Date.parse(row.t) / 1000 - since) / 60);
      if (k >= 0 && k < 60) series[row.i].values[k] = row.n / 60;
    }
    return { x, series };
  }, [types.data]);

  const loaded = !types.loading && !counts.loading && !stats.loading && !rate.loading;
  useReady('overview', loaded);

  const rows = useMemo(() => list.map((t, i) => ({ t, c: counts.data?.[i], s: stats.data?.[i] })), [list, counts.data, stats.data]);

  return html`
    <${PageHeader} title="Overview">
      <button class="btn" type="button" id="overview-refresh" onClick=${() => types.reload()}>Refresh</button>
    <//>
    <div class="grid-overview">
      <${Health} tick=${types.data} />
      <section class="card span-2" aria-labelledby="rate-title">
        <h2 id="rate-title">Events per second, last hour <span class="muted">(by arrival time, per minute, UTC)</span></h2>
        ${rate.error ? html`<${ErrorBox} error=${rate.error} />` : null}
        ${rate.loading && !rate.data ? html`<${Spinner} />` : null}
        ${rate.data ? html`<${TimeChart} id="overview-chart" x=${rate.data.x} series=${rate.data.series} yLabel="events/s"
            label="Events per second ingested over the last hour, one line per event type" height=${220} />` : null}
        ${!types.loading && list.length === 0 ? html`<p class="muted">No event types yet.</p>` : null}
      </section>
    </div>
    <section class="card" aria-labelledby="types-title">
      <h2 id="types-title">Event types</h2>
      ${types.error ? html`<${ErrorBox} error=${types.error} />` : null}
      ${counts.error ? html`<${ErrorBox} error=${counts.error} title="Counting events failed" />` : null}
      ${types.loading && !types.data ? html`<${Spinner} />` : html`<${DataTable} id="overview-table" label="Event types and their storage"
        empty=${html`No event types yet. <a href=${link('event-types')}>Create one</a>, then send events to it.`}
        rows=${rows}
        columns=${[
          { key: 'type', label: 'Event type', render: (r) => html`<a href=${link('events', [], { slug: r.t.api_slug })}>${r.t.name}</a> <code class="muted">${r.t.api_slug}</code>` },
          { key: 'n', label: 'Events stored', cls: 'num', render: (r) => (r.c ? fmtInt(r.c.n) : counts.loading ? '…' : '—') },
          { key: 'last', label: 'Last event', render: (r) => r.c?.last_ts || r.s?.latest_timestamp || '—' },
          { key: 'in', label: 'Last arrival', render: (r) => r.c?.last_in || '—' },
          { key: 'buf', label: 'Buffered rows', cls: 'num', render: (r) => (r.s && !r.s.error ? fmtInt(r.s.buffered.rows) : '—') },
          { key: 'per', label: 'Persisted rows (files)', cls: 'num', render: (r) => (r.s && !r.s.error ? `${fmtInt(r.s.persisted.rows)} (${fmtInt(r.s.persisted.files)})` : '—') },
          { key: 'bytes', label: 'Storage', cls: 'num', render: (r) => (r.s && !r.s.error ? html`${fmtBytes(r.s.persisted.bytes)} <span class="muted">+ ${fmtBytes(r.s.buffered.bytes)} in memory</span>` : '—') },
          { key: 'del', label: 'Deletions', cls: 'num', render: (r) => (r.s && !r.s.error ? fmtInt(r.s.deletions) : '—') },
        ]} />`}
      <p class="hint">Events stored counts live events (one per unique key, deletions applied). Buffered rows are in memory and in the
        write-ahead log; persisted rows are in Parquet files and include replaced versions until compaction.</p>
    </section>`;
}
