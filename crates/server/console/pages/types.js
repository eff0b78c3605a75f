// The field type picker: every type of the contract, composed into its text
// (`Decimal(12,4)`, `Nullable(Int64)`, `LowCardinality(Nullable(String))`, …).

import { html } from '../ui.js';

export const BASE_TYPES = [
  'String', 'UUID', 'Int8', 'Int16', 'Int32', 'Int64', 'UInt8', 'UInt16', 'UInt32', 'UInt64',
  'Float32', 'Float64', 'Decimal', 'Bool', 'Date', 'Date32', 'DateTime', 'DateTime64',
];

export const newType = (base = 'String') => ({ base, p: 18, s: 2, precision: '', nullable: false, lowcard: false });

export function typeText(t) {
  let s = t.base;
  if (t.base === 'Decimal') s = `Decimal(${t.p},${t.s})`;
  if (t.base === 'DateTime64' && t.precision !== '') s = `DateTime64(${t.precision})`;
  if (t.nullable) s = `Nullable(${s})`;
  if (t.lowcard) s = `LowCardinality(${s})`;
  return s;
}

/** Problems with a type's parameters, or null. */
export function typeProblem(t) {
  if (t.base !== 'Decimal') return null;
  const p = Number(t.p);
  const s = Number(t.s);
  if (!Number.isInteger(p) || p < 1 || p > 38) return 'Decimal precision P must be 1–38';
  if (!Number.isInteger(s) || s < 0 || s > p) return 'Decimal scale S must be 0–P';
  return null;
}

/** Base type select plus its parameters and the two wrappers. `forceNullable` for PATCH. */
export function TypePicker({ id, value, onChange, forceNullable = false, label = 'Type' }) {
  const set = (patch) => onChange({ ...value, ...patch });
  return html`<div class="type-picker" role="group" aria-label=${label}>
    <div class="field">
      <label for=${`${id}-base`}>${label}</label>
      <select id=${`${id}-base`} value=${value.base} onChange=${(e) => set({ base: e.currentTarget.value })}>
        ${BASE_TYPES.map((b) => html`<option value=${b}>${b}</option>`)}
      </select>
    </div>
    ${value.base === 'Decimal' ? html`
      <div class="field narrow"><label for=${`${id}-p`}>P</label>
        <input id=${`${id}-p`} type="number" min="1" max="38" value=${value.p} onInput=${(e) => set({ p: e.currentTarget.value })} /></div>
      <div class="field narrow"><label for=${`${id}-s`}>S</label>
        <input id=${`${id}-s`} type="number" min="0" max="38" value=${value.s} onInput=${(e) => set({ s: e.currentTarget.value })} /></div>` : null}
    ${value.base === 'DateTime64' ? html`
      <div class="field narrow"><label for=${`${id}-prec`}>Precision</label>
        <select id=${`${id}-prec`} value=${value.precision} onChange=${(e) => set({ precision: e.currentTarget.value })}>
          <option value="">default</option>
          ${[0, 1, 2, 3, 4, 5, 6, 7, 8, 9].map((n) => html`<option value=${String(n)}>${n}</option>`)}
        </select></div>` : null}
    <div class="checks">
      <label class="check"><input type="checkbox" id=${`${id}-nullable`} checked=${forceNullable || value.nullable} disabled=${forceNullable}
        onChange=${(e) => set({ nullable: e.currentTarget.checked })} /> Nullable</label>
      <label class="check"><input type="checkbox" id=${`${id}-lowcard`} checked=${value.lowcard}
        onChange=${(e) => set({ lowcard: e.currentTarget.checked })} /> LowCardinality</label>
    </div>
  </div>`;
}
