// Upload CSV: choose a file (it streams from disk, so several GiB are fine), map its columns
// to fields (pre-filled from the header row by name), dry run, see every problem at its
// line and column with the cell's value, then store it.

import { useEffect, useMemo, useRef, useState } from '../vendor/preact-hooks.mjs';
import { uploadCsv } from '../api.js';
import { readHeader, readRows, readable } from '../csv.js';
import { useEventTypes } from '../data.js';
import { link, navigate } from '../nav.js';
import { DataTable, ErrorBox, Field, PageHeader, fmtBytes, fmtInt, html, useId, useReady } from '../ui.js';

const norm = (s) => s.toLowerCase().replace(/[^a-z0-9]/g, '');

/** Field → column: the column of the same name, else the one that matches ignoring case and punctuation. */
function guessMapping(fields, header) {
  const m = {};
  for (const f of fields) {
    if (header.includes(f.name)) m[f.name] = f.name;
    else {
      const hits = header.filter((c) => norm(c) === norm(f.name));
      m[f.name] = hits.length === 1 ? hits[0] : '';
    }
  }
  return m;
}

function fieldsOf(type) {
  if (!type) return [];
  return [
    { name: 'customer_id', type: 'String', required: true },
    { name: 'timestamp', type: type.dataschema.timestamp, required: true },
    ...Object.entries(type.dataschema.data || {}).map(([name, t]) => ({ name, type: t, required: !/nullable\(/i.test(t) })),
  ];
}

function Progress({ label, loaded, total, onCancel, id }) {
  const pct = total ? Math.min(100, Math.round((loaded / total) * 100)) : 0;
  return html`<div class="progress" role="status" id=${id}>
    <label for=${`${id}-bar`}>${label}</label>
    <progress id=${`${id}-bar`} max="100" value=${pct}>${pct}%</progress>
    <span class="muted">${loaded >= total && total ? 'Sent; the server is checking the rows…' : `${fmtBytes(loaded)} of ${fmtBytes(total)} (${pct}%)`}</span>
    ${onCancel ? html`<button class="btn btn-small" type="button" onClick=${onCancel}>Cancel</button>` : null}
  </div>`;
}

/** Problems listed, and the offending rows as a grid with the offending cells marked. */
function Problems({ errors, header, rows, reading }) {
  const col = (pointer) => header.indexOf(pointer);
  const valueOf = (e) => {
    const r = rows?.get(e.line);
    if (!r) return reading ? '…' : '';
    if (e.line === 1 && e.pointer) return e.pointer;
    const i = col(e.pointer);
    if (i < 0) return '';
    return i < r.cells.length ? r.cells[i] : '(missing)';
  };
  const byLine = new Map();
  for (const e of errors) {
    if (!byLine.has(e.line)) byLine.set(e.line, []);
    byLine.get(e.line).push(e);
  }
  const gridLines = [...byLine.keys()].filter((l) => l > 1).slice(0, 100);
  return html`
    <h3>Problems</h3>
    <${DataTable} id="csv-errors" label="Problems found in the file" rows=${errors}
      rowClass=${() => 'error-row'}
      columns=${[
        { key: 'line', label: 'Line', cls: 'num', render: (e) => String(e.line) },
        { key: 'pointer', label: 'Column', render: (e) => (e.pointer ? e.pointer : html`<span class="muted">(whole row)</span>`) },
        { key: 'value', label: 'Value', cls: 'mono bad-value', render: (e) => { const v = valueOf(e); return v === '' && rows ? html`<span class="muted">(empty)</span>` : v; } },
        { key: 'message', label: 'Reason', render: (e) => e.message },
      ]} />
    ${gridLines.length ? html`
      <h3>Rows with problems</h3>
      <p class="hint">Marked cells are the ones refused; hover or focus one for the reason.</p>
      <div class="table-wrap" tabindex="0" role="region" aria-label="Rows with problems, as in the file" id="csv-error-rows">
        <table class="grid">
          <thead><tr><th scope="col">Line</th>${header.map((h) => html`<th scope="col">${h}</th>`)}</tr></thead>
          <tbody>${gridLines.map((line) => {
            const errs = byLine.get(line);
            const whole = errs.filter((e) => !e.pointer || col(e.pointer) < 0);
            const cells = rows?.get(line)?.cells;
            return html`<tr class=${whole.length ? 'row-error' : undefined} data-line=${line}>
              <th scope="row">${line}</th>
              ${header.map((h, i) => {
                const bad = errs.filter((e) => e.pointer === h);
                const v = cells ? (i < cells.length ? cells[i] : '') : reading ? '…' : '';
                return bad.length
                  ? html`<td class="cell-error" data-line=${line} data-column=${h} tabindex="0" title=${bad.map((e) => e.message).join('; ')}
                      aria-label=${`Line ${line}, column ${h}: ${v === '' ? 'empty' : v}: ${bad.map((e) => e.message).join('; ')}`}>${v === '' ? html`<span class="muted">(empty)</span>` : v}</td>`
                  : html`<td>${v}</td>`;
              })}
            </tr>
            ${whole.length ? html`<tr class="row-error-reason"><td></td><td colspan=${header.length}>${whole.map((e) => e.message).join('; ')}</td></tr>` : null}`;
          })}</tbody>
        </table>
      </div>` : null}`;
}

export function Upload({ route }) {
  const id = useId('up');
  const types = useEventTypes();
  const slug = route.params.get('slug') || types.data?.[0]?.api_slug || '';
  const type = types.data?.find((t) => t.api_slug === slug);
  const fields = useMemo(() => fieldsOf(type), [type]);
  const [file, setFile] = useState(null);
  const [header, setHeader] = useState(null); // null: not read
  const [headerError, setHeaderError] = useState(null);
  const [mapping, setMapping] = useState({});
  const [ignoreUnknown, setIgnoreUnknown] = useState(false);
  const [phase, setPhase] = useState('idle'); // idle | checking | checked | storing | stored
  const [progress, setProgress] = useState({ loaded: 0, total: 0 });
  const [check, setCheck] = useState(null); // {rows, valid, errors}
  const [rows, setRows] = useState(null); // Map line → cells
  const [reading, setReading] = useState(false);
  const [result, setResult] = useState(null);
  const [error, setError] = useState(null);
  const xhr = useRef(null);
  useReady('upload', !types.loading);

  const reset = () => { setPhase('idle'); setCheck(null); setRows(null); setResult(null); setError(null); };
  useEffect(() => { setMapping(header ? guessMapping(fields, header) : {}); reset(); }, [header, fields]);

  const choose = async (e) => {
    const f = e.currentTarget.files?.[0];
    e.currentTarget.value = ''; // choosing the same (fixed) file again fires a change again
    if (!f) return;
    setFile(f);
    setHeader(null);
    setHeaderError(null);
    reset();
    if (!readable(f)) {
      setHeaderError('This browser cannot read this compressed file, so columns are matched by name on the server.');
      return;
    }
    try {
      setHeader(await readHeader(f));
    } catch (err) {
      setHeaderError(`Could not read the header row: ${err.message}`);
    }
  };

  const used = Object.values(mapping).filter(Boolean);
  const unknown = (header || []).filter((c) => !used.includes(c));
  const twice = used.filter((c, i) => used.indexOf(c) !== i);
  const missing = fields.filter((f) => f.required && header && !mapping[f.name]);
  const params = {};
  for (const f of fields) {
    const c = mapping[f.name];
    if (c && c !== f.name) params[`map.${f.name}`] = c;
  }
  if (ignoreUnknown) params.ignore_unknown_columns = 'true';

  const send = async (dry) => {
    setError(null);
    setResult(null);
    if (dry) { setCheck(null); setRows(null); }
    setPhase(dry ? 'checking' : 'storing');
    setProgress({ loaded: 0, total: file.size });
    const up = uploadCsv(slug, file, dry ? { ...params, dry_run: 'true' } : params, (loaded, total) => setProgress({ loaded, total }));
    xhr.current = up;
    try {
      const r = await up.promise;
      if (dry) {
        setCheck(r);
        setPhase('checked');
        if (r.errors?.length) await showRows(r.errors);
      } else {
        setResult(r);
        setPhase('stored');
      }
    } catch (err) {
      const errs = err.problem?.errors;
      if (Array.isArray(errs) && errs.length && errs[0].line !== undefined) {
        // Refused rows (or a header that does not fit): shown like a dry run's.
        setCheck({ rows: null, valid: null, errors: errs, refused: err });
        setPhase('checked');
        await showRows(errs);
      } else {
        setError(err);
        setPhase(dry || !check ? 'idle' : 'checked');
      }
    } finally {
      xhr.current = null;
    }
  };
  const showRows = async (errs) => {
    if (!readable(file)) return;
    setReading(true);
    try {
      setRows(await readRows(file, errs.map((e) => e.line)));
    } catch (err) {
      setError(err);
    } finally {
      setReading(false);
    }
  };

  const canCheck = file && slug && twice.length === 0 && missing.length === 0 && (phase === 'idle' || phase === 'checked' || phase === 'stored');
  const clean = check && check.errors?.length === 0 && !check.refused;

  return html`
    <${PageHeader} title="Upload CSV" />
    ${types.data && types.data.length === 0 ? html`<p class="muted">No event types yet. <a href=${link('event-types')}>Create one</a> first.</p>` : null}
    <section class="card" aria-labelledby=${`${id}-t1`}>
      <h2 id=${`${id}-t1`}>1. File</h2>
      <div class="form-grid">
        <${Field} id=${`${id}-type`} label="Event type">
          <select id=${`${id}-type`} value=${slug} onChange=${(e) => navigate('upload', [], { slug: e.currentTarget.value })}>
            ${(types.data || []).map((t) => html`<option value=${t.api_slug}>${t.name} (${t.api_slug})</option>`)}
          </select>
        <//>
        <${Field} id=${`${id}-file`} label="CSV file (with a header row; .csv, or .csv.gz)" hint="The file is sent straight from disk: it is never loaded into the page, whatever its size.">
          <input id=${`${id}-file`} type="file" accept=".csv,.gz,.zst,text/csv" onChange=${choose} />
        <//>
      </div>
      ${file ? html`<p id="chosen-file">Chosen: <strong>${file.name}</strong> <span class="muted">(${fmtBytes(file.size)})</span></p>` : null}
      ${headerError ? html`<p class="warning" role="alert">${headerError}</p>` : null}
    </section>
    ${file && header ? html`<section class="card" aria-labelledby=${`${id}-t2`}>
      <h2 id=${`${id}-t2`}>2. Columns</h2>
      <p class="hint">Matched from the header row by name; change any that is wrong.</p>
      <div class="mapping" id="csv-mapping">
        ${fields.map((f) => html`<${Field} id=${`${id}-m-${f.name}`} label=${`${f.name} · ${f.type}${f.required ? '' : ' (optional)'}`}
            error=${f.required && !mapping[f.name] ? 'Required: choose its column' : null}>
          <select id=${`${id}-m-${f.name}`} data-field=${f.name} value=${mapping[f.name] || ''}
            onChange=${(e) => { setMapping({ ...mapping, [f.name]: e.currentTarget.value }); reset(); }}>
            <option value="">(no column)</option>
            ${header.map((c) => html`<option value=${c}>${c}</option>`)}
          </select>
        <//>`)}
      </div>
      ${twice.length ? html`<p class="field-error" role="alert">A column is used twice: ${[...new Set(twice)].join(', ')}</p>` : null}
      ${unknown.length ? html`<div class="warning">
          <p>Columns that match no field: ${unknown.map((c) => html`<code>${c}</code> `)}</p>
          <label class="check"><input type="checkbox" id=${`${id}-ignore`} checked=${ignoreUnknown}
            onChange=${(e) => { setIgnoreUnknown(e.currentTarget.checked); reset(); }} /> Ignore these columns (otherwise the server refuses the file)</label>
        </div>` : null}
    </section>` : null}
    ${file ? html`<section class="card" aria-labelledby=${`${id}-t3`}>
      <h2 id=${`${id}-t3`}>3. Check, then store</h2>
      <div class="form-actions">
        <button class="btn btn-primary" type="button" id="dry-run" disabled=${!canCheck} onClick=${() => send(true)}>Check the file (dry run)</button>
        <button class="btn btn-primary" type="button" id="store" disabled=${!clean || phase !== 'checked'} onClick=${() => send(false)}>
          ${check && clean ? `Store ${fmtInt(check.rows)} rows` : 'Store'}</button>
      </div>
      ${phase === 'checking' || phase === 'storing' ? html`<${Progress} id="upload-progress" label=${phase === 'checking' ? 'Checking' : 'Storing'}
          loaded=${progress.loaded} total=${progress.total} onCancel=${() => xhr.current?.abort()} />` : null}
      <${ErrorBox} error=${error} />
      ${check ? html`<div id="dry-run-result">
        ${check.refused ? html`<${ErrorBox} error=${check.refused} title=${check.refused.problem?.title || 'Refused'} />`
          : html`<p class=${clean ? 'ok-box' : 'warning'} role="status" id="dry-run-summary">
            ${fmtInt(check.rows)} rows checked: ${fmtInt(check.valid)} valid, ${fmtInt(check.rows - check.valid)} with problems.
            ${clean ? ' Nothing was stored yet: store the file when ready.' : ' Nothing was stored. Fix the rows below in the file and choose it again.'}
            ${check.errors?.length >= 1000 ? ' (The first 1,000 problems are listed.)' : ''}</p>`}
        ${reading ? html`<p class="muted" role="status">Reading the offending rows from the file…</p>` : null}
        ${check.errors?.length ? html`<${Problems} errors=${check.errors} header=${header || []} rows=${rows} reading=${reading} />` : null}
      </div>` : null}
      ${result ? html`<p class="ok-box" role="status" id="upload-result">
          Stored <strong>${fmtInt(result.accepted)}</strong> of ${fmtInt(result.rows)} rows into <code>${slug}</code>.
          <a href=${link('events', [], { slug })}>See them in Events</a></p>` : null}
    </section>` : null}`;
}
