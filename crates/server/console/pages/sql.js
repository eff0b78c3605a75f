// SQL: an editor, the organisation's tables and columns, params and as_of, the results as a
// table and (for time + number columns) a chart, and downloads as CSV or Parquet.

import { useMemo, useRef, useState } from '../vendor/preact-hooks.mjs';
import { ident, sql } from '../api.js';
import { TimeChart, pivot } from '../chart.js';
import { tableColumns, useEventTypes } from '../data.js';
import { DataTable, ErrorBox, Field, PageHeader, Spinner, fmtBytes, fmtInt, html, isNumericType, isTimeType, markTiming, parseInstant, useId, useReady } from '../ui.js';

const SHOWN = 1000;
const STORE = 'meterbase.sql';
let runs = 0;

/** "… at Line: 3, Column: 14" in an engine message → {line, column}. */
function errorPosition(detail) {
  const m = /Line: (\d+), Column: (\d+)/.exec(detail || '');
  return m ? { line: Number(m[1]), column: Number(m[2]) } : null;
}

function offsetOf(text, line, column) {
  const lines = text.split('\n');
  let off = 0;
  for (let i = 0; i < line - 1 && i < lines.length; i += 1) off += lines[i].length + 1;
  return Math.min(text.length, off + Math.max(0, column - 1));
}

function Tables({ types, onInsert }) {
  return html`<nav class="card tables" aria-labelledby="tables-title">
    <h2 id="tables-title">Tables</h2>
    ${types.length === 0 ? html`<p class="muted">No event types yet.</p>` : null}
    <ul>${types.map((t, i) => html`<li>
      <details open=${i === 0 && types.length <= 3}>
        <summary><code>${t.api_slug}</code></summary>
        <button class="btn btn-link" type="button" onClick=${() => onInsert(ident(t.api_slug))}>Insert table name</button>
        <ul class="columns">${tableColumns(t).map((c) => html`<li>
          <button class="btn btn-link" type="button" title=${`Insert ${c.name}`} onClick=${() => onInsert(c.name)}><code>${c.name}</code></button>
          <span class="muted">${c.type}${c.note ? ` · ${c.note}` : ''}</span></li>`)}</ul>
      </details></li>`)}</ul>
  </nav>`;
}

function ResultChart({ result }) {
  const id = useId('chart');
  const times = result.columns.filter((c) => isTimeType(c.type));
  const nums = result.columns.filter((c) => isNumericType(c.type));
  const texts = result.columns.filter((c) => /utf8|string/i.test(c.type));
  const [xKey, setX] = useState(times[0]?.name);
  const [yKey, setY] = useState(nums[0]?.name);
  const [split, setSplit] = useState('');
  const x = times.find((c) => c.name === xKey)?.name || times[0]?.name;
  const y = nums.find((c) => c.name === yKey)?.name || nums[0]?.name;
  const data = useMemo(() => (x && y ? pivot(result.rows, x, y, split || null) : null), [result, x, y, split]);
  if (!times.length || !nums.length) {
    return html`<p class="muted" id="no-chart">A chart needs a time column and a number column.</p>`;
  }
  return html`<div class="result-chart">
    <div class="form-grid chart-controls">
      <${Field} id=${`${id}-x`} label="Time">
        <select id=${`${id}-x`} value=${x} onChange=${(e) => setX(e.currentTarget.value)}>${times.map((c) => html`<option value=${c.name}>${c.name}</option>`)}</select>
      <//>
      <${Field} id=${`${id}-y`} label="Value">
        <select id=${`${id}-y`} value=${y} onChange=${(e) => setY(e.currentTarget.value)}>${nums.map((c) => html`<option value=${c.name}>${c.name}</option>`)}</select>
      <//>
      <${Field} id=${`${id}-split`} label="One line per">
        <select id=${`${id}-split`} value=${split} onChange=${(e) => setSplit(e.currentTarget.value)}>
          <option value="">(one line)</option>${texts.map((c) => html`<option value=${c.name}>${c.name}</option>`)}</select>
      <//>
    </div>
    ${data ? html`<${TimeChart} id="sql-chart" x=${data.x} series=${data.series} yLabel=${y} height=${220} label=${`${y} over ${x}`} />` : null}
    ${data?.dropped ? html`<p class="hint">${data.dropped} more lines are not drawn (the largest 8 are).</p>` : null}
  </div>`;
}

export function Sql() {
  const id = useId('sql');
  const types = useEventTypes();
  const saved = JSON.parse(sessionStorage.getItem(STORE) || 'null') || {};
  const first = types.data?.[0]?.api_slug;
  const [text, setText] = useState(saved.text ?? null); // null: not typed yet, show an example
  const [paramsText, setParamsText] = useState(saved.params || '{}');
  const [asOf, setAsOf] = useState(saved.asOf || '');
  const [state, setState] = useState({});
  const [dl, setDl] = useState(null);
  const editor = useRef(null);
  useReady('sql', !types.loading);

  const query = text ?? (first ? `SELECT customer_id, count(*) AS events\nFROM ${ident(first)}\nGROUP BY customer_id\nORDER BY events DESC\nLIMIT 100` : 'SELECT 1 AS one');
  let params = null;
  let paramsError = null;
  try {
    params = JSON.parse(paramsText || '{}');
    if (!params || typeof params !== 'object' || Array.isArray(params)) paramsError = 'Params must be a JSON object, like {"customer": "cus_1"}';
  } catch (e) {
    paramsError = `Not JSON: ${e.message}`;
  }
  const asOfParsed = parseInstant(asOf);
  const asOfError = asOfParsed === undefined ? 'Not a time: use RFC 3339, like 2025-12-01T00:00:00Z' : null;
  const ok = !paramsError && !asOfError && query.trim();

  const insert = (s) => {
    const el = editor.current;
    const cur = query;
    const at = el ? el.selectionStart : cur.length;
    const end = el ? el.selectionEnd : at;
    const next = cur.slice(0, at) + s + cur.slice(end);
    setText(next);
    requestAnimationFrame(() => { if (el) { el.focus(); el.setSelectionRange(at + s.length, at + s.length); } });
  };
  const run = async () => {
    if (!ok) return;
    sessionStorage.setItem(STORE, JSON.stringify({ text: query, params: paramsText, asOf }));
    const t0 = performance.now();
    setState({ running: true });
    setDl(null);
    try {
      const r = await sql(query, params, { asOf: asOfParsed });
      setState({ result: r, ms: Math.round(performance.now() - t0), seq: ++runs });
      requestAnimationFrame(() => markTiming('sql_query', t0));
    } catch (err) {
      setState({ error: err, pos: errorPosition(err.problem?.detail) });
    }
  };
  const download = async (kind) => {
    if (!ok) return;
    const accept = kind === 'csv' ? 'text/csv' : 'application/vnd.apache.parquet';
    setDl({ busy: kind });
    try {
      const resp = await sql(query, params, { asOf: asOfParsed, accept });
      const blob = await resp.blob();
      const name = `query.${kind === 'csv' ? 'csv' : 'parquet'}`;
      const url = URL.createObjectURL(blob);
      const a = document.createElement('a');
      a.href = url;
      a.download = name;
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
      setDl({ done: `Downloaded ${name} (${fmtBytes(blob.size)}).` });
    } catch (err) {
      setDl({ error: err, pos: errorPosition(err.problem?.detail) });
    }
  };
  const goTo = (pos) => {
    const el = editor.current;
    if (!el || !pos) return;
    const off = offsetOf(query, pos.line, pos.column);
    el.focus();
    el.setSelectionRange(off, Math.min(query.length, off + 1));
  };
  const r = state.result;
  const errPos = state.pos || dl?.pos;

  return html`
    <${PageHeader} title="SQL" />
    <div class="sql-layout">
      ${types.loading && !types.data ? html`<${Spinner} />` : html`<${Tables} types=${types.data || []} onInsert=${insert} />`}
      <div class="sql-main">
        <form class="card" id="sql-form" onSubmit=${(e) => { e.preventDefault(); run(); }} aria-label="Query">
          <${Field} id=${`${id}-text`} label="Query (Ctrl+Enter runs it)">
            <textarea id=${`${id}-text`} ref=${editor} class="editor" rows="6" spellcheck=${false} value=${query}
              aria-invalid=${state.error ? 'true' : undefined} aria-describedby=${state.error ? 'sql-error' : undefined}
              onInput=${(e) => setText(e.currentTarget.value)}
              onKeyDown=${(e) => { if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); run(); } }}></textarea>
          <//>
          <div id="sql-error">${state.error ? html`<${ErrorBox} error=${state.error} />` : null}
            ${errPos ? html`<button class="btn btn-small" type="button" onClick=${() => goTo(errPos)}>Go to line ${errPos.line}, column ${errPos.column}</button>` : null}</div>
          <div class="form-grid">
            <${Field} id=${`${id}-params`} label="Params (JSON for $name)" error=${paramsError}>
              <textarea id=${`${id}-params`} class="editor small" rows="2" spellcheck=${false} value=${paramsText}
                aria-invalid=${paramsError ? 'true' : undefined} onInput=${(e) => setParamsText(e.currentTarget.value)}></textarea>
            <//>
            <${Field} id=${`${id}-asof`} label="as_of (optional)" hint="See the data as it stood then" error=${asOfError}>
              <input id=${`${id}-asof`} value=${asOf} spellcheck=${false} placeholder="2025-12-01T00:00:00Z"
                aria-invalid=${asOfError ? 'true' : undefined} onInput=${(e) => setAsOf(e.currentTarget.value)} />
            <//>
          </div>
          <div class="form-actions">
            <button class="btn btn-primary" type="submit" id="run-sql" disabled=${!ok || state.running}>${state.running ? 'Running…' : 'Run'}</button>
            <button class="btn" type="button" id="download-csv" disabled=${!ok || !!dl?.busy} onClick=${() => download('csv')}>Download CSV</button>
            <button class="btn" type="button" id="download-parquet" disabled=${!ok || !!dl?.busy} onClick=${() => download('parquet')}>Download Parquet</button>
            ${dl?.busy ? html`<span class="muted" role="status">Preparing ${dl.busy}…</span>` : null}
            ${dl?.done ? html`<span class="ok" role="status" id="download-status">${dl.done}</span>` : null}
          </div>
          ${dl?.error ? html`<${ErrorBox} error=${dl.error} title="Download failed" />` : null}
        </form>
        ${state.running ? html`<${Spinner} label="Running the query…" />` : null}
        ${r ? html`<section class="card" aria-labelledby="results-title" id="sql-results">
          <h2 id="results-title">Results <span class="muted">${fmtInt(r.rows.length)} rows · ${state.ms} ms</span></h2>
          <${ResultChart} result=${r} key=${state.seq} />
          ${r.rows.length > SHOWN ? html`<p class="hint">Showing the first ${fmtInt(SHOWN)} rows; download for all of them.</p>` : null}
          <${DataTable} id="sql-table" label="Query results" rows=${r.rows.slice(0, SHOWN)} empty="The query returned no rows."
            columns=${r.columns.map((c) => ({ key: c.name, label: html`${c.name} <span class="type">${c.type}</span>` }))} />
        </section>` : null}
      </div>
    </div>`;
}
