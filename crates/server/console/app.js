// The console's shell: sign-in, the organisation signed in to, navigation (hash routes, so
// any path serves it), sign-out.

import { render } from './vendor/preact.mjs';
import { useEffect, useState } from './vendor/preact-hooks.mjs';
import { ApiError, api, clearKey, getKey, onUnauthorized, setKey } from './api.js';
import { ErrorBox, html, useId } from './ui.js';
import { parseHash, startNavigation } from './nav.js';
import { Overview } from './pages/overview.js';
import { EventTypes } from './pages/event_types.js';
import { Events } from './pages/events.js';
import { Upload } from './pages/upload.js';
import { Sql } from './pages/sql.js';
import { Metrics } from './pages/metrics.js';

const PAGES = [
  { path: 'overview', title: 'Overview', component: Overview },
  { path: 'event-types', title: 'Event types', component: EventTypes },
  { path: 'events', title: 'Events', component: Events },
  { path: 'upload', title: 'Upload CSV', component: Upload },
  { path: 'sql', title: 'SQL', component: Sql },
  { path: 'metrics', title: 'Billable metrics', component: Metrics },
];

function useRoute() {
  const [route, setRoute] = useState(parseHash);
  useEffect(() => {
    const on = () => {
      // A nav click already started the clock (it comes first); typed URLs start it here.
      if (!window.__navPending) startNavigation();
      setRoute(parseHash());
    };
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);
  return route;
}

function SignIn({ onSignedIn, notice }) {
  const id = useId('key');
  const [key, setKeyText] = useState('');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    const k = key.trim();
    if (!k) { setError(new ApiError(0, { title: 'Enter an API key' })); return; }
    setBusy(true);
    setError(null);
    try {
      // The key's organisation: tells whether the key is good, and whose data this is.
      const org = await api('GET', '/organisation', { key: k });
      setKey(k);
      onSignedIn(org);
    } catch (err) {
      setError(err.status === 401
        ? new ApiError(401, { title: 'That key was not accepted', detail: 'Check that it is an API key of this server (data/default-api-key on a fresh install).' })
        : err);
    } finally {
      setBusy(false);
    }
  };
  return html`<main class="signin" id="main">
    <form class="card signin-card" onSubmit=${submit} aria-labelledby="signin-title">
      <h1 id="signin-title"><span class="logo" aria-hidden="true"></span>meterbase console</h1>
      ${notice ? html`<p class="notice" role="status">${notice}</p>` : null}
      <div class="field">
        <label for=${id}>API key</label>
        <input id=${id} name="api-key" type="password" autocomplete="off" spellcheck=${false}
          value=${key} onInput=${(e) => setKeyText(e.currentTarget.value)} aria-describedby=${`${id}-hint`} required />
        <p class="hint" id=${`${id}-hint`}>Paste a key of your organisation (a fresh server writes one to <code>data/default-api-key</code>).
          It is kept in this tab only (sessionStorage) and sent as the <code>x-api-key</code> header.</p>
      </div>
      <button class="btn btn-primary" type="submit" disabled=${busy}>${busy ? 'Signing in…' : 'Sign in'}</button>
      <${ErrorBox} error=${error} />
    </form>
  </main>`;
}

/** A nav link starts the page-data clock, unless it points where we already are. */
function navClick(e) {
  if (location.hash !== e.currentTarget.getAttribute('href')) startNavigation();
}

/**
 * Whose data this is: the key's organisation (`GET /organisation`), or why it is not known
 * (the server's problem detail; a 401 signs out as on any page).
 */
function Organisation({ org }) {
  if (org.error) {
    const detail = org.error.problem?.detail || org.error.message;
    return html`<span class="org org-error" id="org-error" role="alert" title=${detail}>Organisation unknown: ${detail}</span>`;
  }
  if (!org.data) return null;
  return html`<span class="org"><span class="org-label">Organisation</span>
    <strong id="org-name" title=${org.data.name}>${org.data.name}</strong></span>`;
}

function Shell({ onSignOut, signedInOrg }) {
  const route = useRoute();
  // Signing in just fetched it; after a reload (key in sessionStorage) fetch it here.
  const [org, setOrg] = useState(signedInOrg ? { data: signedInOrg } : {});
  useEffect(() => {
    if (signedInOrg) return;
    api('GET', '/organisation').then((data) => setOrg({ data }), (error) => setOrg({ error }));
  }, []); // eslint-disable-line react-hooks/exhaustive-deps
  const page = PAGES.find((p) => p.path === route.page) || PAGES[0];
  const orgName = org.data?.name;
  useEffect(() => {
    document.title = orgName ? `${page.title} · ${orgName} · meterbase` : `${page.title} · meterbase`;
  }, [page, orgName]);
  const Page = page.component;
  return html`<div class="layout">
    <a class="skip" href="#main" onClick=${(e) => { e.preventDefault(); document.getElementById('main')?.focus(); }}>Skip to content</a>
    <header class="topbar">
      <a class="brand" href="#/overview" onClick=${navClick}><span class="logo" aria-hidden="true"></span>meterbase</a>
      <nav aria-label="Console pages">
        <ul>${PAGES.map((p) => html`<li><a href=${`#/${p.path}`} id=${`nav-${p.path}`}
            aria-current=${p === page ? 'page' : undefined} onClick=${navClick}>${p.title}</a></li>`)}</ul>
      </nav>
      <div class="who">
        <${Organisation} org=${org} />
        <button class="btn btn-small" type="button" id="sign-out" onClick=${onSignOut}>Sign out</button>
      </div>
    </header>
    <main id="main" tabindex="-1" data-page=${page.path}>
      <${Page} key=${page.path} route=${route} />
    </main>
  </div>`;
}

function App() {
  const [signedIn, setSignedIn] = useState(!!getKey());
  const [notice, setNotice] = useState(null);
  const [org, setOrg] = useState(null);
  useEffect(() => {
    onUnauthorized(() => {
      clearKey();
      setOrg(null);
      setNotice('The server no longer accepts this key (revoked?). Sign in again.');
      setSignedIn(false);
    });
  }, []);
  if (!signedIn) {
    return html`<${SignIn} notice=${notice} onSignedIn=${(o) => { setNotice(null); setOrg(o); startNavigation(); setSignedIn(true); }} />`;
  }
  return html`<${Shell} signedInOrg=${org} onSignOut=${() => { clearKey(); setOrg(null); setNotice('Signed out.'); setSignedIn(false); }} />`;
}

startNavigation();
render(html`<${App} />`, document.getElementById('app'));
