// Hash routes: `#/page/part?param=value`, so the console works from any path it is served at.

/** `#/events/x?customer=a` → {page:'events', rest:['x'], params}. */
export function parseHash() {
  const h = location.hash.replace(/^#\/?/, '');
  const qi = h.indexOf('?');
  const path = qi < 0 ? h : h.slice(0, qi);
  const parts = path.split('/').filter(Boolean).map((p) => {
    try { return decodeURIComponent(p); } catch (_) { return p; }
  });
  return {
    page: parts[0] || 'overview',
    rest: parts.slice(1),
    params: new URLSearchParams(qi < 0 ? '' : h.slice(qi + 1)),
  };
}

/** A console link: `link('events', [], {customer: 'a'})` → `#/events?customer=a`. */
export function link(page, rest = [], params = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const qs = q.toString();
  return `#/${[page, ...rest].map(encodeURIComponent).join('/')}${qs ? `?${qs}` : ''}`;
}

export function navigate(page, rest, params, replace = false) {
  const url = link(page, rest, params);
  if (replace) {
    history.replaceState(null, '', url);
    window.dispatchEvent(new HashChangeEvent('hashchange'));
  } else location.hash = url;
}

export function startNavigation() {
  window.__navStart = performance.now();
  window.__navPending = true;
  delete document.body.dataset.ready;
}

