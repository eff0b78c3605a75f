// Time-series charts with uPlot (canvas; labels and legend are set as text, never markup).

import { useEffect, useRef } from './vendor/preact-hooks.mjs';
import uPlot from './vendor/uPlot.esm.js';
import { html } from './ui.js';

const PALETTE = ['#1f6fb4', '#d1495b', '#2a9d55', '#e08a1e', '#7b5ea7', '#8c564b', '#c2459b', '#178ca4', '#6b6b6b', '#9a9a1a'];

export const color = (i) => PALETTE[i % PALETTE.length];

/**
 * `x`: seconds since the epoch, ascending; `series`: [{label, values}] (null = gap).
 * `tz`: the IANA zone the axis shows; `bars`: draw bars instead of lines; `xRange`: [from, to]
 * seconds to show (default: the data's).
 */
export function TimeChart({ x, series, tz = 'UTC', label, height = 260, yLabel = '', bars = false, xRange = null, id }) {
  const ref = useRef(null);
  useEffect(() => {
    const el = ref.current;
    if (!el || !x.length) return undefined;
    const width = () => Math.max(260, el.clientWidth || 600);
    const paths = bars ? uPlot.paths.bars({ size: [0.6, 40] }) : undefined;
    const u = new uPlot({
      width: width(),
      height,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), tz),
      // One point alone would get a range of years: show the period asked for, or an hour around it.
      scales: { x: { time: true, range: (u, lo, hi) => (xRange || (lo === hi ? [lo - 3600, hi + 3600] : [lo, hi])) } },
      series: [
        { label: `time (${tz})` },
        ...series.map((s, i) => ({
          label: s.label,
          stroke: color(i),
          fill: bars ? `${color(i)}99` : undefined,
          width: bars ? 1 : 2,
          paths,
          points: { show: !bars && x.length <= 40 },
          spanGaps: false,
        })),
      ],
      axes: [{}, { label: yLabel, size: 64 }],
      legend: { live: true },
    }, [x, ...series.map((s) => s.values)], el);
    const ro = new ResizeObserver(() => {
      const w = width();
      if (w !== u.width) u.setSize({ width: w, height });
    });
    ro.observe(el);
    return () => { ro.disconnect(); u.destroy(); };
  }, [x, series, tz, height, bars, yLabel, xRange]);
  if (!x.length) return html`<p class="muted">Nothing to chart.</p>`;
  return html`<figure class="chart" id=${id}>
    <div ref=${ref} class="chart-canvas" role="img" aria-label=${label}></div>
    <figcaption class="sr-only">${label}</figcaption>
  </figure>`;
}

/** Seconds since the epoch of an RFC 3339 instant or a `YYYY-MM-DD` date (UTC). */
export const toSeconds = (v) => {
  const ms = Date.parse(v);
  return Number.isNaN(ms) ? null : ms / 1000;
};

/**
 * Rows → aligned chart data: `xKey` is the time column, `yKey` the value, `splitKey` names
 * the series (null: one series called `yKey`). At most `maxSeries` series (largest totals).
 */
export function pivot(rows, xKey, yKey, splitKey, maxSeries = 8) {
  const xs = new Set();
  const bySeries = new Map();
  for (const r of rows) {
    const t = toSeconds(r[xKey]);
    if (t === null) continue;
    xs.add(t);
    const name = splitKey ? cellName(r, splitKey) : yKey;
    if (!bySeries.has(name)) bySeries.set(name, new Map());
    const v = r[yKey] === null || r[yKey] === undefined ? null : Number(r[yKey]);
    const m = bySeries.get(name);
    m.set(t, (m.get(t) ?? 0) + (v ?? 0));
  }
  const x = [...xs].sort((a, b) => a - b);
  let series = [...bySeries.entries()].map(([label, m]) => ({
    label,
    values: x.map((t) => (m.has(t) ? m.get(t) : null)),
    total: [...m.values()].reduce((a, b) => a + Math.abs(b), 0),
  }));
  const dropped = Math.max(0, series.length - maxSeries);
  series = series.sort((a, b) => b.total - a.total).slice(0, maxSeries);
  return { x, series, dropped };
}

function cellName(r, keys) {
  return (Array.isArray(keys) ? keys : [keys]).map((k) => (r[k] === null ? 'null' : String(r[k]))).join(' · ');
}
